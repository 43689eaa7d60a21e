use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_collector::config::{
    self, AgentAuth, AvroCodec, Config, ConfigError, GaugeSign, KafkaCompression, LogFormat,
    Origin, Overrides,
};
use tempfile::NamedTempFile;

fn file(text: &str) -> NamedTempFile {
    let mut f = tempfile::Builder::new()
        .prefix("corral-test-")
        .suffix(".toml")
        .tempfile()
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.flush().unwrap();
    f
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn no_flags() -> Overrides {
    Overrides::default()
}

fn load_file(text: &str) -> Result<Config, ConfigError> {
    let f = file(text);
    Config::load(Some(f.path()), Vec::new(), &no_flags())
}

fn load_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::load(None, env(pairs), &no_flags())
}

fn defaults() -> Config {
    load_env(&[]).unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The error's message, which must also contain each of `parts`.
fn assert_err(result: Result<Config, ConfigError>, parts: &[&str]) -> String {
    let msg = match result {
        Ok(c) => panic!("expected an error containing {parts:?}, got {c:#?}"),
        Err(e) => e.to_string(),
    };
    for p in parts {
        assert!(msg.contains(p), "error {msg:?} does not contain {p:?}");
    }
    msg
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn defaults_match_the_contract() {
    let c = defaults();
    let expected_threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4);

    assert!(
        c.data_dir == Path::new(config::SYSTEM_DATA_DIR)
            || c.data_dir == Path::new(config::FALLBACK_DATA_DIR),
        "{:?}",
        c.data_dir
    );
    assert_eq!(c.data_dir, config::resolve_data_dir(None));
    assert_eq!(c.log_level, "info");
    assert_eq!(c.log_format, LogFormat::Text);

    assert_eq!(c.node.mesos_id, "");
    assert_eq!(c.node.cluster_id, "");
    assert_eq!(c.node.hostname, "");
    assert_eq!(c.node.poll_interval, secs(15));

    let s = &c.statsd;
    assert_eq!(s.listen, vec![addr("127.0.0.1:8125")]);
    assert_eq!(s.unix_socket, None);
    assert_eq!(s.flush_interval, secs(10));
    assert_eq!(s.percentiles, vec![50.0, 75.0, 90.0, 95.0, 99.0]);
    assert_eq!(s.gauge_sign, GaugeSign::Delta);
    assert_eq!(
        s.container_listen_host,
        "127.0.0.1".parse::<IpAddr>().unwrap()
    );
    assert_eq!(s.container_port_range, None);
    assert_eq!(s.expiry, secs(300));
    assert_eq!(s.receive_threads, expected_threads);
    assert_eq!(s.receive_buffer, 8 * 1024 * 1024);
    assert_eq!(s.max_series, 1_000_000);

    let a = &c.agent;
    assert_eq!(a.url.as_deref(), Some("http://127.0.0.1:5051"));
    assert_eq!(a.poll_interval, secs(15));
    assert_eq!(a.timeout, secs(5));
    assert_eq!(a.auth, AgentAuth::None);
    assert_eq!(a.ca_certificate, None);

    assert_eq!(c.api.listen, addr("127.0.0.1:9000"));

    let k = &c.kafka;
    assert!(k.brokers.is_empty());
    assert_eq!(k.topic_prefix, "metrics-");
    assert_eq!(k.single_topic, None);
    assert_eq!(k.avro_codec, AvroCodec::Null);
    assert_eq!(k.compression, KafkaCompression::Lz4);
    assert_eq!(k.spool_max_bytes, 1 << 30);

    // The section defaults are the same values.
    assert_eq!(c.node, config::NodeConfig::default());
    assert_eq!(c.statsd, config::StatsdConfig::default());
    assert_eq!(c.agent, config::AgentConfig::default());
    assert_eq!(c.api, config::ApiConfig::default());
    assert_eq!(c.kafka, config::KafkaConfig::default());

    // An empty file is the defaults too.
    assert_eq!(load_file("").unwrap(), c);
}

const FULL_FILE: &str = r#"
data_dir = "/srv/corral"
log_level = "debug,corral_statsd=trace"
log_format = "json"

[node]
mesos_id = "agent-1"
cluster_id = "cluster-1"
hostname = "10.0.0.5"
poll_interval = "30s"

[statsd]
listen = ["0.0.0.0:8125", "[::1]:9125"]
unix_socket = "/run/corral/dsd.sock"
flush_interval = "500ms"
percentiles = [99.9, 50, 90]
gauge_sign = "absolute"
container_listen_host = "::1"
container_port_range = "40000-41000"
expiry = "2m"
receive_threads = 3
receive_buffer = "64MiB"
max_series = 5000

[agent]
url = "https://agent.mesos:5051/"
poll_interval = "1m"
timeout = "2s"
iam_config = "/etc/corral/iam.json"
ca_certificate = "/etc/ssl/dcos-ca.pem"

[api]
listen = "[::]:9001"

[kafka]
brokers = ["k1:9092", "k2:9092"]
topic_prefix = "dcos-"
single_topic = "all-metrics"
avro_codec = "zstd"
compression = "gzip"
spool_max_bytes = 1048576
"#;

#[test]
fn file_sets_every_key() {
    let c = load_file(FULL_FILE).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/srv/corral"));
    assert_eq!(c.log_level, "debug,corral_statsd=trace");
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.node.mesos_id, "agent-1");
    assert_eq!(c.node.cluster_id, "cluster-1");
    assert_eq!(c.node.hostname, "10.0.0.5");
    assert_eq!(c.node.poll_interval, secs(30));

    let s = &c.statsd;
    assert_eq!(s.listen, vec![addr("0.0.0.0:8125"), addr("[::1]:9125")]);
    assert_eq!(s.unix_socket, Some(PathBuf::from("/run/corral/dsd.sock")));
    assert_eq!(s.flush_interval, Duration::from_millis(500));
    assert_eq!(s.percentiles, vec![50.0, 90.0, 99.9]);
    assert_eq!(s.gauge_sign, GaugeSign::Absolute);
    assert_eq!(s.container_listen_host, "::1".parse::<IpAddr>().unwrap());
    assert_eq!(s.container_port_range, Some((40000, 41000)));
    assert_eq!(s.expiry, secs(120));
    assert_eq!(s.receive_threads, 3);
    assert_eq!(s.receive_buffer, 64 << 20);
    assert_eq!(s.max_series, 5000);

    let a = &c.agent;
    assert_eq!(a.url.as_deref(), Some("https://agent.mesos:5051"));
    assert_eq!(a.poll_interval, secs(60));
    assert_eq!(a.timeout, secs(2));
    assert_eq!(
        a.auth,
        AgentAuth::IamConfig(PathBuf::from("/etc/corral/iam.json"))
    );
    assert_eq!(
        a.ca_certificate,
        Some(PathBuf::from("/etc/ssl/dcos-ca.pem"))
    );

    assert_eq!(c.api.listen, addr("[::]:9001"));

    let k = &c.kafka;
    assert_eq!(k.brokers, ["k1:9092", "k2:9092"]);
    assert_eq!(k.topic_prefix, "dcos-");
    assert_eq!(k.single_topic.as_deref(), Some("all-metrics"));
    assert_eq!(k.avro_codec, AvroCodec::Zstd);
    assert_eq!(k.compression, KafkaCompression::Gzip);
    assert_eq!(k.spool_max_bytes, 1 << 20);
}

#[test]
fn file_keeps_defaults_for_missing_keys() {
    let c = load_file("[statsd]\nflush_interval = \"20s\"\n").unwrap();
    let d = defaults();
    assert_eq!(c.statsd.flush_interval, secs(20));
    assert_eq!(
        Config {
            statsd: config::StatsdConfig {
                flush_interval: d.statsd.flush_interval,
                ..c.statsd.clone()
            },
            ..c
        },
        d
    );
}

#[test]
fn basic_auth_as_table_or_inline() {
    for text in [
        "[agent.basic]\nusername = \"u\"\npassword = \"p\"\n",
        "[agent]\nbasic = { username = \"u\", password = \"p\" }\n",
    ] {
        let c = load_file(text).unwrap();
        assert_eq!(
            c.agent.auth,
            AgentAuth::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
    }
}

#[test]
fn env_overrides_file() {
    let f = file("data_dir = \"/from/file\"\n[statsd]\nflush_interval = \"20s\"\nexpiry = \"1m\"\n[api]\nlisten = \"127.0.0.1:7000\"\n");
    let c = Config::load(
        Some(f.path()),
        env(&[
            ("CORRAL_STATSD_FLUSH_INTERVAL", "30s"),
            ("CORRAL_DATA_DIR", "/from/env"),
        ]),
        &no_flags(),
    )
    .unwrap();
    assert_eq!(c.statsd.flush_interval, secs(30));
    assert_eq!(c.data_dir, PathBuf::from("/from/env"));
    // Keys the environment does not set keep the file's value.
    assert_eq!(c.statsd.expiry, secs(60));
    assert_eq!(c.api.listen, addr("127.0.0.1:7000"));
}

#[test]
fn env_can_clear_file_values() {
    let f = file("[agent]\nurl = \"http://10.0.0.1:5051\"\n[agent.basic]\nusername = \"u\"\npassword = \"p\"\n[kafka]\nbrokers = [\"k:9092\"]\n");
    let c = Config::load(
        Some(f.path()),
        env(&[
            ("CORRAL_AGENT_URL", ""),
            ("CORRAL_AGENT_BASIC_USERNAME", ""),
            ("CORRAL_AGENT_BASIC_PASSWORD", ""),
            ("CORRAL_AGENT_IAM_CONFIG", "/iam.json"),
            ("CORRAL_KAFKA_BROKERS", ""),
        ]),
        &no_flags(),
    )
    .unwrap();
    assert_eq!(c.agent.url, None);
    assert_eq!(c.agent.auth, AgentAuth::IamConfig("/iam.json".into()));
    assert!(c.kafka.brokers.is_empty());
}

#[test]
fn flags_override_env_and_file() {
    let f = file(
        r#"
data_dir = "/file"
log_level = "warn"
[statsd]
listen = ["127.0.0.1:1111"]
flush_interval = "20s"
[agent]
url = "http://file:5051"
[api]
listen = "127.0.0.1:2222"
[kafka]
brokers = ["file:9092"]
"#,
    );
    let vars = env(&[
        ("CORRAL_DATA_DIR", "/env"),
        ("CORRAL_LOG_LEVEL", "error"),
        ("CORRAL_STATSD_LISTEN", "127.0.0.1:3333"),
        ("CORRAL_STATSD_FLUSH_INTERVAL", "30s"),
        ("CORRAL_AGENT_URL", "http://env:5051"),
        ("CORRAL_API_LISTEN", "127.0.0.1:4444"),
        ("CORRAL_KAFKA_BROKERS", "env:9092"),
    ]);
    let flags = Overrides {
        statsd_listen: Some(vec!["127.0.0.1:5555".into(), "127.0.0.1:6666".into()]),
        api_listen: Some("127.0.0.1:7777".into()),
        agent_url: Some("http://flag:5051".into()),
        kafka_brokers: Some(vec!["a:9092,b:9092".into()]),
        flush_interval: Some("40s".into()),
        data_dir: Some("/flag".into()),
        log_level: Some("debug".into()),
    };
    let c = Config::load(Some(f.path()), vars.clone(), &flags).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/flag"));
    assert_eq!(c.log_level, "debug");
    assert_eq!(
        c.statsd.listen,
        vec![addr("127.0.0.1:5555"), addr("127.0.0.1:6666")]
    );
    assert_eq!(c.statsd.flush_interval, secs(40));
    assert_eq!(c.agent.url.as_deref(), Some("http://flag:5051"));
    assert_eq!(c.api.listen, addr("127.0.0.1:7777"));
    assert_eq!(c.kafka.brokers, ["a:9092", "b:9092"]);

    // Without flags the environment wins over the file.
    let c = Config::load(Some(f.path()), vars, &no_flags()).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/env"));
    assert_eq!(c.log_level, "error");
    assert_eq!(c.statsd.listen, vec![addr("127.0.0.1:3333")]);
    assert_eq!(c.statsd.flush_interval, secs(30));
    assert_eq!(c.agent.url.as_deref(), Some("http://env:5051"));
    assert_eq!(c.api.listen, addr("127.0.0.1:4444"));
    assert_eq!(c.kafka.brokers, ["env:9092"]);
}

type Check = fn(&Config) -> bool;

#[test]
fn every_key_is_settable_by_env() {
    // (key, variable, value, other variables the value needs, check)
    #[allow(clippy::type_complexity)]
    let table: &[(&str, &str, &str, &[(&str, &str)], Check)] = &[
        ("data_dir", "CORRAL_DATA_DIR", "/x", &[], |c| {
            c.data_dir == Path::new("/x")
        }),
        ("log_level", "CORRAL_LOG_LEVEL", "trace", &[], |c| {
            c.log_level == "trace"
        }),
        ("log_format", "CORRAL_LOG_FORMAT", "json", &[], |c| {
            c.log_format == LogFormat::Json
        }),
        ("node.mesos_id", "CORRAL_NODE_MESOS_ID", "m-1", &[], |c| {
            c.node.mesos_id == "m-1"
        }),
        (
            "node.cluster_id",
            "CORRAL_NODE_CLUSTER_ID",
            "c-1",
            &[],
            |c| c.node.cluster_id == "c-1",
        ),
        ("node.hostname", "CORRAL_NODE_HOSTNAME", "h-1", &[], |c| {
            c.node.hostname == "h-1"
        }),
        (
            "node.poll_interval",
            "CORRAL_NODE_POLL_INTERVAL",
            "1m",
            &[],
            |c| c.node.poll_interval == secs(60),
        ),
        (
            "statsd.listen",
            "CORRAL_STATSD_LISTEN",
            "127.0.0.1:8125,[::1]:8125",
            &[],
            |c| c.statsd.listen == [addr("127.0.0.1:8125"), addr("[::1]:8125")],
        ),
        (
            "statsd.unix_socket",
            "CORRAL_STATSD_UNIX_SOCKET",
            "/run/s.sock",
            &[],
            |c| c.statsd.unix_socket.as_deref() == Some(Path::new("/run/s.sock")),
        ),
        (
            "statsd.flush_interval",
            "CORRAL_STATSD_FLUSH_INTERVAL",
            "250ms",
            &[],
            |c| c.statsd.flush_interval == Duration::from_millis(250),
        ),
        (
            "statsd.percentiles",
            "CORRAL_STATSD_PERCENTILES",
            "50,99.9",
            &[],
            |c| c.statsd.percentiles == [50.0, 99.9],
        ),
        (
            "statsd.gauge_sign",
            "CORRAL_STATSD_GAUGE_SIGN",
            "absolute",
            &[],
            |c| c.statsd.gauge_sign == GaugeSign::Absolute,
        ),
        (
            "statsd.container_listen_host",
            "CORRAL_STATSD_CONTAINER_LISTEN_HOST",
            "0.0.0.0",
            &[],
            |c| c.statsd.container_listen_host == "0.0.0.0".parse::<IpAddr>().unwrap(),
        ),
        (
            "statsd.container_port_range",
            "CORRAL_STATSD_CONTAINER_PORT_RANGE",
            "40000-41000",
            &[],
            |c| c.statsd.container_port_range == Some((40000, 41000)),
        ),
        ("statsd.expiry", "CORRAL_STATSD_EXPIRY", "90s", &[], |c| {
            c.statsd.expiry == secs(90)
        }),
        (
            "statsd.receive_threads",
            "CORRAL_STATSD_RECEIVE_THREADS",
            "7",
            &[],
            |c| c.statsd.receive_threads == 7,
        ),
        (
            "statsd.receive_buffer",
            "CORRAL_STATSD_RECEIVE_BUFFER",
            "16MiB",
            &[],
            |c| c.statsd.receive_buffer == 16 << 20,
        ),
        (
            "statsd.max_series",
            "CORRAL_STATSD_MAX_SERIES",
            "42",
            &[],
            |c| c.statsd.max_series == 42,
        ),
        (
            "agent.url",
            "CORRAL_AGENT_URL",
            "https://a:5051",
            &[],
            |c| c.agent.url.as_deref() == Some("https://a:5051"),
        ),
        (
            "agent.poll_interval",
            "CORRAL_AGENT_POLL_INTERVAL",
            "5s",
            &[],
            |c| c.agent.poll_interval == secs(5),
        ),
        ("agent.timeout", "CORRAL_AGENT_TIMEOUT", "1s", &[], |c| {
            c.agent.timeout == secs(1)
        }),
        (
            "agent.basic.username",
            "CORRAL_AGENT_BASIC_USERNAME",
            "user",
            &[("CORRAL_AGENT_BASIC_PASSWORD", "")],
            |c| {
                c.agent.auth
                    == AgentAuth::Basic {
                        username: "user".into(),
                        password: "".into(),
                    }
            },
        ),
        (
            "agent.basic.password",
            "CORRAL_AGENT_BASIC_PASSWORD",
            "pw",
            &[("CORRAL_AGENT_BASIC_USERNAME", "user")],
            |c| {
                c.agent.auth
                    == AgentAuth::Basic {
                        username: "user".into(),
                        password: "pw".into(),
                    }
            },
        ),
        (
            "agent.iam_config",
            "CORRAL_AGENT_IAM_CONFIG",
            "/iam.json",
            &[],
            |c| c.agent.auth == AgentAuth::IamConfig("/iam.json".into()),
        ),
        (
            "agent.ca_certificate",
            "CORRAL_AGENT_CA_CERTIFICATE",
            "/ca.pem",
            &[],
            |c| c.agent.ca_certificate.as_deref() == Some(Path::new("/ca.pem")),
        ),
        ("api.listen", "CORRAL_API_LISTEN", "[::1]:9100", &[], |c| {
            c.api.listen == addr("[::1]:9100")
        }),
        (
            "kafka.brokers",
            "CORRAL_KAFKA_BROKERS",
            "a:9092,b:9092",
            &[],
            |c| c.kafka.brokers == ["a:9092", "b:9092"],
        ),
        (
            "kafka.topic_prefix",
            "CORRAL_KAFKA_TOPIC_PREFIX",
            "m.",
            &[],
            |c| c.kafka.topic_prefix == "m.",
        ),
        (
            "kafka.single_topic",
            "CORRAL_KAFKA_SINGLE_TOPIC",
            "everything",
            &[],
            |c| c.kafka.single_topic.as_deref() == Some("everything"),
        ),
        (
            "kafka.avro_codec",
            "CORRAL_KAFKA_AVRO_CODEC",
            "deflate",
            &[],
            |c| c.kafka.avro_codec == AvroCodec::Deflate,
        ),
        (
            "kafka.compression",
            "CORRAL_KAFKA_COMPRESSION",
            "none",
            &[],
            |c| c.kafka.compression == KafkaCompression::None,
        ),
        (
            "kafka.spool_max_bytes",
            "CORRAL_KAFKA_SPOOL_MAX_BYTES",
            "2048",
            &[],
            |c| c.kafka.spool_max_bytes == 2048,
        ),
    ];

    let keys: Vec<&str> = config::keys().collect();
    let covered: Vec<&str> = table.iter().map(|row| row.0).collect();
    assert_eq!(covered, keys, "the table must cover every key, in order");

    let d = defaults();
    for (key, var, value, extra, check) in table {
        assert_eq!(config::env_var(key), *var);
        let mut pairs = vec![(*var, *value)];
        pairs.extend_from_slice(extra);
        let c = load_env(&pairs).unwrap_or_else(|e| panic!("{var}={value}: {e}"));
        assert!(check(&c), "{var}={value} did not set {key}");
        assert!(
            !check(&d),
            "{key}: the test value must differ from the default"
        );
    }
}

#[test]
fn other_env_vars_are_ignored() {
    let c = load_env(&[
        ("PATH", "/bin"),
        ("RUST_LOG", "nonsense"),
        ("corral_statsd_listen", "lowercase is not ours"),
        ("XCORRAL_API_LISTEN", "nope"),
    ])
    .unwrap();
    assert_eq!(c, defaults());
}

#[test]
fn unknown_key_in_file_is_named() {
    let f = file("[statsd]\nflush_intervall = \"10s\"\n");
    let err = Config::load(Some(f.path()), Vec::new(), &no_flags()).unwrap_err();
    assert_eq!(err.key(), Some("statsd.flush_intervall"));
    let msg = err.to_string();
    assert!(msg.contains("unknown key statsd.flush_intervall"), "{msg}");
    assert!(msg.contains("did you mean statsd.flush_interval?"), "{msg}");
    assert!(msg.contains(&f.path().display().to_string()), "{msg}");

    for (text, key) in [
        ("colour = true\n", "colour"),
        ("[metrics]\nx = 1\n", "metrics"),
        (
            "[agent.basic]\nusername = \"u\"\npassword = \"p\"\ntoken = \"t\"\n",
            "agent.basic.token",
        ),
        ("[statsd.listen]\nx = 1\n", "statsd.listen"),
        ("\"statsd.listen\" = [\"127.0.0.1:1\"]\n", "statsd.listen"),
    ] {
        let err = load_file(text).unwrap_err();
        assert!(
            err.to_string().contains(key),
            "{text:?}: {err} does not name {key}"
        );
    }
}

#[test]
fn section_must_be_a_table() {
    assert_err(
        load_file("statsd = 5\n"),
        &["statsd: expected a table, found integer 5"],
    );
}

#[test]
fn unknown_env_var_is_named() {
    let err = load_env(&[("CORRAL_STATSD_FLUSH", "10s")]).unwrap_err();
    assert!(matches!(
        &err,
        ConfigError::UnknownKey { origin: Origin::Env(name), .. } if name == "CORRAL_STATSD_FLUSH"
    ));
    let msg = err.to_string();
    assert!(msg.contains("CORRAL_STATSD_FLUSH"), "{msg}");
    assert_err(
        load_env(&[("CORRAL_API_LISTN", "127.0.0.1:1")]),
        &["CORRAL_API_LISTN", "did you mean CORRAL_API_LISTEN?"],
    );
    // The nested table's variables only exist for its keys.
    assert_err(
        load_env(&[("CORRAL_AGENT_BASIC", "x")]),
        &["CORRAL_AGENT_BASIC"],
    );
}

#[test]
fn contract_error_formats() {
    let f = file("[statsd]\nflush_interval = \"10 parsecs\"\n");
    let msg = assert_err(
        Config::load(Some(f.path()), Vec::new(), &no_flags()),
        &["statsd.flush_interval: invalid duration \"10 parsecs\""],
    );
    assert!(msg.starts_with(&f.path().display().to_string()), "{msg}");

    assert_err(
        load_env(&[("CORRAL_STATSD_FLUSH_INTERVAL", "10 parsecs")]),
        &["CORRAL_STATSD_FLUSH_INTERVAL (statsd.flush_interval): invalid duration \"10 parsecs\""],
    );
    assert_err(
        Config::load(
            None,
            Vec::new(),
            &Overrides {
                flush_interval: Some("10 parsecs".into()),
                ..Overrides::default()
            },
        ),
        &["--flush-interval (statsd.flush_interval): invalid duration \"10 parsecs\""],
    );
}

#[test]
fn bad_values_name_their_key() {
    let cases: &[(&str, &[&str])] = &[
        // durations
        (
            "[statsd]\nflush_interval = 10",
            &[
                "statsd.flush_interval",
                "expected a duration string",
                "integer 10",
            ],
        ),
        (
            "[statsd]\nflush_interval = \"5ms\"",
            &["statsd.flush_interval", "at least 10ms"],
        ),
        (
            "[statsd]\nflush_interval = \"0s\"",
            &["statsd.flush_interval", "greater than zero"],
        ),
        (
            "[statsd]\nexpiry = \"0s\"",
            &["statsd.expiry", "greater than zero"],
        ),
        (
            "[node]\npoll_interval = \"soon\"",
            &["node.poll_interval", "invalid duration \"soon\""],
        ),
        ("[agent]\npoll_interval = \"0ms\"", &["agent.poll_interval"]),
        (
            "[agent]\ntimeout = \"-1s\"",
            &["agent.timeout", "invalid duration"],
        ),
        // sizes
        (
            "[statsd]\nreceive_buffer = \"8 MiBs\"",
            &["statsd.receive_buffer", "invalid size \"8 MiBs\""],
        ),
        (
            "[statsd]\nreceive_buffer = \"4GiB\"",
            &["statsd.receive_buffer", "too large"],
        ),
        (
            "[statsd]\nreceive_buffer = -1",
            &["statsd.receive_buffer", "negative"],
        ),
        (
            "[kafka]\nspool_max_bytes = \"lots\"",
            &["kafka.spool_max_bytes", "invalid size"],
        ),
        (
            "[kafka]\nspool_max_bytes = 0",
            &["kafka.spool_max_bytes", "greater than zero"],
        ),
        // percentiles
        (
            "[statsd]\npercentiles = [0]",
            &["statsd.percentiles", "invalid percentile 0"],
        ),
        (
            "[statsd]\npercentiles = [50, 100.5]",
            &["statsd.percentiles", "invalid percentile 100.5"],
        ),
        ("[statsd]\npercentiles = [-5]", &["statsd.percentiles"]),
        (
            "[statsd]\npercentiles = nan",
            &["statsd.percentiles", "expected a list of numbers"],
        ),
        (
            "[statsd]\npercentiles = [nan]",
            &["statsd.percentiles", "invalid percentile NaN"],
        ),
        (
            "[statsd]\npercentiles = [\"50\"]",
            &["statsd.percentiles", "string \"50\""],
        ),
        // enums
        (
            "[statsd]\ngauge_sign = \"relative\"",
            &["statsd.gauge_sign", "\"relative\"", "delta, absolute"],
        ),
        ("log_format = \"xml\"", &["log_format", "text, json"]),
        (
            "log_level = \"verbose\"",
            &["log_level", "invalid log level \"verbose\""],
        ),
        ("log_level = \"corral=loud\"", &["log_level", "\"loud\""]),
        (
            "[kafka]\navro_codec = \"lz4\"",
            &["kafka.avro_codec", "null, deflate, snappy, zstd"],
        ),
        (
            "[kafka]\ncompression = \"brotli\"",
            &["kafka.compression", "none, gzip, snappy, lz4, zstd"],
        ),
        // addresses
        (
            "[statsd]\nlisten = \"127.0.0.1:8125\"",
            &["statsd.listen", "expected a list of strings"],
        ),
        (
            "[statsd]\nlisten = [\"127.0.0.1\"]",
            &["statsd.listen", "no port"],
        ),
        (
            "[statsd]\nlisten = [\"::1\"]",
            &["statsd.listen", "[::1]:8125"],
        ),
        (
            "[statsd]\nlisten = [\"127.0.0.1:99999\"]",
            &["statsd.listen"],
        ),
        (
            "[statsd]\nlisten = [\"no-such-host.invalid:8125\"]",
            &["statsd.listen", "no-such-host.invalid:8125"],
        ),
        (
            "[statsd]\nlisten = [\"\"]",
            &["statsd.listen", "empty address"],
        ),
        ("[api]\nlisten = \"9000\"", &["api.listen", "no port"]),
        (
            "[api]\nlisten = \"no-such-host.invalid:9000\"",
            &["api.listen", "no-such-host.invalid"],
        ),
        (
            "[api]\nlisten = [\"127.0.0.1:9000\"]",
            &["api.listen", "expected a string"],
        ),
        (
            "[statsd]\ncontainer_listen_host = \"localhost\"",
            &["statsd.container_listen_host", "not an IP address"],
        ),
        (
            "[kafka]\nbrokers = [\"kafka\"]",
            &["kafka.brokers", "invalid broker \"kafka\""],
        ),
        (
            "[kafka]\nbrokers = [\"::1:9092\"]",
            &["kafka.brokers", "brackets"],
        ),
        // url
        (
            "[agent]\nurl = \"ftp://agent:5051\"",
            &["agent.url", "http:// or https://"],
        ),
        ("[agent]\nurl = \"127.0.0.1:5051\"", &["agent.url"]),
        ("[agent]\nurl = \"http://:5051\"", &["agent.url", "no host"]),
        (
            "[agent]\nurl = \"http://agent:port\"",
            &["agent.url", "invalid port"],
        ),
        // port range
        (
            "[statsd]\ncontainer_port_range = \"41000-40000\"",
            &["statsd.container_port_range", "greater than end"],
        ),
        (
            "[statsd]\ncontainer_port_range = \"0-100\"",
            &["statsd.container_port_range", "start at 1"],
        ),
        (
            "[statsd]\ncontainer_port_range = \"40000\"",
            &["statsd.container_port_range", "start-end"],
        ),
        (
            "[statsd]\ncontainer_port_range = \"1-65536\"",
            &["statsd.container_port_range"],
        ),
        // integers
        (
            "[statsd]\nreceive_threads = -1",
            &["statsd.receive_threads", "negative"],
        ),
        (
            "[statsd]\nreceive_threads = 100000",
            &["statsd.receive_threads", "too many"],
        ),
        (
            "[statsd]\nreceive_threads = \"2\"",
            &["statsd.receive_threads", "expected an integer"],
        ),
        (
            "[statsd]\nmax_series = 0",
            &["statsd.max_series", "greater than zero"],
        ),
        // strings
        ("data_dir = \"\"", &["data_dir", "must not be empty"]),
        ("data_dir = 1", &["data_dir", "expected a string"]),
        (
            "[kafka]\nsingle_topic = \"a/b\"",
            &["kafka.single_topic", "'/'"],
        ),
        (
            "[kafka]\ntopic_prefix = \"metrics/\"",
            &["kafka.topic_prefix", "'/'"],
        ),
    ];
    for (text, parts) in cases {
        let msg = assert_err(load_file(text), parts);
        assert!(
            msg.contains("corral-test-"),
            "{text:?}: {msg} does not name the file"
        );
    }
}

#[test]
fn bad_env_values_name_variable_and_key() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "CORRAL_STATSD_PERCENTILES",
            "50,abc",
            &[
                "CORRAL_STATSD_PERCENTILES (statsd.percentiles)",
                "\"abc\" is not a number",
            ],
        ),
        (
            "CORRAL_STATSD_PERCENTILES",
            "50,101",
            &[
                "CORRAL_STATSD_PERCENTILES (statsd.percentiles)",
                "invalid percentile 101",
            ],
        ),
        (
            "CORRAL_STATSD_MAX_SERIES",
            "many",
            &[
                "CORRAL_STATSD_MAX_SERIES (statsd.max_series)",
                "expected an integer",
            ],
        ),
        (
            "CORRAL_STATSD_RECEIVE_BUFFER",
            "big",
            &[
                "CORRAL_STATSD_RECEIVE_BUFFER (statsd.receive_buffer)",
                "invalid size \"big\"",
            ],
        ),
        (
            "CORRAL_STATSD_LISTEN",
            "127.0.0.1:8125,nope",
            &["CORRAL_STATSD_LISTEN (statsd.listen)", "\"nope\""],
        ),
        (
            "CORRAL_API_LISTEN",
            "localhost",
            &["CORRAL_API_LISTEN (api.listen)", "no port"],
        ),
        (
            "CORRAL_AGENT_URL",
            "agent:5051",
            &["CORRAL_AGENT_URL (agent.url)"],
        ),
        (
            "CORRAL_STATSD_GAUGE_SIGN",
            "both",
            &["CORRAL_STATSD_GAUGE_SIGN (statsd.gauge_sign)"],
        ),
        (
            "CORRAL_STATSD_CONTAINER_PORT_RANGE",
            "9-1",
            &["CORRAL_STATSD_CONTAINER_PORT_RANGE (statsd.container_port_range)"],
        ),
    ];
    for (var, value, parts) in cases {
        assert_err(load_env(&[(var, value)]), parts);
    }

    let flags = Overrides {
        statsd_listen: Some(vec!["127.0.0.1:8125".into(), "bad".into()]),
        ..Overrides::default()
    };
    assert_err(
        Config::load(None, Vec::new(), &flags),
        &["--statsd-listen (statsd.listen)", "\"bad\""],
    );
    let flags = Overrides {
        agent_url: Some("tcp://x".into()),
        ..Overrides::default()
    };
    assert_err(
        Config::load(None, Vec::new(), &flags),
        &["--agent-url (agent.url)"],
    );
}

#[test]
fn basic_and_iam_together_is_an_error() {
    let both =
        "[agent]\niam_config = \"/iam.json\"\n[agent.basic]\nusername = \"u\"\npassword = \"p\"\n";
    let err = load_file(both).unwrap_err();
    assert!(matches!(err, ConfigError::AuthConflict { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("agent.basic") && msg.contains("agent.iam_config"),
        "{msg}"
    );

    // Also when the two come from different places; the message says where.
    let f = file("[agent.basic]\nusername = \"u\"\npassword = \"p\"\n");
    assert_err(
        Config::load(
            Some(f.path()),
            env(&[("CORRAL_AGENT_IAM_CONFIG", "/iam.json")]),
            &no_flags(),
        ),
        &[
            "agent.basic",
            &f.path().display().to_string(),
            "agent.iam_config",
            "CORRAL_AGENT_IAM_CONFIG",
        ],
    );
}

#[test]
fn basic_needs_username_and_password() {
    assert_err(
        load_file("[agent.basic]\nusername = \"u\"\n"),
        &["agent.basic.username", "agent.basic.password must be set"],
    );
    assert_err(
        load_env(&[("CORRAL_AGENT_BASIC_PASSWORD", "p")]),
        &[
            "CORRAL_AGENT_BASIC_PASSWORD",
            "agent.basic.username must be set",
        ],
    );
    // An empty table is no authentication.
    assert_eq!(
        load_file("[agent.basic]\n").unwrap().agent.auth,
        AgentAuth::None
    );
}

#[test]
fn percentiles_are_sorted_and_deduplicated() {
    let c = load_file("[statsd]\npercentiles = [99, 50, 99.9, 50, 99.0, 100]").unwrap();
    assert_eq!(c.statsd.percentiles, [50.0, 99.0, 99.9, 100.0]);
    let c = load_env(&[("CORRAL_STATSD_PERCENTILES", "")]).unwrap();
    assert!(c.statsd.percentiles.is_empty());
}

#[test]
fn listen_addresses() {
    let c = load_file("[statsd]\nlisten = []").unwrap();
    assert!(c.statsd.listen.is_empty());

    // Duplicates are bound once.
    let c = load_env(&[("CORRAL_STATSD_LISTEN", "127.0.0.1:8125, 127.0.0.1:8125 ,")]).unwrap();
    assert_eq!(c.statsd.listen, [addr("127.0.0.1:8125")]);

    // Hostnames resolve.
    let c = load_env(&[
        ("CORRAL_STATSD_LISTEN", "localhost:8125"),
        ("CORRAL_API_LISTEN", "localhost:9000"),
    ])
    .unwrap();
    assert!(!c.statsd.listen.is_empty());
    assert!(c
        .statsd
        .listen
        .iter()
        .all(|a| a.ip().is_loopback() && a.port() == 8125));
    assert!(c.api.listen.ip().is_loopback() && c.api.listen.port() == 9000);
}

#[test]
fn sizes_accept_units_and_bytes() {
    for (text, bytes) in [
        ("\"64MiB\"", 64u64 << 20),
        ("\"64 MiB\"", 64 << 20),
        ("\"1.5 GiB\"", 3 << 29),
        ("\"10MB\"", 10_000_000),
        ("\"4096\"", 4096),
        ("4096", 4096),
    ] {
        let c = load_file(&format!("[kafka]\nspool_max_bytes = {text}")).unwrap();
        assert_eq!(c.kafka.spool_max_bytes, bytes, "{text}");
    }
}

#[test]
fn receive_threads_zero_means_per_cpu() {
    let c = load_env(&[("CORRAL_STATSD_RECEIVE_THREADS", "0")]).unwrap();
    assert_eq!(c.statsd.receive_threads, config::auto_receive_threads());
    assert!((1..=4).contains(&c.statsd.receive_threads));
}

#[test]
fn agent_url_empty_disables_the_agent() {
    assert_eq!(load_file("[agent]\nurl = \"\"").unwrap().agent.url, None);
    assert_eq!(
        load_env(&[("CORRAL_AGENT_URL", "HTTP://[::1]:5051/")])
            .unwrap()
            .agent
            .url
            .as_deref(),
        Some("HTTP://[::1]:5051")
    );
}

#[test]
fn file_errors() {
    let missing = Path::new("/nonexistent/corral.toml");
    let msg = Config::load(Some(missing), Vec::new(), &no_flags())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("cannot read configuration file /nonexistent/corral.toml"),
        "{msg}"
    );

    let f = file("[statsd\nlisten = 1\n");
    let msg = Config::load(Some(f.path()), Vec::new(), &no_flags())
        .unwrap_err()
        .to_string();
    assert!(msg.contains(&f.path().display().to_string()), "{msg}");
    assert!(msg.contains("not valid TOML"), "{msg}");
}

#[test]
fn to_toml_round_trips() {
    let full = load_file(FULL_FILE).unwrap();
    let d = defaults();
    let odd = load_env(&[
        ("CORRAL_STATSD_FLUSH_INTERVAL", "1s 500ms"),
        ("CORRAL_STATSD_RECEIVE_BUFFER", "1000001"),
        ("CORRAL_KAFKA_SPOOL_MAX_BYTES", "3GB"),
        ("CORRAL_STATSD_PERCENTILES", "0.001,33.3333,100"),
        ("CORRAL_NODE_HOSTNAME", "host \"quoted\" \\ name"),
        ("CORRAL_DATA_DIR", "relative/dir"),
        ("CORRAL_AGENT_URL", ""),
    ])
    .unwrap();
    for c in [d, full, odd] {
        let text = c.to_toml();
        let f = file(&text);
        let back = Config::load(Some(f.path()), Vec::new(), &no_flags())
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, c, "\n{text}");
        // Stable: rendering the reloaded configuration gives the same text.
        assert_eq!(back.to_toml(), text);
    }
}

#[test]
fn to_toml_shape() {
    let text = defaults().to_toml();
    let table: toml::Table = text.parse().unwrap();
    for section in ["node", "statsd", "agent", "api", "kafka"] {
        assert!(table[section].is_table(), "{section}");
    }
    for line in [
        "log_level = \"info\"",
        "[statsd]\nlisten = [\"127.0.0.1:8125\"]",
        "flush_interval = \"10s\"",
        "percentiles = [50, 75, 90, 95, 99]",
        "expiry = \"5m\"",
        "receive_buffer = \"8 MiB\"",
        "max_series = 1000000",
        "url = \"http://127.0.0.1:5051\"",
        "[api]\nlisten = \"127.0.0.1:9000\"",
        "brokers = []",
        "spool_max_bytes = \"1 GiB\"",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
    assert!(
        !text.contains("basic") && !text.contains("iam_config"),
        "{text}"
    );
}

#[test]
fn password_is_redacted() {
    let c = load_env(&[
        ("CORRAL_AGENT_BASIC_USERNAME", "svc"),
        ("CORRAL_AGENT_BASIC_PASSWORD", "hunter2"),
    ])
    .unwrap();
    let text = c.to_toml();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains("basic = { username = \"svc\", password = \"***\" }"),
        "{text}"
    );
    assert!(!format!("{c:?}").contains("hunter2"));

    // Loading it back gives the same configuration but for the password.
    let back = load_file(&text).unwrap();
    assert_eq!(
        back.agent.auth,
        AgentAuth::Basic {
            username: "svc".into(),
            password: "***".into()
        }
    );
    let mut expected = c.clone();
    expected.agent.auth = back.agent.auth.clone();
    assert_eq!(back, expected);
}

#[test]
fn data_dir_resolution_and_preparation() {
    let tmp = tempfile::tempdir().unwrap();
    let explicit = tmp.path().join("a/b");
    assert_eq!(config::resolve_data_dir(Some(&explicit)), explicit);
    // Resolving never creates anything.
    assert!(!explicit.exists());

    let c = Config::load(
        None,
        Vec::new(),
        &Overrides {
            data_dir: Some(explicit.display().to_string()),
            ..Overrides::default()
        },
    )
    .unwrap();
    assert_eq!(c.data_dir, explicit);
    assert!(!explicit.exists(), "load must not create data_dir");
    c.prepare_data_dir().unwrap();
    assert!(explicit.is_dir());
    assert_eq!(std::fs::read_dir(&explicit).unwrap().count(), 0);
    // Again, now that it exists.
    c.prepare_data_dir().unwrap();

    // Under a regular file it can never be created.
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, b"").unwrap();
    let below = blocker.join("data").display().to_string();
    let c = load_env(&[("CORRAL_DATA_DIR", below.as_str())]).unwrap();
    let err = c.prepare_data_dir().unwrap_err();
    assert_eq!(err.key(), Some("data_dir"));
    assert!(err.to_string().starts_with("data_dir: "), "{err}");
    let itself = blocker.display().to_string();
    let c = load_env(&[("CORRAL_DATA_DIR", itself.as_str())]).unwrap();
    assert!(c
        .prepare_data_dir()
        .unwrap_err()
        .to_string()
        .starts_with("data_dir: "));
}
