//! `Config::to_toml`: written by hand to keep the file's key order and value spellings
//! (durations as "10s", sizes as "8 MiB").

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::{AgentAuth, Config, REDACTED};

fn string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn opt_string(s: Option<&str>) -> String {
    string(s.unwrap_or_default())
}

fn path(p: &Path) -> String {
    string(&p.to_string_lossy())
}

fn opt_path(p: Option<&Path>) -> String {
    p.map_or_else(|| string(""), path)
}

fn list(items: impl IntoIterator<Item = String>) -> String {
    format!("[{}]", items.into_iter().collect::<Vec<_>>().join(", "))
}

fn duration(d: Duration) -> String {
    string(&humantime::format_duration(d).to_string())
}

/// The largest unit that divides `n` exactly, so the value loads back unchanged.
pub(super) fn size(n: u64) -> String {
    const UNITS: &[(u64, &str)] = &[
        (1 << 60, "EiB"),
        (1 << 50, "PiB"),
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
        (1_000_000_000_000_000_000, "EB"),
        (1_000_000_000_000_000, "PB"),
        (1_000_000_000_000, "TB"),
        (1_000_000_000, "GB"),
        (1_000_000, "MB"),
        (1_000, "KB"),
    ];
    UNITS
        .iter()
        .find(|(unit, _)| n >= *unit && n % unit == 0)
        .map_or_else(
            || format!("{n} B"),
            |(unit, name)| format!("{} {name}", n / unit),
        )
}

struct Out(String);

impl Out {
    fn section(&mut self, name: &str) {
        let _ = write!(self.0, "\n[{name}]\n");
    }

    fn kv(&mut self, key: &str, value: impl AsRef<str>) {
        let _ = writeln!(self.0, "{key} = {}", value.as_ref());
    }
}

pub(super) fn render(c: &Config) -> String {
    let mut out = Out(String::new());
    out.kv("data_dir", path(&c.data_dir));
    out.kv("log_level", string(&c.log_level));
    out.kv("log_format", string(c.log_format.as_str()));

    let n = &c.node;
    out.section("node");
    out.kv("mesos_id", string(&n.mesos_id));
    out.kv("cluster_id", string(&n.cluster_id));
    out.kv("hostname", string(&n.hostname));
    out.kv("poll_interval", duration(n.poll_interval));

    let s = &c.statsd;
    out.section("statsd");
    out.kv(
        "listen",
        list(s.listen.iter().map(|a| string(&a.to_string()))),
    );
    out.kv("unix_socket", opt_path(s.unix_socket.as_deref()));
    out.kv("flush_interval", duration(s.flush_interval));
    // Rust prints 50.0 as "50" and never uses an exponent, so each is a valid TOML number.
    out.kv(
        "percentiles",
        list(s.percentiles.iter().map(|p| format!("{p}"))),
    );
    out.kv("gauge_sign", string(s.gauge_sign.as_str()));
    out.kv(
        "container_listen_host",
        string(&s.container_listen_host.to_string()),
    );
    let range = s.container_port_range.map(|(a, b)| format!("{a}-{b}"));
    out.kv("container_port_range", opt_string(range.as_deref()));
    out.kv("expiry", duration(s.expiry));
    out.kv("receive_threads", s.receive_threads.to_string());
    out.kv("receive_buffer", string(&size(s.receive_buffer)));
    out.kv("max_series", s.max_series.to_string());

    let a = &c.agent;
    out.section("agent");
    out.kv("url", opt_string(a.url.as_deref()));
    out.kv("poll_interval", duration(a.poll_interval));
    out.kv("timeout", duration(a.timeout));
    match &a.auth {
        AgentAuth::None => {}
        AgentAuth::Basic { username, .. } => out.kv(
            "basic",
            format!(
                "{{ username = {}, password = {} }}",
                string(username),
                string(REDACTED)
            ),
        ),
        AgentAuth::IamConfig(p) => out.kv("iam_config", path(p)),
    }
    out.kv("ca_certificate", opt_path(a.ca_certificate.as_deref()));

    out.section("api");
    out.kv("listen", string(&c.api.listen.to_string()));

    let k = &c.kafka;
    out.section("kafka");
    out.kv("brokers", list(k.brokers.iter().map(|b| string(b))));
    out.kv("topic_prefix", string(&k.topic_prefix));
    out.kv("single_topic", opt_string(k.single_topic.as_deref()));
    out.kv("avro_codec", string(k.avro_codec.as_str()));
    out.kv("compression", string(k.compression.as_str()));
    out.kv("spool_max_bytes", string(&size(k.spool_max_bytes)));
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(8 << 20), "8 MiB");
        assert_eq!(size(1 << 30), "1 GiB");
        assert_eq!(size(1536), "1536 B");
        assert_eq!(size(3 << 10), "3 KiB");
        assert_eq!(size(5_000_000), "5 MB");
        assert_eq!(size(1001), "1001 B");
        for n in [
            0,
            1,
            1001,
            1536,
            8 << 20,
            5_000_000,
            u64::MAX,
            i32::MAX as u64,
        ] {
            let back: bytesize::ByteSize = size(n).parse().unwrap();
            assert_eq!(back.0, n, "{}", size(n));
        }
    }
}
