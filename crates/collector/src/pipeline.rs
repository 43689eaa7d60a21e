//! The flush: every `statsd.flush_interval` the receive threads' intervals are merged into
//! datapoints, grouped per container, stamped with dimensions and published to the store.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use corral_model::{Datapoint, Identity, MetricBatch, SeriesKey, Source, Stat, Store, Unit};
use corral_statsd::{AggregatorConfig, FlushState, Reject};

use crate::sources::statsd::StatsdSource;

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
    store: Arc<Store>,
    identity: Arc<Identity>,
    totals: FlushTotals,
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
        store: Arc<Store>,
        identity: Arc<Identity>,
    ) -> Self {
        Pipeline {
            statsd,
            flush_state: FlushState::new(agg_config.clone()),
            agg_config,
            store,
            identity,
            totals: FlushTotals::default(),
        }
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
        let timestamp = SystemTime::now();
        let parts = self.statsd.take_interval();
        let output = self.flush_state.flush(parts);
        let node_dims = self.identity.dimensions();
        let node_dims_arc = Arc::new(node_dims.clone());
        let mut batches = Vec::with_capacity(output.groups.len() + 1);
        let mut node_points = None;
        let mut datapoints = 0;
        for (container, points) in output.groups {
            datapoints += points.len();
            match container {
                None => node_points = Some(points),
                Some(id) => {
                    let mut dims = node_dims.clone();
                    dims.container_id = id.to_string();
                    let mut b = MetricBatch {
                        source: Source::App,
                        container_id: Some(id),
                        dimensions: Arc::new(dims),
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
        let duration = started.elapsed();
        self.totals.flushes += 1;
        self.totals.last_duration = duration.as_secs_f64();
        self.totals.last_datapoints = datapoints as u64;
        self.self_metrics(&mut node_points);
        let mut node = MetricBatch {
            source: Source::App,
            container_id: None,
            dimensions: node_dims_arc,
            timestamp,
            points: node_points,
        };
        node.sort();
        batches.push(node);
        self.store.replace(Source::App, batches);
        FlushReport {
            datapoints,
            containers,
            duration,
        }
    }

    /// Corral's own metrics, published as node-level app metrics named `corral.*`.
    fn self_metrics(&self, out: &mut Vec<Datapoint>) {
        let mut push = |name: &str, tags: &[(&str, &str)], value: f64| {
            out.push(Datapoint::new(
                SeriesKey::new(name, tags.iter().copied()),
                Stat::Value,
                Unit::None,
                value,
            ));
        };
        let mut dropped = [0u64; Reject::ALL.len()];
        let (
            mut datagrams,
            mut truncated,
            mut lines,
            mut bad_rate,
            mut events,
            mut checks,
            mut series_dropped,
        ) = (0, 0, 0, 0, 0, 0, 0);
        for r in &self.statsd.receivers {
            let s = &r.stats;
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            datagrams += get(&s.datagrams);
            truncated += get(&s.truncated);
            lines += get(&s.lines);
            bad_rate += get(&s.bad_sample_rate);
            events += get(&s.events);
            checks += get(&s.service_checks);
            series_dropped += get(&s.series_dropped);
            for (d, a) in dropped.iter_mut().zip(s.dropped.iter()) {
                *d += get(a);
            }
            let endpoint = [("socket", r.endpoint.as_str())];
            push(
                "corral.statsd.kernel_drops",
                &endpoint,
                get(&s.kernel_drops) as f64,
            );
            push(
                "corral.statsd.receive_buffer_bytes",
                &endpoint,
                r.receive_buffer as f64,
            );
        }
        push("corral.statsd.datagrams_received", &[], datagrams as f64);
        push("corral.statsd.datagrams_truncated", &[], truncated as f64);
        push("corral.statsd.lines_received", &[], lines as f64);
        for (reason, n) in Reject::ALL.iter().zip(dropped) {
            push(
                "corral.statsd.lines_dropped",
                &[("reason", reason.as_str())],
                n as f64,
            );
        }
        push(
            "corral.statsd.lines_dropped",
            &[("reason", "series_limit")],
            series_dropped as f64,
        );
        push("corral.statsd.sample_rate_invalid", &[], bad_rate as f64);
        push("corral.statsd.events_received", &[], events as f64);
        push("corral.statsd.service_checks_received", &[], checks as f64);
        push(
            "corral.statsd.series",
            &[],
            self.agg_config.series.load(Ordering::Relaxed) as f64,
        );
        push(
            "corral.statsd.gauges",
            &[],
            self.flush_state.gauges() as f64,
        );
        push("corral.flush.count", &[], self.totals.flushes as f64);
        push(
            "corral.flush.duration_seconds",
            &[],
            self.totals.last_duration,
        );
        push(
            "corral.flush.datapoints",
            &[],
            self.totals.last_datapoints as f64,
        );
    }
}
