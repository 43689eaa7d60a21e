//! A tansu broker (a Kafka-protocol broker) for one test: its own process on an ephemeral
//! loopback port, in-memory storage, topics created up front, and a schema registry holding
//! the MetricList schema for each topic, so the broker itself rejects any message value that
//! is not a valid MetricList Avro container file. Killed on drop.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tansu binary: `CORRAL_TEST_TANSU`, else `~/.cargo/bin/tansu`.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CORRAL_TEST_TANSU") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(&std::env::var_os("HOME")?).join(".cargo/bin/tansu");
    p.exists().then_some(p)
}

/// The tansu binary, or a panic that says how to get it.
pub fn require() -> PathBuf {
    binary().unwrap_or_else(|| {
        panic!(
            "tansu 0.6.0 not found: set CORRAL_TEST_TANSU or run .ci/run \
             (.ci/setup.d/20-tansu.sh installs it)"
        )
    })
}

pub struct Tansu {
    child: Child,
    pub addr: SocketAddr,
    bin: PathBuf,
    dir: tempfile::TempDir,
    paused: bool,
}

/// The registry entry for a topic: tansu validates a message value against the `value` field.
fn topic_schema() -> String {
    let avsc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proto/metrics.avsc"))
        .expect("proto/metrics.avsc");
    let metric_list: serde_json::Value = serde_json::from_str(&avsc).expect("schema JSON");
    serde_json::json!({
        "type": "record",
        "name": "Message",
        "fields": [{"name": "value", "type": metric_list}],
    })
    .to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Tansu {
    /// Starts a broker and creates `topics` (one partition each) with the MetricList schema.
    pub fn start(topics: &[&str]) -> Tansu {
        let bin = require();
        let dir = tempfile::tempdir().expect("tempdir");
        let schemas = dir.path().join("schemas");
        std::fs::create_dir_all(&schemas).expect("schema dir");
        for t in topics {
            std::fs::write(schemas.join(format!("{t}.avsc")), topic_schema()).expect("schema");
        }
        let log_path = dir.path().join("broker.log");
        for _ in 0..3 {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let url = format!("tcp://{addr}");
            let log = std::fs::File::create(&log_path).expect("log file");
            // tansu resolves file:// registry URLs against its working directory.
            let mut child = Command::new(&bin)
                .current_dir("/")
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "memory://tansu/"])
                .arg("--schema-registry")
                .arg(format!("file://{}", schemas.display()))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            if wait_listening(&mut child, addr, Duration::from_secs(20)) {
                let t = Tansu {
                    child,
                    addr,
                    bin,
                    dir,
                    paused: false,
                };
                for topic in topics {
                    t.create_topic(topic);
                }
                return t;
            }
            // Most likely the port was taken in the meantime: try another.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "tansu did not start listening: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    pub fn create_topic(&self, topic: &str) {
        let out = Command::new(&self.bin)
            .args(["topic", "create", topic, "--partitions", "1", "--broker"])
            .arg(format!("tcp://{}", self.addr))
            .output()
            .expect("tansu topic create");
        assert!(
            out.status.success(),
            "tansu topic create {topic}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is answered.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }
}

fn wait_listening(child: &mut Child, addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if self.paused {
            self.signal(libc::SIGCONT);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
