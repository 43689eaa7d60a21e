//! The command line of the real binary: version, help, check-config, startup errors.

mod common;

use std::process::Command;

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
            "--config",
            file.to_str().unwrap(),
            "--api-listen",
            "127.0.0.1:9999",
        ],
        &[("CORRAL_STATSD_GAUGE_SIGN", "absolute")],
    );
    assert_eq!(code, 0, "{err}");
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
