//! `network`: per-interface counters inside each instance's network namespace, read from
//! `<proc_root>/<pid>/net/dev` of a process in the instance (the kernel shows the
//! namespace of the reading path's process). `lo` is included, as LXD does. Link speed
//! (`lxd_network_speed_bytes{device}`, bytes per second) comes from ethtool netlink inside
//! the same namespace where the driver reports one ([`crate::link_speed`]).

use std::time::Duration;

use lxmetrics_plugin::{
    BuildContext, BuildError, CollectError, Collection, Collector, Family, Instance, InstanceIndex,
    InstanceReader, InstanceType, MetricDesc, MetricKind, Namespace, PerInstanceCollector,
    ReadContext, ReadError, Scope,
};

use crate::hostfs::{self, InterfaceCounters};
use crate::link_speed;

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

/// Counter names in net/dev column order, each for receive and transmit.
const COUNTERS: [&str; 4] = ["bytes", "packets", "errs", "drop"];

/// Reads network counters.
pub struct NetworkCollector(PerInstanceCollector<NetworkReader>);

impl NetworkCollector {
    fn build(_: &BuildContext<'_>) -> Result<Self, BuildError> {
        Ok(NetworkCollector(PerInstanceCollector::new(NetworkReader)))
    }
}

#[lxmetrics_plugin::async_trait]
impl Collector for NetworkCollector {
    async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError> {
        let mut out = self.0.collect(scope).await?;
        let speeds = link_speed::link_speeds(scope, SPEED_TIMEOUT).await;
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
pub(crate) struct NetworkReader;

impl InstanceReader for NetworkReader {
    type Values = Vec<InterfaceCounters>;
    type State = ();

    fn read(
        &self,
        ctx: &mut ReadContext<'_>,
        _: &mut (),
        instance: &Instance,
    ) -> Result<Self::Values, ReadError> {
        // A VM's process (QEMU) lives in the host's namespaces: its interfaces are the
        // host's, not the guest's, so a VM has no network series of its own here.
        let Some(pid) = instance
            .pid
            .filter(|_| instance.kind == InstanceType::Container)
        else {
            return Ok(Vec::new());
        };
        let path = ctx.host.proc_root.join(pid.to_string()).join("net/dev");
        ctx.files.parse(&path, hostfs::net_dev)
    }

    fn emit(
        &self,
        values: Vec<(InstanceIndex, Self::Values)>,
        _: Self::State,
        out: &mut Collection,
    ) {
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
