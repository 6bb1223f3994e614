//! `network`: per-interface counters inside each instance's network namespace, read from
//! `<proc_root>/<pid>/net/dev` of a process in the instance (the kernel shows the
//! namespace of the reading path's process). `lo` is included, as LXD does. Link speed
//! (`lxd_network_speed_bytes{device}`, bytes per second) comes from ethtool netlink inside
//! the same namespace where the driver reports one ([`crate::link_speed`]), asked in the
//! background at most once a minute per namespace, so a refresh never waits for it.
//!
//! A namespace is reported once: a container on the host's network (Docker's
//! `--network host`) has no network series, since its interfaces are the host's; members
//! of one namespace (a Podman pod, Docker's `--network container:`) are reported on the
//! first of them by project and name, not copied into each.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use lxmetrics_plugin::{
    BuildContext, BuildError, CollectError, Collection, Collector, Family, Instance, InstanceIndex,
    InstanceReader, InstanceType, MetricDesc, MetricKind, Namespace, PerInstanceCollector,
    ReadContext, ReadError, Scope,
};

use crate::hostfs::{self, InterfaceCounters};
use crate::link_speed::LinkSpeedCache;
use crate::pid_facts::PidFacts;

lxmetrics_plugin::register_collector!(
    "network",
    "Network bytes, packets, errors and drops per interface (instance network namespace)",
    NetworkCollector::build
);

const SPEED: MetricDesc = MetricDesc::gauge(
    "network_speed_bytes",
    "Link speed in bytes per second, where the driver reports one.",
);

/// How long the netlink speed queries of one refresh may take.
const SPEED_TIMEOUT: Duration = Duration::from_secs(1);

/// The family whose samples say which instances report a namespace (every namespace has
/// `lo`, so each reporting instance has one of these).
const REPORTED_BY: &str = "network_receive_bytes_total";

/// Counter names in net/dev column order, each for receive and transmit.
const COUNTERS: [&str; 4] = ["bytes", "packets", "errs", "drop"];

/// Reads network counters.
pub struct NetworkCollector(PerInstanceCollector<NetworkReader>, LinkSpeedCache);

impl NetworkCollector {
    fn build(_: &BuildContext<'_>) -> Result<Self, BuildError> {
        Ok(NetworkCollector(
            PerInstanceCollector::new(NetworkReader::default()),
            LinkSpeedCache::default(),
        ))
    }
}

#[lxmetrics_plugin::async_trait]
impl Collector for NetworkCollector {
    async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError> {
        let mut out = self.0.collect(scope).await?;
        // The instances that report a namespace's counters report its speeds too.
        let reporting: std::collections::BTreeSet<InstanceIndex> = out
            .families
            .iter()
            .filter(|f| f.desc.name == REPORTED_BY)
            .flat_map(|f| f.samples.iter().filter_map(|s| s.instance))
            .collect();
        let speeds = self.1.speeds(scope, reporting, SPEED_TIMEOUT);
        let mut family = Family::new(SPEED, &["device"]);
        for (index, interfaces) in speeds {
            // Instances whose counters failed keep no speed either (dropped at assembly).
            for (device, mbps) in interfaces {
                family.push(index, [device.as_str()], f64::from(mbps) * 1e6 / 8.0);
            }
        }
        out.push(family);
        Ok(out)
    }
}

/// The per-instance reader.
#[derive(Default)]
pub(crate) struct NetworkReader {
    /// Each container's network namespace, kept between refreshes.
    namespaces: PidFacts<u64>,
}

/// What the reads of one refresh share: the host's network namespace, read once.
#[derive(Default)]
pub(crate) struct NetworkState {
    host: Option<Option<u64>>,
}

/// The inode of the network namespace of process `pid` (`<proc_root>/<pid>/ns/net`).
fn net_namespace(proc_root: &Path, pid: u32) -> std::io::Result<u64> {
    let path = proc_root.join(pid.to_string()).join("ns/net");
    std::fs::metadata(path).map(|m| m.ino())
}

/// The host's network namespace: that of pid 1, or where pid 1's cannot be read (a
/// non-dumpable init needs CAP_SYS_PTRACE) the daemon's own, which is the host's when the
/// daemon runs on the host as it should. `None` where neither can be read (a fixture
/// tree); then no instance is taken for the host's.
fn host_net_namespace(proc_root: &Path) -> Option<u64> {
    net_namespace(proc_root, 1)
        .or_else(|_| std::fs::metadata(proc_root.join("self/ns/net")).map(|m| m.ino()))
        .ok()
}

impl InstanceReader for NetworkReader {
    type Values = (u64, Vec<InterfaceCounters>);
    type State = NetworkState;

    fn read(
        &self,
        ctx: &mut ReadContext<'_>,
        state: &mut NetworkState,
        instance: &Instance,
    ) -> Result<Self::Values, ReadError> {
        // A VM's process (QEMU) lives in the host's namespaces: its interfaces are the
        // host's, not the guest's, so a VM has no network series of its own here.
        let Some(pid) = instance
            .pid
            .filter(|_| instance.kind == InstanceType::Container)
        else {
            return Ok((0, Vec::new()));
        };
        let proc_root = &ctx.host.proc_root;
        // 0: a /proc without namespace links (a fixture tree); reported, never merged.
        let ns = match self
            .namespaces
            .get(pid, &instance.cgroup, || net_namespace(proc_root, pid))
        {
            Ok(ns) => ns,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                return Err(ReadError::Io(
                    proc_root.join(pid.to_string()).join("ns/net"),
                    e,
                ))
            }
        };
        let host = *state
            .host
            .get_or_insert_with(|| host_net_namespace(proc_root));
        if ns != 0 && Some(ns) == host {
            return Ok((ns, Vec::new())); // the host's interfaces, not the instance's
        }
        let path = proc_root.join(pid.to_string()).join("net/dev");
        Ok((ns, ctx.files.parse(&path, hostfs::net_dev)?))
    }

    fn emit(
        &self,
        mut values: Vec<(InstanceIndex, Self::Values)>,
        _: Self::State,
        out: &mut Collection,
    ) {
        self.namespaces.forget_old();
        // One namespace, one set of series: on its first instance by index.
        values.sort_by_key(|(index, _)| *index);
        let mut reported = std::collections::HashSet::new();
        let values = values
            .into_iter()
            .filter(|(_, (ns, _))| *ns == 0 || reported.insert(*ns))
            .map(|(index, (_, interfaces))| (index, interfaces));
        // LXD's HELP texts (lxd/metrics/types.go), wording kept.
        let desc = |direction: &str, what: &str| MetricDesc {
            name: format!("network_{direction}_{what}_total").into(),
            help: format!(
                "The amount of {} {} on a given interface.",
                if direction == "receive" {
                    "received"
                } else {
                    "transmitted"
                },
                match what {
                    "drop" => "dropped bytes",
                    "errs" => "errors",
                    other => other,
                }
            )
            .into(),
            kind: MetricKind::Counter,
            namespace: Namespace::Prefixed,
        };
        let mut receive: Vec<Family> = COUNTERS
            .iter()
            .map(|w| Family::new(desc("receive", w), &["device"]))
            .collect();
        let mut transmit: Vec<Family> = COUNTERS
            .iter()
            .map(|w| Family::new(desc("transmit", w), &["device"]))
            .collect();
        for (index, interfaces) in values {
            for counters in interfaces {
                let device = counters.device.as_str();
                for (family, value) in receive.iter_mut().zip(counters.receive) {
                    family.push(index, [device], value as f64);
                }
                for (family, value) in transmit.iter_mut().zip(counters.transmit) {
                    family.push(index, [device], value as f64);
                }
            }
        }
        for f in receive.into_iter().chain(transmit) {
            out.push(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lxmetrics_plugin::HostPaths;

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0
  eth0: 123456 100 1 2 0 0 0 0 654321 90 3 4 0 0 0 0
";

    /// A namespace link is an inode: in the fixture a hard link stands for a shared
    /// namespace.
    #[tokio::test]
    async fn a_shared_namespace_is_reported_once_and_the_hosts_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let proc_root = dir.path().join("proc");
        for pid in [1, 10, 20, 30] {
            std::fs::create_dir_all(proc_root.join(format!("{pid}/ns"))).unwrap();
            std::fs::create_dir_all(proc_root.join(format!("{pid}/net"))).unwrap();
            std::fs::write(proc_root.join(format!("{pid}/net/dev")), NET_DEV).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("cgroup")).unwrap();
        std::fs::write(dir.path().join("cgroup/cgroup.controllers"), "cpu\n").unwrap();
        let ns = |pid: u32| proc_root.join(format!("{pid}/ns/net"));
        std::fs::write(ns(1), "").unwrap();
        std::fs::hard_link(ns(1), ns(10)).unwrap(); // --network host
        std::fs::write(ns(20), "").unwrap();
        std::fs::hard_link(ns(20), ns(30)).unwrap(); // two members of a pod
        let instances: Vec<Instance> = [("infra", 20), ("web", 30), ("hostnet", 10)]
            .into_iter()
            .map(|(name, pid)| Instance::container(name, format!("c/{name}")).with_pid(pid))
            .collect();
        let host = HostPaths {
            proc_root,
            ..HostPaths::under(dir.path())
        };
        let scope = Scope::new(instances, host);

        let collector = NetworkCollector(
            PerInstanceCollector::new(NetworkReader::default()),
            LinkSpeedCache::default(),
        );
        let out = collector.collect(&scope).await.unwrap();
        let receive = out
            .families
            .iter()
            .find(|f| f.desc.name == "network_receive_bytes_total")
            .unwrap();
        let owners: std::collections::BTreeSet<_> =
            receive.samples.iter().map(|s| s.instance).collect();
        assert_eq!(
            owners.into_iter().collect::<Vec<_>>(),
            [Some(0)],
            "only the first member of the shared namespace reports it"
        );
    }
}
