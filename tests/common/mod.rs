//! Starts the real `corral` binary on ephemeral ports and talks to it over real sockets.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Corral {
    pub child: Child,
    pub statsd: SocketAddr,
    pub api: SocketAddr,
    pub data_dir: tempfile::TempDir,
    /// Every log line (JSON) the daemon wrote, as it arrives.
    logs: mpsc::Receiver<Value>,
    pub seen_logs: Vec<Value>,
}

pub fn corral_bin() -> &'static str {
    env!("CARGO_BIN_EXE_corral")
}

impl Corral {
    /// Starts corral with a 200ms flush, the agent source disabled, and the given extra args.
    pub fn start(extra: &[&str]) -> Corral {
        Self::start_with(extra, &[])
    }

    /// As [`Corral::start_plain`], flushing every 200 ms and logging at `info` unless `extra`
    /// and `env` say otherwise.
    pub fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Corral {
        let args: Vec<&str> = ["--flush-interval", "200ms"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        let env: Vec<(&str, &str)> = [("CORRAL_LOG_LEVEL", "info")]
            .into_iter()
            .chain(env.iter().copied())
            .collect();
        Self::start_plain(&args, &env)
    }

    /// Waits for a log line whose message is `message`.
    pub fn wait_log(&mut self, message: &str, timeout: Duration) -> Value {
        self.wait_log_where(&format!("{message:?}"), timeout, |v| {
            v["fields"]["message"] == message
        })
    }

    pub fn send(&self, datagram: &str) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(datagram.as_bytes(), self.statsd).unwrap();
    }

    pub fn send_bytes(&self, datagram: &[u8]) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(datagram, self.statsd).unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    /// GET → (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        request("GET", &self.url(path))
    }

    pub fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: bad JSON {e}: {body}"))
    }

    /// Polls `/v0/node/app` until `pred` holds for its body, or panics after `timeout`.
    pub fn wait_node_app(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.get("/v0/node/app");
            if status == 200 {
                let v: Value = serde_json::from_str(&body).expect("json");
                if pred(&v) {
                    return v;
                }
            }
            if Instant::now() > deadline {
                panic!("condition not met within {timeout:?}; last body: {body}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Collect the remaining logs.
                while let Ok(v) = self.logs.recv_timeout(Duration::from_millis(200)) {
                    self.seen_logs.push(v);
                }
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("corral did not stop within 20s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Corral {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 client request → (status, body). Status 0 on connection failure.
pub fn request(method: &str, url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let resp = match method {
        "GET" => agent.get(url).call(),
        "DELETE" => agent.delete(url).call(),
        "POST" => agent.post(url).send(""),
        "PUT" => agent.put(url).send(""),
        other => panic!("method {other}"),
    };
    match resp {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let body = r.body_mut().read_to_string().unwrap_or_default();
            (status, body)
        }
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

/// Finds a datapoint by name and (optional) tags in a metrics body.
pub fn value_of(body: &Value, name: &str, tags: &[(&str, &str)]) -> Option<f64> {
    body["datapoints"].as_array()?.iter().find_map(|d| {
        if d["name"] != name {
            return None;
        }
        let want: serde_json::Map<String, Value> = tags
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let got = d
            .get("tags")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if got != want {
            return None;
        }
        d["value"].as_f64()
    })
}

impl Corral {
    /// Starts corral with `args` and `env` on ephemeral ports with a fresh data_dir, the agent
    /// source disabled and JSON logs, and sets nothing else: a configuration file given in
    /// `args` decides the flush interval and the log level.
    pub fn start_plain(args: &[&str], env: &[(&str, &str)]) -> Corral {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(corral_bin());
        cmd.args([
            "--statsd-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(args)
        .env_clear()
        .env("CORRAL_AGENT_URL", "")
        .env("CORRAL_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start corral");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line).unwrap_or_else(|_| Value::String(line.clone()));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut c = Corral {
            child,
            statsd: "0.0.0.0:0".parse().unwrap(),
            api: "0.0.0.0:0".parse().unwrap(),
            data_dir,
            logs: rx,
            seen_logs: Vec::new(),
        };
        let statsd = c.wait_log("statsd listening", Duration::from_secs(20));
        c.statsd = statsd["fields"]["endpoint"]
            .as_str()
            .expect("endpoint field")
            .trim_start_matches("udp://")
            .parse()
            .expect("statsd addr");
        let api = c.wait_log("api listening", Duration::from_secs(20));
        c.api = api["fields"]["addr"]
            .as_str()
            .expect("addr field")
            .parse()
            .expect("api addr");
        c
    }

    /// Takes in the log lines written so far, without waiting.
    pub fn drain_logs(&mut self) {
        while let Ok(v) = self.logs.try_recv() {
            self.seen_logs.push(v);
        }
    }

    /// Waits for a log line, seen before or arriving within `timeout`, for which `pred` holds.
    pub fn wait_log_where(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(v) = self.seen_logs.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(v) => {
                    self.seen_logs.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no log {what} within {timeout:?}; logs so far: {:#?}",
                    self.seen_logs
                ),
            }
        }
    }

    /// The value of the first `/metrics` sample whose name is `name` (any labels).
    pub fn prometheus_value(&self, name: &str) -> Option<f64> {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        body.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            l.rsplit(' ').next()?.parse().ok()
        })
    }
}
