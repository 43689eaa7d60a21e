//! The command line of the real binary: version, help, check-config, startup errors.

mod agent_stub;
mod common;

use std::process::Command;

use agent_stub::{Auth, StubAgent, Switches};
use common::corral_bin;

fn corral(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(corral_bin());
    cmd.args(args).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run corral");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let (code, out, _) = corral(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("corral "), "{out}");
    let commit = env!("CORRAL_COMMIT");
    assert_eq!(
        out,
        format!("corral {} (commit {commit})\n", env!("CARGO_PKG_VERSION"))
    );
    // From git when the tree is a repository: 12 hex digits, maybe marked dirty.
    let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
    let from_git = hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    let is_repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".git")
        .exists();
    assert!(
        from_git || !is_repo || commit == "unknown",
        "commit {commit:?} in a git checkout"
    );
    let (code, out, _) = corral(&["--help"], &[]);
    assert_eq!(code, 0);
    for flag in [
        "--config",
        "--statsd-listen",
        "--api-listen",
        "--agent-url",
        "--kafka-brokers",
        "--flush-interval",
        "--data-dir",
        "--log-level",
        "check-config",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}: {out}");
    }
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corral.toml");
    std::fs::write(
        &file,
        "[statsd]\nflush_interval = \"5s\"\npercentiles = [99.9, 50]\n",
    )
    .unwrap();
    let (code, out, err) = corral(
        &[
            "check-config",
            "--no-probe",
            "--config",
            file.to_str().unwrap(),
            "--api-listen",
            "127.0.0.1:9999",
        ],
        &[("CORRAL_STATSD_GAUGE_SIGN", "absolute")],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "corral: configuration is valid\n");
    let effective: toml::Table =
        toml::from_str(&out).unwrap_or_else(|e| panic!("not TOML: {e}\n{out}"));
    assert_eq!(effective["statsd"]["flush_interval"].as_str(), Some("5s"));
    assert_eq!(effective["statsd"]["gauge_sign"].as_str(), Some("absolute"));
    assert_eq!(effective["api"]["listen"].as_str(), Some("127.0.0.1:9999"));
    assert_eq!(
        effective["statsd"]["listen"].as_array().unwrap()[0].as_str(),
        Some("127.0.0.1:8125")
    );
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corral.toml");
    std::fs::write(&file, "[statsd]\nflush_intervall = \"5s\"\n").unwrap();
    let (code, _, err) = corral(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("flush_intervall"), "{err}");

    let (code, _, err) = corral(
        &["check-config"],
        &[("CORRAL_STATSD_FLUSH_INTERVAL", "10 parsecs")],
    );
    assert_eq!(code, 2);
    assert!(err.contains("CORRAL_STATSD_FLUSH_INTERVAL"), "{err}");

    let (code, _, err) = corral(&["check-config", "--api-listen", "not an address"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("api.listen"), "{err}");
}

#[test]
fn an_unusable_address_is_a_startup_error_naming_the_key() {
    // Hold a TCP port so the API cannot bind it.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = corral(
        &[
            "--statsd-listen",
            "127.0.0.1:0",
            "--api-listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[("CORRAL_AGENT_URL", "")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("api.listen"), "{err}");

    let (code, _, err) = corral(
        &[
            "--statsd-listen",
            "192.0.2.1:8125",
            "--api-listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[("CORRAL_AGENT_URL", "")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("statsd.listen"), "{err}");
}

/// `check-config` with probes on free ephemeral ports and a fresh data_dir, plus `extra`:
/// (exit code, stderr lines).
fn probe(extra: &[&str], env: &[(&str, &str)]) -> (i32, Vec<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut args = vec![
        "check-config",
        "--statsd-listen",
        "127.0.0.1:0",
        "--api-listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = corral(&args, env);
    assert!(
        toml::from_str::<toml::Table>(&out).is_ok(),
        "stdout is not TOML:\n{out}"
    );
    (code, err.lines().map(str::to_string).collect(), dir)
}

fn line<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in {lines:#?}"))
}

#[test]
fn check_config_probes_a_runnable_configuration() {
    let (code, lines, dir) = probe(&["--agent-url", ""], &[]);
    assert_eq!(code, 0, "{lines:#?}");
    line(&lines, "ok   statsd.listen 127.0.0.1:0: free");
    line(&lines, "ok   api.listen 127.0.0.1:0: free");
    line(&lines, "ok   data_dir ");
    line(&lines, "ok   agent.url: not set");
    line(&lines, "ok   kafka.brokers: none configured");
    assert_eq!(lines.last().unwrap(), "verdict: ok (0 FAIL, 0 WARN, 5 ok)");
    // data_dir is created, and the probe file removed.
    let data_dir = dir.path().join("data");
    assert_eq!(std::fs::read_dir(&data_dir).unwrap().count(), 0);
}

#[test]
fn check_config_fails_on_a_port_in_use() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap().to_string();
    let (code, lines, _dir) = probe(&["--agent-url", "", "--statsd-listen", &addr], &[]);
    assert_eq!(code, 1, "{lines:#?}");
    assert_eq!(
        line(&lines, "FAIL statsd.listen"),
        format!("FAIL statsd.listen {addr}: address in use")
    );
    assert!(
        lines.last().unwrap().starts_with("verdict: FAIL"),
        "{lines:#?}"
    );

    // Only validating does not bind anything.
    let (code, _, err) = corral(
        &["check-config", "--no-probe", "--statsd-listen", &addr],
        &[],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn check_config_warns_about_unreachable_agent_and_brokers() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let broker = format!("127.0.0.1:{port}");
    let (code, lines, _dir) = probe(
        &["--agent-url", &url, "--kafka-brokers", &broker],
        &[("CORRAL_AGENT_TIMEOUT", "2s")],
    );
    assert_eq!(code, 0, "{lines:#?}");
    assert!(
        line(&lines, "WARN agent.url").contains("unreachable"),
        "{lines:#?}"
    );
    line(&lines, &format!("WARN kafka.brokers {broker}: "));
    assert_eq!(
        lines.last().unwrap(),
        "verdict: ok with warnings (0 FAIL, 2 WARN, 3 ok)"
    );
}

#[test]
fn check_config_reads_the_agent_with_its_credentials() {
    let stub = StubAgent::start(Switches {
        auth: Auth::Basic {
            username: "corral".into(),
            password: "s3cret".into(),
        },
        ..Switches::default()
    });
    let url = stub.url();
    let (code, lines, _dir) = probe(&["--agent-url", &url], &[]);
    assert_eq!(code, 1, "{lines:#?}");
    let fail = line(&lines, "FAIL agent.url");
    assert!(
        fail.contains("401") && fail.contains("agent.basic"),
        "{fail}"
    );

    let (code, lines, _dir) = probe(
        &["--agent-url", &url],
        &[
            ("CORRAL_AGENT_BASIC_USERNAME", "corral"),
            ("CORRAL_AGENT_BASIC_PASSWORD", "s3cret"),
        ],
    );
    assert_eq!(code, 0, "{lines:#?}");
    assert_eq!(
        line(&lines, "ok   agent.url"),
        format!(
            "ok   agent.url {url}: HTTP 200, agent id \
             9d4b2f2e-8f4a-4c43-9c2b-5e4d3a1b0c9f-S3 (auth: agent.basic)"
        )
    );
}

#[test]
fn check_config_fails_on_an_agent_with_an_unknown_ca() {
    let stub = StubAgent::start_tls(Switches::default());
    let url = stub.url();
    let (code, lines, _dir) = probe(&["--agent-url", &url], &[]);
    assert_eq!(code, 1, "{lines:#?}");
    assert!(
        line(&lines, "FAIL agent.url").contains("agent.ca_certificate"),
        "{lines:#?}"
    );
}
