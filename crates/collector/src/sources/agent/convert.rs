//! From the agent's answers to batches: container resource datapoints named and tagged as
//! dcos-metrics did, the dimensions of every container the agent knows (for resource and
//! StatsD batches alike), and the container of each IP.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use corral_model::{Datapoint, Dimensions, Kind, MetricBatch, SeriesKey, Source, Stat, Unit};
use serde_json::value::RawValue;

use super::json::{sanitize, Labels, Num};
use super::types::{BlkioEntry, ContainerEntry, Executor, Framework, State, Statistics, Task};

/// Labels that Cosmos and Marathon add for their own bookkeeping (dcos-metrics drops them).
pub const COSMOS_LABELS: [&str; 8] = [
    "DCOS_PACKAGE_DEFINITION",
    "DCOS_PACKAGE_FRAMEWORK_NAME",
    "DCOS_PACKAGE_METADATA",
    "DCOS_PACKAGE_OPTIONS",
    "DCOS_PACKAGE_SOURCE",
    "DCOS_SERVICE_PORT_INDEX",
    "DCOS_SERVICE_SCHEME",
    "MARATHON_SINGLE_INSTANCE_APP",
];

/// Longer label values are dropped (they broke downstream tools in dcos-metrics' days).
pub const MAX_LABEL_VALUE: usize = 128;

/// Which endpoint the usage came from.
#[derive(Clone, Copy, Debug)]
pub enum Usage<'a> {
    /// `/containers` (Mesos ≥ 1.0): one entry per container, with its id and status.
    Containers(&'a [u8]),
    /// `/monitor/statistics`: one entry per executor; the container comes from `/state`.
    Statistics(&'a [u8]),
}

/// Why an answer could not be used at all.
#[derive(Debug)]
pub struct DecodeError {
    pub endpoint: &'static str,
    pub error: serde_json::Error,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: invalid JSON: {}", self.endpoint, self.error)
    }
}

impl std::error::Error for DecodeError {}

/// Things that were skipped or noticed while converting one poll.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Containers without `statistics` (their usage could not be read by the agent).
    pub no_statistics: u64,
    /// `/monitor/statistics` entries whose executor `/state` does not know.
    pub unknown_container: u64,
    /// Entries that are not the expected shape.
    pub bad_entries: u64,
    /// Values that are not finite numbers (`NaN`, `Infinity`) or not numbers.
    pub invalid_values: u64,
    /// Cumulative counters lower than at the previous poll.
    pub counter_resets: u64,
}

/// What one poll yields.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The agent's id (`/state` `id`), when it has one.
    pub agent_id: Option<String>,
    /// One `Source::Container` batch per container with statistics.
    pub batches: Vec<MetricBatch>,
    /// The dimensions of every container the agent reports, nested ones included.
    pub directory: HashMap<Arc<str>, Arc<Dimensions>>,
    /// IPs that belong to exactly one container.
    pub ips: HashMap<IpAddr, Arc<str>>,
    pub counts: Counts,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// The series of one container at the last poll, in the order they were made, with the
/// tags they were made with: a series seen before keeps its key (no allocation) and
/// cumulative values are checked for resets.
#[derive(Default)]
struct History {
    tags: String,
    points: Vec<(SeriesKey, f64)>,
}

/// Turns polls into snapshots; remembers the last poll's series to notice resets.
#[derive(Default)]
pub struct Converter {
    previous: FastMap<Arc<str>, History>,
}

impl Converter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Converts one poll. `node` holds the node dimensions (mesos_id, cluster_id, hostname);
    /// when `learn_agent_id` is set, the agent's id replaces `node.mesos_id`.
    pub fn convert(
        &mut self,
        state: &[u8],
        usage: Usage<'_>,
        mut node: Dimensions,
        learn_agent_id: bool,
        timestamp: SystemTime,
    ) -> Result<Snapshot, DecodeError> {
        let state_body = sanitize(state);
        let state: State = serde_json::from_slice(&state_body).map_err(|error| DecodeError {
            endpoint: "/state",
            error,
        })?;
        let agent_id = Some(state.id.as_str().to_string()).filter(|s| !s.is_empty());
        if let (true, Some(id)) = (learn_agent_id, &agent_id) {
            node.mesos_id.clone_from(id);
        }
        let index = Index::new(&state);
        let mut snap = Snapshot {
            agent_id,
            ..Snapshot::default()
        };

        let (usage_body, endpoint, has_ids) = match usage {
            Usage::Containers(b) => (b, "/containers", true),
            Usage::Statistics(b) => (b, "/monitor/statistics", false),
        };
        let usage_body = sanitize(usage_body);
        // Parsed in one go; when that fails, entry by entry, so that an odd entry costs only
        // itself.
        let raw: Vec<&RawValue>;
        let entries: Vec<ContainerEntry> = match serde_json::from_slice(&usage_body) {
            Ok(entries) => entries,
            Err(_) => {
                raw = serde_json::from_slice(&usage_body)
                    .map_err(|error| DecodeError { endpoint, error })?;
                raw.iter()
                    .filter_map(|r| match serde_json::from_str(r.get()) {
                        Ok(e) => Some(e),
                        Err(e) => {
                            tracing::debug!(endpoint, error = %e, "agent entry skipped: unexpected shape");
                            snap.counts.bad_entries += 1;
                            None
                        }
                    })
                    .collect()
            }
        };
        let mut next: FastMap<Arc<str>, History> =
            FastMap::with_capacity_and_hasher(entries.len(), Default::default());
        let mut ip_owners: HashMap<IpAddr, Option<Arc<str>>> = HashMap::new();
        let mut keys = KeyBuilder::default();
        let mut published: HashSet<Arc<str>> = HashSet::with_capacity(entries.len());
        snap.batches.reserve(entries.len());
        for entry in &entries {
            let fid = entry.framework_id.as_str();
            let eid = entry.executor_id.as_str();
            let executor = index.executor(fid, eid);
            let cid: &str = if has_ids {
                entry.container_id.as_str()
            } else {
                executor.map(|(_, e)| e.container.as_str()).unwrap_or("")
            };
            if cid.is_empty() {
                snap.counts.unknown_container += 1;
                continue;
            }
            if published.contains(cid) {
                continue;
            }
            let cid_arc: Arc<str> = Arc::from(cid);
            published.insert(cid_arc.clone());
            if let Some(status) = &entry.status {
                for ni in &status.network_infos.0 {
                    for ip in &ni.ip_addresses.0 {
                        let Ok(ip) = ip.ip_address.as_str().parse::<IpAddr>() else {
                            continue;
                        };
                        if ip.is_unspecified() || Some(ip) == index.agent_ip {
                            continue;
                        }
                        ip_owners
                            .entry(ip)
                            .and_modify(|o| {
                                if o.as_deref() != Some(cid) {
                                    *o = None;
                                }
                            })
                            .or_insert_with(|| Some(cid_arc.clone()));
                    }
                }
            }
            let dims = {
                let framework = index.framework(fid).or_else(|| executor.map(|(f, _)| f));
                let executor = executor
                    .map(|(_, e)| e)
                    .or_else(|| index.executor_by_container.get(cid).map(|(_, e)| *e));
                let task = index
                    .task_by_container
                    .get(cid)
                    .map(|t| t.task)
                    .or_else(|| executor.and_then(|e| index.command_task(e)));
                let mut d = index.dimensions(&node, cid, framework, executor, task);
                // The usage entry's own ids win: /state may be filtered by authorization.
                if !fid.is_empty() {
                    d.framework_id = fid.to_string();
                }
                if !eid.is_empty() {
                    d.executor_id = eid.to_string();
                }
                Arc::new(d)
            };
            snap.directory.insert(cid_arc.clone(), dims.clone());
            let Some(stats) = &entry.statistics else {
                snap.counts.no_statistics += 1;
                continue;
            };
            keys.set_tags(&[
                ("container_id", cid),
                ("executor_id", eid),
                ("executor_name", entry.executor_name.as_str()),
                ("framework_id", fid),
                ("source", entry.source.as_str()),
            ]);
            let previous = self
                .previous
                .remove(cid)
                .filter(|h| h.tags == keys.tags)
                .map(|h| h.points)
                .unwrap_or_default();
            let mut points = Vec::with_capacity(previous.len().max(32));
            let mut history = History {
                tags: keys.tags.clone(),
                points: Vec::with_capacity(previous.len().max(32)),
            };
            let mut ctx = PointCtx {
                keys: &mut keys,
                previous: &previous,
                cursor: 0,
                history: &mut history.points,
                counts: &mut snap.counts,
                points: &mut points,
                container: cid,
            };
            let blkio = ctx.statistics(stats);
            next.insert(cid_arc.clone(), history);
            // The rest is in order already. Within blkio, names and the device tag differ;
            // the other tags are the same: the encoded keys order as the API does.
            points[..blkio].sort_unstable_by(|a, b| a.key.encoded().cmp(b.key.encoded()));
            snap.batches.push(MetricBatch {
                source: Source::Container,
                container_id: Some(cid_arc),
                dimensions: dims,
                timestamp,
                points,
            });
        }
        // Every other container /state knows: executors' own containers and tasks' (nested)
        // ones.
        for (cid, t) in &index.task_by_container {
            if snap.directory.contains_key(*cid) {
                continue;
            }
            let dims = index.dimensions(
                &node,
                cid,
                Some(t.framework),
                Some(t.executor),
                Some(t.task),
            );
            snap.directory.insert(Arc::from(*cid), Arc::new(dims));
        }
        for (cid, (fw, ex)) in &index.executor_by_container {
            if index.task_by_container.contains_key(cid) || snap.directory.contains_key(*cid) {
                continue;
            }
            let task = index.command_task(ex);
            let dims = index.dimensions(&node, cid, Some(fw), Some(ex), task);
            snap.directory.insert(Arc::from(*cid), Arc::new(dims));
        }
        snap.ips = ip_owners
            .into_iter()
            .filter_map(|(ip, owner)| Some((ip, owner?)))
            .collect();
        self.previous = next;
        Ok(snap)
    }
}

/// Where each container of `/state` belongs.
struct Index<'s, 'a> {
    frameworks: FastMap<&'s str, &'s Framework<'a>>,
    executors: FastMap<(&'s str, &'s str), (&'s Framework<'a>, &'s Executor<'a>)>,
    executor_by_container: FastMap<&'s str, (&'s Framework<'a>, &'s Executor<'a>)>,
    task_by_container: FastMap<&'s str, TaskRef<'s, 'a>>,
    agent_ip: Option<IpAddr>,
}

struct TaskRef<'s, 'a> {
    framework: &'s Framework<'a>,
    executor: &'s Executor<'a>,
    task: &'s Task<'a>,
}

impl<'s, 'a> Index<'s, 'a> {
    fn new(state: &'s State<'a>) -> Self {
        let mut ix = Index {
            frameworks: FastMap::default(),
            executors: FastMap::default(),
            executor_by_container: FastMap::default(),
            task_by_container: FastMap::default(),
            agent_ip: agent_ip(state.pid.as_str()),
        };
        // Active frameworks first, so a completed framework of the same id does not win.
        for fw in state
            .frameworks
            .0
            .iter()
            .chain(&state.completed_frameworks.0)
        {
            let fid = fw.id.as_str();
            ix.frameworks.entry(fid).or_insert(fw);
            for ex in &fw.executors.0 {
                ix.executors
                    .entry((fid, ex.id.as_str()))
                    .or_insert((fw, ex));
                let c = ex.container.as_str();
                if !c.is_empty() {
                    ix.executor_by_container.entry(c).or_insert((fw, ex));
                }
                for task in &ex.tasks.0 {
                    if let Some(c) = task.container() {
                        ix.task_by_container
                            .entry(c.value.as_str())
                            .or_insert(TaskRef {
                                framework: fw,
                                executor: ex,
                                task,
                            });
                    }
                }
            }
        }
        ix
    }

    fn framework(&self, fid: &str) -> Option<&'s Framework<'a>> {
        self.frameworks.get(fid).copied()
    }

    fn executor(&self, fid: &str, eid: &str) -> Option<(&'s Framework<'a>, &'s Executor<'a>)> {
        self.executors.get(&(fid, eid)).copied()
    }

    /// The task a command executor runs: its id is the executor's.
    fn command_task(&self, ex: &'s Executor<'a>) -> Option<&'s Task<'a>> {
        ex.tasks.0.iter().find(|t| t.id.as_str() == ex.id.as_str())
    }

    fn dimensions(
        &self,
        node: &Dimensions,
        container: &str,
        framework: Option<&Framework<'_>>,
        executor: Option<&Executor<'_>>,
        task: Option<&Task<'_>>,
    ) -> Dimensions {
        let mut d = Dimensions {
            mesos_id: node.mesos_id.clone(),
            cluster_id: node.cluster_id.clone(),
            hostname: node.hostname.clone(),
            container_id: container.to_string(),
            ..Dimensions::default()
        };
        if let Some(fw) = framework {
            d.framework_id = fw.id.as_str().to_string();
            d.framework_name = fw.name.as_str().to_string();
            d.framework_role = if fw.role.as_str().is_empty() {
                let roles: Vec<&str> = fw.roles.0.iter().map(|r| r.as_str()).collect();
                roles.join(",")
            } else {
                fw.role.as_str().to_string()
            };
            d.framework_principal = fw.principal.as_str().to_string();
        }
        if let Some(ex) = executor {
            d.executor_id = ex.id.as_str().to_string();
        }
        let labels = match (task, executor) {
            (Some(t), _) if !t.labels.0.is_empty() => Some(&t.labels),
            (_, Some(ex)) => Some(&ex.labels),
            _ => None,
        };
        if let Some(t) = task {
            d.task_id = t.id.as_str().to_string();
            d.task_name = t.name.as_str().to_string();
        }
        if let Some(labels) = labels {
            d.labels = filter_labels(labels);
        }
        d
    }
}

/// The agent's own address from its libprocess pid, `slave(1)@10.0.0.5:5051`.
fn agent_ip(pid: &str) -> Option<IpAddr> {
    let (_, addr) = pid.rsplit_once('@')?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// The labels minus Cosmos' bookkeeping keys and values over [`MAX_LABEL_VALUE`] bytes.
pub fn filter_labels(labels: &Labels<'_>) -> BTreeMap<String, String> {
    labels
        .0
        .iter()
        .filter(|(k, v)| {
            !k.is_empty() && v.len() <= MAX_LABEL_VALUE && !COSMOS_LABELS.contains(&k.as_ref())
        })
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Builds encoded series keys: the name, then the container's tags, already sorted.
#[derive(Default)]
struct KeyBuilder {
    /// `\ncontainer_id:...\nexecutor_id:...` and so on.
    tags: String,
    scratch: String,
}

impl KeyBuilder {
    fn set_tags(&mut self, tags: &[(&str, &str)]) {
        self.tags.clear();
        for (k, v) in tags {
            self.tags.push('\n');
            self.tags.push_str(k);
            self.tags.push(':');
            push_tag_value(&mut self.tags, v);
        }
    }

    /// The start of the encoded key of `name`: the name, and `blkio_device` (which sorts
    /// before the container's tags).
    fn head(&mut self, name: &[&str], blkio_device: Option<&str>) -> &str {
        self.scratch.clear();
        for part in name {
            self.scratch.push_str(part);
        }
        if let Some(d) = blkio_device {
            self.scratch.push_str("\nblkio_device:");
            self.scratch.push_str(d);
        }
        &self.scratch
    }

    /// The whole key: the head from [`KeyBuilder::head`] and the container's tags.
    fn key(&mut self) -> SeriesKey {
        self.scratch.push_str(&self.tags);
        SeriesKey::from_encoded(&self.scratch)
    }
}

/// A newline would end the tag in a series key's encoding.
fn push_tag_value(out: &mut String, v: &str) {
    if v.contains('\n') {
        out.push_str(&v.replace('\n', " "));
    } else {
        out.push_str(v);
    }
}

struct PointCtx<'c> {
    keys: &'c mut KeyBuilder,
    /// The container's series at the last poll, made with the same tags.
    previous: &'c [(SeriesKey, f64)],
    /// Where the next series probably is in `previous` (they come in the same order).
    cursor: usize,
    history: &'c mut Vec<(SeriesKey, f64)>,
    counts: &'c mut Counts,
    points: &'c mut Vec<Datapoint>,
    container: &'c str,
}

type Field = fn(&Statistics) -> Num;

/// dcos-metrics' container metrics: name, field, unit, cumulative; sorted by name (the
/// order the API serves). `net.tx.*` reads the tx fields (dcos-metrics filled them from rx by
/// mistake).
const METRICS: [(&str, Field, Unit, bool); 30] = [
    ("cpus.limit", |s| s.cpus_limit, Unit::Count, false),
    ("cpus.nr.periods", |s| s.cpus_nr_periods, Unit::Count, true),
    (
        "cpus.nr.throttled",
        |s| s.cpus_nr_throttled,
        Unit::Count,
        true,
    ),
    (
        "cpus.system.time",
        |s| s.cpus_system_time_secs,
        Unit::Seconds,
        true,
    ),
    (
        "cpus.throttled.time",
        |s| s.cpus_throttled_time_secs,
        Unit::Seconds,
        true,
    ),
    (
        "cpus.user.time",
        |s| s.cpus_user_time_secs,
        Unit::Seconds,
        true,
    ),
    ("disk.limit", |s| s.disk_limit_bytes, Unit::Bytes, false),
    ("disk.used", |s| s.disk_used_bytes, Unit::Bytes, false),
    ("mem.cache", |s| s.mem_cache_bytes, Unit::Bytes, false),
    (
        "mem.critical.pressure",
        |s| s.mem_critical_pressure_counter,
        Unit::Count,
        true,
    ),
    ("mem.limit", |s| s.mem_limit_bytes, Unit::Bytes, false),
    (
        "mem.low.pressure",
        |s| s.mem_low_pressure_counter,
        Unit::Count,
        true,
    ),
    (
        "mem.mapped.file",
        |s| s.mem_mapped_file_bytes,
        Unit::Bytes,
        false,
    ),
    (
        "mem.medium.pressure",
        |s| s.mem_medium_pressure_counter,
        Unit::Count,
        true,
    ),
    ("mem.rss", |s| s.mem_rss_bytes, Unit::Bytes, false),
    (
        "mem.soft.limit",
        |s| s.mem_soft_limit_bytes,
        Unit::Bytes,
        false,
    ),
    ("mem.swap", |s| s.mem_swap_bytes, Unit::Bytes, false),
    ("mem.total", |s| s.mem_total_bytes, Unit::Bytes, false),
    (
        "mem.total.memsw",
        |s| s.mem_total_memsw_bytes,
        Unit::Bytes,
        false,
    ),
    (
        "mem.unevictable",
        |s| s.mem_unevictable_bytes,
        Unit::Bytes,
        false,
    ),
    ("net.rx.bytes", |s| s.net_rx_bytes, Unit::Bytes, true),
    ("net.rx.dropped", |s| s.net_rx_dropped, Unit::Count, true),
    ("net.rx.errors", |s| s.net_rx_errors, Unit::Count, true),
    ("net.rx.packets", |s| s.net_rx_packets, Unit::Count, true),
    ("net.tx.bytes", |s| s.net_tx_bytes, Unit::Bytes, true),
    ("net.tx.dropped", |s| s.net_tx_dropped, Unit::Count, true),
    ("net.tx.errors", |s| s.net_tx_errors, Unit::Count, true),
    ("net.tx.packets", |s| s.net_tx_packets, Unit::Count, true),
    ("processes", |s| s.processes, Unit::Count, false),
    ("threads", |s| s.threads, Unit::Count, false),
];

impl PointCtx<'_> {
    /// Appends the datapoints of `s`, nearly in API order: `blkio.*` (sorted by the caller)
    /// before the rest.
    /// Returns how many are `blkio.*`.
    fn statistics(&mut self, s: &Statistics) -> usize {
        if let Some(b) = &s.blkio_statistics {
            for (policy, entries) in [
                ("cfq", &b.cfq),
                ("cfq_recursive", &b.cfq_recursive),
                ("throttling", &b.throttling),
            ] {
                for e in &entries.0 {
                    self.blkio(policy, e);
                }
            }
        }
        let blkio = self.points.len();
        for (name, field, unit, cumulative) in METRICS {
            self.push(&[name], None, field(s), unit, cumulative);
        }
        blkio
    }

    fn blkio(&mut self, policy: &str, e: &BlkioEntry) {
        let device: Cow<'static, str> = match &e.device {
            Some(d) => match (d.major_number.get(), d.minor_number.get()) {
                (Some(major), minor) if major > 0.0 => {
                    Cow::Owned(format!("{}:{}", major as u64, minor.unwrap_or(0.0) as u64))
                }
                _ => Cow::Borrowed("total"),
            },
            None => Cow::Borrowed("total"),
        };
        for (stat, values) in [
            ("io_serviced", &e.io_serviced),
            ("io_service_bytes", &e.io_service_bytes),
            ("io_service_time", &e.io_service_time),
            ("io_merged", &e.io_merged),
            ("io_queued", &e.io_queued),
            ("io_wait_time", &e.io_wait_time),
        ] {
            for v in &values.0 {
                if v.op.0.is_empty() {
                    self.counts.bad_entries += 1;
                    continue;
                }
                // dcos-metrics labels every blkio value "bytes", counts and times included.
                self.push(
                    &["blkio.", policy, ".", stat, ".", &v.op.0],
                    Some(&device),
                    v.value,
                    Unit::Bytes,
                    true,
                );
            }
        }
    }

    fn push(&mut self, name: &[&str], device: Option<&str>, v: Num, unit: Unit, cumulative: bool) {
        let value = match v {
            Num::Missing => return,
            Num::Invalid => {
                self.counts.invalid_values += 1;
                return;
            }
            Num::Value(v) => v,
        };
        let tags_len = self.keys.tags.len();
        let head = self.keys.head(name, device);
        // Same tags, so the same series iff the key is this head followed by the tags.
        let same = |k: &SeriesKey| {
            let e = k.encoded().as_bytes();
            e.len() == head.len() + tags_len && e.starts_with(head.as_bytes())
        };
        let found = match self.previous.get(self.cursor) {
            Some((k, _)) if same(k) => Some(self.cursor),
            _ => self.previous.iter().position(|(k, _)| same(k)),
        };
        let key = match found {
            Some(i) => {
                self.cursor = i + 1;
                let (key, before) = &self.previous[i];
                if cumulative && value < *before {
                    self.counts.counter_resets += 1;
                    tracing::debug!(
                        container = self.container,
                        metric = key.name(),
                        before,
                        now = value,
                        "counter went down: treated as a reset"
                    );
                }
                key.clone()
            }
            None => self.keys.key(),
        };
        self.history.push((key.clone(), value));
        let kind = if cumulative {
            Kind::Cumulative
        } else {
            Kind::Gauge
        };
        self.points
            .push(Datapoint::new(key, Stat::Value, unit, value).with_kind(kind));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metric_table_is_in_api_order() {
        let names: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn the_agent_ip_comes_from_its_pid() {
        assert_eq!(agent_ip("slave(1)@10.0.0.5:5051"), "10.0.0.5".parse().ok());
        assert_eq!(agent_ip("slave(1)@[fd00::5]:5051"), "fd00::5".parse().ok());
        assert_eq!(agent_ip("slave(1)@agent.example:5051"), None);
        assert_eq!(agent_ip(""), None);
    }
}
