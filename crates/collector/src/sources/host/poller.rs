//! The poll loop: reads, accounts for failing readers, publishes the node batch.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use corral_model::{Datapoint, Identity, MetricBatch, Source};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::error::ReadError;
use super::fs::{self, FsReading, Mount, StatFs};
use super::reader::{HostReader, Reader, Reading};
use crate::outputs::Outputs;
use crate::telemetry::{Counter, Telemetry};

/// How long the `statvfs` of all mounts may take before the filesystem metrics of a poll are
/// given up (the call itself cannot be interrupted).
pub const STATVFS_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Poller {
    reader: Arc<Mutex<HostReader>>,
    statfs: StatFs,
    outputs: Arc<Outputs>,
    identity: Arc<Identity>,
    errors: HashMap<Reader, Arc<Counter>>,
    /// Readers whose failure has been logged; logged again only after they recover.
    failing: HashSet<Reader>,
    failing_mounts: HashSet<PathBuf>,
    /// A `statvfs` task that outlived its poll; no other starts while it runs.
    statvfs_pending: Option<JoinHandle<FsReading>>,
    statvfs_timeout: Duration,
}

impl Poller {
    pub fn new(
        reader: HostReader,
        outputs: Arc<Outputs>,
        identity: Arc<Identity>,
        telemetry: &Telemetry,
    ) -> Self {
        let errors = Reader::ALL
            .iter()
            .map(|&r| {
                let c = telemetry.counter("corral.host.read_errors", &[("reader", r.as_str())]);
                (r, c)
            })
            .collect();
        Poller {
            statfs: reader.statfs(),
            reader: Arc::new(Mutex::new(reader)),
            outputs,
            identity,
            errors,
            failing: HashSet::new(),
            failing_mounts: HashSet::new(),
            statvfs_pending: None,
            statvfs_timeout: STATVFS_TIMEOUT,
        }
    }

    pub fn with_statvfs_timeout(mut self, timeout: Duration) -> Self {
        self.statvfs_timeout = timeout;
        self
    }

    /// Polls now, then every `every`, until `stop` turns true (or its sender is gone).
    pub async fn run(mut self, every: Duration, mut stop: watch::Receiver<bool>) {
        tracing::info!(
            interval = %humantime::format_duration(every),
            "polling host metrics"
        );
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                biased;
                () = &mut stopped => break,
                _ = ticker.tick() => {}
            }
            tokio::select! {
                biased;
                () = &mut stopped => break,
                () = self.poll() => {}
            }
        }
    }

    /// Reads everything once and publishes the node batch (what failed is left out of it).
    pub async fn poll(&mut self) {
        let timestamp = SystemTime::now();
        let reader = self.reader.clone();
        let proc = match tokio::task::spawn_blocking(move || reader.lock().read_proc()).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "host metrics poll failed");
                return;
            }
        };
        let mut reading = Reading {
            results: proc.results,
            ..Reading::default()
        };
        let fs = match proc.mounts {
            Ok(mounts) => self.stat_mounts(mounts).await.map(|r| {
                reading.statvfs_ok = r.ok;
                reading.statvfs_failed = r.failed;
                r.points
            }),
            Err(e) => Err(e),
        };
        reading.results.push((Reader::Filesystem, fs));
        let points = self.account(reading);
        let mut batch = MetricBatch {
            source: Source::Node,
            container_id: None,
            dimensions: Arc::new(self.identity.dimensions()),
            timestamp,
            points,
        };
        batch.sort();
        self.outputs.publish(Source::Node, vec![batch]);
    }

    async fn stat_mounts(&mut self, mounts: Vec<Mount>) -> Result<FsReading, ReadError> {
        if let Some(pending) = &self.statvfs_pending {
            if !pending.is_finished() {
                return Err(ReadError::StatvfsBlocked);
            }
            self.statvfs_pending = None;
        }
        let statfs = self.statfs.clone();
        let mut task = tokio::task::spawn_blocking(move || fs::stat_mounts(&mounts, &statfs));
        match tokio::time::timeout(self.statvfs_timeout, &mut task).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(ReadError::Task(e.to_string())),
            Err(_) => {
                self.statvfs_pending = Some(task);
                Err(ReadError::StatvfsTimeout(self.statvfs_timeout))
            }
        }
    }

    /// Counts and logs (once per failure streak) what failed; returns what worked.
    fn account(&mut self, reading: Reading) -> Vec<Datapoint> {
        let mut points = Vec::new();
        for (reader, result) in reading.results {
            match result {
                Ok(p) => {
                    if self.failing.remove(&reader) {
                        tracing::info!(reader = reader.as_str(), "host metrics reader recovered");
                    }
                    points.extend(p);
                }
                Err(e) => {
                    self.count_error(reader);
                    if self.failing.insert(reader) {
                        tracing::warn!(
                            reader = reader.as_str(),
                            error = %e,
                            "host metrics reader failed; its metrics are left out until it recovers"
                        );
                    }
                }
            }
        }
        for path in &reading.statvfs_ok {
            if self.failing_mounts.remove(path) {
                tracing::info!(path = %path.display(), "statvfs works again");
            }
        }
        for (path, e) in &reading.statvfs_failed {
            self.count_error(Reader::Statvfs);
            if self.failing_mounts.insert(path.clone()) {
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "statvfs failed; the filesystem is left out until it works"
                );
            }
        }
        if !reading.statvfs_ok.is_empty() || !reading.statvfs_failed.is_empty() {
            // Forget unmounted filesystems.
            self.failing_mounts
                .retain(|p| reading.statvfs_failed.iter().any(|(f, _)| f == p));
        }
        points
    }

    fn count_error(&self, reader: Reader) {
        if let Some(c) = self.errors.get(&reader) {
            c.inc();
        }
    }
}
