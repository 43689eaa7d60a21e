//! One poll of an agent with 1,000 containers: parsing `/state` and `/containers` and
//! building the datapoints, dimensions and IP map (CPU time and allocations), and the same
//! through HTTP from a local server.
//!
//! `cargo bench --bench agent_poll`; allocation figures are printed before the timings.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use corral_collector::config::AgentConfig;
use corral_collector::sources::agent::{AgentClient, Converter, Usage};
use corral_model::Dimensions;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CONTAINERS: usize = 1000;

fn uuid(i: usize, salt: u32) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        i as u32 ^ salt,
        i % 0xffff,
        i % 0xfff,
        (i * 7) % 0xfff,
        (i as u64) * 7919 + salt as u64
    )
}

/// `/state` and `/containers` of an agent running `n` Marathon apps (command executors),
/// with full cgroups statistics, and blkio on every other container.
fn agent(n: usize) -> (Vec<u8>, Vec<u8>) {
    let fw = "5349f49b-68b3-4638-aab2-fc4ec845f993-0000";
    let mut executors = Vec::with_capacity(n);
    let mut containers = Vec::with_capacity(n);
    for i in 0..n {
        let cid = uuid(i, 0x5eed);
        let task = format!("app-{i}.{}", uuid(i, 0x7a5c));
        let name = format!(
            "Command Executor (Task: {task}) (Command: sh -c 'exec ./server --port $PORT0')"
        );
        let ip = format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256);
        executors.push(json!({
            "id": task, "name": name, "source": task, "container": cid,
            "directory": format!("/var/lib/mesos/slave/slaves/S0/frameworks/{fw}/executors/{task}/runs/{cid}"),
            "resources": {"cpus": 0.1, "disk": 0.0, "gpus": 0.0, "mem": 32.0},
            "labels": [{"key": "HAPROXY_GROUP", "value": "external"}, {"key": "DCOS_PACKAGE_FRAMEWORK_NAME", "value": "x"}],
            "tasks": [{
                "id": task, "name": format!("app-{i}"), "framework_id": fw, "executor_id": "",
                "slave_id": "S0", "state": "TASK_RUNNING",
                "resources": {"cpus": 1.0, "disk": 0.0, "gpus": 0.0, "mem": 512.0, "ports": "[31000-31000]"},
                "labels": [{"key": "team", "value": format!("team-{}", i % 17)}, {"key": "MARATHON_SINGLE_INSTANCE_APP", "value": "false"}],
                "statuses": [
                    {"state": "TASK_STARTING", "timestamp": 1767225601.5,
                     "container_status": {"container_id": {"value": cid}, "network_infos": [{"ip_addresses": [{"protocol": "IPv4", "ip_address": ip}]}]}},
                    {"state": "TASK_RUNNING", "timestamp": 1767225602.5,
                     "container_status": {"container_id": {"value": cid}, "network_infos": [{"ip_addresses": [{"protocol": "IPv4", "ip_address": ip}]}]}}
                ]
            }],
            "queued_tasks": [], "completed_tasks": []
        }));
        let mut stats = json!({
            "timestamp": 1767225900.5 + i as f64, "processes": 3, "threads": 40,
            "cpus_user_time_secs": 1234.56 + i as f64, "cpus_system_time_secs": 78.9,
            "cpus_limit": 1.1, "cpus_nr_periods": 3701894, "cpus_nr_throttled": 2126,
            "cpus_throttled_time_secs": 98.355904778,
            "mem_total_bytes": 436207616, "mem_limit_bytes": 570425344, "mem_soft_limit_bytes": 536870912,
            "mem_cache_bytes": 15962112, "mem_rss_bytes": 420245504, "mem_anon_bytes": 420245504,
            "mem_file_bytes": 15962112, "mem_mapped_file_bytes": 40960, "mem_swap_bytes": 0,
            "mem_unevictable_bytes": 0, "mem_low_pressure_counter": 0,
            "mem_medium_pressure_counter": 0, "mem_critical_pressure_counter": 0,
            "disk_limit_bytes": 1073741824, "disk_used_bytes": 4096,
            "net_rx_packets": 143, "net_rx_bytes": 10847, "net_rx_errors": 0, "net_rx_dropped": 0,
            "net_tx_packets": 107936874, "net_tx_bytes": 163200529816u64, "net_tx_errors": 0, "net_tx_dropped": 0
        });
        if i % 2 == 0 {
            let ops = |base: u64| {
                json!([{"op": "READ", "value": base}, {"op": "WRITE", "value": base + 1},
                       {"op": "SYNC", "value": base + 2}, {"op": "ASYNC", "value": base + 3},
                       {"op": "TOTAL", "value": base + 4}])
            };
            stats["blkio_statistics"] = json!({
                "cfq": [{"device": {"major_number": 8, "minor_number": 0},
                         "io_serviced": ops(10), "io_service_bytes": ops(20), "io_service_time": ops(30),
                         "io_merged": ops(40), "io_queued": ops(50), "io_wait_time": ops(60)}],
                "throttling": [{"device": {"major_number": 8, "minor_number": 0},
                                "io_serviced": ops(70), "io_service_bytes": ops(80)},
                               {"io_serviced": [{"op": "TOTAL", "value": 90}], "io_service_bytes": [{"op": "TOTAL", "value": 91}]}]
            });
        }
        containers.push(json!({
            "container_id": cid, "executor_id": task, "executor_name": name,
            "framework_id": fw, "source": task,
            "status": {"container_id": {"value": cid}, "executor_pid": 20000 + i,
                       "network_infos": [{"ip_addresses": [{"protocol": "IPv4", "ip_address": ip}]}]},
            "statistics": stats
        }));
    }
    let state = json!({
        "version": "1.11.0", "id": "9d4b2f2e-8f4a-4c43-9c2b-5e4d3a1b0c9f-S3",
        "pid": "slave(1)@10.0.0.5:5051", "hostname": "10.0.0.5",
        "frameworks": [{"id": fw, "name": "marathon", "user": "root", "principal": "dcos_marathon",
                        "role": "slave_public", "executors": executors, "completed_executors": []}],
        "completed_frameworks": []
    });
    (
        serde_json::to_vec(&state).unwrap(),
        serde_json::to_vec(&Value::Array(containers)).unwrap(),
    )
}

fn node() -> Dimensions {
    Dimensions {
        mesos_id: String::new(),
        cluster_id: "c0ffee00-0000-4000-8000-000000000000".into(),
        hostname: "10.0.0.5".into(),
        ..Dimensions::default()
    }
}

fn report_allocations(state: &[u8], containers: &[u8]) {
    let mut c = Converter::new();
    // Warm: the second poll is the steady state (the previous counters are known).
    let _ = c.convert(
        state,
        Usage::Containers(containers),
        node(),
        true,
        SystemTime::now(),
    );
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    let snap = c
        .convert(
            state,
            Usage::Containers(containers),
            node(),
            true,
            SystemTime::now(),
        )
        .unwrap();
    let (a1, b1) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    let points: usize = snap.batches.iter().map(|b| b.points.len()).sum();
    println!(
        "agent_poll: {CONTAINERS} containers, /state {} KiB, /containers {} KiB -> {} batches, {points} datapoints, {} directory entries, {} IPs",
        state.len() >> 10,
        containers.len() >> 10,
        snap.batches.len(),
        snap.directory.len(),
        snap.ips.len(),
    );
    println!(
        "agent_poll: one steady-state conversion allocates {} times, {:.1} MiB ({:.1} allocations per datapoint)",
        a1 - a0,
        (b1 - b0) as f64 / (1 << 20) as f64,
        (a1 - a0) as f64 / points as f64
    );
    drop(snap);
    // CPU time of this thread, which other load on the machine inflates less than wall time.
    let runs = 20;
    let start = thread_cpu();
    for _ in 0..runs {
        let s = c.convert(
            state,
            Usage::Containers(containers),
            node(),
            true,
            SystemTime::now(),
        );
        drop(s);
    }
    let per = (thread_cpu() - start) / runs;
    println!(
        "agent_poll: thread CPU time per conversion (mean of {runs}): {:.1} ms",
        per.as_secs_f64() * 1e3
    );
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn bench(c: &mut Criterion) {
    let (state, containers) = agent(CONTAINERS);
    report_allocations(&state, &containers);

    let mut g = c.benchmark_group("agent_poll");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(CONTAINERS as u64));
    let mut conv = Converter::new();
    g.bench_function("convert_1000_containers", |b| {
        b.iter(|| {
            conv.convert(
                &state,
                Usage::Containers(&containers),
                node(),
                true,
                SystemTime::now(),
            )
            .unwrap()
        })
    });

    // The same poll through HTTP (one local server, no gzip): the client's share.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (state_b, containers_b) = (bytes_of(state.clone()), bytes_of(containers.clone()));
    let addr = rt.block_on(async move {
        let app = axum::Router::new()
            .route(
                "/state",
                axum::routing::get(move || {
                    let b = state_b.clone();
                    async move { b }
                }),
            )
            .route(
                "/containers",
                axum::routing::get(move || {
                    let b = containers_b.clone();
                    async move { b }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    let client = AgentClient::new(&AgentConfig::default(), &format!("http://{addr}")).unwrap();
    let mut conv = Converter::new();
    g.bench_function("http_get_and_convert_1000_containers", |b| {
        b.iter(|| {
            let (s, u) = rt.block_on(async {
                (
                    client.get("/state").await.unwrap(),
                    client.get("/containers").await.unwrap(),
                )
            });
            conv.convert(&s, Usage::Containers(&u), node(), true, SystemTime::now())
                .unwrap()
        })
    });
    g.finish();
}

fn bytes_of(v: Vec<u8>) -> axum::body::Bytes {
    axum::body::Bytes::from(v)
}

criterion_group!(benches, bench);
criterion_main!(benches);
