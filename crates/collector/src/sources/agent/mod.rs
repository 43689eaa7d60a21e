//! The Mesos agent source (CONTRACT §3, §4): container resource metrics and dimensions.
//!
//! Every `agent.poll_interval` the poller reads `/state` (the agent's id, frameworks,
//! executors, tasks, labels) and the containers' usage (`/containers`, or
//! `/monitor/statistics` on agents older than 1.0, or the `.json` spellings on very old
//! ones), then publishes one `Source::Container` batch per container, the dimensions of every
//! container (for its StatsD batches), the container of each IP, and which containers still
//! exist (for the per-container ports). A failed poll is counted and logged once per change
//! of reason; recovering agents and timeouts are retried with backoff.

mod client;
pub mod convert;
mod directory;
pub mod iam;
pub mod json;
pub mod types;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use corral_model::{Identity, Source};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use client::{AgentClient, FetchError};
pub use convert::{Converter, Counts, Snapshot, Usage};
pub use directory::ContainerDirectory;

use crate::attribution::Attribution;
use crate::config::Config;
use crate::outputs::Outputs;
use crate::reload::LiveDuration;
use crate::sources::container_ports::ContainerPortRegistry;
use crate::telemetry::{Counter, Gauge, Telemetry};

/// The first retry after a transient failure; doubled each time, capped at the interval.
const BACKOFF_START: Duration = Duration::from_millis(500);

const STATE_PATHS: [&str; 2] = ["/state", "/state.json"];
const USAGE_PATHS: [&str; 3] = [
    "/containers",
    "/monitor/statistics",
    "/monitor/statistics.json",
];

/// Starts the agent poller (when `agent.url` is set); it publishes `Source::Container`
/// batches, learns the node's mesos_id and keeps `attribution`, `directory` and the
/// container ports current, until `stop`. Container data is withdrawn when the agent has been
/// unreadable for `expiry` (`statsd.expiry`, read at each failure: a reload may change it).
/// Errors name the configuration key at fault.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    config: &Config,
    expiry: Arc<LiveDuration>,
    outputs: Arc<Outputs>,
    identity: Arc<Identity>,
    attribution: Arc<Attribution>,
    telemetry: Arc<Telemetry>,
    stop: watch::Receiver<bool>,
    directory: Arc<ContainerDirectory>,
    ports: Option<Arc<ContainerPortRegistry>>,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let Some(url) = config.agent.url.clone() else {
        return Ok(None);
    };
    let client = AgentClient::new(&config.agent, &url)?;
    let poller = Poller {
        client,
        url,
        interval: config.agent.poll_interval,
        stale_after: expiry,
        learn_agent_id: config.node.mesos_id.is_empty(),
        outputs,
        identity,
        attribution,
        directory,
        ports,
        metrics: Metrics::new(&telemetry),
        converter: Some(Converter::new()),
        state_path: 0,
        usage_path: 0,
        failing: None,
        last_success: None,
        holding_data: false,
    };
    tracing::info!(url = %poller.url, interval = ?poller.interval, auth = poller.client.auth_kind(), "agent source polling");
    Ok(Some(tokio::spawn(poller.run(stop))))
}

struct Metrics {
    polls: Arc<Counter>,
    errors: HashMap<&'static str, Arc<Counter>>,
    duration: Arc<Gauge>,
    containers: Arc<Gauge>,
    resets: Arc<Counter>,
    skipped_no_statistics: Arc<Counter>,
    skipped_unknown: Arc<Counter>,
    skipped_bad: Arc<Counter>,
    invalid_values: Arc<Counter>,
}

impl Metrics {
    fn new(t: &Telemetry) -> Self {
        let errors = [
            "unauthorized",
            "forbidden",
            "unavailable",
            "timeout",
            "http",
            "decode",
        ]
        .into_iter()
        .map(|r| (r, t.counter("corral.agent.poll_errors", &[("reason", r)])))
        .collect();
        let skipped = |reason| t.counter("corral.agent.containers_skipped", &[("reason", reason)]);
        Metrics {
            polls: t.counter("corral.agent.polls", &[]),
            errors,
            duration: t.gauge("corral.agent.poll_duration_seconds", &[]),
            containers: t.gauge("corral.agent.containers", &[]),
            resets: t.counter("corral.agent.counter_resets", &[]),
            skipped_no_statistics: skipped("no_statistics"),
            skipped_unknown: skipped("unknown_container"),
            skipped_bad: skipped("bad_entry"),
            invalid_values: t.counter("corral.agent.values_invalid", &[]),
        }
    }

    fn error(&self, reason: &'static str) {
        if let Some(c) = self.errors.get(reason) {
            c.inc();
        }
    }

    fn counts(&self, c: &Counts) {
        self.resets.add(c.counter_resets);
        self.skipped_no_statistics.add(c.no_statistics);
        self.skipped_unknown.add(c.unknown_container);
        self.skipped_bad.add(c.bad_entries);
        self.invalid_values.add(c.invalid_values);
    }
}

struct Poller {
    client: AgentClient,
    url: String,
    interval: Duration,
    /// Container data older than this is withdrawn while the agent cannot be read.
    stale_after: Arc<LiveDuration>,
    learn_agent_id: bool,
    outputs: Arc<Outputs>,
    identity: Arc<Identity>,
    attribution: Arc<Attribution>,
    directory: Arc<ContainerDirectory>,
    ports: Option<Arc<ContainerPortRegistry>>,
    metrics: Metrics,
    /// Taken while a conversion runs on the blocking pool.
    converter: Option<Converter>,
    /// Index into STATE_PATHS / USAGE_PATHS of what this agent answered last.
    state_path: usize,
    usage_path: usize,
    /// The reason of the current run of failures, to log once per change.
    failing: Option<&'static str>,
    last_success: Option<Instant>,
    holding_data: bool,
}

impl Poller {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut delay = Duration::ZERO;
        let mut backoff = BACKOFF_START.min(self.interval);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return,
            }
            let started = Instant::now();
            self.metrics.polls.inc();
            let result = tokio::select! {
                r = self.poll() => r,
                _ = stop.changed() => return,
            };
            self.metrics.duration.set(started.elapsed().as_secs_f64());
            match result {
                Ok(()) => {
                    backoff = BACKOFF_START.min(self.interval);
                    self.last_success = Some(Instant::now());
                    if let Some(reason) = self.failing.take() {
                        tracing::info!(url = %self.url, after = reason, "agent poll recovered");
                    }
                    delay = self.interval.saturating_sub(started.elapsed());
                }
                Err(e) => {
                    self.metrics.error(e.reason());
                    self.report(&e);
                    self.withdraw_if_stale();
                    delay = if e.transient() {
                        let d = backoff;
                        backoff = (backoff * 2).min(self.interval);
                        d
                    } else {
                        self.interval.saturating_sub(started.elapsed())
                    };
                }
            }
        }
    }

    /// Logs a failure when its reason differs from the previous one's.
    fn report(&mut self, e: &FetchError) {
        let reason = e.reason();
        if self.failing == Some(reason) {
            tracing::debug!(url = %self.url, reason, error = %e, "agent poll failed again");
            return;
        }
        self.failing = Some(reason);
        if e.transient() {
            tracing::warn!(url = %self.url, reason, error = %e, "agent poll failed; retrying with backoff");
        } else {
            tracing::error!(url = %self.url, reason, error = %e, "agent poll failed");
        }
    }

    fn withdraw_if_stale(&mut self) {
        if !self.holding_data {
            return;
        }
        let stale = self
            .last_success
            .is_none_or(|t| t.elapsed() >= self.stale_after.get());
        if stale {
            tracing::warn!(url = %self.url, "agent unreadable for longer than statsd.expiry: its container metrics are withdrawn");
            self.outputs.publish(Source::Container, Vec::new());
            self.directory.clear();
            self.attribution.set_ips(HashMap::new());
            self.holding_data = false;
        }
    }

    async fn poll(&mut self) -> Result<(), FetchError> {
        let state = fetch_first(&self.client, &STATE_PATHS, &mut self.state_path).await?;
        let usage = fetch_first(&self.client, &USAGE_PATHS, &mut self.usage_path).await?;
        let usage_path = self.usage_path;
        let converter = self.converter.take().unwrap_or_default();
        let learn = self.learn_agent_id;
        let identity = self.identity.clone();
        let outputs = self.outputs.clone();
        let directory = self.directory.clone();
        let attribution = self.attribution.clone();
        let ports = self.ports.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut converter = converter;
            let usage = match usage_path {
                0 => Usage::Containers(&usage),
                _ => Usage::Statistics(&usage),
            };
            let result = converter
                .convert(
                    &state,
                    usage,
                    identity.dimensions(),
                    learn,
                    SystemTime::now(),
                )
                .map(|snap| {
                    if let (true, Some(id)) = (learn, &snap.agent_id) {
                        identity.set_mesos_id(id);
                    }
                    let counts = snap.counts;
                    let containers = snap.batches.len();
                    if let Some(ports) = &ports {
                        let seen: HashSet<&str> = snap.directory.keys().map(|k| &**k).collect();
                        ports.seen(&seen);
                    }
                    // Dimensions and IPs first: once the batches show, StatsD is attributed.
                    directory.replace(snap.directory);
                    attribution.set_ips(snap.ips);
                    outputs.publish(Source::Container, snap.batches);
                    (counts, containers)
                });
            (converter, result)
        })
        .await;
        let (converter, result) =
            joined.map_err(|e| FetchError::Decode(format!("conversion failed: {e}")))?;
        self.converter = Some(converter);
        let (counts, containers) = result.map_err(|e| FetchError::Decode(e.to_string()))?;
        self.metrics.counts(&counts);
        self.metrics.containers.set(containers as f64);
        self.holding_data = true;
        if counts.counter_resets > 0 {
            tracing::debug!(resets = counts.counter_resets, "container counters reset");
        }
        Ok(())
    }
}

/// GETs the first of `paths` the agent serves, starting with the one that worked last time
/// (`*current`); a 404 moves on to the next spelling.
async fn fetch_first(
    client: &AgentClient,
    paths: &[&str],
    current: &mut usize,
) -> Result<Vec<u8>, FetchError> {
    let mut last = None;
    for i in 0..paths.len() {
        let idx = (*current + i) % paths.len();
        match client.get(paths[idx]).await {
            Ok(body) => {
                if idx != *current {
                    tracing::info!(
                        path = paths[idx],
                        "agent answers on an older endpoint; using it"
                    );
                    *current = idx;
                }
                return Ok(body);
            }
            Err(e @ FetchError::NotFound(_)) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| FetchError::Http("no endpoint to poll".into())))
}

#[cfg(test)]
mod tests;
