//! What a configuration reload (SIGHUP) changes in a running Corral, and what it cannot.
//!
//! A reload applies [`RELOADABLE`] keys in place. Every other key that changed is reported as
//! needing a restart and keeps its running value, so it is reported again at the next reload
//! until Corral restarts.
//!
//! Every `kafka.*` key is reloadable. The sink takes new settings without losing what it holds:
//! new brokers or a new compression get a new producer, which sends everything the spool holds
//! unacknowledged; the topic settings and the Avro codec apply to flushes from the reload on,
//! while spooled messages keep the topic and codec they were encoded with; a new
//! `spool_max_bytes` applies at once. When `kafka.brokers` goes from empty to set or back, the
//! sink switches between Kafka and Avro files (see [`crate::sinks`]). Settings the sink refuses
//! make the whole reload fail: nothing is applied, and the running configuration stays.
//!
//! `statsd.expiry` applies to StatsD series, the per-container ports and the agent source.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::{
    AgentAuth, AgentConfig, ApiConfig, Config, KafkaConfig, NodeConfig, StatsdConfig,
};

/// A duration that a reload changes while other threads read it, such as `statsd.expiry` for
/// the per-container ports and the agent source. Whole nanoseconds, up to about 584 years.
#[derive(Debug)]
pub struct LiveDuration(AtomicU64);

impl LiveDuration {
    pub fn new(d: Duration) -> Self {
        LiveDuration(AtomicU64::new(Self::nanos(d)))
    }

    fn nanos(d: Duration) -> u64 {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, d: Duration) {
        self.0.store(Self::nanos(d), Ordering::Relaxed);
    }
}

/// Keys a reload applies without a restart.
pub const RELOADABLE: &[&str] = &[
    "log_level",
    "statsd.flush_interval",
    "statsd.percentiles",
    "statsd.gauge_sign",
    "statsd.expiry",
    "kafka.brokers",
    "kafka.topic_prefix",
    "kafka.single_topic",
    "kafka.avro_codec",
    "kafka.compression",
    "kafka.spool_max_bytes",
];

/// What a reload does with a new configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Changed keys applied now.
    pub apply: Vec<&'static str>,
    /// Changed keys that keep their running value until a restart.
    pub restart: Vec<&'static str>,
    /// What runs after the reload: `running` with the reloadable values of the new
    /// configuration.
    pub next: Config,
}

/// Compares the running configuration with a newly loaded one.
pub fn plan(running: &Config, new: &Config) -> Plan {
    let (apply, restart) = changed_keys(running, new)
        .into_iter()
        .partition(|k| RELOADABLE.contains(k));
    let mut next = running.clone();
    next.log_level.clone_from(&new.log_level);
    next.statsd.flush_interval = new.statsd.flush_interval;
    next.statsd.percentiles.clone_from(&new.statsd.percentiles);
    next.statsd.gauge_sign = new.statsd.gauge_sign;
    next.statsd.expiry = new.statsd.expiry;
    next.kafka.clone_from(&new.kafka);
    Plan {
        apply,
        restart,
        next,
    }
}

/// The dotted keys whose values differ, in file order.
pub fn changed_keys(a: &Config, b: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut cmp = |key: &'static str, same: bool| {
        if !same && !out.contains(&key) {
            out.push(key);
        }
    };
    // Destructured without `..` so that a new field cannot be forgotten here.
    let Config {
        data_dir,
        log_level,
        log_format,
        node,
        statsd,
        agent,
        api,
        kafka,
    } = a;
    cmp("data_dir", *data_dir == b.data_dir);
    cmp("log_level", *log_level == b.log_level);
    cmp("log_format", *log_format == b.log_format);

    let NodeConfig {
        mesos_id,
        cluster_id,
        hostname,
        poll_interval,
    } = node;
    cmp("node.mesos_id", *mesos_id == b.node.mesos_id);
    cmp("node.cluster_id", *cluster_id == b.node.cluster_id);
    cmp("node.hostname", *hostname == b.node.hostname);
    cmp("node.poll_interval", *poll_interval == b.node.poll_interval);

    let StatsdConfig {
        listen,
        unix_socket,
        flush_interval,
        percentiles,
        gauge_sign,
        container_listen_host,
        container_port_range,
        expiry,
        receive_threads,
        receive_buffer,
        max_series,
    } = statsd;
    let s = &b.statsd;
    cmp("statsd.listen", *listen == s.listen);
    cmp("statsd.unix_socket", *unix_socket == s.unix_socket);
    cmp("statsd.flush_interval", *flush_interval == s.flush_interval);
    cmp("statsd.percentiles", *percentiles == s.percentiles);
    cmp("statsd.gauge_sign", *gauge_sign == s.gauge_sign);
    cmp(
        "statsd.container_listen_host",
        *container_listen_host == s.container_listen_host,
    );
    cmp(
        "statsd.container_port_range",
        *container_port_range == s.container_port_range,
    );
    cmp("statsd.expiry", *expiry == s.expiry);
    cmp(
        "statsd.receive_threads",
        *receive_threads == s.receive_threads,
    );
    cmp("statsd.receive_buffer", *receive_buffer == s.receive_buffer);
    cmp("statsd.max_series", *max_series == s.max_series);

    let AgentConfig {
        url,
        poll_interval,
        timeout,
        auth,
        ca_certificate,
    } = agent;
    cmp("agent.url", *url == b.agent.url);
    cmp(
        "agent.poll_interval",
        *poll_interval == b.agent.poll_interval,
    );
    cmp("agent.timeout", *timeout == b.agent.timeout);
    if *auth != b.agent.auth {
        let either = |f: fn(&AgentAuth) -> bool| f(auth) || f(&b.agent.auth);
        cmp(
            "agent.basic",
            !either(|a| matches!(a, AgentAuth::Basic { .. })),
        );
        cmp(
            "agent.iam_config",
            !either(|a| matches!(a, AgentAuth::IamConfig(_))),
        );
    }
    cmp(
        "agent.ca_certificate",
        *ca_certificate == b.agent.ca_certificate,
    );

    let ApiConfig { listen } = api;
    cmp("api.listen", *listen == b.api.listen);

    let KafkaConfig {
        brokers,
        topic_prefix,
        single_topic,
        avro_codec,
        compression,
        spool_max_bytes,
    } = kafka;
    let k = &b.kafka;
    cmp("kafka.brokers", *brokers == k.brokers);
    cmp("kafka.topic_prefix", *topic_prefix == k.topic_prefix);
    cmp("kafka.single_topic", *single_topic == k.single_topic);
    cmp("kafka.avro_codec", *avro_codec == k.avro_codec);
    cmp("kafka.compression", *compression == k.compression);
    cmp(
        "kafka.spool_max_bytes",
        *spool_max_bytes == k.spool_max_bytes,
    );
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{AvroCodec, GaugeSign, KafkaCompression, LogFormat};

    fn base() -> Config {
        let mut c = Config::load(None, Vec::new(), &Default::default()).expect("defaults");
        c.data_dir = "/tmp/corral-reload-test".into();
        c
    }

    #[test]
    fn identical_configurations_change_nothing() {
        let p = plan(&base(), &base());
        assert!(p.apply.is_empty() && p.restart.is_empty(), "{p:?}");
        assert_eq!(p.next, base());
    }

    #[test]
    fn reloadable_keys_are_applied_and_others_kept() {
        let running = base();
        let mut new = base();
        new.log_level = "debug".into();
        new.statsd.flush_interval = Duration::from_secs(2);
        new.statsd.percentiles = vec![42.0];
        new.statsd.gauge_sign = GaugeSign::Absolute;
        new.statsd.expiry = Duration::from_secs(60);
        new.statsd.listen = vec!["127.0.0.1:9125".parse().unwrap()];
        new.log_format = LogFormat::Json;
        new.kafka.brokers = vec!["k:9092".into()];
        new.agent.auth = AgentAuth::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        new.data_dir = "/tmp/elsewhere".into();
        let p = plan(&running, &new);
        assert_eq!(
            p.apply,
            [
                "log_level",
                "statsd.flush_interval",
                "statsd.percentiles",
                "statsd.gauge_sign",
                "statsd.expiry",
                "kafka.brokers"
            ]
        );
        assert_eq!(
            p.restart,
            ["data_dir", "log_format", "statsd.listen", "agent.basic"]
        );
        assert_eq!(p.next.log_level, "debug");
        assert_eq!(p.next.statsd.percentiles, [42.0]);
        assert_eq!(p.next.statsd.gauge_sign, GaugeSign::Absolute);
        assert_eq!(p.next.statsd.expiry, Duration::from_secs(60));
        assert_eq!(p.next.kafka.brokers, ["k:9092"]);
        assert_eq!(p.next.statsd.listen, running.statsd.listen);
        assert_eq!(p.next.log_format, running.log_format);
        assert_eq!(p.next.agent, running.agent);
        // The sink's directories stay where they were.
        assert_eq!(p.next.data_dir, running.data_dir);

        // A restart-only change is reported again while it is not in effect.
        let again = plan(&p.next, &new);
        assert!(again.apply.is_empty());
        assert_eq!(again.restart, p.restart);
    }

    #[test]
    fn every_kafka_key_is_applied() {
        let running = base();
        let mut new = base();
        new.kafka.brokers = vec!["a:9092".into(), "b:9092".into()];
        new.kafka.topic_prefix = "moved-".into();
        new.kafka.single_topic = Some("all-metrics".into());
        new.kafka.avro_codec = AvroCodec::Zstd;
        new.kafka.compression = KafkaCompression::Gzip;
        new.kafka.spool_max_bytes = 64 << 20;
        let p = plan(&running, &new);
        assert_eq!(
            p.apply,
            [
                "kafka.brokers",
                "kafka.topic_prefix",
                "kafka.single_topic",
                "kafka.avro_codec",
                "kafka.compression",
                "kafka.spool_max_bytes"
            ]
        );
        assert!(p.restart.is_empty(), "{p:?}");
        assert_eq!(p.next.kafka, new.kafka);
        assert_eq!(p.next, new);

        // Back to no brokers (Avro files): applied too.
        let back = plan(&p.next, &running);
        assert_eq!(back.apply.len(), 6);
        assert_eq!(back.next, running);
    }

    #[test]
    fn the_whole_kafka_section_is_reloadable() {
        // `plan` takes the new `[kafka]` section whole: a key added there that needs a
        // restart would have to be kept back by `plan`.
        for k in crate::config::keys().filter(|k| k.starts_with("kafka.")) {
            assert!(RELOADABLE.contains(&k), "{k}");
        }
    }

    #[test]
    fn a_live_duration_is_shared() {
        let d = std::sync::Arc::new(LiveDuration::new(Duration::from_secs(300)));
        let reader = d.clone();
        d.set(Duration::from_millis(1500));
        assert_eq!(reader.get(), Duration::from_millis(1500));
        d.set(Duration::MAX);
        assert_eq!(reader.get(), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn auth_changes_name_both_kinds() {
        let mut a = base();
        let mut b = base();
        a.agent.auth = AgentAuth::IamConfig("/a.json".into());
        b.agent.auth = AgentAuth::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        assert_eq!(changed_keys(&a, &b), ["agent.basic", "agent.iam_config"]);
        b.agent.auth = AgentAuth::IamConfig("/b.json".into());
        assert_eq!(changed_keys(&a, &b), ["agent.iam_config"]);
    }

    #[test]
    fn every_reloadable_key_is_a_configuration_key() {
        let keys: Vec<&str> = crate::config::keys().collect();
        for k in RELOADABLE {
            assert!(keys.contains(k), "{k}");
        }
    }
}
