//! The Kafka sink: batches become Avro `MetricList` container files, are appended to the spool,
//! and are produced from there in order; a message leaves the spool only once its delivery
//! report says the brokers have it.
//!
//! One worker thread owns the spool and the producer. It encodes what `submit` hands it, appends
//! it to the spool, and keeps a bounded window of spooled records in flight. Delivery reports
//! (from librdkafka's polling thread) come back over the same channel. A failed delivery stops
//! sending until the window drains, then sending resumes, after a backoff, from the oldest
//! record not yet acknowledged, so order is kept and nothing is skipped (duplicates are possible:
//! delivery is at least once). A fatal producer error (e.g. the idempotent producer was fenced)
//! drops the producer and builds a new one, which re-sends everything unacknowledged.
//!
//! [`KafkaSink::reconfigure`] applies new settings (a configuration reload) between two events
//! of the worker. Routing, the Avro codec and the message size apply to batches handed over
//! from then on; a new spool bound applies at once. New brokers or producer properties need a
//! new producer: it is built first, so settings librdkafka refuses leave the sink as it was.
//! The old producer may finish what it has in flight for a short while, then it is dropped and
//! the new one sends everything still unacknowledged. Spooled messages keep the topic, key and
//! codec they were encoded with: a backlog goes to the new brokers under the topics of the
//! flushes it holds, as it would after a restart.

mod producer;
mod worker;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use corral_model::MetricBatch;
use parking_lot::Mutex;
use rdkafka::error::KafkaError;

use super::avro::{self, Routing};
use super::spool::{RecordId, Spool};
use crate::config::{AvroCodec, KafkaCompression, KafkaConfig};
use crate::outputs::Sink;
use crate::telemetry::Telemetry;
use worker::{Metrics, Worker};

/// How long a reconfiguration may wait for the worker to take it.
const RECONFIGURE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the Kafka sink; [`KafkaOptions::from_config`] gives the production ones.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaOptions {
    pub brokers: Vec<String>,
    pub routing: Routing,
    pub avro_codec: AvroCodec,
    pub compression: KafkaCompression,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub segment_bytes: u64,
    pub max_message_bytes: usize,
    /// librdkafka `message.timeout.ms`: how long it retries one message before reporting it
    /// failed (the sink then re-sends it from the spool).
    pub message_timeout: Duration,
    /// Records in flight at most.
    pub max_in_flight: usize,
    pub max_in_flight_bytes: u64,
    /// First wait after a failure; doubles up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Extra librdkafka properties (tests).
    pub extra: Vec<(String, String)>,
}

impl KafkaOptions {
    pub fn from_config(k: &KafkaConfig, data_dir: &std::path::Path) -> Self {
        KafkaOptions {
            brokers: k.brokers.clone(),
            routing: Routing {
                topic_prefix: k.topic_prefix.clone(),
                single_topic: k.single_topic.clone().filter(|t| !t.is_empty()),
            },
            avro_codec: k.avro_codec,
            compression: k.compression,
            spool_dir: data_dir.join("spool"),
            spool_max_bytes: k.spool_max_bytes,
            segment_bytes: (k.spool_max_bytes / 8).clamp(64 << 10, 64 << 20),
            max_message_bytes: avro::DEFAULT_MAX_MESSAGE_BYTES,
            message_timeout: Duration::from_secs(10),
            max_in_flight: 1000,
            max_in_flight_bytes: 64 << 20,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            extra: Vec::new(),
        }
    }

    /// Whether going from `self` to `other` needs a new producer: other brokers or other
    /// producer properties.
    pub fn needs_new_producer(&self, other: &KafkaOptions) -> bool {
        self.brokers != other.brokers
            || self.compression != other.compression
            || self.message_timeout != other.message_timeout
            || self.extra != other.extra
    }
}

pub(super) enum Event {
    Batches(Vec<Arc<MetricBatch>>),
    Delivery {
        generation: u64,
        id: RecordId,
        bytes: u64,
        result: Result<(), KafkaError>,
    },
    /// A fatal error was raised by the producer of this generation.
    Fatal(u64),
    InjectFatal,
    /// New settings; refused when they arrive after `deadline` (the caller gave up).
    Reconfigure {
        opts: Box<KafkaOptions>,
        deadline: Instant,
        done: tokio::sync::oneshot::Sender<Result<()>>,
    },
    Shutdown {
        deadline: Instant,
        done: tokio::sync::oneshot::Sender<()>,
    },
}

#[derive(Default)]
pub(super) struct Shared {
    /// Batches handed over and not yet spooled, plus records not yet acknowledged.
    pub(super) pending: AtomicU64,
    pub(super) queued_batches: AtomicU64,
    pub(super) stopped: AtomicBool,
}

pub struct KafkaSink {
    tx: Mutex<Sender<Event>>,
    shared: Arc<Shared>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl KafkaSink {
    /// Opens the spool (resuming what an earlier run left), builds the producer and starts
    /// the worker thread.
    pub fn start(opts: KafkaOptions, telemetry: &Arc<Telemetry>) -> Result<Arc<KafkaSink>> {
        let (spool, report) =
            Spool::open(&opts.spool_dir, opts.spool_max_bytes, opts.segment_bytes).with_context(
                || {
                    format!(
                        "cannot open the Kafka spool in {}",
                        opts.spool_dir.display()
                    )
                },
            )?;
        let metrics = Metrics::new(telemetry);
        for problem in &report.corrupt {
            tracing::error!(problem = %problem, "corrupt Kafka spool data skipped");
            metrics.spool_corrupt.inc();
        }
        if report.records > 0 {
            tracing::info!(
                records = report.records,
                bytes = report.bytes,
                segments = report.segments,
                "resuming the Kafka spool"
            );
        }
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        shared.pending.store(spool.unacked(), Ordering::Relaxed);
        let worker = Worker::new(opts, rx, tx.clone(), spool, metrics, shared.clone())?;
        let handle = std::thread::Builder::new()
            .name("corral-kafka".into())
            .spawn(move || {
                crate::priority::background();
                worker.run()
            })
            .context("cannot start the Kafka sink thread")?;
        Ok(Arc::new(KafkaSink {
            tx: Mutex::new(tx),
            shared,
            worker: Mutex::new(Some(handle)),
        }))
    }

    /// Batches handed over and not yet spooled plus messages not yet acknowledged.
    pub fn pending(&self) -> u64 {
        self.shared.pending.load(Ordering::Relaxed)
            + self.shared.queued_batches.load(Ordering::Relaxed)
    }

    /// Waits until nothing is pending, at most `timeout`; whether that happened.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.pending() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Applies new settings (see the module docs). On an error, such as a property librdkafka
    /// refuses or a different spool directory, the sink keeps running as it was.
    pub async fn reconfigure(&self, opts: KafkaOptions) -> Result<()> {
        if self.shared.stopped.load(Ordering::Relaxed) {
            bail!("the Kafka sink is stopping");
        }
        let (done, answer) = tokio::sync::oneshot::channel();
        self.tx
            .lock()
            .send(Event::Reconfigure {
                opts: Box::new(opts),
                deadline: Instant::now() + RECONFIGURE_TIMEOUT,
                done,
            })
            .map_err(|_| anyhow!("the Kafka sink has stopped"))?;
        // The worker refuses the change once the deadline has passed, so a timeout here
        // means that nothing changed.
        match tokio::time::timeout(RECONFIGURE_TIMEOUT + Duration::from_secs(2), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => bail!("the Kafka sink stopped before taking the new settings"),
            Err(_) => {
                bail!("the Kafka sink did not take the new settings within {RECONFIGURE_TIMEOUT:?}")
            }
        }
    }

    /// Raises a fatal error in the current producer through librdkafka's test hook, as a
    /// fenced idempotent producer would (tests of the rebuild path).
    pub fn inject_fatal_error(&self) {
        let _ = self.tx.lock().send(Event::InjectFatal);
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        // Without a shutdown the worker would keep running; stop it now, leaving what is
        // undelivered in the spool.
        if self.worker.get_mut().is_some() {
            let (done, _) = tokio::sync::oneshot::channel();
            let _ = self.tx.get_mut().send(Event::Shutdown {
                deadline: Instant::now(),
                done,
            });
        }
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn submit(&self, batches: &[Arc<MetricBatch>]) {
        if self.shared.stopped.load(Ordering::Relaxed) {
            return;
        }
        self.shared.queued_batches.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.lock().send(Event::Batches(batches.to_vec()));
    }

    fn shutdown(&self, deadline: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        // Leave time to drop the producer and write the spool checkpoint.
        let deadline = Instant::now() + deadline.mul_f64(0.9);
        let _ = self.tx.lock().send(Event::Shutdown {
            deadline,
            done: done_tx,
        });
        Box::pin(async move {
            let _ = done_rx.await;
            let handle = self.worker.lock().take();
            if let Some(h) = handle {
                let _ = tokio::task::spawn_blocking(move || h.join()).await;
            }
        })
    }
}
