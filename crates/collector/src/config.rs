//! Corral's configuration: a TOML file, `CORRAL_<SECTION>_<KEY>` environment variables and
//! command-line flags, layered (flag > env > file > default) and validated into [`Config`].
//!
//! ```toml
//! data_dir = "/var/lib/corral"
//! [statsd]
//! listen = ["127.0.0.1:8125"]
//! flush_interval = "10s"
//! ```

mod layer;
mod render;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use layer::{Field, Layers};

/// Used when `data_dir` is not configured and this directory is (or can be made) writable.
pub const SYSTEM_DATA_DIR: &str = "/var/lib/corral";
/// Used when `data_dir` is not configured and [`SYSTEM_DATA_DIR`] is not writable.
pub const FALLBACK_DATA_DIR: &str = "./corral-data";

const MIN_FLUSH_INTERVAL: Duration = Duration::from_millis(10);
const MAX_AUTO_RECEIVE_THREADS: usize = 4;
const MAX_RECEIVE_THREADS: u64 = 1024;
// sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
const MAX_UNIX_SOCKET_PATH: usize = 107;
const MAX_KAFKA_TOPIC_LEN: usize = 249;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub data_dir: PathBuf,
    /// A level (`info`) or a tracing `EnvFilter` directive string.
    pub log_level: String,
    pub log_format: LogFormat,
    pub node: NodeConfig,
    pub statsd: StatsdConfig,
    pub agent: AgentConfig,
    pub api: ApiConfig,
    pub kafka: KafkaConfig,
}

/// The node's identity; an empty string is discovered at runtime.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    pub mesos_id: String,
    pub cluster_id: String,
    pub hostname: String,
    /// How often host metrics are collected.
    pub poll_interval: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StatsdConfig {
    /// Shared UDP ports, hostnames already resolved, without duplicates.
    pub listen: Vec<SocketAddr>,
    pub unix_socket: Option<PathBuf>,
    pub flush_interval: Duration,
    /// Sorted, de-duplicated, each in (0, 100].
    pub percentiles: Vec<f64>,
    pub gauge_sign: GaugeSign,
    pub container_listen_host: IpAddr,
    /// Inclusive; `None` means ephemeral ports.
    pub container_port_range: Option<(u16, u16)>,
    pub expiry: Duration,
    /// Already resolved: never 0.
    pub receive_threads: usize,
    pub receive_buffer: u64,
    pub max_series: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// `None` disables the Mesos agent source. No trailing slash.
    pub url: Option<String>,
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub auth: AgentAuth,
    pub ca_certificate: Option<PathBuf>,
}

#[derive(Clone, PartialEq, Eq, Default)]
pub enum AgentAuth {
    #[default]
    None,
    Basic {
        username: String,
        password: String,
    },
    /// A DC/OS service-account file used to obtain a token.
    IamConfig(PathBuf),
}

// Hand-written so that logging the configuration never prints the password.
impl fmt::Debug for AgentAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentAuth::None => f.write_str("None"),
            AgentAuth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &REDACTED)
                .finish(),
            AgentAuth::IamConfig(path) => f.debug_tuple("IamConfig").field(path).finish(),
        }
    }
}

pub(crate) const REDACTED: &str = "***";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    pub listen: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port` each; empty means no Kafka (batches go to local Avro files).
    pub brokers: Vec<String>,
    pub topic_prefix: String,
    pub single_topic: Option<String>,
    pub avro_codec: AvroCodec,
    pub compression: KafkaCompression,
    pub spool_max_bytes: u64,
}

macro_rules! config_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)?
    } default $default:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling used in the configuration.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            fn parse(s: &str) -> Result<Self, String> {
                let t = s.trim();
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str().eq_ignore_ascii_case(t))
                    .ok_or_else(|| {
                        let choices: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                        format!("invalid {} {s:?} (expected one of: {})", $what, choices.join(", "))
                    })
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $name::$default
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

config_enum!(LogFormat, "log format" { Text = "text", Json = "json" } default Text);
config_enum!(
    /// How a gauge sample with a leading sign is applied.
    GaugeSign, "gauge sign" {
        /// StatsD: `g:+3` / `g:-3` adjust the current value.
        Delta = "delta",
        /// DogStatsD: a sign is part of the value.
        Absolute = "absolute",
    } default Delta
);
config_enum!(
    /// The codec of Avro object-container blocks.
    AvroCodec, "Avro codec" {
        Null = "null",
        Deflate = "deflate",
        Snappy = "snappy",
        Zstd = "zstd",
    } default Null
);
config_enum!(
    /// Kafka producer (record batch) compression.
    KafkaCompression, "compression" {
        None = "none",
        Gzip = "gzip",
        Snappy = "snappy",
        Lz4 = "lz4",
        Zstd = "zstd",
    } default Lz4
);

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            mesos_id: String::new(),
            cluster_id: String::new(),
            hostname: String::new(),
            poll_interval: Duration::from_secs(15),
        }
    }
}

impl Default for StatsdConfig {
    fn default() -> Self {
        StatsdConfig {
            listen: vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 8125)],
            unix_socket: None,
            flush_interval: Duration::from_secs(10),
            percentiles: vec![50.0, 75.0, 90.0, 95.0, 99.0],
            gauge_sign: GaugeSign::Delta,
            container_listen_host: Ipv4Addr::LOCALHOST.into(),
            container_port_range: None,
            expiry: Duration::from_secs(5 * 60),
            receive_threads: auto_receive_threads(),
            receive_buffer: 8 << 20,
            max_series: 1_000_000,
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            url: Some("http://127.0.0.1:5051".to_string()),
            poll_interval: Duration::from_secs(15),
            timeout: Duration::from_secs(5),
            auth: AgentAuth::None,
            ca_certificate: None,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 9000),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: Vec::new(),
            topic_prefix: "metrics-".to_string(),
            single_topic: None,
            avro_codec: AvroCodec::Null,
            compression: KafkaCompression::Lz4,
            spool_max_bytes: 1 << 30,
        }
    }
}

/// `receive_threads = 0`: one per CPU, at most 4.
pub fn auto_receive_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_AUTO_RECEIVE_THREADS)
}

/// The command-line flags that override configuration keys. A `None` leaves the key alone;
/// list items may themselves be comma-separated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `statsd.listen`
    pub statsd_listen: Option<Vec<String>>,
    /// `api.listen`
    pub api_listen: Option<String>,
    /// `agent.url`
    pub agent_url: Option<String>,
    /// `kafka.brokers`
    pub kafka_brokers: Option<Vec<String>>,
    /// `statsd.flush_interval`
    pub flush_interval: Option<String>,
    /// `data_dir`
    pub data_dir: Option<String>,
    /// `log_level`
    pub log_level: Option<String>,
}

/// Where a configuration value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    /// The environment variable's name.
    Env(String),
    /// The flag, e.g. `--api-listen`.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the built-in default"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read configuration file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{}: not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    /// `key` is the dotted key for a file, the variable name for the environment.
    #[error("{}", unknown_key_message(key, origin, suggestion.as_deref()))]
    UnknownKey {
        key: String,
        origin: Origin,
        suggestion: Option<String>,
    },
    #[error("{}", located(key, origin, message))]
    Invalid {
        key: String,
        origin: Origin,
        message: String,
    },
    #[error("{}", auth_conflict_message(basic, iam))]
    AuthConflict { basic: Origin, iam: Origin },
    #[error("data_dir: {message}")]
    DataDir { path: PathBuf, message: String },
}

impl ConfigError {
    /// The dotted configuration key the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::AuthConflict { .. } => Some("agent.iam_config"),
            ConfigError::DataDir { .. } => Some("data_dir"),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}

fn located(key: &str, origin: &Origin, message: &str) -> String {
    match origin {
        Origin::Default => format!("{key}: {message}"),
        Origin::File(path) => format!("{}: {key}: {message}", path.display()),
        Origin::Env(name) | Origin::Flag(name) => format!("{name} ({key}): {message}"),
    }
}

fn auth_conflict_message(basic: &Origin, iam: &Origin) -> String {
    let what = "configure only one way to authenticate to the agent";
    match (basic, iam) {
        (Origin::File(a), Origin::File(b)) if a == b => format!(
            "{}: agent.basic and agent.iam_config are both set; {what}",
            a.display()
        ),
        _ => format!(
            "agent.basic (from {basic}) and agent.iam_config (from {iam}) are both set; {what}"
        ),
    }
}

fn unknown_key_message(key: &str, origin: &Origin, suggestion: Option<&str>) -> String {
    let hint = match (suggestion, origin) {
        (Some(s), _) => format!(" (did you mean {s}?)"),
        (None, Origin::File(_)) => format!(" ({})", layer::valid_names_near(key)),
        (None, _) => String::new(),
    };
    match origin {
        Origin::Env(_) => format!(
            "unknown configuration variable {key}{hint}; every {}* variable must name a \
             configuration key, like CORRAL_STATSD_LISTEN for statsd.listen",
            layer::ENV_PREFIX
        ),
        Origin::File(path) => format!("{}: unknown key {key}{hint}", path.display()),
        Origin::Default | Origin::Flag(_) => format!("unknown key {key}{hint}"),
    }
}

/// Every configuration key, dotted (`statsd.flush_interval`), in file order.
pub fn keys() -> impl Iterator<Item = &'static str> {
    layer::KEYS.iter().map(|(k, _)| *k)
}

/// The environment variable that sets `key`: `statsd.flush_interval` →
/// `CORRAL_STATSD_FLUSH_INTERVAL`.
pub fn env_var(key: &str) -> String {
    layer::env_var_name(key)
}

/// An explicitly configured directory as is; otherwise [`SYSTEM_DATA_DIR`] when it exists or
/// could be created and is writable, else [`FALLBACK_DATA_DIR`]. Creates nothing.
pub fn resolve_data_dir(configured: Option<&Path>) -> PathBuf {
    match configured {
        Some(dir) => dir.to_path_buf(),
        None if dir_usable(Path::new(SYSTEM_DATA_DIR)) => PathBuf::from(SYSTEM_DATA_DIR),
        None => PathBuf::from(FALLBACK_DATA_DIR),
    }
}

/// Whether `dir` is a writable directory, or its nearest existing ancestor is one.
fn dir_usable(dir: &Path) -> bool {
    let mut cur = dir;
    loop {
        match std::fs::metadata(cur) {
            Ok(meta) => return meta.is_dir() && writable(cur, &meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match cur.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => cur = parent,
                _ => return false,
            },
            Err(_) => return false,
        }
    }
}

#[cfg(unix)]
fn writable(dir: &Path, _meta: &std::fs::Metadata) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path; access(2) only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

#[cfg(not(unix))]
fn writable(_dir: &Path, meta: &std::fs::Metadata) -> bool {
    !meta.permissions().readonly()
}

impl Config {
    /// Layers the defaults, `file`, the `CORRAL_*` variables of `env` (others are ignored) and
    /// `overrides`, and validates the result. Reads only the file, and probes whether
    /// [`SYSTEM_DATA_DIR`] is writable when `data_dir` is not configured.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut layers = Layers::default();
        if let Some(path) = file {
            layers.add_file(path)?;
        }
        layers.add_env(env)?;
        layers.add_flags(overrides);
        build(&layers)
    }

    /// The effective configuration in the file's format; loading it gives this configuration
    /// back, except that the agent password is replaced by `***`.
    pub fn to_toml(&self) -> String {
        render::render(self)
    }

    /// Creates `data_dir` if needed and checks that files can be created in it.
    pub fn prepare_data_dir(&self) -> Result<(), ConfigError> {
        let dir = &self.data_dir;
        let fail = |message: String| ConfigError::DataDir {
            path: dir.clone(),
            message,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot create directory {}: {e}", dir.display())))?;
        let probe = dir.join(format!(".corral-write-test-{}", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&probe)
            .map_err(|e| fail(format!("directory {} is not writable: {e}", dir.display())))?;
        // Best effort: a leftover probe file is harmless.
        let _ = std::fs::remove_file(&probe);
        Ok(())
    }
}

/// `f` applied to `key`'s value when some layer set it.
fn opt<T>(
    l: &Layers,
    key: &'static str,
    f: impl FnOnce(&Field<'_>) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    l.field(key).map(|field| f(&field)).transpose()
}

fn or<T>(
    l: &Layers,
    key: &'static str,
    default: T,
    f: impl FnOnce(&Field<'_>) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    Ok(opt(l, key, f)?.unwrap_or(default))
}

fn trimmed(f: &Field<'_>) -> Result<String, ConfigError> {
    Ok(f.string()?.trim().to_string())
}

/// An optional string where "" means unset.
fn non_empty(f: &Field<'_>) -> Result<Option<String>, ConfigError> {
    let s = f.string()?.trim();
    Ok((!s.is_empty()).then(|| s.to_string()))
}

fn interval(min: Duration) -> impl Fn(&Field<'_>) -> Result<Duration, ConfigError> {
    move |f| {
        let d = f.duration()?;
        if d.is_zero() {
            Err(f.error("must be greater than zero"))
        } else if d < min {
            Err(f.error(format!(
                "must be at least {}, found {}",
                humantime::format_duration(min),
                humantime::format_duration(d)
            )))
        } else {
            Ok(d)
        }
    }
}

fn build(l: &Layers) -> Result<Config, ConfigError> {
    let positive = interval(Duration::from_nanos(1));

    let data_dir = match opt(l, "data_dir", |f| {
        let s = f.string()?;
        if s.trim().is_empty() {
            return Err(f.error("must not be empty (omit it to use the default)"));
        }
        Ok(PathBuf::from(s))
    })? {
        Some(dir) => dir,
        None => resolve_data_dir(None),
    };
    let log_level = or(l, "log_level", "info".to_string(), |f| {
        let s = f.string()?.trim();
        check_log_level(s).map_err(|m| f.error(m))?;
        Ok(s.to_string())
    })?;
    let log_format = or(l, "log_format", LogFormat::default(), |f| {
        LogFormat::parse(f.string()?).map_err(|m| f.error(m))
    })?;

    let d = NodeConfig::default();
    let node = NodeConfig {
        mesos_id: or(l, "node.mesos_id", d.mesos_id, trimmed)?,
        cluster_id: or(l, "node.cluster_id", d.cluster_id, trimmed)?,
        hostname: or(l, "node.hostname", d.hostname, trimmed)?,
        poll_interval: or(l, "node.poll_interval", d.poll_interval, &positive)?,
    };

    let d = StatsdConfig::default();
    let statsd = StatsdConfig {
        listen: or(l, "statsd.listen", d.listen, |f| {
            let mut out: Vec<SocketAddr> = Vec::new();
            for s in f.strings()? {
                for addr in socket_addrs(s).map_err(|m| f.error(m))? {
                    if !out.contains(&addr) {
                        out.push(addr);
                    }
                }
            }
            Ok(out)
        })?,
        unix_socket: or(l, "statsd.unix_socket", d.unix_socket, |f| {
            let path = non_empty(f)?;
            if let Some(p) = &path {
                if p.len() > MAX_UNIX_SOCKET_PATH {
                    return Err(f.error(format!(
                        "path is {} bytes long; a unix socket path must be at most {MAX_UNIX_SOCKET_PATH}",
                        p.len()
                    )));
                }
            }
            Ok(path.map(PathBuf::from))
        })?,
        flush_interval: or(
            l,
            "statsd.flush_interval",
            d.flush_interval,
            interval(MIN_FLUSH_INTERVAL),
        )?,
        percentiles: or(l, "statsd.percentiles", d.percentiles, |f| {
            let mut ps = f.numbers()?;
            if let Some(bad) = ps.iter().find(|p| !(**p > 0.0 && **p <= 100.0)) {
                return Err(f.error(format!(
                    "invalid percentile {bad} (each must be greater than 0 and at most 100)"
                )));
            }
            ps.sort_by(f64::total_cmp);
            ps.dedup();
            Ok(ps)
        })?,
        gauge_sign: or(l, "statsd.gauge_sign", d.gauge_sign, |f| {
            GaugeSign::parse(f.string()?).map_err(|m| f.error(m))
        })?,
        container_listen_host: or(
            l,
            "statsd.container_listen_host",
            d.container_listen_host,
            |f| {
                let s = f.string()?.trim();
                let s = s
                    .strip_prefix('[')
                    .and_then(|s| s.strip_suffix(']'))
                    .unwrap_or(s);
                s.parse::<IpAddr>().map_err(|_| {
                    f.error(format!(
                        "{s:?} is not an IP address (expected e.g. \"127.0.0.1\" or \"::1\")"
                    ))
                })
            },
        )?,
        container_port_range: or(
            l,
            "statsd.container_port_range",
            d.container_port_range,
            |f| port_range(f.string()?).map_err(|m| f.error(m)),
        )?,
        expiry: or(l, "statsd.expiry", d.expiry, &positive)?,
        receive_threads: or(l, "statsd.receive_threads", d.receive_threads, |f| {
            match f.uint()? {
                0 => Ok(auto_receive_threads()),
                n if n > MAX_RECEIVE_THREADS => Err(f.error(format!(
                    "{n} is too many; use at most {MAX_RECEIVE_THREADS}, or 0 for one per CPU (at most {MAX_AUTO_RECEIVE_THREADS})"
                ))),
                n => Ok(n as usize),
            }
        })?,
        receive_buffer: or(l, "statsd.receive_buffer", d.receive_buffer, |f| {
            match f.size()? {
                0 => Err(f.error("must be greater than zero")),
                // SO_RCVBUF takes a C int.
                n if n > i32::MAX as u64 => Err(f.error(format!(
                    "{} is too large; the most a socket accepts is {}",
                    render::size(n),
                    render::size(i32::MAX as u64)
                ))),
                n => Ok(n),
            }
        })?,
        max_series: or(l, "statsd.max_series", d.max_series, |f| {
            match f.uint()? {
                0 => Err(f.error("must be greater than zero")),
                n => usize::try_from(n).map_err(|_| f.error(format!("{n} is too large"))),
            }
        })?,
    };

    let d = AgentConfig::default();
    let agent = AgentConfig {
        url: or(l, "agent.url", d.url, |f| {
            agent_url(f.string()?).map_err(|m| f.error(m))
        })?,
        poll_interval: or(l, "agent.poll_interval", d.poll_interval, &positive)?,
        timeout: or(l, "agent.timeout", d.timeout, &positive)?,
        auth: agent_auth(l)?,
        ca_certificate: or(l, "agent.ca_certificate", d.ca_certificate, |f| {
            Ok(non_empty(f)?.map(PathBuf::from))
        })?,
    };

    let d = ApiConfig::default();
    let api = ApiConfig {
        listen: or(l, "api.listen", d.listen, |f| {
            let addrs = socket_addrs(f.string()?).map_err(|m| f.error(m))?;
            Ok(addrs[0])
        })?,
    };

    let d = KafkaConfig::default();
    let kafka = KafkaConfig {
        brokers: or(l, "kafka.brokers", d.brokers, |f| {
            f.strings()?
                .into_iter()
                .map(|s| broker(s).map_err(|m| f.error(m)))
                .collect()
        })?,
        topic_prefix: or(l, "kafka.topic_prefix", d.topic_prefix, |f| {
            let s = f.string()?.trim();
            check_topic_chars(s).map_err(|m| f.error(m))?;
            Ok(s.to_string())
        })?,
        single_topic: or(l, "kafka.single_topic", d.single_topic, |f| {
            let topic = non_empty(f)?;
            if let Some(t) = &topic {
                check_topic_chars(t).map_err(|m| f.error(m))?;
                if t.len() > MAX_KAFKA_TOPIC_LEN || t == "." || t == ".." {
                    return Err(f.error(format!("{t:?} is not a valid Kafka topic name")));
                }
            }
            Ok(topic)
        })?,
        avro_codec: or(l, "kafka.avro_codec", d.avro_codec, |f| {
            AvroCodec::parse(f.string()?).map_err(|m| f.error(m))
        })?,
        compression: or(l, "kafka.compression", d.compression, |f| {
            KafkaCompression::parse(f.string()?).map_err(|m| f.error(m))
        })?,
        spool_max_bytes: or(l, "kafka.spool_max_bytes", d.spool_max_bytes, |f| {
            match f.size()? {
                0 => Err(f.error("must be greater than zero")),
                n => Ok(n),
            }
        })?,
    };

    Ok(Config {
        data_dir,
        log_level,
        log_format,
        node,
        statsd,
        agent,
        api,
        kafka,
    })
}

fn agent_auth(l: &Layers) -> Result<AgentAuth, ConfigError> {
    let username = l.field("agent.basic.username");
    let password = l.field("agent.basic.password");
    let user = username.as_ref().map(|f| f.string()).transpose()?;
    let pass = password.as_ref().map(|f| f.string()).transpose()?;
    let iam = opt(l, "agent.iam_config", non_empty)?.flatten();

    // Empty strings count as unset, so an environment variable can clear a file's value.
    let user_set = user.is_some_and(|u| !u.is_empty());
    let pass_set = pass.is_some_and(|p| !p.is_empty());
    if !user_set && !pass_set {
        return Ok(iam.map_or(AgentAuth::None, |p| AgentAuth::IamConfig(p.into())));
    }
    let basic_field = if user_set { &username } else { &password };
    let basic_field = basic_field.as_ref().expect("set");
    if iam.is_some() {
        let iam_field = l.field("agent.iam_config").expect("set");
        return Err(ConfigError::AuthConflict {
            basic: basic_field.origin.clone(),
            iam: iam_field.origin.clone(),
        });
    }
    let Some(password) = pass else {
        return Err(basic_field.error(format!(
            "agent.basic.password must be set too (it may be \"\"), in [agent.basic] or by {}",
            env_var("agent.basic.password")
        )));
    };
    if !user_set {
        return Err(basic_field.error(format!(
            "agent.basic.username must be set too, in [agent.basic] or by {}",
            env_var("agent.basic.username")
        )));
    }
    Ok(AgentAuth::Basic {
        username: user.unwrap_or_default().to_string(),
        password: password.to_string(),
    })
}

/// `host:port`, an IPv6 address in brackets, or a resolvable `hostname:port` (every address it
/// resolves to).
fn socket_addrs(s: &str) -> Result<Vec<SocketAddr>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty address (expected host:port, e.g. \"127.0.0.1:8125\")".to_string());
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        let example = match ip {
            IpAddr::V4(_) => format!("{ip}:8125"),
            IpAddr::V6(_) => format!("[{ip}]:8125"),
        };
        return Err(format!(
            "{s:?} has no port (expected host:port, e.g. \"{example}\")"
        ));
    }
    if !s.contains(':') {
        return Err(format!(
            "{s:?} has no port (expected host:port, e.g. \"127.0.0.1:8125\")"
        ));
    }
    match s.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(format!("{s:?} does not resolve to any address"))
            } else {
                Ok(addrs)
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(format!(
            "invalid address {s:?}: {e} (expected host:port, IPv6 in brackets)"
        )),
        Err(e) => Err(format!("cannot resolve {s:?}: {e}")),
    }
}

fn port_range(s: &str) -> Result<Option<(u16, u16)>, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let bad = || format!("invalid port range {s:?} (expected \"start-end\", e.g. \"40000-41000\")");
    let (a, b) = t.split_once('-').ok_or_else(bad)?;
    let start: u16 = a.trim().parse().map_err(|_| bad())?;
    let end: u16 = b.trim().parse().map_err(|_| bad())?;
    if start == 0 {
        return Err(format!("invalid port range {s:?}: ports start at 1"));
    }
    if start > end {
        return Err(format!(
            "invalid port range {s:?}: start {start} is greater than end {end}"
        ));
    }
    Ok(Some((start, end)))
}

fn agent_url(s: &str) -> Result<Option<String>, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| {
        format!("invalid URL {s:?}: {why} (expected e.g. \"http://127.0.0.1:5051\", or \"\" to disable the agent source)")
    };
    let lower = t.to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &t["http://".len()..]
    } else if lower.starts_with("https://") {
        &t["https://".len()..]
    } else {
        return Err(bad("the scheme must be http:// or https://"));
    };
    if t.chars().any(char::is_whitespace) {
        return Err(bad("it contains whitespace"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(bad("put credentials in [agent.basic], not in the URL"));
    }
    let port = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("invalid IPv6 address"));
        }
        match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("invalid port"))?),
        }
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        port
    };
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad("invalid port"));
        }
    }
    Ok(Some(t.trim_end_matches('/').to_string()))
}

/// A Kafka bootstrap broker, `host:port`; not resolved, brokers may come up after us.
fn broker(s: &str) -> Result<String, String> {
    let t = s.trim();
    let bad = |why: &str| {
        format!("invalid broker {s:?}: {why} (expected host:port, e.g. \"kafka-1:9092\")")
    };
    let (host, port) = t.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.contains(':') && !bracketed {
        return Err(bad("an IPv6 address must be in brackets"));
    }
    if bracketed
        && host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_err()
    {
        return Err(bad("invalid IPv6 address"));
    }
    if host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad("invalid host"));
    }
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad("invalid port"));
    }
    Ok(t.to_string())
}

fn check_topic_chars(s: &str) -> Result<(), String> {
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(format!(
            "{s:?} contains {c:?}; Kafka topic names may only use letters, digits, '.', '_' and '-'"
        )),
        None => Ok(()),
    }
}

const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

fn is_level(s: &str) -> bool {
    LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s))
        || matches!(s, "0" | "1" | "2" | "3" | "4" | "5")
}

/// Catches typos in plain levels and in `target=level` directives; the full `EnvFilter` syntax
/// is checked where the filter is built.
fn check_log_level(s: &str) -> Result<(), String> {
    let hint = "expected trace, debug, info, warn, error, off, or directives like \"info,corral_statsd=debug\"";
    if s.is_empty() {
        return Err(format!("must not be empty ({hint})"));
    }
    for directive in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = match directive.rfind('=') {
            // `target[span{field=value}]` without a level: the '=' is inside the brackets.
            Some(i) if directive.rfind(']').is_none_or(|j| j < i) => &directive[i + 1..],
            Some(_) => continue,
            // A bare word is a level when it stands alone; in a list it may be a target.
            None if !s.contains(',') && directive.chars().all(|c| c.is_ascii_alphabetic()) => {
                directive
            }
            None => continue,
        };
        if !is_level(level.trim()) {
            let context = if directive == s {
                String::new()
            } else {
                format!(" in {s:?}")
            };
            return Err(format!("invalid log level {level:?}{context} ({hint})"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "info,corral_statsd=debug",
            "corral=trace",
            "warn,corral",
            "corral[flush{id=3}]",
            "corral[flush{id=3}]=debug",
        ] {
            check_log_level(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        // A lone word is taken for a misspelt level, though EnvFilter would read it as a target.
        for bad in ["", "infp", "corral", "corral=verbose", "info,corral=loud"] {
            assert!(check_log_level(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            agent_url("http://10.0.0.1:5051/").unwrap().as_deref(),
            Some("http://10.0.0.1:5051")
        );
        assert_eq!(
            agent_url("https://[::1]:5051").unwrap().as_deref(),
            Some("https://[::1]:5051")
        );
        assert_eq!(agent_url(" ").unwrap(), None);
        for bad in [
            "ftp://x",
            "127.0.0.1:5051",
            "http://",
            "http://:5051",
            "http://host:99999",
            "http://host:0",
            "http://u:p@host",
            "http://[::1",
            "http://ho st",
        ] {
            assert!(agent_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn brokers() {
        for ok in ["kafka:9092", "10.0.0.1:9092", "[::1]:9092"] {
            assert_eq!(broker(ok).unwrap(), ok);
        }
        for bad in [
            "kafka",
            ":9092",
            "::1:9092",
            "kafka:0",
            "kafka:x",
            "[zz]:9092",
        ] {
            assert!(broker(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_ranges() {
        assert_eq!(port_range("").unwrap(), None);
        assert_eq!(port_range("40000-41000").unwrap(), Some((40000, 41000)));
        assert_eq!(port_range(" 5 - 5 ").unwrap(), Some((5, 5)));
        for bad in ["0-10", "10-5", "40000", "a-b", "1-70000", "-5"] {
            assert!(port_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn data_dir_probe() {
        let tmp = std::env::temp_dir();
        assert!(dir_usable(&tmp.join("corral-probe-does-not-exist/deeper")));
        let file = tmp.join(format!("corral-probe-file-{}", std::process::id()));
        std::fs::write(&file, b"").unwrap();
        assert!(!dir_usable(&file));
        assert!(!dir_usable(&file.join("below-a-file")));
        std::fs::remove_file(&file).unwrap();
    }
}
