//! End-to-end load benchmark: the real daemon under fixed StatsD rates.
//!
//! A sender pinned to core 0 blasts datagrams of 20 lines with `sendmmsg` at fixed rates to
//! the daemon pinned to core 1, then reads the daemon's own count of received lines and its
//! kernel drops from the API, and its CPU time from `/proc/<pid>/stat`. In the same run, a
//! floor is measured: this binary re-executed as a minimal receiver that only does `recvmmsg`,
//! splits lines and parses them (no aggregation), under the same load.
//!
//! `cargo bench --bench load` runs the default schedule; environment knobs:
//! `LOAD_RATES` (lines/s, comma-separated, default 100000,200000,400000,800000,1600000,3200000),
//! `LOAD_SECONDS` (per rate, default 10), `LOAD_FLUSH` (the daemon's flush interval, default
//! 10s as in a default configuration; the CPU figure includes the flushes within the run),
//! `LOAD_SERIES` (distinct series, default 10000), `LOAD_MEMORY_SERIES` (series for the memory
//! phase, default 100000; 0 skips it).

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_collector::sources::udp::{set_receive_buffer, RecvBatch};

const LINES_PER_DATAGRAM: usize = 20;
const SEND_BATCH: usize = 64;
const RECEIVE_BUFFER: usize = 8 << 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--floor-receiver") {
        floor_receiver(args[2].parse().expect("address"));
        return;
    }
    // `cargo bench` passes `--bench`; other filters are ignored.
    let rates: Vec<u64> = env_list(
        "LOAD_RATES",
        &[100_000, 200_000, 400_000, 800_000, 1_600_000, 3_200_000],
    );
    let seconds = env_u64("LOAD_SECONDS", 10);
    let flush = std::env::var("LOAD_FLUSH").unwrap_or_else(|_| "10s".into());
    let series = env_u64("LOAD_SERIES", 10_000) as usize;
    let memory_series = env_u64("LOAD_MEMORY_SERIES", 100_000) as usize;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "load: {cores} cores; sender on core 0, receiver on core {}; {seconds}s per rate; {series} series; \
         {LINES_PER_DATAGRAM} lines per datagram; flush every {flush}",
        1.min(cores - 1)
    );
    let datagrams = make_datagrams(series, 4096);
    let avg_line = datagrams.iter().map(Vec::len).sum::<usize>() as f64
        / (datagrams.len() * LINES_PER_DATAGRAM) as f64;
    println!("load: average line {avg_line:.1} bytes");
    println!(
        "{:>10} {:>12} {:>12} {:>8} {:>10} {:>11} {:>11} {:>7} {:>9}",
        "rate", "sent", "counted", "loss%", "kdrops", "corral_cpu", "floor_cpu", "ratio", "rss_MiB"
    );
    for &rate in &rates {
        let floor = run_floor(rate, seconds, &datagrams);
        let daemon = run_daemon(rate, seconds, &flush, &datagrams);
        let loss = 100.0 * (daemon.sent as f64 - daemon.counted as f64) / daemon.sent as f64;
        println!(
            "{:>10} {:>12} {:>12} {:>8.3} {:>10} {:>11.3} {:>11.3} {:>7.2} {:>9.1}",
            rate,
            daemon.sent,
            daemon.counted,
            loss,
            daemon.kernel_drops,
            daemon.cpu,
            floor.cpu,
            daemon.cpu / floor.cpu.max(1e-9),
            daemon.rss_kib as f64 / 1024.0,
        );
        if floor.counted < floor.sent {
            println!(
                "{:>10} floor lost {:.3}% ({} of {})",
                "",
                100.0 * (floor.sent - floor.counted) as f64 / floor.sent as f64,
                floor.sent - floor.counted,
                floor.sent
            );
        }
    }
    if memory_series > 0 {
        memory_phase(memory_series);
    }
}

struct RunResult {
    sent: u64,
    counted: u64,
    kernel_drops: u64,
    cpu: f64,
    rss_kib: u64,
}

/// `"10s"`, `"500ms"`.
fn parse_interval(s: &str) -> Duration {
    match s.strip_suffix("ms") {
        Some(ms) => Duration::from_millis(ms.parse().expect("LOAD_FLUSH")),
        None => Duration::from_secs(s.trim_end_matches('s').parse().expect("LOAD_FLUSH")),
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &[u64]) -> Vec<u64> {
    match std::env::var(name) {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => default.to_vec(),
    }
}

/// Deterministic datagrams of 20 realistic lines over `series` distinct series: mostly
/// counters, some timers and gauges, a third of them tagged.
fn make_datagrams(series: usize, count: usize) -> Vec<Vec<u8>> {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    (0..count)
        .map(|_| {
            let mut d = String::new();
            for i in 0..LINES_PER_DATAGRAM {
                let s = next() as usize % series;
                let r = next() % 100;
                if i > 0 {
                    d.push('\n');
                }
                let tags = if s % 3 == 0 { "|#env:prod,az:b" } else { "" };
                match r {
                    0..=69 => d.push_str(&format!("web.checkout.svc{s:05}.requests:1|c{tags}")),
                    70..=89 => d.push_str(&format!(
                        "web.checkout.svc{s:05}.latency_ms:{}|ms{tags}",
                        next() % 500
                    )),
                    _ => d.push_str(&format!(
                        "web.checkout.svc{s:05}.queue_depth:{}|g{tags}",
                        next() % 100
                    )),
                }
            }
            d.into_bytes()
        })
        .collect()
}

fn pin_to(core: usize) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let core = core.min(cores - 1);
    // SAFETY: sched_setaffinity on the calling thread with a zeroed-then-set cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn pinned_command(program: &std::path::Path, core: usize) -> Command {
    let mut cmd = Command::new(program);
    // SAFETY: only async-signal-safe work (sched_setaffinity) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            pin_to(core);
            Ok(())
        });
    }
    cmd
}

/// CPU seconds (user + system) used so far by `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the name.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) as f64 / hz
}

fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

fn current_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Sends `datagrams` round-robin at `rate` lines/s for `seconds`; returns lines sent.
fn blast(target: SocketAddr, rate: u64, seconds: u64, datagrams: &[Vec<u8>]) -> u64 {
    let sender = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                pin_to(0);
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
                socket.connect(target).expect("connect");
                let _ = socket2::SockRef::from(&socket).set_send_buffer_size(4 << 20);
                let fd = socket.as_raw_fd();
                let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(SEND_BATCH);
                let mut headers: Vec<libc::mmsghdr> = Vec::with_capacity(SEND_BATCH);
                let start = Instant::now();
                let end = start + Duration::from_secs(seconds);
                let mut sent_lines = 0u64;
                let mut next = 0usize;
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    let due = (rate as f64 * (now - start).as_secs_f64()) as u64;
                    if sent_lines >= due {
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                    let want = ((due - sent_lines) as usize)
                        .div_ceil(LINES_PER_DATAGRAM)
                        .min(SEND_BATCH);
                    iovecs.clear();
                    headers.clear();
                    for k in 0..want {
                        let d = &datagrams[(next + k) % datagrams.len()];
                        iovecs.push(libc::iovec {
                            iov_base: d.as_ptr() as *mut libc::c_void,
                            iov_len: d.len(),
                        });
                    }
                    for iov in iovecs.iter_mut() {
                        // SAFETY: all-zero mmsghdr is valid; iov points into `datagrams`.
                        let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                        h.msg_hdr.msg_iov = iov;
                        h.msg_hdr.msg_iovlen = 1;
                        headers.push(h);
                    }
                    // SAFETY: headers and iovecs are valid for the call.
                    let n = unsafe {
                        libc::sendmmsg(fd, headers.as_mut_ptr(), want as libc::c_uint, 0)
                    };
                    if n > 0 {
                        next = (next + n as usize) % datagrams.len();
                        sent_lines += n as u64 * LINES_PER_DATAGRAM as u64;
                    }
                }
                sent_lines
            })
            .join()
            .expect("sender")
    });
    sender
}

fn run_daemon(rate: u64, seconds: u64, flush: &str, datagrams: &[Vec<u8>]) -> RunResult {
    let mut daemon = Daemon::start(flush);
    let cpu0 = cpu_seconds(daemon.pid());
    let t0 = Instant::now();
    let sent = blast(daemon.statsd, rate, seconds, datagrams);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(daemon.pid()) - cpu0) / elapsed;
    // The peak while receiving and flushing, before the API renders anything.
    std::thread::sleep(Duration::from_millis(1100));
    let rss_kib = peak_rss_kib(daemon.pid());
    let (counted, kernel_drops) = daemon.wait_counted(sent);
    daemon.stop();
    RunResult {
        sent,
        counted,
        kernel_drops,
        cpu,
        rss_kib,
    }
}

struct Daemon {
    child: Child,
    flush: Duration,
    statsd: SocketAddr,
    api: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(flush: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = pinned_command(std::path::Path::new(env!("CARGO_BIN_EXE_corral")), 1);
        cmd.args([
            "--statsd-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
            "--flush-interval",
            flush,
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env_clear()
        .env("CORRAL_AGENT_URL", "")
        .env("CORRAL_STATSD_RECEIVE_THREADS", "1")
        .env("CORRAL_STATSD_RECEIVE_BUFFER", RECEIVE_BUFFER.to_string())
        .env("CORRAL_LOG_FORMAT", "json")
        // Allocator tuning under test (e.g. MALLOC_ARENA_MAX) reaches the daemon.
        .envs(std::env::vars().filter(|(k, _)| k.starts_with("MALLOC_")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start corral");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
        let (mut statsd, mut api) = (None, None);
        while statsd.is_none() || api.is_none() {
            let line = lines.next().expect("corral exited").expect("read stderr");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            match v["fields"]["message"].as_str() {
                Some("statsd listening") => {
                    statsd = v["fields"]["endpoint"]
                        .as_str()
                        .and_then(|e| e.trim_start_matches("udp://").parse().ok())
                }
                Some("api listening") => {
                    api = v["fields"]["addr"].as_str().and_then(|a| a.parse().ok())
                }
                _ => {}
            }
        }
        // Keep draining stderr so the daemon never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Daemon {
            child,
            flush: parse_interval(flush),
            statsd: statsd.unwrap(),
            api: api.unwrap(),
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn node_app(&self) -> serde_json::Value {
        let url = format!("http://{}/v0/node/app", self.api);
        let Ok(mut resp) = ureq::get(&url).call() else {
            return serde_json::Value::Null;
        };
        // Large node batches are sent chunked and can exceed the client's default body limit.
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .unwrap_or_default();
        serde_json::from_str(&body).unwrap_or_default()
    }

    fn self_metric(body: &serde_json::Value, name: &str) -> u64 {
        body["datapoints"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|d| d["name"] == name)
                    .filter_map(|d| d["value"].as_f64())
                    .sum::<f64>()
            })
            .unwrap_or(0.0) as u64
    }

    /// Polls until the daemon's count of received lines stops moving (or reaches `sent`).
    fn wait_counted(&self, sent: u64) -> (u64, u64) {
        // Counts show at the next flush.
        let deadline = Instant::now() + self.flush + Duration::from_secs(15);
        let mut last = (u64::MAX, 0);
        let mut stable = 0;
        loop {
            std::thread::sleep(Duration::from_millis(1100));
            let body = self.node_app();
            let counted = Self::self_metric(&body, "corral.statsd.lines_received");
            let drops = Self::self_metric(&body, "corral.statsd.kernel_drops");
            if counted >= sent || Instant::now() > deadline {
                return (counted, drops);
            }
            if (counted, drops) == last {
                stable += 1;
                // Unchanged over a whole flush interval: the last samples were flushed.
                if Duration::from_millis(1100) * stable > self.flush {
                    return (counted, drops);
                }
            } else {
                stable = 0;
            }
            last = (counted, drops);
        }
    }

    fn stop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn run_floor(rate: u64, seconds: u64, datagrams: &[Vec<u8>]) -> RunResult {
    let probe = UdpSocket::bind("127.0.0.1:0").expect("probe");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let exe = std::env::current_exe().expect("current exe");
    let mut child = pinned_command(&exe, 1)
        .arg("--floor-receiver")
        .arg(addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start floor receiver");
    let mut out = child.stdout.take().expect("stdout");
    let mut ready = [0u8; 6];
    out.read_exact(&mut ready).expect("floor ready");
    let cpu0 = cpu_seconds(child.id());
    let t0 = Instant::now();
    let sent = blast(addr, rate, seconds, datagrams);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(child.id()) - cpu0) / elapsed;
    std::thread::sleep(Duration::from_millis(300));
    let rss_kib = peak_rss_kib(child.id());
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let mut report = String::new();
    let _ = out.read_to_string(&mut report);
    let _ = child.wait();
    let counted = report.trim().parse().unwrap_or(0);
    RunResult {
        sent,
        counted,
        kernel_drops: 0,
        cpu,
        rss_kib,
    }
}

/// The floor: receive with recvmmsg, split lines, parse them; nothing else.
fn floor_receiver(addr: SocketAddr) {
    static STOP: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_term(_: libc::c_int) {
        STOP.store(true, Ordering::Relaxed);
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
    }
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    set_receive_buffer(&socket, RECEIVE_BUFFER).expect("rcvbuf");
    socket.bind(&addr.into()).expect("bind");
    let lines = Arc::new(AtomicU64::new(0));
    let mut batch = RecvBatch::new();
    let mut parsed = 0u64;
    let mut checksum = 0usize;
    std::io::stdout().write_all(b"ready\n").expect("stdout");
    std::io::stdout().flush().expect("flush");
    let fd = socket.as_raw_fd();
    while !STOP.load(Ordering::Relaxed) {
        let Ok(n) = batch.recv(fd, true) else {
            continue;
        };
        if n == 0 {
            continue;
        }
        for d in batch.datagrams() {
            for line in corral_statsd::lines(d.data) {
                parsed += 1;
                if let Ok(corral_statsd::Parsed::Metric(m)) = corral_statsd::parse(line) {
                    checksum = checksum.wrapping_add(m.name.len() + m.tags.len());
                }
            }
        }
    }
    lines.store(parsed, Ordering::Relaxed);
    std::hint::black_box(checksum);
    println!("{parsed}");
}

/// Peak RSS of the daemon with `series` distinct series live.
fn memory_phase(series: usize) {
    let mut daemon = Daemon::start("1s");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    // Every series once per round, for three rounds: a counter, or a timer, or a gauge.
    for round in 0..3 {
        let mut d = String::new();
        let mut n = 0;
        for s in 0..series {
            let line = match s % 10 {
                0..=6 => format!("mem.svc{s}.requests:1|c"),
                7..=8 => format!("mem.svc{s}.latency:{}|ms", s % 97 + round),
                _ => format!("mem.svc{s}.queue:{}|g", s % 13),
            };
            if !d.is_empty() {
                d.push('\n');
            }
            d.push_str(&line);
            n += 1;
            if n == LINES_PER_DATAGRAM {
                let _ = socket.send_to(d.as_bytes(), daemon.statsd);
                d.clear();
                n = 0;
                // Stay far below any loss.
                if s % 2000 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        if !d.is_empty() {
            let _ = socket.send_to(d.as_bytes(), daemon.statsd);
        }
        std::thread::sleep(Duration::from_millis(1200));
    }
    std::thread::sleep(Duration::from_millis(1200));
    // Read the peak before asking the API for anything: rendering the whole node batch
    // (hundreds of thousands of datapoints) is a cost of its own, reported separately.
    let rss_held = peak_rss_kib(daemon.pid());
    let current = current_rss_kib(daemon.pid());
    let body = daemon.node_app();
    let live = Daemon::self_metric(&body, "corral.statsd.series");
    let points = body["datapoints"].as_array().map(Vec::len).unwrap_or(0);
    let rss_after_api = peak_rss_kib(daemon.pid());
    println!(
        "memory: {series} series sent, {live} live, {points} datapoints in the last flush; \
         peak RSS {:.1} MiB (current {:.1} MiB); peak after rendering /v0/node/app once {:.1} MiB",
        rss_held as f64 / 1024.0,
        current as f64 / 1024.0,
        rss_after_api as f64 / 1024.0
    );
    daemon.stop();
}
