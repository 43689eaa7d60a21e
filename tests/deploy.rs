//! The deploy files under `deploy/`, checked with the tools that consume them: the systemd unit
//! with `systemd-analyze verify` (and `security`), the sysusers file with `systemd-sysusers`,
//! the example configurations with `corral check-config`, the DC/OS package, the Kubernetes
//! manifests and the Dockerfile with `deploy/validate.py`, and `statsd-env.sh` against a real
//! Corral.
//!
//! The tools come from `.ci/setup.d/40-deploy-tools.sh`, found through
//! `CORRAL_TEST_SYSTEMD_ANALYZE` and `CORRAL_TEST_DEPLOY_PYTHON` or at their usual places; a
//! missing tool fails the test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{corral_bin, Corral};

const SETUP: &str = "run .ci/run, or source .ci/setup.d/40-deploy-tools.sh";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(rel: &str) -> PathBuf {
    root().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The tool named by `var`, else the first of `fallbacks` that exists; panics otherwise.
fn tool(var: &str, fallbacks: &[&str], what: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            is_executable(&p),
            "{var}={} is not an executable ({SETUP})",
            p.display()
        );
        return p;
    }
    fallbacks
        .iter()
        .map(PathBuf::from)
        .find(|p| is_executable(p))
        .unwrap_or_else(|| panic!("{what} not found: set {var} or {SETUP}"))
}

fn systemd_analyze() -> PathBuf {
    tool(
        "CORRAL_TEST_SYSTEMD_ANALYZE",
        &["/usr/bin/systemd-analyze", "/bin/systemd-analyze"],
        "systemd-analyze (Debian package systemd)",
    )
}

fn deploy_python() -> PathBuf {
    let venv = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/corral-ci/venv/bin/python"))
        .unwrap_or_default();
    tool(
        "CORRAL_TEST_DEPLOY_PYTHON",
        &[venv.to_str().unwrap_or("")],
        "the Python with jsonschema, chevron, kubernetes-validate, dockerfile-parse and PyYAML",
    )
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `deploy/validate.py FAMILY --out DIR`; panics with its report when a check fails.
fn validate_py(family: &str, out_dir: &Path) -> String {
    let out = run(Command::new(deploy_python())
        .arg(deploy("validate.py"))
        .arg(family)
        .arg("--out")
        .arg(out_dir)
        .current_dir(root()));
    assert!(
        out.status.success(),
        "validate.py {family} failed:\n{}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `corral check-config` with only the given environment; the effective configuration.
fn check_config(config: Option<&Path>, flags: &[&str], env: &BTreeMap<String, String>) -> String {
    let mut cmd = Command::new(corral_bin());
    // Only validated: these configurations are for other hosts.
    cmd.arg("check-config")
        .arg("--no-probe")
        .args(flags)
        .env_clear()
        .envs(env);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = run(&mut cmd);
    assert!(
        out.status.success(),
        "corral check-config {config:?} with {env:?} failed:\n{}",
        describe(&out)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn env_file(path: &Path) -> BTreeMap<String, String> {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Dotted keys of a TOML table: `statsd.listen`, `agent.basic.username`.
fn flat_keys(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flat_keys(t, &key, out),
            _ => {
                out.insert(key);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// systemd

/// The unit (and optionally its DC/OS drop-in) in a temporary directory, with the binary it
/// starts replaced by the one under test, since `verify` checks that ExecStart's exists.
fn unit_copy(dir: &Path, with_dropin: bool) -> PathBuf {
    let unit = read(&deploy("systemd/corral.service"));
    let exec_start = "ExecStart=/usr/bin/corral --config /etc/corral/corral.toml";
    assert!(
        unit.lines().any(|l| l == exec_start),
        "corral.service has no line {exec_start:?}"
    );
    let path = dir.join("corral.service");
    std::fs::write(&path, unit.replace("/usr/bin/corral", corral_bin())).unwrap();
    if with_dropin {
        let dropin = read(&deploy("systemd/corral.service.d/dcos.conf"));
        assert!(dropin.contains("exec /usr/bin/corral --config /etc/corral/corral.toml"));
        let d = dir.join("corral.service.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("dcos.conf"),
            dropin.replace("/usr/bin/corral", corral_bin()),
        )
        .unwrap();
    }
    path
}

/// `systemd-analyze verify`: exit 0 is not enough, since unknown keys and bad values are
/// only warnings; any diagnostic about the unit fails.
fn verify_unit(unit: &Path) {
    let out = run(Command::new(systemd_analyze())
        .args(["verify", "--man=no"])
        .arg(unit));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains("corral")).collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify {}:\n{}",
        unit.display(),
        describe(&out)
    );
}

#[test]
fn systemd_unit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path(), false);
    verify_unit(&unit);

    // The hardening, as systemd itself rates it (0 = fully confined, 10 = not at all; the
    // threshold is in tenths). The unit rates 1.8; network access and a full /proc are needed.
    let out = run(Command::new(systemd_analyze())
        .args(["security", "--offline=yes", "--threshold=25", "--no-pager"])
        .arg(&unit));
    assert!(
        out.status.success(),
        "systemd-analyze security rates corral.service above 2.5:\n{}",
        describe(&out)
    );

    let text = read(&deploy("systemd/corral.service"));
    for line in [
        "Type=simple",
        "User=corral",
        "StateDirectory=corral",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "corral.service has no line {line:?}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path(), true);
    verify_unit(&unit);
}

#[test]
fn systemd_user_and_sysctl_files() {
    // The user the unit names, created by systemd-sysusers in an empty root.
    let sysusers = systemd_analyze().with_file_name("systemd-sysusers");
    assert!(
        is_executable(&sysusers),
        "{} not found ({SETUP})",
        sysusers.display()
    );
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::create_dir(rootfs.path().join("etc")).unwrap();
    let out = run(Command::new(&sysusers)
        .arg(format!("--root={}", rootfs.path().display()))
        .arg(deploy("systemd/sysusers.d/corral.conf")));
    assert!(
        out.status.success(),
        "systemd-sysusers:\n{}",
        describe(&out)
    );
    let passwd = read(&rootfs.path().join("etc/passwd"));
    let entry = passwd
        .lines()
        .find(|l| l.starts_with("corral:"))
        .unwrap_or_else(|| panic!("no corral user in {passwd}"));
    let fields: Vec<&str> = entry.split(':').collect();
    assert_eq!(fields[5], "/var/lib/corral", "{entry}");
    assert!(fields[6].ends_with("nologin"), "{entry}");
    assert!(read(&rootfs.path().join("etc/group")).contains("corral:"));

    // The receive-buffer limit: a real sysctl, at least Corral's default receive_buffer.
    let sysctl = read(&deploy("systemd/sysctl.d/99-corral.conf"));
    let settings: BTreeMap<&str, &str> = sysctl
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("99-corral.conf: {l:?}"));
            (k.trim(), v.trim())
        })
        .collect();
    assert_eq!(
        settings.keys().copied().collect::<Vec<_>>(),
        ["net.core.rmem_max"]
    );
    assert!(Path::new("/proc/sys/net/core/rmem_max").exists());
    let rmem: u64 = settings["net.core.rmem_max"].parse().unwrap();
    assert!(
        rmem >= 8 << 20,
        "net.core.rmem_max {rmem} < the 8 MiB receive buffer"
    );
}

#[test]
fn systemd_example_config_is_valid_and_documents_every_default() {
    let example = deploy("systemd/corral.toml");
    let effective = check_config(Some(&example), &[], &BTreeMap::new());
    assert!(
        effective.contains("data_dir = \"/var/lib/corral\"\n"),
        "data_dir is not the unit's StateDirectory:\n{effective}"
    );

    // "#key = value" lines are the defaults: uncommented (and the file's own settings left
    // out) they must name every key and give exactly the built-in configuration.
    let text = read(&example);
    let mut defaults = String::new();
    for line in text.lines() {
        let is_setting = |l: &str| {
            l.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
        };
        if line.starts_with('[') {
            defaults.push_str(line);
        } else if let Some(setting) = line.strip_prefix('#').filter(|l| is_setting(l)) {
            defaults.push_str(setting);
        } else if is_setting(line) {
            continue;
        }
        defaults.push('\n');
    }
    let table: toml::Table = defaults
        .parse()
        .unwrap_or_else(|e| panic!("the commented defaults are not TOML: {e}\n{defaults}"));
    let mut documented = BTreeSet::new();
    flat_keys(&table, "", &mut documented);
    documented.insert("data_dir".to_string());
    let known: BTreeSet<String> = corral_collector::config::keys()
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = known
        .difference(&documented)
        .filter(|k| !k.starts_with("agent.basic."))
        .collect();
    assert!(missing.is_empty(), "corral.toml does not list {missing:?}");
    assert!(
        text.contains("# basic = { username = "),
        "agent.basic is not described"
    );
    let unknown: Vec<&String> = documented.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "corral.toml lists unknown keys {unknown:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let defaults_file = dir.path().join("defaults.toml");
    std::fs::write(&defaults_file, &defaults).unwrap();
    // The same data_dir on both sides: without one, the default depends on what is writable.
    let flags = ["--data-dir", "/var/lib/corral"];
    assert_eq!(
        check_config(Some(&defaults_file), &flags, &BTreeMap::new()),
        check_config(None, &flags, &BTreeMap::new()),
        "a commented value in corral.toml is not the built-in default"
    );
}

// ---------------------------------------------------------------------------------------------
// DC/OS

#[test]
fn dcos_package_validates_and_configures_corral() {
    let out = tempfile::tempdir().unwrap();
    let report = validate_py("dcos", out.path());
    println!("{report}");

    // The environment each rendering gives the task is a valid Corral configuration.
    let mut renderings = 0;
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("dcos-env-") {
            continue;
        }
        renderings += 1;
        let env = env_file(&path);
        assert!(env.contains_key("CORRAL_API_LISTEN"), "{name}: {env:?}");
        let effective = check_config(None, &[], &env);
        assert!(
            effective.contains(&format!("listen = \"{}\"", env["CORRAL_API_LISTEN"])),
            "{name}: api.listen not applied:\n{effective}"
        );
        if name == "dcos-env-defaults.json" {
            assert!(
                effective.contains("url = \"http://10.0.0.7:5051\""),
                "defaults: the agent URL is not the task's HOST:\n{effective}"
            );
        }
    }
    assert!(
        renderings >= 4,
        "validate.py wrote {renderings} environments"
    );
}

#[test]
fn statsd_env_wrapper_gets_the_container_port() {
    let sh = Path::new("/bin/sh");
    let curl = ["/usr/bin/curl", "/bin/curl"]
        .into_iter()
        .map(Path::new)
        .find(|p| is_executable(p))
        .unwrap_or_else(|| panic!("curl not found ({SETUP})"));
    let path_env = curl.parent().unwrap().to_str().unwrap().to_string() + ":/usr/bin:/bin";
    let script = deploy("dcos/statsd-env.sh");
    assert!(is_executable(&script), "statsd-env.sh is not executable");
    let out = run(Command::new(sh).arg("-n").arg(&script));
    assert!(
        out.status.success(),
        "sh -n statsd-env.sh:\n{}",
        describe(&out)
    );

    let mut corral = Corral::start(&[]);
    let api = format!("http://{}", corral.api);
    let wrapped = |env: &[(&str, &str)]| -> Output {
        run(Command::new(sh)
            .arg(&script)
            .args([
                "sh",
                "-c",
                "printf '%s %s' \"$STATSD_UDP_HOST\" \"$STATSD_UDP_PORT\"",
            ])
            .env_clear()
            .env("PATH", &path_env)
            .envs(env.iter().copied()))
    };
    let host_port = |out: &Output| -> (String, u16) {
        assert!(out.status.success(), "statsd-env.sh:\n{}", describe(out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (h, p) = text.split_once(' ').unwrap_or(("", ""));
        let port = p
            .parse()
            .unwrap_or_else(|_| panic!("no port exported:\n{}", describe(out)));
        (h.to_string(), port)
    };

    // An id given by the launcher, then one taken from the sandbox path.
    let (host, port) = host_port(&wrapped(&[
        ("CORRAL_API", api.as_str()),
        ("MESOS_CONTAINER_ID", "3a6f2c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"),
    ]));
    let (host2, port2) = host_port(&wrapped(&[
        ("CORRAL_API", format!("{api}/").as_str()),
        (
            "MESOS_SANDBOX",
            "/var/lib/mesos/slave/slaves/S0/frameworks/F0/executors/web.1/runs/7b1e9d20-aaaa-4bbb-8ccc-000000000001/",
        ),
    ]));
    assert_ne!(port, port2);
    assert_eq!(host, host2);
    let listed = corral.get_json("/v0/statsd/containers");
    let assigned: BTreeMap<String, u64> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|a| {
            (
                a["container_id"].as_str().unwrap().to_string(),
                a["statsd_port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        assigned,
        BTreeMap::from([
            (
                "3a6f2c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b".to_string(),
                u64::from(port)
            ),
            (
                "7b1e9d20-aaaa-4bbb-8ccc-000000000001".to_string(),
                u64::from(port2)
            ),
        ])
    );
    // The same container asking again gets the same port.
    let again = host_port(&wrapped(&[
        ("CORRAL_API", api.as_str()),
        ("MESOS_CONTAINER_ID", "3a6f2c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"),
    ]));
    assert_eq!(again, (host.clone(), port));

    // What the application sends there is its container's.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"checkout.orders:2|c", (host.as_str(), port))
        .unwrap();
    let path = "/v0/containers/3a6f2c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b/app";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = corral.get(path);
        if status == 200 && body.contains("checkout.orders") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path}: no checkout.orders ({status}: {body})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // No Corral: the command still starts, without the variables, unless they are required.
    let unreachable = "http://127.0.0.1:9";
    let out = wrapped(&[
        ("CORRAL_API", unreachable),
        ("MESOS_CONTAINER_ID", "c1"),
        ("CORRAL_STATSD_ENV_ATTEMPTS", "1"),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), " ");
    let out = wrapped(&[
        ("CORRAL_API", unreachable),
        ("MESOS_CONTAINER_ID", "c1"),
        ("CORRAL_STATSD_ENV_ATTEMPTS", "1"),
        ("CORRAL_STATSD_ENV_REQUIRED", "1"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(out.stdout.is_empty());
    corral.stop();
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

#[test]
fn kubernetes_manifests_validate_and_configure_corral() {
    let out = tempfile::tempdir().unwrap();
    let report = validate_py("kubernetes", out.path());
    println!("{report}");

    let env = env_file(&out.path().join("k8s-env.json"));
    let effective = check_config(Some(&out.path().join("k8s-corral.toml")), &[], &env);
    for want in [
        "hostname = \"node-1\"",
        "listen = [\"0.0.0.0:8125\"]",
        "listen = \"0.0.0.0:9000\"",
        "data_dir = \"/var/lib/corral\"",
    ] {
        assert!(
            effective.contains(want),
            "the DaemonSet's configuration lacks {want}:\n{effective}"
        );
    }
    let agent = effective.split("[agent]").nth(1).expect("[agent] section");
    assert!(
        agent.contains("url = \"\""),
        "the agent source is not off:\n{effective}"
    );
}

// ---------------------------------------------------------------------------------------------
// Docker

#[test]
fn dockerfile_and_build_script() {
    let out = tempfile::tempdir().unwrap();
    let report = validate_py("docker", out.path());
    println!("{report}");

    // Without a reachable engine, build.sh stops with a message rather than a docker error.
    let out = run(Command::new("bash")
        .arg(deploy("docker/build.sh"))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .current_dir(std::env::temp_dir()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.starts_with("build.sh: "),
        "{}",
        describe(&out)
    );
}
