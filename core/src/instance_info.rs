//! `instance_info`: one series per instance, running or not, carrying what its runtime
//! knows (status, image, architecture, location, engine, ...) as labels, for
//! `group_left` joins. Per-sample label sets of the other families stay LXD's.

use std::collections::BTreeSet;

use lxmetrics_plugin::{Collection, Family, Instance, InstanceIndex, MetricDesc, SeriesOf};

const INSTANCE_INFO: MetricDesc = MetricDesc::gauge(
    "instance_info",
    "Facts about the instance from its runtime (always 1), for group_left joins",
);

/// The `instance_info` family over `instances` (indexes as in the snapshot). Its label
/// names are `status` plus every fact name any instance has; an instance without a fact
/// gets an empty value, which Prometheus treats as no label.
pub(crate) fn instance_info(instances: &[Instance]) -> Collection {
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for instance in instances {
        names.extend(instance.info.iter().map(|(k, _)| k.as_str()));
    }
    names.remove("status");
    let names: Vec<&str> = std::iter::once("status").chain(names).collect();
    let mut family = Family::new(INSTANCE_INFO, &names);
    for (index, instance) in (0..).zip(instances) {
        let values: Vec<&str> = names
            .iter()
            .map(|name| match *name {
                "status" => instance.status.as_str(),
                name => instance
                    .info
                    .iter()
                    .find(|(k, _)| k == name)
                    .map_or("", |(_, v)| v.as_str()),
            })
            .collect();
        family.push(SeriesOf::instance(index as InstanceIndex), values, 1.0);
    }
    let mut collection = Collection::new();
    collection.push(family);
    collection
}

#[cfg(test)]
mod tests {
    use super::*;
    use lxmetrics_plugin::InstanceStatus;

    #[test]
    fn every_instance_gets_one_series_with_the_union_of_facts() {
        let mut web = Instance::container("web", "lxc.payload.web");
        web.info = vec![("image".into(), "busybox".into())];
        let mut db = Instance::container("db", "");
        db.status = InstanceStatus::Stopped;
        db.info = vec![("location".into(), "node1".into())];
        let collection = instance_info(&[web, db]);
        let family = &collection.families[0];
        assert_eq!(family.label_names, ["status", "image", "location"]);
        assert_eq!(family.samples.len(), 2);
        assert_eq!(family.samples[0].label_values, ["Running", "busybox", ""]);
        assert_eq!(family.samples[1].label_values, ["Stopped", "", "node1"]);
    }
}
