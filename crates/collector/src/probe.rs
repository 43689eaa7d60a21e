//! `corral check-config`: probes whether a configuration can run on this node.
//!
//! Each probe ends in one of three levels. Something Corral cannot start without, or a
//! setting that is wrong rather than temporarily unmet, is a FAIL: a listen address in use or
//! not on this host, an unwritable `data_dir` or unix socket directory, an agent that refuses
//! the credentials or that answers but is not a Mesos agent, an unreadable CA certificate.
//! What may come right by itself is a WARN: an agent that cannot be reached (it may start after
//! Corral, which keeps polling) and Kafka brokers that cannot be reached (batches are spooled
//! until they can).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::config::Config;
use crate::sources::agent::{AgentClient, FetchError};

/// How long connecting to one broker may take.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// The result of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub level: Level,
    /// The configuration key and, where there are several, the value probed:
    /// `statsd.listen 127.0.0.1:8125`.
    pub subject: String,
    pub message: String,
}

impl Outcome {
    fn new(level: Level, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Outcome {
            level,
            subject: subject.into(),
            message: message.into(),
        }
    }
}

/// `FAIL statsd.listen 127.0.0.1:8125: address in use`
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<4} {}: {}",
            self.level.as_str(),
            self.subject,
            self.message
        )
    }
}

/// The worst level among `outcomes`.
pub fn verdict(outcomes: &[Outcome]) -> Level {
    outcomes.iter().map(|o| o.level).max().unwrap_or(Level::Ok)
}

/// `verdict: FAIL (1 FAIL, 2 WARN, 5 ok)`
pub fn verdict_line(outcomes: &[Outcome]) -> String {
    let count = |l| outcomes.iter().filter(|o| o.level == l).count();
    let (fail, warn, ok) = (count(Level::Fail), count(Level::Warn), count(Level::Ok));
    let summary = match verdict(outcomes) {
        Level::Fail => "FAIL: Corral cannot run with this configuration here",
        Level::Warn => "ok with warnings",
        Level::Ok => "ok",
    };
    format!("verdict: {summary} ({fail} FAIL, {warn} WARN, {ok} ok)")
}

/// Runs every probe, in configuration order. Binds and releases the listen addresses, creates
/// `data_dir` when missing, GETs the agent's `/state` and connects to each broker.
pub async fn run(config: &Config) -> Vec<Outcome> {
    let mut out = Vec::new();
    for addr in &config.statsd.listen {
        out.push(listen(
            "statsd.listen",
            *addr,
            std::net::UdpSocket::bind(addr).map(drop),
        ));
    }
    if let Some(path) = &config.statsd.unix_socket {
        out.push(unix_socket(path));
    }
    out.push(listen(
        "api.listen",
        config.api.listen,
        std::net::TcpListener::bind(config.api.listen).map(drop),
    ));
    out.push(data_dir(config));
    let brokers: Vec<_> = config
        .kafka
        .brokers
        .iter()
        .map(|b| {
            let b = b.clone();
            tokio::spawn(async move { broker(&b, BROKER_TIMEOUT).await })
        })
        .collect();
    out.push(agent(config).await);
    if brokers.is_empty() {
        out.push(Outcome::new(
            Level::Ok,
            "kafka.brokers",
            format!(
                "none configured; batches are written to Avro files in {}",
                config.data_dir.join("avro").display()
            ),
        ));
    }
    for (b, task) in config.kafka.brokers.iter().zip(brokers) {
        out.push(task.await.unwrap_or_else(|e| {
            Outcome::new(
                Level::Warn,
                format!("kafka.brokers {b}"),
                format!("probe failed: {e}"),
            )
        }));
    }
    out
}

fn listen(key: &str, addr: SocketAddr, bound: io::Result<()>) -> Outcome {
    let subject = format!("{key} {addr}");
    match bound {
        Ok(()) if addr.port() == 0 => Outcome::new(Level::Ok, subject, "free (ephemeral port)"),
        Ok(()) => Outcome::new(Level::Ok, subject, "free"),
        Err(e) => Outcome::new(Level::Fail, subject, bind_error(&e, addr)),
    }
}

fn bind_error(e: &io::Error, addr: SocketAddr) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address in use".to_string(),
        io::ErrorKind::AddrNotAvailable => {
            format!("{} is not an address of this host", addr.ip())
        }
        io::ErrorKind::PermissionDenied if addr.port() < 1024 => format!(
            "permission denied (port {} needs root or CAP_NET_BIND_SERVICE)",
            addr.port()
        ),
        _ => format!("cannot bind: {e}"),
    }
}

fn unix_socket(path: &Path) -> Outcome {
    let subject = format!("statsd.unix_socket {}", path.display());
    let fail = |m: String| Outcome::new(Level::Fail, subject.clone(), m);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return fail(format!("{} is not a directory", dir.display())),
        Err(e) => return fail(format!("directory {}: {e}", dir.display())),
    }
    if !writable_dir(dir) {
        return fail(format!("directory {} is not writable", dir.display()));
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Outcome::new(Level::Ok, subject, "directory is writable")
        }
        Err(e) => fail(e.to_string()),
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return fail("a file that is not a socket is in the way".to_string());
            }
            // A datagram connect succeeds only while some process has the socket bound.
            let live = std::os::unix::net::UnixDatagram::unbound()
                .and_then(|s| s.connect(path))
                .is_ok();
            if live {
                fail("in use by a running process".to_string())
            } else {
                Outcome::new(
                    Level::Ok,
                    subject,
                    "a stale socket file is there; starting replaces it",
                )
            }
        }
    }
}

fn writable_dir(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path; access(2) only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

fn data_dir(config: &Config) -> Outcome {
    let subject = format!("data_dir {}", config.data_dir.display());
    match config.prepare_data_dir() {
        Ok(()) => Outcome::new(Level::Ok, subject, "writable"),
        Err(crate::config::ConfigError::DataDir { message, .. }) => {
            Outcome::new(Level::Fail, subject, message)
        }
        Err(e) => Outcome::new(Level::Fail, subject, e.to_string()),
    }
}

async fn agent(config: &Config) -> Outcome {
    let Some(url) = &config.agent.url else {
        return Outcome::new(
            Level::Ok,
            "agent.url",
            "not set; the agent source is disabled",
        );
    };
    let subject = format!("agent.url {url}");
    let client = match AgentClient::new(&config.agent, url) {
        Ok(c) => c,
        Err(e) => return Outcome::new(Level::Fail, subject, format!("{e:#}")),
    };
    let mut result = client.get("/state").await;
    if let Err(FetchError::NotFound(_)) = result {
        // Agents before Mesos 1.0 only answer the `.json` spelling.
        result = client.get("/state.json").await;
    }
    match result {
        Ok(body) => {
            let body = crate::sources::agent::json::sanitize(&body);
            match serde_json::from_slice::<crate::sources::agent::types::State<'_>>(&body) {
                Ok(state) if !state.id.as_str().is_empty() => Outcome::new(
                    Level::Ok,
                    subject,
                    format!(
                        "HTTP 200, agent id {} (auth: {})",
                        state.id.as_str(),
                        client.auth_kind()
                    ),
                ),
                Ok(_) => Outcome::new(
                    Level::Fail,
                    subject,
                    "HTTP 200 but the answer has no agent id: is this a Mesos agent?",
                ),
                Err(e) => Outcome::new(
                    Level::Fail,
                    subject,
                    format!("HTTP 200 but not a Mesos agent's /state: {e}"),
                ),
            }
        }
        Err(e) => agent_error(subject, &e),
    }
}

fn agent_error(subject: String, e: &FetchError) -> Outcome {
    match e {
        FetchError::Unavailable(m) | FetchError::Timeout(m) => Outcome::new(
            Level::Warn,
            subject,
            format!("unreachable: {m} (Corral keeps polling; the agent may start later)"),
        ),
        // The messages name the key to check (agent.basic, agent.iam_config).
        FetchError::Unauthorized(m) | FetchError::Forbidden(m) => {
            Outcome::new(Level::Fail, subject, m.clone())
        }
        FetchError::NotFound(m) => Outcome::new(
            Level::Fail,
            subject,
            format!("{m}: is agent.url the Mesos agent (usually port 5051)?"),
        ),
        FetchError::Http(m) | FetchError::Decode(m) => {
            Outcome::new(Level::Fail, subject, m.clone())
        }
    }
}

async fn broker(broker: &str, timeout: Duration) -> Outcome {
    let subject = format!("kafka.brokers {broker}");
    let warn = |m: String| {
        Outcome::new(
            Level::Warn,
            subject.clone(),
            format!("{m} (batches are spooled until a broker is reachable)"),
        )
    };
    let attempt = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(broker)
            .await
            .map_err(|e| format!("cannot resolve: {e}"))?
            .collect();
        let mut last = format!("{broker} resolves to no address");
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => return Ok(addr),
                Err(e) => last = format!("cannot connect to {addr}: {e}"),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(addr)) => Outcome::new(Level::Ok, subject, format!("TCP connect to {addr} ok")),
        Ok(Err(m)) => warn(m),
        Err(_) => warn(format!(
            "no connection within {}",
            humantime::format_duration(timeout)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let mut c = Config::load(None, Vec::new(), &Default::default()).expect("defaults");
        c.statsd.listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.api.listen = "127.0.0.1:0".parse().unwrap();
        c.agent.url = None;
        c
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn find<'a>(out: &'a [Outcome], prefix: &str) -> &'a Outcome {
        out.iter()
            .find(|o| o.subject.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {out:#?}"))
    }

    #[test]
    fn free_addresses_and_a_writable_data_dir_pass() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config();
        c.data_dir = dir.path().join("new");
        let out = rt().block_on(run(&c));
        assert_eq!(verdict(&out), Level::Ok, "{out:#?}");
        assert!(c.data_dir.is_dir());
        assert_eq!(
            find(&out, "agent.url").message,
            "not set; the agent source is disabled"
        );
        assert!(verdict_line(&out).starts_with("verdict: ok (0 FAIL, 0 WARN, "));
    }

    #[test]
    fn ports_in_use_fail() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut c = config();
        c.data_dir = dir.path().to_path_buf();
        c.statsd.listen = vec![udp.local_addr().unwrap()];
        c.api.listen = tcp.local_addr().unwrap();
        let out = rt().block_on(run(&c));
        let s = find(&out, "statsd.listen");
        assert_eq!(
            s.to_string(),
            format!(
                "FAIL statsd.listen {}: address in use",
                udp.local_addr().unwrap()
            )
        );
        assert_eq!(find(&out, "api.listen").level, Level::Fail);
        assert_eq!(verdict(&out), Level::Fail);
        assert!(verdict_line(&out).starts_with("verdict: FAIL"));
    }

    #[test]
    fn foreign_addresses_and_unwritable_dirs_fail() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut c = config();
        // TEST-NET-1: never an address of this host.
        c.statsd.listen = vec!["192.0.2.1:8125".parse().unwrap()];
        c.data_dir = file.path().join("below-a-file");
        c.statsd.unix_socket = Some(file.path().join("statsd.sock"));
        let out = rt().block_on(run(&c));
        let s = find(&out, "statsd.listen");
        assert_eq!(s.level, Level::Fail);
        assert!(s.message.contains("not an address of this host"), "{s}");
        assert_eq!(find(&out, "data_dir").level, Level::Fail);
        let u = find(&out, "statsd.unix_socket");
        assert_eq!(u.level, Level::Fail);
        assert!(u.message.contains("not a directory"), "{u}");
    }

    #[test]
    fn unix_socket_states() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        assert_eq!(unix_socket(&path).level, Level::Ok);
        let live = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let o = unix_socket(&path);
        assert_eq!(o.level, Level::Fail, "{o}");
        drop(live);
        let o = unix_socket(&path);
        assert_eq!(o.level, Level::Ok, "{o}");
        assert!(o.message.contains("stale"), "{o}");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"").unwrap();
        assert_eq!(unix_socket(&path).level, Level::Fail);
    }

    #[test]
    fn unreachable_agents_and_brokers_warn() {
        // A port that was free a moment ago: connections are refused.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut c = config();
        c.data_dir = dir.path().to_path_buf();
        c.agent.url = Some(format!("http://127.0.0.1:{port}"));
        c.agent.timeout = Duration::from_secs(2);
        c.kafka.brokers = vec![format!("127.0.0.1:{port}")];
        let out = rt().block_on(run(&c));
        let a = find(&out, "agent.url");
        assert_eq!(a.level, Level::Warn, "{a}");
        assert!(a.message.starts_with("unreachable: "), "{a}");
        let b = find(&out, "kafka.brokers");
        assert_eq!(b.level, Level::Warn, "{b}");
        assert_eq!(verdict(&out), Level::Warn);
        assert!(verdict_line(&out).starts_with("verdict: ok with warnings (0 FAIL, 2 WARN"));
    }

    #[test]
    fn a_listening_broker_is_ok() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let o = rt().block_on(broker(&addr.to_string(), BROKER_TIMEOUT));
        assert_eq!(o.level, Level::Ok, "{o}");
    }

    #[test]
    fn agent_errors() {
        let s = || "agent.url http://a:5051".to_string();
        let o = agent_error(s(), &FetchError::Unauthorized("check agent.basic".into()));
        assert_eq!(
            o.to_string(),
            "FAIL agent.url http://a:5051: check agent.basic"
        );
        assert_eq!(
            agent_error(s(), &FetchError::Forbidden("403".into())).level,
            Level::Fail
        );
        assert_eq!(
            agent_error(s(), &FetchError::Timeout("t".into())).level,
            Level::Warn
        );
        assert_eq!(
            agent_error(s(), &FetchError::Decode("d".into())).level,
            Level::Fail
        );
    }
}
