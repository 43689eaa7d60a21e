//! End to end with the Mesos agent source: the real binary polls a stand-in agent
//! (`agent_stub`) over HTTP and serves container metrics, per-container StatsD ports and
//! attributed app metrics.

mod agent_stub;
mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use agent_stub::{Auth, StubAgent, Switches, IAM_PRIVATE_KEY, IAM_UID};
use common::{request, value_of, Corral};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

const AGENT: &str = "9d4b2f2e-8f4a-4c43-9c2b-5e4d3a1b0c9f-S3";
const C1: &str = "e4faacb2-f69f-4ea1-9d96-eb06fea75eef";
const POD: &str = "7c1d3e5f-2a4b-4c6d-8e0f-1a2b3c4d5e6f";
const WEB: &str = "8a9b0c1d-2e3f-4a5b-8c7d-9e0f1a2b3c4d";
const KAFKA: &str = "3f2e1d0c-9b8a-4f6e-8d4c-3b2a1f0e9d8c";
const KAFKA_NO_STATS: &str = "4a3b2c1d-0e9f-4a8b-9c6d-5e4f3a2b1c0d";
const FOO: &str = "foo.124b1048-a17a-11e6-9182-080027fb5b88";
const MARATHON: &str = "5349f49b-68b3-4638-aab2-fc4ec845f993-0000";

fn start(stub: &StubAgent, extra: &[&str], env: &[(&str, &str)]) -> Corral {
    let url = stub.url();
    let mut args = vec!["--agent-url", url.as_str()];
    args.extend_from_slice(extra);
    let mut vars = vec![
        ("CORRAL_AGENT_POLL_INTERVAL", "300ms"),
        ("CORRAL_AGENT_TIMEOUT", "2s"),
    ];
    vars.extend_from_slice(env);
    Corral::start_with(&args, &vars)
}

/// Retries `f` until it returns `Some`, or panics after `timeout` with `what`.
fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get_json(c: &Corral, path: &str) -> Option<Value> {
    let (status, body) = c.get(path);
    (status == 200).then(|| serde_json::from_str(&body).expect("json"))
}

fn containers(c: &Corral) -> Vec<String> {
    get_json(c, "/v0/containers")
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

fn wait_container(c: &Corral, id: &str) -> Value {
    eventually(&format!("resource metrics of {id}"), WAIT, || {
        get_json(c, &format!("/v0/containers/{id}"))
    })
}

/// Waits until `/v0/containers/{id}/app` has datapoint `name`.
fn wait_app(c: &Corral, id: &str, name: &str) -> Value {
    eventually(&format!("{name} under {id}/app"), WAIT, || {
        get_json(c, &format!("/v0/containers/{id}/app")).filter(|b| {
            b["datapoints"]
                .as_array()
                .is_some_and(|a| a.iter().any(|d| d["name"] == name))
        })
    })
}

/// A self-metric from `/v0/node/app`, once it satisfies `pred`.
fn wait_self_metric(
    c: &Corral,
    name: &str,
    tags: &[(&str, &str)],
    pred: impl Fn(f64) -> bool,
) -> f64 {
    eventually(&format!("{name} {tags:?}"), WAIT, || {
        get_json(c, "/v0/node/app")
            .and_then(|b| value_of(&b, name, tags))
            .filter(|v| pred(*v))
    })
}

fn send_from(source_ip: &str, to: impl std::net::ToSocketAddrs, datagram: &str) {
    let s = UdpSocket::bind((source_ip, 0)).expect("bind a loopback source address");
    s.send_to(datagram.as_bytes(), to).unwrap();
}

fn five_tags(id: &str, executor: &str, framework: &str) -> Vec<(&'static str, String)> {
    vec![
        ("container_id", id.to_string()),
        ("executor_id", executor.to_string()),
        ("framework_id", framework.to_string()),
    ]
}

/// The tags of datapoint `name` in a metrics body.
fn tags_of(body: &Value, name: &str) -> serde_json::Map<String, Value> {
    body["datapoints"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == name))
        .and_then(|d| d["tags"].as_object().cloned())
        .unwrap_or_default()
}

#[test]
fn container_metrics_and_dimensions_are_served() {
    let stub = StubAgent::start(Switches::default());
    let c = start(&stub, &[], &[]);
    let body = wait_container(&c, C1);

    let tags = tags_of(&body, "cpus.user.time");
    for (k, v) in five_tags(C1, FOO, MARATHON) {
        assert_eq!(tags[k], v, "{k}");
    }
    assert_eq!(tags["source"], FOO);
    assert!(tags["executor_name"]
        .as_str()
        .unwrap()
        .starts_with("Command Executor"));
    let t: Vec<(&str, &str)> = tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    assert_eq!(value_of(&body, "cpus.user.time", &t), Some(0.22));
    assert_eq!(value_of(&body, "net.tx.bytes", &t), Some(163200529816.0));
    assert_eq!(value_of(&body, "net.rx.bytes", &t), Some(10847.0));
    let mut blk = t.clone();
    blk.push(("blkio_device", "8:0"));
    assert_eq!(
        value_of(&body, "blkio.throttling.io_serviced.read", &blk),
        Some(987651.0)
    );
    let unit = |name: &str| {
        body["datapoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .map(|d| d["unit"].clone())
    };
    assert_eq!(unit("cpus.user.time"), Some("seconds".into()));
    assert_eq!(unit("mem.total"), Some("bytes".into()));
    assert_eq!(unit("cpus.limit"), Some("count".into()));

    let d = &body["dimensions"];
    assert_eq!(d["mesos_id"], AGENT);
    assert_eq!(d["container_id"], C1);
    assert_eq!(d["executor_id"], FOO);
    assert_eq!(d["framework_id"], MARATHON);
    assert_eq!(d["framework_name"], "marathon");
    assert_eq!(d["framework_role"], "slave_public");
    assert_eq!(d["framework_principal"], "dcos_marathon");
    assert_eq!(d["task_id"], FOO);
    assert_eq!(d["task_name"], "foo");
    assert_eq!(
        d["labels"],
        serde_json::json!({"HAPROXY_GROUP": "external", "bare": "", "somekey": "someval"})
    );

    let mut ids = containers(&c);
    ids.sort();
    let mut want = vec![C1.to_string(), POD.to_string(), KAFKA.to_string()];
    want.sort();
    assert_eq!(ids, want);
    // Known to the agent but without statistics: no resource metrics.
    assert_eq!(c.get(&format!("/v0/containers/{KAFKA_NO_STATS}")).0, 204);
    let kafka = wait_container(&c, KAFKA);
    assert_eq!(kafka["dimensions"]["framework_role"], "kafka-role");
    assert_eq!(
        kafka["dimensions"]["labels"],
        serde_json::json!({"broker": "0"})
    );

    // The node learned its mesos_id from /state: the per-agent path answers for it.
    let (status, _) = c.get(&format!(
        "/system/v1/agent/{AGENT}/metrics/v0/containers/{C1}"
    ));
    assert_eq!(status, 200);
    let node = c.wait_node_app(WAIT, |b| b["dimensions"]["mesos_id"] == AGENT);
    assert!(value_of(&node, "corral.agent.polls", &[]).unwrap() >= 1.0);
    wait_self_metric(&c, "corral.agent.containers", &[], |v| v == 3.0);
    wait_self_metric(
        &c,
        "corral.agent.containers_skipped",
        &[("reason", "no_statistics")],
        |v| v >= 1.0,
    );
    wait_self_metric(&c, "corral.agent.poll_duration_seconds", &[], |v| v > 0.0);
    assert_eq!(
        value_of(
            &node,
            "corral.agent.poll_errors",
            &[("reason", "unauthorized")]
        ),
        Some(0.0)
    );
}

#[test]
fn a_container_port_carries_statsd_with_the_container_dimensions_and_survives_restart() {
    let stub = StubAgent::start(Switches::default());
    let mut a = start(&stub, &[], &[]);
    wait_container(&a, C1);

    let (status, body) = request("PUT", &a.url(&format!("/v0/statsd/containers/{C1}")));
    assert_eq!(status, 200, "{body}");
    let assigned: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(assigned["statsd_host"], "127.0.0.1");
    let port = assigned["statsd_port"].as_u64().unwrap() as u16;
    // Idempotent.
    let (_, again) = request("PUT", &a.url(&format!("/v0/statsd/containers/{C1}")));
    assert_eq!(serde_json::from_str::<Value>(&again).unwrap(), assigned);
    let (_, nested) = request("PUT", &a.url(&format!("/v0/statsd/containers/{WEB}")));
    let nested_port = serde_json::from_str::<Value>(&nested).unwrap()["statsd_port"]
        .as_u64()
        .unwrap() as u16;
    assert_ne!(nested_port, port);
    let list = a.get_json("/v0/statsd/containers");
    assert_eq!(list.as_array().unwrap().len(), 2);

    send_from(
        "127.0.0.1",
        ("127.0.0.1", port),
        "app.requests:3|c|#route:x",
    );
    let app = wait_app(&a, C1, "app.requests");
    assert_eq!(value_of(&app, "app.requests", &[("route", "x")]), Some(3.0));
    let d = &app["dimensions"];
    assert_eq!(d["container_id"], C1);
    assert_eq!(d["executor_id"], FOO);
    assert_eq!(d["framework_name"], "marathon");
    assert_eq!(d["task_name"], "foo");
    assert_eq!(d["labels"]["somekey"], "someval");
    assert_eq!(d["mesos_id"], AGENT);
    // A pod task's own container: its task, under the pod's executor.
    send_from("127.0.0.1", ("127.0.0.1", nested_port), "web.up:1|g");
    let web = wait_app(&a, WEB, "web.up");
    assert_eq!(web["dimensions"]["task_name"], "web");
    assert_eq!(
        web["dimensions"]["executor_id"],
        "instance-pod.1a2b3c4d-0000-4000-8000-000000000000"
    );
    assert_eq!(web["dimensions"]["labels"]["tier"], "frontend");
    assert!(containers(&a).contains(&WEB.to_string()));

    // A restart on the same data_dir binds the same ports again.
    assert!(a.stop().success());
    let dir = a.data_dir.path().to_str().unwrap().to_string();
    let b = start(&stub, &["--data-dir", &dir], &[]);
    let list = b.get_json("/v0/statsd/containers");
    let restored: Vec<(String, u64)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["container_id"].as_str().unwrap().to_string(),
                a["statsd_port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        restored.contains(&(C1.to_string(), port as u64)),
        "{restored:?}"
    );
    assert!(restored.contains(&(WEB.to_string(), nested_port as u64)));
    wait_container(&b, C1);
    send_from("127.0.0.1", ("127.0.0.1", port), "after.restart:1|c");
    let app = wait_app(&b, C1, "after.restart");
    assert_eq!(app["dimensions"]["task_name"], "foo");

    // DELETE releases the port.
    let (status, _) = request("DELETE", &b.url(&format!("/v0/statsd/containers/{WEB}")));
    assert_eq!(status, 204);
    assert_eq!(
        b.get_json("/v0/statsd/containers")
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_container_the_agent_stops_reporting_is_released_after_expiry() {
    let stub = StubAgent::start(Switches::default());
    let mut c = start(&stub, &[], &[("CORRAL_STATSD_EXPIRY", "1s")]);
    wait_container(&c, C1);
    for id in [C1, KAFKA] {
        let (status, _) = request("PUT", &c.url(&format!("/v0/statsd/containers/{id}")));
        assert_eq!(status, 200);
    }
    // Let a poll see both registered containers, then C1 goes away.
    std::thread::sleep(Duration::from_millis(700));
    stub.hide(C1);
    eventually("C1's resource metrics gone", WAIT, || {
        (!containers(&c).contains(&C1.to_string())).then_some(())
    });
    let remaining = eventually("C1's port released", WAIT, || {
        let list = c.get_json("/v0/statsd/containers");
        let ids: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["container_id"].as_str().unwrap().to_string())
            .collect();
        (!ids.contains(&C1.to_string())).then_some(ids)
    });
    assert_eq!(remaining, vec![KAFKA.to_string()]);
    let released = c.wait_log(
        "container port released: the agent no longer reports the container",
        WAIT,
    );
    assert_eq!(released["fields"]["container_id"], C1);
    let files: Vec<String> = std::fs::read_dir(c.data_dir.path().join("container-ports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(files, vec![format!("{KAFKA}.json")]);
    assert!(c.stop().success());
}

#[test]
fn samples_are_attributed_by_source_ip_and_by_the_c_field() {
    let stub = StubAgent::start(Switches::default());
    let c = start(&stub, &[], &[]);
    wait_container(&c, C1);
    // The IP map arrives with the same poll; give the receive threads a flush to see it.
    std::thread::sleep(Duration::from_millis(300));

    // 127.0.0.2 is C1's address in /containers.
    send_from("127.0.0.2", c.statsd, "by.ip:1|c");
    let app = wait_app(&c, C1, "by.ip");
    assert_eq!(app["dimensions"]["task_name"], "foo");
    // 127.0.0.4 is reported by two containers: it belongs to neither.
    send_from("127.0.0.4", c.statsd, "ambiguous.ip:1|c");
    c.wait_node_app(WAIT, |b| value_of(b, "ambiguous.ip", &[]).is_some());
    // `|c:` names the container, nested ones included.
    send_from("127.0.0.1", c.statsd, &format!("by.field:2|c|c:{WEB}"));
    let web = wait_app(&c, WEB, "by.field");
    assert_eq!(web["dimensions"]["task_name"], "web");
    assert_eq!(web["dimensions"]["framework_name"], "marathon");
    // The field wins over the source address.
    send_from("127.0.0.2", c.statsd, &format!("field.wins:1|c|c:{KAFKA}"));
    let k = wait_app(&c, KAFKA, "field.wins");
    assert_eq!(k["dimensions"]["framework_name"], "kafka");
    // A container the agent does not know keeps the node's dimensions and its id.
    send_from(
        "127.0.0.1",
        c.statsd,
        "stranger:1|c|c:not-a-mesos-container",
    );
    let s = wait_app(&c, "not-a-mesos-container", "stranger");
    assert_eq!(s["dimensions"]["container_id"], "not-a-mesos-container");
    assert!(s["dimensions"].get("framework_name").is_none());
    assert_eq!(s["dimensions"]["mesos_id"], AGENT);
}

#[test]
fn basic_auth_works_and_a_refusal_is_logged_once_and_counted() {
    let stub = StubAgent::start(Switches {
        auth: Auth::Basic {
            username: "corral".into(),
            password: "s3cret".into(),
        },
        ..Switches::default()
    });
    let good = start(
        &stub,
        &[],
        &[
            ("CORRAL_AGENT_BASIC_USERNAME", "corral"),
            ("CORRAL_AGENT_BASIC_PASSWORD", "s3cret"),
        ],
    );
    wait_container(&good, C1);
    assert!(stub.seen().iter().any(|s| s.status == 200
        && s.authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic "))));

    let mut bad = start(
        &stub,
        &[],
        &[
            ("CORRAL_AGENT_BASIC_USERNAME", "corral"),
            ("CORRAL_AGENT_BASIC_PASSWORD", "wrong"),
        ],
    );
    let log = bad.wait_log("agent poll failed", WAIT);
    assert_eq!(log["fields"]["reason"], "unauthorized");
    assert_eq!(log["level"], "ERROR");
    let msg = log["fields"]["error"].as_str().unwrap();
    assert!(msg.contains("401") && msg.contains("agent.basic"), "{msg}");
    wait_self_metric(
        &bad,
        "corral.agent.poll_errors",
        &[("reason", "unauthorized")],
        |v| v >= 3.0,
    );
    // The daemon keeps serving StatsD.
    bad.send("still.alive:1|c");
    bad.wait_node_app(WAIT, |b| value_of(b, "still.alive", &[]).is_some());
    assert!(containers(&bad).is_empty());
    assert!(bad.stop().success());
    let failures = bad
        .seen_logs
        .iter()
        .filter(|l| l["fields"]["message"] == "agent poll failed")
        .count();
    assert_eq!(failures, 1, "logged once per change, not per poll");
}

#[test]
fn iam_service_account_logs_in_and_refreshes_its_token_on_401() {
    let stub = StubAgent::start(Switches {
        auth: Auth::Iam,
        ..Switches::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let iam = dir.path().join("iam.json");
    std::fs::write(
        &iam,
        serde_json::json!({
            "uid": IAM_UID,
            "private_key": IAM_PRIVATE_KEY,
            "login_endpoint": stub.login_url(),
        })
        .to_string(),
    )
    .unwrap();
    let c = start(
        &stub,
        &[],
        &[("CORRAL_AGENT_IAM_CONFIG", iam.to_str().unwrap())],
    );
    wait_container(&c, C1);
    assert_eq!(stub.logins(), 1);
    assert!(stub.seen().iter().any(|s| s.path == "/state"
        && s.status == 200
        && s.authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("token="))));

    // Revoked tokens: the next request gets a 401, the client logs in again and retries.
    stub.revoke_tokens();
    eventually("a second login", WAIT, || {
        (stub.logins() >= 2).then_some(())
    });
    let polls_before = stub.requests_to("/containers");
    eventually("polls go on", WAIT, || {
        (stub.requests_to("/containers") >= polls_before + 2).then_some(())
    });
    let node = c.wait_node_app(WAIT, |b| value_of(b, "corral.agent.polls", &[]).is_some());
    assert_eq!(
        value_of(
            &node,
            "corral.agent.poll_errors",
            &[("reason", "unauthorized")]
        ),
        Some(0.0)
    );
    assert_eq!(stub.logins(), 2, "one login per refusal, not per request");

    // A service account IAM does not know is refused: a clear error, counted.
    let wrong = dir.path().join("wrong.json");
    std::fs::write(
        &wrong,
        serde_json::json!({
            "uid": "somebody-else",
            "private_key": IAM_PRIVATE_KEY,
            "login_endpoint": stub.login_url(),
        })
        .to_string(),
    )
    .unwrap();
    let mut d = start(
        &stub,
        &[],
        &[("CORRAL_AGENT_IAM_CONFIG", wrong.to_str().unwrap())],
    );
    let log = d.wait_log("agent poll failed", WAIT);
    assert_eq!(log["fields"]["reason"], "unauthorized");
    assert!(log["fields"]["error"]
        .as_str()
        .unwrap()
        .contains("IAM login"));
    assert!(d.stop().success());
}

#[test]
fn a_recovering_agent_and_timeouts_are_retried_then_recovered() {
    let stub = StubAgent::start(Switches {
        unavailable: true,
        ..Switches::default()
    });
    let mut c = start(
        &stub,
        &[],
        &[
            ("CORRAL_AGENT_POLL_INTERVAL", "2s"),
            ("CORRAL_AGENT_TIMEOUT", "500ms"),
        ],
    );
    let log = c.wait_log("agent poll failed; retrying with backoff", WAIT);
    assert_eq!(log["fields"]["reason"], "unavailable");
    assert!(log["fields"]["error"].as_str().unwrap().contains("503"));
    // Retried sooner than the 2s interval.
    eventually("retries with backoff", WAIT, || {
        (stub.requests_to("/state") >= 3).then_some(())
    });
    assert!(containers(&c).is_empty());
    stub.set(|s| s.unavailable = false);
    c.wait_log("agent poll recovered", WAIT);
    wait_container(&c, C1);
    wait_self_metric(
        &c,
        "corral.agent.poll_errors",
        &[("reason", "unavailable")],
        |v| v >= 2.0,
    );

    // Slow answers: timeouts, then back to normal.
    stub.set(|s| s.delay = Duration::from_millis(1500));
    let deadline = Instant::now() + WAIT;
    loop {
        let l = c.wait_log("agent poll failed; retrying with backoff", WAIT);
        if l["fields"]["reason"] == "timeout" {
            break;
        }
        assert!(Instant::now() < deadline, "no timeout logged");
        c.seen_logs.clear();
    }
    wait_self_metric(
        &c,
        "corral.agent.poll_errors",
        &[("reason", "timeout")],
        |v| v >= 1.0,
    );
    stub.set(|s| s.delay = Duration::ZERO);
    c.seen_logs.clear();
    c.wait_log("agent poll recovered", WAIT);
    wait_container(&c, C1);
}

#[test]
fn gzip_answers_are_decoded() {
    let stub = StubAgent::start(Switches {
        gzip: true,
        ..Switches::default()
    });
    let c = start(&stub, &[], &[]);
    let body = wait_container(&c, C1);
    assert_eq!(body["dimensions"]["task_name"], "foo");
    let seen = stub.seen();
    for path in ["/state", "/containers"] {
        let s = seen
            .iter()
            .find(|s| s.path == path && s.status == 200)
            .unwrap();
        assert!(s.gzipped, "{path} was not gzipped");
        assert!(s.accept_encoding.as_deref().unwrap_or("").contains("gzip"));
    }
}

#[test]
fn old_agents_json_paths_escapes_and_number_formats() {
    let stub = StubAgent::start(Switches {
        legacy: true,
        ..Switches::default()
    });
    let c = start(&stub, &[], &[]);
    let job = wait_container(&c, "2d8f7a1c-5b3e-4c9d-a0f1-6e7b8c9d0a1b");
    let tags = tags_of(&job, "cpus.system.time");
    assert_eq!(
        tags["executor_name"],
        "Command Executor (Task: job.1436298853) (Command: sh -c 'iperf -c 10.0.0.1 -o /tmp/iperf.log')"
    );
    let t: Vec<(&str, &str)> = tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    assert_eq!(value_of(&job, "cpus.system.time", &t), Some(2667.0));
    assert_eq!(value_of(&job, "mem.rss", &t), Some(8388608.0));
    assert_eq!(value_of(&job, "net.tx.bytes", &t), Some(163200529816.0));
    assert_eq!(
        job["dimensions"]["labels"]["homepage"],
        "http://example.com/iperf"
    );
    assert_eq!(
        job["dimensions"]["mesos_id"],
        "20150707-195256-1740121354-5150-29801-S0"
    );
    wait_container(&c, "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9");
    // The newer paths were tried once; later polls go straight to the old ones.
    eventually("several polls", WAIT, || {
        (stub.requests_to("/state.json") >= 3).then_some(())
    });
    assert_eq!(stub.requests_to("/state"), 1);
    assert_eq!(stub.requests_to("/containers"), 1);
    assert_eq!(stub.requests_to("/monitor/statistics"), 1);
    wait_self_metric(
        &c,
        "corral.agent.containers_skipped",
        &[("reason", "unknown_container")],
        |v| v >= 1.0,
    );
}

#[test]
fn nan_and_infinity_are_skipped_and_counted() {
    let stub = StubAgent::start(Switches {
        nonfinite: true,
        ..Switches::default()
    });
    let c = start(&stub, &[], &[]);
    let body = wait_container(&c, C1);
    let names: Vec<&str> = body["datapoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"cpus.user.time"));
    assert!(!names.contains(&"cpus.throttled.time"));
    assert!(!names.contains(&"mem.soft.limit"));
    let kafka = wait_container(&c, KAFKA);
    assert_eq!(
        tags_of(&kafka, "mem.total")["executor_name"],
        "broker-0 NaN Infinity"
    );
    wait_self_metric(&c, "corral.agent.values_invalid", &[], |v| v >= 3.0);
}

#[test]
fn forbidden_is_a_clear_error() {
    let stub = StubAgent::start(Switches {
        forbidden: true,
        ..Switches::default()
    });
    let mut c = start(&stub, &[], &[]);
    let log = c.wait_log("agent poll failed", WAIT);
    assert_eq!(log["fields"]["reason"], "forbidden");
    assert!(log["fields"]["error"].as_str().unwrap().contains("403"));
    wait_self_metric(
        &c,
        "corral.agent.poll_errors",
        &[("reason", "forbidden")],
        |v| v >= 1.0,
    );
}

#[test]
fn https_with_the_configured_ca_and_a_clear_error_without_it() {
    let stub = StubAgent::start_tls(Switches::default());
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, agent_stub::TLS_CA).unwrap();
    let c = start(
        &stub,
        &[],
        &[("CORRAL_AGENT_CA_CERTIFICATE", ca.to_str().unwrap())],
    );
    let body = wait_container(&c, C1);
    assert_eq!(body["dimensions"]["task_name"], "foo");

    // Without the cluster's CA the agent's certificate is not trusted: an error, no crash.
    let mut d = start(&stub, &[], &[]);
    let log = d.wait_log("agent poll failed", WAIT);
    let msg = log["fields"]["error"].as_str().unwrap();
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
    d.send("still.serving:1|c");
    d.wait_node_app(WAIT, |b| value_of(b, "still.serving", &[]).is_some());
    assert!(d.stop().success());

    // A CA file that is not one is a startup error naming the key.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let out = std::process::Command::new(common::corral_bin())
        .args(["--agent-url", &stub.url(), "--api-listen", "127.0.0.1:0"])
        .args(["--statsd-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_clear()
        .env("CORRAL_AGENT_CA_CERTIFICATE", &bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("agent.ca_certificate"), "{stderr}");
}
