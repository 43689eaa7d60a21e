//! The flush: every `statsd.flush_interval` the receive threads' intervals are merged into
//! datapoints, grouped per container, stamped with dimensions and published to the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use corral_model::{Datapoint, Identity, Kind, MetricBatch, SeriesKey, Source, Stat, Unit};
use corral_statsd::{AggregatorConfig, FlushState, Reject};

use crate::outputs::Outputs;
use crate::sources::agent::ContainerDirectory;
use crate::sources::statsd::StatsdSource;
use crate::telemetry::Telemetry;

/// Totals kept by the flusher itself.
#[derive(Default, Clone, Copy)]
struct FlushTotals {
    flushes: u64,
    last_duration: f64,
    last_datapoints: u64,
}

pub struct Pipeline {
    statsd: StatsdSource,
    flush_state: FlushState,
    agg_config: Arc<AggregatorConfig>,
    outputs: Arc<Outputs>,
    identity: Arc<Identity>,
    telemetry: Arc<Telemetry>,
    totals: FlushTotals,
    /// Dimensions of the containers the agent reports, for their StatsD batches.
    directory: Arc<ContainerDirectory>,
}

/// What one flush did, for logs and tests.
#[derive(Debug, Clone, Copy)]
pub struct FlushReport {
    pub datapoints: usize,
    pub containers: usize,
    pub duration: std::time::Duration,
}

impl Pipeline {
    pub fn new(
        statsd: StatsdSource,
        agg_config: Arc<AggregatorConfig>,
        outputs: Arc<Outputs>,
        identity: Arc<Identity>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Pipeline {
            statsd,
            flush_state: FlushState::new(agg_config.clone()),
            agg_config,
            outputs,
            identity,
            telemetry,
            totals: FlushTotals::default(),
            directory: Arc::default(),
        }
    }

    /// Uses `directory` for the dimensions of containers' StatsD batches.
    pub fn with_directory(mut self, directory: Arc<ContainerDirectory>) -> Self {
        self.directory = directory;
        self
    }

    pub fn statsd(&self) -> &StatsdSource {
        &self.statsd
    }

    pub fn statsd_mut(&mut self) -> &mut StatsdSource {
        &mut self.statsd
    }

    /// Ends the current interval and publishes its datapoints.
    pub fn flush(&mut self) -> FlushReport {
        let started = Instant::now();
        // The previous flush's batches are freed before this one's are made (at 100k series
        // each set is about 10 MB); API readers wait for the publish meanwhile. Should the
        // flush panic, dropping the retraction lets them go.
        let _retraction = self.outputs.retract(Source::App);
        let timestamp = SystemTime::now();
        let parts = self.statsd.take_interval();
        let conflicts = self.flush_state.type_conflicts();
        let output = self.flush_state.flush(parts);
        let conflicts = self.flush_state.type_conflicts() - conflicts;
        if conflicts > 0 {
            tracing::warn!(
                series = conflicts,
                "receive threads saw series with different types in one interval; \
                 the first thread's type was kept, the other samples were dropped"
            );
        }
        let node_dims = self.identity.dimensions();
        let node_dims_arc = Arc::new(node_dims.clone());
        let directory = self.directory.snapshot();
        let mut batches = Vec::with_capacity(output.groups.len() + 1);
        let mut node_points = None;
        let mut datapoints = 0;
        for (container, points) in output.groups {
            datapoints += points.len();
            match container {
                None => node_points = Some(points),
                Some(id) => {
                    // A container the agent reports carries its executor, framework, task
                    // and labels; another keeps the node's dimensions and its id.
                    let dims = directory.get(&*id).cloned().unwrap_or_else(|| {
                        let mut dims = node_dims.clone();
                        dims.container_id = id.to_string();
                        Arc::new(dims)
                    });
                    let mut b = MetricBatch {
                        source: Source::App,
                        container_id: Some(id),
                        dimensions: dims,
                        timestamp,
                        points,
                    };
                    b.sort();
                    batches.push(b);
                }
            }
        }
        let containers = batches.len();
        let mut node_points = node_points.unwrap_or_default();
        self.totals.flushes += 1;
        self.totals.last_datapoints = datapoints as u64;
        // Added without growing the node's vector by doubling (at 100k+ series it is megabytes).
        let mut own = Vec::new();
        self.self_metrics(&mut own);
        node_points.reserve_exact(own.len());
        node_points.append(&mut own);
        let mut node = MetricBatch {
            source: Source::App,
            container_id: None,
            dimensions: node_dims_arc,
            timestamp,
            points: node_points,
        };
        node.sort();
        batches.push(node);
        self.outputs.publish(Source::App, batches);
        // The whole flush, sorting and publishing included; its self-metric is published with
        // the next flush.
        let duration = started.elapsed();
        self.totals.last_duration = duration.as_secs_f64();
        FlushReport {
            datapoints,
            containers,
            duration,
        }
    }

    /// Corral's own metrics, published as node-level app metrics named `corral.*`.
    fn self_metrics(&self, out: &mut Vec<Datapoint>) {
        let point = |name: &str, tags: &[(&str, &str)], value: u64| {
            Datapoint::new(
                SeriesKey::new(name, tags.iter().copied()),
                Stat::Value,
                Unit::None,
                value as f64,
            )
        };
        let total = |name: &str, tags: &[(&str, &str)], value: u64| {
            point(name, tags, value).with_kind(Kind::Cumulative)
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut sums = [0u64; 8];
        let mut dropped = [0u64; Reject::ALL.len()];
        // Per listening address: its receive threads each have a socket of their own, whose
        // kernel drops add up; their buffers are configured alike (the smallest is reported).
        let mut sockets: Vec<(String, u64, usize)> = Vec::new();
        for r in &self.statsd.receivers() {
            let s = &r.stats;
            let each = [
                &s.datagrams,
                &s.truncated,
                &s.lines,
                &s.bad_sample_rate,
                &s.events,
                &s.service_checks,
                &s.series_dropped,
                &s.type_mismatch,
            ];
            for (sum, a) in sums.iter_mut().zip(each) {
                *sum += get(a);
            }
            for (d, a) in dropped.iter_mut().zip(s.dropped.iter()) {
                *d += get(a);
            }
            let drops = get(&s.kernel_drops);
            match sockets.iter_mut().find(|(e, _, _)| *e == r.endpoint) {
                Some((_, d, buffer)) => {
                    *d += drops;
                    *buffer = (*buffer).min(r.receive_buffer);
                }
                None => sockets.push((r.endpoint.clone(), drops, r.receive_buffer)),
            }
        }
        for (endpoint, drops, buffer) in &sockets {
            let socket = [("socket", endpoint.as_str())];
            out.push(total("corral.statsd.kernel_drops", &socket, *drops));
            out.push(point(
                "corral.statsd.receive_buffer_bytes",
                &socket,
                *buffer as u64,
            ));
        }
        let [datagrams, truncated, lines, bad_rate, events, checks, series_dropped, type_mismatch] =
            sums;
        out.push(total("corral.statsd.datagrams_received", &[], datagrams));
        out.push(total("corral.statsd.datagrams_truncated", &[], truncated));
        out.push(total("corral.statsd.lines_received", &[], lines));
        for (reason, n) in Reject::ALL.iter().zip(dropped) {
            out.push(total(
                "corral.statsd.lines_dropped",
                &[("reason", reason.as_str())],
                n,
            ));
        }
        // Lines the aggregators refused.
        for (reason, n) in [
            ("series_limit", series_dropped),
            ("type_mismatch", type_mismatch),
        ] {
            out.push(total(
                "corral.statsd.lines_dropped",
                &[("reason", reason)],
                n,
            ));
        }
        out.push(total(
            "corral.statsd.type_conflicts",
            &[],
            self.flush_state.type_conflicts(),
        ));
        out.push(total("corral.statsd.sample_rate_invalid", &[], bad_rate));
        out.push(total("corral.statsd.events_received", &[], events));
        out.push(total("corral.statsd.service_checks_received", &[], checks));
        out.push(point(
            "corral.statsd.series",
            &[],
            self.agg_config.series.load(Ordering::Relaxed) as u64,
        ));
        out.push(point(
            "corral.statsd.gauges",
            &[],
            self.flush_state.gauges() as u64,
        ));
        out.push(total("corral.flush.count", &[], self.totals.flushes));
        out.push(point(
            "corral.flush.datapoints",
            &[],
            self.totals.last_datapoints,
        ));
        let mut duration = point("corral.flush.duration_seconds", &[], 0);
        duration.value = self.totals.last_duration;
        out.push(duration);
        self.telemetry.datapoints(out);
    }
}
