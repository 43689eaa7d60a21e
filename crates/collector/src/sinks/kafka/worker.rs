//! The Kafka sink's worker thread: encodes batches, appends them to the spool, keeps a
//! window of spooled records in flight, acts on delivery reports, and applies new settings.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use corral_model::MetricBatch;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use super::producer::{self, classify, Ctx, Failure, Opaque};
use super::{Event, KafkaOptions, Shared};
use crate::sinks::avro::{self, Chunk, Encoder};
use crate::sinks::spool::{RecordId, Spool, SpoolRecord};
use crate::telemetry::{Counter, Gauge, Telemetry};

/// The sink's self-metrics.
pub(super) struct Metrics {
    telemetry: Arc<Telemetry>,
    sent: Arc<Counter>,
    bytes_sent: Arc<Counter>,
    spooled_bytes: Arc<Gauge>,
    evicted_bytes: Arc<Counter>,
    evicted_messages: Arc<Counter>,
    queue_depth: Arc<Gauge>,
    rebuilds: Arc<Counter>,
    pub(super) spool_corrupt: Arc<Counter>,
    failed: HashMap<&'static str, Arc<Counter>>,
    dropped: HashMap<&'static str, Arc<Counter>>,
}

impl Metrics {
    pub(super) fn new(t: &Arc<Telemetry>) -> Self {
        Metrics {
            telemetry: t.clone(),
            sent: t.counter("corral.kafka.messages_sent", &[]),
            bytes_sent: t.counter("corral.kafka.bytes_sent", &[]),
            spooled_bytes: t.gauge("corral.kafka.spooled_bytes", &[]),
            evicted_bytes: t.counter("corral.kafka.spool_evicted_bytes", &[]),
            evicted_messages: t.counter("corral.kafka.spool_evicted_messages", &[]),
            queue_depth: t.gauge("corral.kafka.queue_depth", &[]),
            rebuilds: t.counter("corral.kafka.producer_rebuilds", &[]),
            spool_corrupt: t.counter("corral.kafka.spool_corrupt_records", &[]),
            failed: HashMap::new(),
            dropped: HashMap::new(),
        }
    }

    fn failed(&mut self, reason: &'static str) {
        let t = &self.telemetry;
        self.failed
            .entry(reason)
            .or_insert_with(|| t.counter("corral.kafka.messages_failed", &[("reason", reason)]))
            .inc();
    }

    fn dropped(&mut self, reason: &'static str) {
        let t = &self.telemetry;
        self.dropped
            .entry(reason)
            .or_insert_with(|| t.counter("corral.kafka.messages_dropped", &[("reason", reason)]))
            .inc();
    }
}

/// How long an old producer may go on with what it has in flight once new settings call for
/// a new one; what it has not delivered by then is sent again by the new producer.
const SWITCH_GRACE: Duration = Duration::from_secs(2);

/// A new producer waiting for the old one to finish what it has in flight.
struct Switch {
    producer: ThreadedProducer<Ctx>,
    generation: u64,
    until: Instant,
}

/// Owns the spool and the producer; runs on the sink's thread.
pub(super) struct Worker {
    opts: KafkaOptions,
    encoder: Encoder,
    rx: Receiver<Event>,
    tx: Sender<Event>,
    spool: Spool,
    producer: Option<ThreadedProducer<Ctx>>,
    /// The generation of `producer`: reports of other generations are ignored.
    generation: u64,
    /// The last generation handed out.
    last_generation: u64,
    switch: Option<Switch>,
    /// The next record to consider sending.
    cursor: RecordId,
    in_flight: HashSet<RecordId>,
    in_flight_bytes: u64,
    /// A delivery failed: stop sending; once nothing is in flight, restart from the oldest
    /// unacknowledged record.
    rewind: bool,
    /// Since a transient delivery failure, until the next success: one message in flight at a
    /// time. Messages sent together can fail apart (those queued before the brokers came
    /// back time out while later ones get through), so sending a window again before the
    /// brokers take one message would let newer messages land before older ones.
    probing: bool,
    /// The producer must be replaced (the reason).
    rebuild: Option<String>,
    resume_at: Option<Instant>,
    backoff: Duration,
    metrics: Metrics,
    shared: Arc<Shared>,
    shutdown: Option<(Instant, tokio::sync::oneshot::Sender<()>)>,
    chunks: Vec<Chunk>,
}

impl Worker {
    pub(super) fn new(
        opts: KafkaOptions,
        rx: Receiver<Event>,
        tx: Sender<Event>,
        spool: Spool,
        metrics: Metrics,
        shared: Arc<Shared>,
    ) -> Result<Worker> {
        metrics.spooled_bytes.set(spool.total_bytes() as f64);
        let mut w = Worker {
            encoder: Encoder::new(opts.routing.clone(), opts.max_message_bytes),
            backoff: opts.backoff,
            opts,
            rx,
            tx,
            spool,
            producer: None,
            generation: 0,
            last_generation: 0,
            switch: None,
            cursor: RecordId { seg: 0, idx: 0 },
            in_flight: HashSet::new(),
            in_flight_bytes: 0,
            rewind: false,
            probing: false,
            rebuild: None,
            resume_at: None,
            metrics,
            shared,
            shutdown: None,
            chunks: Vec::new(),
        };
        w.producer = Some(w.build_producer()?);
        Ok(w)
    }

    fn next_generation(&mut self) -> u64 {
        self.last_generation += 1;
        self.last_generation
    }

    /// A producer with the current settings, which becomes the current generation.
    fn build_producer(&mut self) -> Result<ThreadedProducer<Ctx>> {
        self.generation = self.next_generation();
        producer::create(&self.opts, &self.tx, self.generation)
    }

    pub(super) fn run(mut self) {
        loop {
            let timeout = self.wait_time();
            match self.rx.recv_timeout(timeout) {
                Ok(ev) => self.handle(ev),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(ev) = self.rx.try_recv() {
                self.handle(ev);
            }
            self.switch_when_ready();
            if self.rebuild.is_some() && self.resume_at.is_none_or(|t| Instant::now() >= t) {
                if let Some(reason) = self.rebuild.take() {
                    self.rebuild_producer(&reason);
                }
            }
            self.pump();
            self.update_gauges();
            if let Some((deadline, _)) = &self.shutdown {
                let idle = self.in_flight.is_empty() && self.spool.unacked() == 0;
                if idle || Instant::now() >= *deadline {
                    break;
                }
            }
        }
        self.finish();
    }

    fn wait_time(&self) -> Duration {
        let now = Instant::now();
        let mut t = Duration::from_millis(500);
        if let Some(at) = self.resume_at {
            t = t.min(at.saturating_duration_since(now));
        }
        if let Some(s) = &self.switch {
            t = t.min(s.until.saturating_duration_since(now));
        }
        if let Some((deadline, _)) = &self.shutdown {
            t = t.min(deadline.saturating_duration_since(now));
        }
        t
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Batches(batches) => {
                self.spool_batches(&batches);
                self.shared.queued_batches.fetch_sub(1, Ordering::Relaxed);
            }
            Event::Delivery {
                generation,
                id,
                bytes,
                result,
            } => {
                if generation != self.generation || !self.in_flight.remove(&id) {
                    // A report from a producer that has since been replaced: what it carried
                    // is re-sent by the new one.
                    return;
                }
                self.in_flight_bytes = self.in_flight_bytes.saturating_sub(bytes);
                match result {
                    Ok(()) => {
                        self.spool.ack(id);
                        self.probing = false;
                        self.metrics.sent.inc();
                        self.metrics.bytes_sent.add(bytes);
                        self.backoff = self.opts.backoff;
                    }
                    Err(e) => self.delivery_failed(id, &e),
                }
            }
            Event::Fatal(generation) => {
                if generation == self.generation && self.rebuild.is_none() {
                    let why = self
                        .producer
                        .as_ref()
                        .and_then(|p| p.client().fatal_error())
                        .map_or_else(|| "fatal error".to_string(), |(c, s)| format!("{c:?}: {s}"));
                    self.rebuild = Some(why);
                }
            }
            Event::InjectFatal => {
                if let Some(p) = &self.producer {
                    let reason = c"injected fatal error";
                    // SAFETY: the handle is alive (owned by `p`) and `reason` is NUL-terminated.
                    unsafe {
                        rdkafka::bindings::rd_kafka_test_fatal_error(
                            p.client().native_ptr(),
                            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_PRODUCER_FENCED,
                            reason.as_ptr(),
                        );
                    }
                }
            }
            Event::Reconfigure {
                opts,
                deadline,
                done,
            } => {
                let result = if Instant::now() > deadline {
                    Err(anyhow::anyhow!(
                        "the Kafka sink was too busy to take the new settings in time"
                    ))
                } else {
                    self.reconfigure(*opts)
                };
                if let Err(e) = &result {
                    tracing::error!(error = %format!("{e:#}"), "new Kafka settings refused; the sink keeps its settings");
                }
                let _ = done.send(result);
            }
            Event::Shutdown { deadline, done } => {
                self.shared.stopped.store(true, Ordering::Relaxed);
                self.shutdown = Some((deadline, done));
            }
        }
    }

    /// Takes new settings. Everything that can fail comes first: on an error nothing changed.
    fn reconfigure(&mut self, new: KafkaOptions) -> Result<()> {
        if new == self.opts {
            return Ok(());
        }
        if new.spool_dir != self.opts.spool_dir {
            bail!(
                "the Kafka spool directory cannot change from {} to {} while the sink runs",
                self.opts.spool_dir.display(),
                new.spool_dir.display()
            );
        }
        let switch = if self.opts.needs_new_producer(&new) {
            let generation = self.next_generation();
            let producer = producer::create(&new, &self.tx, generation)?;
            Some(Switch {
                producer,
                generation,
                until: Instant::now() + SWITCH_GRACE,
            })
        } else {
            None
        };
        tracing::info!(
            brokers = %new.brokers.join(","),
            topic_prefix = %new.routing.topic_prefix,
            single_topic = new.routing.single_topic.as_deref().unwrap_or(""),
            avro_codec = crate::sinks::avro::codec_name(new.avro_codec),
            compression = producer::compression_name(new.compression),
            spool_max_bytes = new.spool_max_bytes,
            new_producer = switch.is_some(),
            "Kafka settings changed"
        );
        if new.routing != self.opts.routing || new.max_message_bytes != self.opts.max_message_bytes
        {
            self.encoder = Encoder::new(new.routing.clone(), new.max_message_bytes);
        }
        if (new.spool_max_bytes, new.segment_bytes)
            != (self.opts.spool_max_bytes, self.opts.segment_bytes)
        {
            let ev = self
                .spool
                .set_bounds(new.spool_max_bytes, new.segment_bytes);
            if ev.segments > 0 {
                tracing::error!(
                    bytes = ev.bytes,
                    messages = ev.messages,
                    datapoints = ev.datapoints,
                    spool_max_bytes = new.spool_max_bytes,
                    "Kafka spool over its new bound: evicted the oldest messages"
                );
                self.metrics.evicted_bytes.add(ev.bytes);
                self.metrics.evicted_messages.add(ev.messages);
            }
        }
        if new.backoff != self.opts.backoff {
            self.backoff = new.backoff;
        }
        if let Some(s) = switch {
            tracing::info!(
                unacknowledged = self.spool.unacked(),
                in_flight = self.in_flight.len(),
                "new Kafka producer built; it takes over once the old one has finished what it has in flight"
            );
            // A switch still waiting is superseded; its producer never sent anything.
            self.switch = Some(s);
        }
        self.opts = new;
        Ok(())
    }

    /// Puts a waiting new producer in place once the old one has nothing in flight, has
    /// failed, or has had its grace period.
    fn switch_when_ready(&mut self) {
        let Some(s) = &self.switch else {
            return;
        };
        let ready = self.in_flight.is_empty()
            || self.producer.is_none()
            || self.rewind
            || self.rebuild.is_some()
            || Instant::now() >= s.until;
        if !ready {
            return;
        }
        let Some(s) = self.switch.take() else {
            return;
        };
        let resent = self.in_flight.len();
        // The current generation changes first, so that the reports the old producer gives
        // while it is dropped (purged messages) are ignored: those records are sent again.
        self.generation = s.generation;
        self.producer = None;
        self.producer = Some(s.producer);
        self.in_flight.clear();
        self.in_flight_bytes = 0;
        self.rewind = false;
        self.rebuild = None;
        self.resume_at = None;
        self.backoff = self.opts.backoff;
        self.cursor = RecordId { seg: 0, idx: 0 };
        tracing::info!(
            brokers = %self.opts.brokers.join(","),
            unacknowledged = self.spool.unacked(),
            resent_from_in_flight = resent,
            "switched to the new Kafka producer; it sends everything unacknowledged"
        );
    }

    fn delivery_failed(&mut self, id: RecordId, e: &KafkaError) {
        let (what, reason) = classify(e);
        self.metrics.failed(reason);
        match what {
            Failure::Drop => {
                tracing::error!(error = %e, reason, "Kafka rejected a message; dropping it");
                self.metrics.dropped(reason);
                self.spool.ack(id);
            }
            Failure::Retry => {
                tracing::warn!(error = %e, reason, "Kafka delivery failed; will retry from the spool");
                self.rewind = true;
                self.probing = true;
            }
            Failure::Rebuild => {
                if self.rebuild.is_none() {
                    self.rebuild = Some(e.to_string());
                }
            }
        }
    }

    fn rebuild_producer(&mut self, reason: &str) {
        tracing::error!(
            reason,
            unacknowledged = self.spool.unacked(),
            "Kafka producer failed fatally; building a new one"
        );
        self.metrics.rebuilds.inc();
        // Dropping purges what the old producer still held; its reports are ignored (old
        // generation) and the records are sent again from the spool.
        self.producer = None;
        self.in_flight.clear();
        self.in_flight_bytes = 0;
        self.rewind = false;
        self.cursor = RecordId { seg: 0, idx: 0 };
        match self.build_producer() {
            Ok(p) => self.producer = Some(p),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot rebuild the Kafka producer");
                self.rebuild = Some(reason.to_string());
                self.resume_at = Some(Instant::now() + self.opts.max_backoff);
            }
        }
    }

    fn spool_batches(&mut self, batches: &[Arc<MetricBatch>]) {
        self.chunks.clear();
        for b in batches {
            self.encoder.encode_batch(b, &mut self.chunks);
        }
        let chunks = std::mem::take(&mut self.chunks);
        for chunk in &chunks {
            let payload = match avro::ocf_file(self.opts.avro_codec, &avro::random_marker(), chunk)
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot encode a MetricList message");
                    self.metrics.failed("encode");
                    self.metrics.dropped("encode");
                    continue;
                }
            };
            let rec = SpoolRecord {
                topic: chunk.kafka_topic.clone(),
                key: chunk.key.clone(),
                datapoints: chunk.datapoints as u32,
                payload,
            };
            match self.spool.append(&rec) {
                Ok((_, ev)) => {
                    if ev.segments > 0 {
                        tracing::error!(
                            bytes = ev.bytes,
                            messages = ev.messages,
                            datapoints = ev.datapoints,
                            spool_max_bytes = self.opts.spool_max_bytes,
                            "Kafka spool full: evicted the oldest messages"
                        );
                        self.metrics.evicted_bytes.add(ev.bytes);
                        self.metrics.evicted_messages.add(ev.messages);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, dir = %self.spool.dir().display(), "cannot write to the Kafka spool; message lost");
                    self.metrics.failed("spool_write");
                    self.metrics.dropped("spool_write");
                }
            }
        }
        self.chunks = chunks;
        self.shared
            .pending
            .store(self.spool.unacked(), Ordering::Relaxed);
    }

    /// Sends spooled records while the window has room.
    fn pump(&mut self) {
        if self.rewind {
            if !self.in_flight.is_empty() {
                return;
            }
            self.rewind = false;
            self.cursor = RecordId { seg: 0, idx: 0 };
            self.resume_at = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(self.opts.max_backoff);
        }
        if let Some(at) = self.resume_at {
            if Instant::now() < at {
                return;
            }
            self.resume_at = None;
        }
        if self.switch.is_some() {
            // The old producer only finishes what it has in flight.
            return;
        }
        let Some(producer) = &self.producer else {
            return;
        };
        let window = if self.probing {
            1
        } else {
            self.opts.max_in_flight
        };
        while self.in_flight.len() < window && self.in_flight_bytes < self.opts.max_in_flight_bytes
        {
            let Some(id) = self.spool.next_unacked(self.cursor) else {
                break;
            };
            if self.in_flight.contains(&id) {
                self.cursor = RecordId {
                    seg: id.seg,
                    idx: id.idx + 1,
                };
                continue;
            }
            let rec = match self.spool.read(id) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read a spooled Kafka message; skipping it");
                    self.metrics.failed("spool_read");
                    self.metrics.dropped("spool_read");
                    self.metrics.spool_corrupt.inc();
                    self.spool.ack(id);
                    continue;
                }
            };
            let bytes = rec.payload.len() as u64;
            let opaque = Box::new(Opaque {
                generation: self.generation,
                id,
                bytes,
            });
            let mut record = BaseRecord::with_opaque_to(&rec.topic, opaque).payload(&rec.payload);
            if let Some(k) = &rec.key {
                record = record.key(k.as_str());
            }
            match producer.send(record) {
                Ok(()) => {
                    self.in_flight.insert(id);
                    self.in_flight_bytes += bytes;
                    self.cursor = RecordId {
                        seg: id.seg,
                        idx: id.idx + 1,
                    };
                }
                Err((e, _)) => {
                    let (what, reason) = classify(&e);
                    match what {
                        Failure::Drop => {
                            tracing::error!(error = %e, topic = %rec.topic, "Kafka refused a message; dropping it");
                            self.metrics.failed(reason);
                            self.metrics.dropped(reason);
                            self.spool.ack(id);
                        }
                        Failure::Rebuild => {
                            self.rebuild = Some(e.to_string());
                            break;
                        }
                        Failure::Retry => {
                            // Queue full: the records stay spooled until reports make room.
                            if reason != "queue_full" {
                                self.metrics.failed(reason);
                                self.resume_at = Some(Instant::now() + self.backoff);
                            }
                            break;
                        }
                    }
                }
            }
        }
    }

    fn update_gauges(&mut self) {
        self.metrics
            .spooled_bytes
            .set(self.spool.total_bytes() as f64);
        self.metrics.queue_depth.set(self.in_flight.len() as f64);
        self.shared
            .pending
            .store(self.spool.unacked(), Ordering::Relaxed);
    }

    fn finish(mut self) {
        // Anything still in flight stays in the spool for the next start.
        self.producer = None;
        while let Ok(ev) = self.rx.try_recv() {
            if let Event::Batches(b) = ev {
                self.spool_batches(&b);
                self.shared.queued_batches.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if let Err(e) = self.spool.checkpoint() {
            tracing::warn!(error = %e, "cannot write the Kafka spool checkpoint");
        }
        self.update_gauges();
        if self.spool.unacked() > 0 {
            tracing::warn!(
                messages = self.spool.unacked(),
                bytes = self.spool.total_bytes(),
                "Kafka sink stopped with undelivered messages; they stay spooled for the next start"
            );
        } else {
            tracing::info!("Kafka sink stopped; everything delivered");
        }
        if let Some((_, done)) = self.shutdown.take() {
            let _ = done.send(());
        }
    }
}
