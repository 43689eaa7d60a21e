//! The librdkafka side of the Kafka sink: the producer's settings, its callbacks (delivery
//! reports and fatal errors, forwarded to the sink's worker), and what each error means.

use std::sync::mpsc::Sender;

use anyhow::{Context, Result};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};

use super::{Event, KafkaOptions};
use crate::config::KafkaCompression;
use crate::sinks::spool::RecordId;

pub(super) fn compression_name(c: KafkaCompression) -> &'static str {
    match c {
        KafkaCompression::None => "none",
        KafkaCompression::Gzip => "gzip",
        KafkaCompression::Snappy => "snappy",
        KafkaCompression::Lz4 => "lz4",
        KafkaCompression::Zstd => "zstd",
    }
}

pub(super) struct Opaque {
    pub generation: u64,
    pub id: RecordId,
    pub bytes: u64,
}

pub(super) struct Ctx {
    tx: Sender<Event>,
    generation: u64,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac}: {msg}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {msg}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{fac}: {msg}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            tracing::error!(target: "librdkafka", %error, reason, "fatal producer error");
            let _ = self.tx.send(Event::Fatal(self.generation));
        } else {
            tracing::warn!(target: "librdkafka", %error, reason, "kafka client error");
        }
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<Opaque>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Box<Opaque>) {
        let result = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        let _ = self.tx.send(Event::Delivery {
            generation: opaque.generation,
            id: opaque.id,
            bytes: opaque.bytes,
            result,
        });
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// Try again (from the spool) later.
    Retry,
    /// The brokers will never take this message: give it up.
    Drop,
    /// The producer is unusable: build a new one.
    Rebuild,
}

pub(super) fn classify(e: &KafkaError) -> (Failure, &'static str) {
    use RDKafkaErrorCode as C;
    let Some(code) = e.rdkafka_error_code() else {
        return (Failure::Retry, "other");
    };
    match code {
        C::MessageTimedOut => (Failure::Retry, "timed_out"),
        C::QueueFull => (Failure::Retry, "queue_full"),
        C::PurgeQueue | C::PurgeInflight => (Failure::Retry, "purged"),
        C::BrokerTransportFailure | C::AllBrokersDown => (Failure::Retry, "transport"),
        C::RequestTimedOut | C::OperationTimedOut => (Failure::Retry, "timed_out"),
        C::NotEnoughReplicas | C::NotEnoughReplicasAfterAppend => {
            (Failure::Retry, "not_enough_replicas")
        }
        C::Fatal => (Failure::Rebuild, "fatal"),
        C::ProducerFenced | C::Fenced => (Failure::Rebuild, "fenced"),
        C::InvalidProducerEpoch => (Failure::Rebuild, "invalid_producer_epoch"),
        C::OutOfOrderSequenceNumber => (Failure::Rebuild, "out_of_order_sequence"),
        C::UnknownProducerId => (Failure::Rebuild, "unknown_producer_id"),
        C::MessageSizeTooLarge | C::InvalidMessageSize => (Failure::Drop, "too_large"),
        C::InvalidRecord => (Failure::Drop, "invalid_record"),
        C::InvalidMessage => (Failure::Drop, "invalid_message"),
        C::UnknownTopic | C::UnknownTopicOrPartition => (Failure::Drop, "unknown_topic"),
        C::InvalidTopic => (Failure::Drop, "invalid_topic"),
        C::TopicAuthorizationFailed => (Failure::Drop, "not_authorized"),
        C::PolicyViolation => (Failure::Drop, "policy_violation"),
        _ => (Failure::Retry, "other"),
    }
}

/// A producer with Corral's settings: idempotent, acknowledged by all in-sync replicas. Its
/// reports go to `tx`, tagged with `generation`.
pub(super) fn create(
    opts: &KafkaOptions,
    tx: &Sender<Event>,
    generation: u64,
) -> Result<ThreadedProducer<Ctx>> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", opts.brokers.join(","))
        .set("client.id", "corral")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", compression_name(opts.compression))
        .set(
            "message.timeout.ms",
            opts.message_timeout.as_millis().to_string(),
        )
        .set(
            "request.timeout.ms",
            (opts.message_timeout.as_millis() / 2).max(1000).to_string(),
        )
        // A topic that does not exist is reported (and its messages dropped) before they
        // time out; retrying them would keep the window full of messages that cannot go.
        .set(
            "topic.metadata.propagation.max.ms",
            (opts.message_timeout.as_millis() / 2).max(1000).to_string(),
        )
        .set("linger.ms", "5")
        .set("reconnect.backoff.max.ms", "2000")
        .set("socket.keepalive.enable", "true");
    for (k, v) in &opts.extra {
        cfg.set(k, v);
    }
    cfg.set_log_level(RDKafkaLogLevel::Warning);
    let ctx = Ctx {
        tx: tx.clone(),
        generation,
    };
    cfg.create_with_context(ctx)
        .context("cannot create the Kafka producer")
}
