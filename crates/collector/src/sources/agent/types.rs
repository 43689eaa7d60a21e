//! The parts of the agent's `/state`, `/containers` and `/monitor/statistics` answers that
//! Corral reads. Every field may be missing; strings borrow from the body where they can.

use std::borrow::Cow;

use serde::Deserialize;

use super::json::{Id, Labels, List, Num, Str};

#[derive(Deserialize, Default, Debug)]
pub struct State<'a> {
    #[serde(borrow, default)]
    pub id: Str<'a>,
    /// `slave(1)@10.0.0.5:5051`: the agent's own address.
    #[serde(borrow, default)]
    pub pid: Str<'a>,
    #[serde(borrow, default)]
    pub frameworks: List<Framework<'a>>,
    #[serde(borrow, default)]
    pub completed_frameworks: List<Framework<'a>>,
}

#[derive(Deserialize, Default, Debug)]
pub struct Framework<'a> {
    #[serde(borrow, default)]
    pub id: Id<'a>,
    #[serde(borrow, default)]
    pub name: Str<'a>,
    #[serde(borrow, default)]
    pub role: Str<'a>,
    /// Multi-role frameworks have `roles` instead of `role`.
    #[serde(borrow, default)]
    pub roles: List<Str<'a>>,
    #[serde(borrow, default)]
    pub principal: Str<'a>,
    #[serde(borrow, default)]
    pub executors: List<Executor<'a>>,
}

#[derive(Deserialize, Default, Debug)]
pub struct Executor<'a> {
    #[serde(borrow, default)]
    pub id: Id<'a>,
    #[serde(borrow, default)]
    pub name: Str<'a>,
    #[serde(borrow, default)]
    pub source: Str<'a>,
    /// The id of the executor's top-level container.
    #[serde(borrow, default)]
    pub container: Id<'a>,
    #[serde(borrow, default)]
    pub labels: Labels<'a>,
    #[serde(borrow, default)]
    pub tasks: List<Task<'a>>,
}

#[derive(Deserialize, Default, Debug)]
pub struct Task<'a> {
    #[serde(borrow, default)]
    pub id: Id<'a>,
    #[serde(borrow, default)]
    pub name: Str<'a>,
    #[serde(borrow, default)]
    pub labels: Labels<'a>,
    #[serde(borrow, default)]
    pub statuses: List<TaskStatus<'a>>,
}

impl<'a> Task<'a> {
    /// The container of the newest status that names one.
    pub fn container(&self) -> Option<&ContainerId<'a>> {
        self.statuses
            .0
            .iter()
            .rev()
            .find_map(|s| s.container_status.as_ref()?.container_id.as_ref())
            .filter(|c| !c.value.as_str().is_empty())
    }
}

#[derive(Deserialize, Default, Debug)]
pub struct TaskStatus<'a> {
    #[serde(borrow, default)]
    pub container_status: Option<ContainerStatus<'a>>,
}

#[derive(Deserialize, Default, Debug)]
pub struct ContainerStatus<'a> {
    #[serde(borrow, default)]
    pub container_id: Option<ContainerId<'a>>,
    #[serde(borrow, default)]
    pub network_infos: List<NetworkInfo<'a>>,
}

/// `{"value": ..., "parent": {...}}`: nested containers name their parent.
#[derive(Deserialize, Default, Debug)]
pub struct ContainerId<'a> {
    #[serde(borrow, default)]
    pub value: Str<'a>,
    #[serde(borrow, default)]
    pub parent: Option<Box<ContainerId<'a>>>,
}

impl ContainerId<'_> {
    /// The top-level container (the executor's), following the parents.
    pub fn root(&self) -> &str {
        let mut c = self;
        // Bounded: a malicious answer cannot make this loop long (it is a finite tree).
        while let Some(p) = &c.parent {
            c = p;
        }
        c.value.as_str()
    }
}

#[derive(Deserialize, Default, Debug)]
pub struct NetworkInfo<'a> {
    #[serde(borrow, default)]
    pub ip_addresses: List<IpAddress<'a>>,
}

#[derive(Deserialize, Default, Debug)]
pub struct IpAddress<'a> {
    #[serde(borrow, default)]
    pub ip_address: Str<'a>,
}

/// One entry of `/containers`, or of `/monitor/statistics` (which has no `container_id` or
/// `status`).
#[derive(Deserialize, Default, Debug)]
pub struct ContainerEntry<'a> {
    #[serde(borrow, default)]
    pub container_id: Id<'a>,
    #[serde(borrow, default)]
    pub framework_id: Id<'a>,
    #[serde(borrow, default)]
    pub executor_id: Id<'a>,
    #[serde(borrow, default)]
    pub executor_name: Str<'a>,
    #[serde(borrow, default)]
    pub source: Str<'a>,
    #[serde(borrow, default)]
    pub status: Option<ContainerStatus<'a>>,
    #[serde(default)]
    pub statistics: Option<Statistics>,
}

/// Mesos' `ResourceStatistics`, the fields Corral publishes.
#[derive(Deserialize, Default, Debug)]
pub struct Statistics {
    #[serde(default)]
    pub processes: Num,
    #[serde(default)]
    pub threads: Num,
    #[serde(default)]
    pub cpus_user_time_secs: Num,
    #[serde(default)]
    pub cpus_system_time_secs: Num,
    #[serde(default)]
    pub cpus_limit: Num,
    #[serde(default)]
    pub cpus_nr_periods: Num,
    #[serde(default)]
    pub cpus_nr_throttled: Num,
    #[serde(default)]
    pub cpus_throttled_time_secs: Num,
    #[serde(default)]
    pub mem_total_bytes: Num,
    #[serde(default)]
    pub mem_total_memsw_bytes: Num,
    #[serde(default)]
    pub mem_limit_bytes: Num,
    #[serde(default)]
    pub mem_soft_limit_bytes: Num,
    #[serde(default)]
    pub mem_cache_bytes: Num,
    #[serde(default)]
    pub mem_rss_bytes: Num,
    #[serde(default)]
    pub mem_mapped_file_bytes: Num,
    #[serde(default)]
    pub mem_swap_bytes: Num,
    #[serde(default)]
    pub mem_unevictable_bytes: Num,
    #[serde(default)]
    pub mem_low_pressure_counter: Num,
    #[serde(default)]
    pub mem_medium_pressure_counter: Num,
    #[serde(default)]
    pub mem_critical_pressure_counter: Num,
    #[serde(default)]
    pub disk_limit_bytes: Num,
    #[serde(default)]
    pub disk_used_bytes: Num,
    #[serde(default)]
    pub net_rx_packets: Num,
    #[serde(default)]
    pub net_rx_bytes: Num,
    #[serde(default)]
    pub net_rx_errors: Num,
    #[serde(default)]
    pub net_rx_dropped: Num,
    #[serde(default)]
    pub net_tx_packets: Num,
    #[serde(default)]
    pub net_tx_bytes: Num,
    #[serde(default)]
    pub net_tx_errors: Num,
    #[serde(default)]
    pub net_tx_dropped: Num,
    #[serde(default)]
    pub blkio_statistics: Option<Blkio>,
}

#[derive(Deserialize, Default, Debug)]
pub struct Blkio {
    #[serde(default)]
    pub cfq: List<BlkioEntry>,
    #[serde(default)]
    pub cfq_recursive: List<BlkioEntry>,
    #[serde(default)]
    pub throttling: List<BlkioEntry>,
}

#[derive(Deserialize, Default, Debug)]
pub struct BlkioEntry {
    #[serde(default)]
    pub device: Option<Device>,
    #[serde(default)]
    pub io_serviced: List<BlkioValue>,
    #[serde(default)]
    pub io_service_bytes: List<BlkioValue>,
    #[serde(default)]
    pub io_service_time: List<BlkioValue>,
    #[serde(default)]
    pub io_merged: List<BlkioValue>,
    #[serde(default)]
    pub io_queued: List<BlkioValue>,
    #[serde(default)]
    pub io_wait_time: List<BlkioValue>,
}

/// Mesos writes `major_number`/`minor_number`; dcos-metrics' fixtures say `major`/`minor`.
#[derive(Deserialize, Default, Debug)]
pub struct Device {
    #[serde(default, alias = "major")]
    pub major_number: Num,
    #[serde(default, alias = "minor")]
    pub minor_number: Num,
}

#[derive(Deserialize, Default, Debug)]
pub struct BlkioValue {
    #[serde(default)]
    pub op: Op,
    #[serde(default)]
    pub value: Num,
}

/// A blkio operation, lower-cased for the metric name.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Op(pub Cow<'static, str>);

impl<'de> Deserialize<'de> for Op {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Str::deserialize(d)?;
        const KNOWN: [&str; 7] = [
            "unknown", "total", "read", "write", "sync", "async", "discard",
        ];
        let s = s.as_str();
        Ok(Op(match KNOWN.iter().find(|k| k.eq_ignore_ascii_case(s)) {
            Some(k) => Cow::Borrowed(*k),
            None => Cow::Owned(s.to_ascii_lowercase()),
        }))
    }
}
