//! The host metrics readers against recorded `/proc` files (tests/fixtures/proc), and the
//! poller that publishes them.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral_collector::outputs::Outputs;
use corral_collector::sources::host::fs::{self, FsStats, Mount, StatFs};
use corral_collector::sources::host::{
    cpu, load, memory, net, process, uptime, HostReader, Poller, ReadError, Reader, Reading,
};
use corral_collector::telemetry::Telemetry;
use corral_model::{Datapoint, Identity, Kind, NodeIds, Source, Store};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc")
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(rel)).unwrap()
}

/// A writable copy of the fixture tree, so a test can swap or break files.
fn proc_copy() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &dest);
            } else {
                std::fs::copy(e.path(), dest).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&fixtures(), dir.path());
    dir
}

/// The second `/proc/stat` sample becomes current.
fn advance_stat(root: &Path) {
    std::fs::copy(root.join("stat.next"), root.join("stat")).unwrap();
}

fn root_stats() -> FsStats {
    FsStats {
        bsize: 4096,
        frsize: 4096,
        blocks: 25_000_000,
        bfree: 10_000_000,
        bavail: 8_750_000,
        files: 6_400_000,
        ffree: 5_000_000,
    }
}

fn small_stats(frsize: u64) -> FsStats {
    FsStats {
        bsize: 1024,
        frsize,
        blocks: 1000,
        bfree: 600,
        bavail: 250,
        files: 100,
        ffree: 90,
    }
}

/// Stats for the fixture's mounts; `/mnt/usb stick` refuses, as an unreadable mount would.
fn fake_statfs() -> StatFs {
    Arc::new(|p: &Path| match p.to_str() {
        Some("/") => Ok(root_stats()),
        Some("/boot/efi") => Ok(small_stats(0)),
        Some("/mnt/usb stick") => Err(io::Error::from_raw_os_error(13)),
        Some(_) => Ok(small_stats(1024)),
        None => Err(io::Error::other("not utf-8")),
    })
}

/// One line per datapoint: `name{k=v} unit kind value`, sorted.
fn table<'a>(points: impl IntoIterator<Item = &'a Datapoint>) -> Vec<String> {
    let mut v: Vec<String> = points
        .into_iter()
        .map(|p| {
            let tags: Vec<String> = p.key.tags().map(|(k, v)| format!("{k}={v}")).collect();
            let kind = match p.kind {
                Kind::Cumulative => "cumulative",
                Kind::Gauge => "gauge",
                Kind::Counter => "counter",
            };
            format!(
                "{}{{{}}} {} {} {}",
                p.name(),
                tags.join(","),
                p.unit.as_str(),
                kind,
                p.value
            )
        })
        .collect();
    v.sort();
    v
}

fn sorted(lines: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn cpu_percentages_are_deltas_of_two_stat_samples() {
    let a = cpu::parse_stat(&fixture("stat")).unwrap();
    let b = cpu::parse_stat(&fixture("stat.next")).unwrap();
    // Δ: user 301, nice 100, system 150, idle 1301, iowait 100, irq 10, softirq 21, steal 20
    // (guest 50 is inside user already) → 2003 ticks.
    assert_eq!(a.total(), 4705 + 356 + 584 + 3_699_176 + 23_060 + 277);
    assert_eq!(b.total() - a.total(), 2003);
    let u = cpu::usage(&a, &b).unwrap();
    assert_eq!(u.user, 15.03); // 100 * 301 / 2003 = 15.0274…
    assert_eq!(u.system, 7.49); // 7.4887…
    assert_eq!(u.idle, 64.95); // 64.9525…
    assert_eq!(u.wait, 4.99); // 4.9925…
    assert_eq!(u.total, 22.52); // user + system
    assert_eq!(cpu::cores(&fixture("cpuinfo")).unwrap(), 4);
}

#[test]
fn memory_and_swap_are_bytes() {
    let p = memory::points(&fixture("meminfo")).unwrap();
    assert_eq!(
        table(&p),
        sorted(&[
            "memory.total{} bytes gauge 16694763520",
            "memory.free{} bytes gauge 1866117120",
            "memory.buffers{} bytes gauge 422240256",
            "memory.cached{} bytes gauge 9119977472",
            "swap.total{} bytes gauge 2147479552",
            "swap.free{} bytes gauge 1879044096",
            "swap.used{} bytes gauge 268435456",
        ])
    );
}

#[test]
fn load_and_uptime() {
    assert_eq!(
        table(&load::points(&fixture("loadavg")).unwrap()),
        sorted(&[
            "load.1min{} count gauge 0.52",
            "load.5min{} count gauge 0.58",
            "load.15min{} count gauge 0.59",
        ])
    );
    assert_eq!(
        table(&uptime::points(&fixture("uptime")).unwrap()),
        ["system.uptime{} count gauge 350735"]
    );
}

#[test]
fn network_counters_per_interface() {
    let p = net::points(&fixture("net/dev")).unwrap();
    let mut want = Vec::new();
    for (iface, vals) in [
        (
            "lo",
            [1838301992u64, 1838301992, 4427615, 4427615, 0, 0, 0, 0],
        ),
        (
            "eth0",
            [98123456789, 12345678901, 71234567, 23456789, 340, 17, 12, 3],
        ),
        ("docker0", [1024000, 2048000, 8000, 16000, 0, 2, 0, 0]),
        ("veth3c2a1f0", [52345, 123456, 612, 1022, 0, 0, 0, 0]),
    ] {
        let names = [
            ("network.in", "bytes"),
            ("network.out", "bytes"),
            ("network.in.packets", "count"),
            ("network.out.packets", "count"),
            ("network.in.dropped", "count"),
            ("network.out.dropped", "count"),
            ("network.in.errors", "count"),
            ("network.out.errors", "count"),
        ];
        for ((name, unit), v) in names.iter().zip(vals) {
            want.push(format!("{name}{{interface={iface}}} {unit} cumulative {v}"));
        }
    }
    want.sort();
    assert_eq!(table(&p), want);
}

#[test]
fn filesystems_skip_pseudo_and_duplicate_mounts() {
    let types = fs::device_types(&String::from_utf8(fixture("filesystems")).unwrap()).unwrap();
    let mounts = fs::select_mounts(
        &String::from_utf8(fixture("self/mountinfo")).unwrap(),
        &types,
    )
    .unwrap();
    let got: Vec<(&str, &str, &str)> = mounts
        .iter()
        .map(|m: &Mount| {
            (
                m.path.to_str().unwrap(),
                m.fs_type.as_str(),
                m.device.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            // Also bind-mounted at /var/lib/docker and into a container's /etc/hosts.
            ("/", "ext4", "8:1"),
            ("/boot", "ext4", "8:2"),
            ("/boot/efi", "vfat", "8:15"),
            ("/snap/core18/2128", "squashfs", "7:0"),
            // Mounted first at a longer path under /var/lib/mesos.
            ("/data", "xfs", "8:17"),
            // zfs registers as nodev but is kept.
            ("/tank/home", "zfs", "0:45"),
            ("/tank", "zfs", "0:46"),
            ("/mnt/usb stick", "vfat", "8:33"),
        ]
    );
    // Left out: sysfs, proc, devtmpfs, devpts, tmpfs, securityfs, cgroup2, nfs4, fuse.sshfs,
    // overlay (nodev or unknown types) and the ext4 whose source is `none`.
    assert!(fs::select_mounts("garbage\n", &types).is_err());
    assert!(fs::device_types("").is_err());
}

#[test]
fn process_count_is_numeric_entries_only() {
    let names: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.len() > 3);
    assert_eq!(process::count(&names), 3);
}

fn full_table_after_two_samples() -> Vec<String> {
    let mut want: Vec<String> = [
        "system.uptime{} count gauge 350735",
        "cpu.cores{} count gauge 4",
        "cpu.total{} percent gauge 22.52",
        "cpu.user{} percent gauge 15.03",
        "cpu.system{} percent gauge 7.49",
        "cpu.idle{} percent gauge 64.95",
        "cpu.wait{} percent gauge 4.99",
        "load.1min{} count gauge 0.52",
        "load.5min{} count gauge 0.58",
        "load.15min{} count gauge 0.59",
        "memory.total{} bytes gauge 16694763520",
        "memory.free{} bytes gauge 1866117120",
        "memory.buffers{} bytes gauge 422240256",
        "memory.cached{} bytes gauge 9119977472",
        "swap.total{} bytes gauge 2147479552",
        "swap.free{} bytes gauge 1879044096",
        "swap.used{} bytes gauge 268435456",
        "process.count{} count gauge 3",
        "filesystem.capacity.total{path=/} bytes gauge 102400000000",
        "filesystem.capacity.used{path=/} bytes gauge 61440000000",
        "filesystem.capacity.free{path=/} bytes gauge 35840000000",
        "filesystem.inode.total{path=/} count gauge 6400000",
        "filesystem.inode.used{path=/} count gauge 1400000",
        "filesystem.inode.free{path=/} count gauge 5000000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for path in [
        "/boot",
        "/boot/efi",
        "/snap/core18/2128",
        "/data",
        "/tank/home",
        "/tank",
    ] {
        for line in [
            "filesystem.capacity.total{path=P} bytes gauge 1024000",
            "filesystem.capacity.used{path=P} bytes gauge 409600",
            "filesystem.capacity.free{path=P} bytes gauge 256000",
            "filesystem.inode.total{path=P} count gauge 100",
            "filesystem.inode.used{path=P} count gauge 10",
            "filesystem.inode.free{path=P} count gauge 90",
        ] {
            want.push(line.replace('P', path));
        }
    }
    want.extend(table(&net::points(&fixture("net/dev")).unwrap()));
    want.sort();
    want
}

#[test]
fn reader_produces_every_host_metric() {
    let dir = proc_copy();
    let mut r = HostReader::new(dir.path(), fake_statfs());
    advance_stat(dir.path());
    let reading = r.read();
    for (reader, res) in &reading.results {
        assert!(res.is_ok(), "{reader:?}: {res:?}");
    }
    assert_eq!(table(reading.points()), full_table_after_two_samples());
    let failed: Vec<&Path> = reading
        .statvfs_failed
        .iter()
        .map(|(p, _)| p.as_path())
        .collect();
    assert_eq!(failed, [Path::new("/mnt/usb stick")]);
    assert_eq!(reading.statvfs_ok.len(), 7);
}

#[test]
fn cpu_waits_for_a_tick_and_then_uses_the_baseline() {
    let dir = proc_copy();
    let mut r = HostReader::new(dir.path(), fake_statfs());
    // Same sample as the baseline: nothing elapsed, so no percentages, and no error.
    let first = r.read();
    assert!(first.error(Reader::Cpu).is_none());
    assert!(!first
        .points()
        .any(|p| p.name().starts_with("cpu.") && p.name() != "cpu.cores"));
    advance_stat(dir.path());
    let second = r.read();
    let user: Vec<f64> = second
        .points()
        .filter(|p| p.name() == "cpu.user")
        .map(|p| p.value)
        .collect();
    assert_eq!(user, [15.03]);
    // Without a baseline (stat unreadable at start), the first good sample becomes it.
    let dir = proc_copy();
    std::fs::remove_file(dir.path().join("stat")).unwrap();
    let mut r = HostReader::new(dir.path(), fake_statfs());
    assert!(matches!(
        r.read().error(Reader::Cpu),
        Some(ReadError::Io { .. })
    ));
    std::fs::copy(fixtures().join("stat"), dir.path().join("stat")).unwrap();
    assert!(r.read().error(Reader::Cpu).is_none());
    advance_stat(dir.path());
    assert!(r.read().points().any(|p| p.name() == "cpu.user"));
}

fn names(reading: &Reading) -> Vec<String> {
    let mut v: Vec<String> = reading.points().map(|p| p.name()).collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn a_missing_or_garbled_file_costs_only_its_own_metrics() {
    let dir = proc_copy();
    let root = dir.path();
    let mut r = HostReader::new(root, fake_statfs());
    advance_stat(root);
    std::fs::remove_file(root.join("meminfo")).unwrap();
    std::fs::write(root.join("loadavg"), "not a load average\n").unwrap();
    std::fs::write(root.join("net/dev"), "Inter-|\n face |\n  eth0: 12 x\n").unwrap();
    std::fs::write(root.join("uptime"), "").unwrap();
    std::fs::write(root.join("cpuinfo"), "nothing here\n").unwrap();
    std::fs::remove_file(root.join("self/mountinfo")).unwrap();
    let reading = r.read();
    for reader in [
        Reader::Memory,
        Reader::Load,
        Reader::Network,
        Reader::Uptime,
        Reader::CpuInfo,
        Reader::Filesystem,
    ] {
        assert!(reading.error(reader).is_some(), "{reader:?} should fail");
    }
    assert!(matches!(
        reading.error(Reader::Memory),
        Some(ReadError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound
    ));
    assert!(matches!(
        reading.error(Reader::Load),
        Some(ReadError::Parse { .. })
    ));
    assert_eq!(
        names(&reading),
        [
            "cpu.idle",
            "cpu.system",
            "cpu.total",
            "cpu.user",
            "cpu.wait",
            "process.count"
        ]
    );

    // The others fail too; the first ones are back.
    std::fs::copy(fixtures().join("meminfo"), root.join("meminfo")).unwrap();
    std::fs::copy(fixtures().join("loadavg"), root.join("loadavg")).unwrap();
    std::fs::write(root.join("stat"), "cpu  1 2\n").unwrap();
    let reading = r.read();
    assert!(reading.error(Reader::Cpu).is_some());
    assert!(reading.error(Reader::Memory).is_none());
    assert!(names(&reading).contains(&"memory.total".to_string()));
    assert!(names(&reading).contains(&"load.1min".to_string()));
}

#[test]
fn a_panicking_parser_is_a_parse_error() {
    let dir = proc_copy();
    // A multi-byte character right before the value makes procfs' meminfo parser slice
    // inside it.
    std::fs::write(dir.path().join("meminfo"), "MemTotalé 5 kB\n").unwrap();
    let mut r = HostReader::new(dir.path(), fake_statfs());
    let reading = r.read();
    assert!(matches!(
        reading.error(Reader::Memory),
        Some(ReadError::Parse { .. })
    ));
    assert!(names(&reading).contains(&"load.1min".to_string()));
}

struct Setup {
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    identity: Arc<Identity>,
    outputs: Arc<Outputs>,
}

fn setup() -> Setup {
    let store = Arc::new(Store::new());
    Setup {
        outputs: Arc::new(Outputs::new(store.clone(), Vec::new())),
        store,
        telemetry: Arc::new(Telemetry::new()),
        identity: Arc::new(Identity::new(NodeIds {
            mesos_id: "agent-1".into(),
            cluster_id: "cluster-1".into(),
            hostname: "node-1.example".into(),
        })),
    }
}

fn errors(t: &Telemetry, reader: &str) -> u64 {
    t.counter("corral.host.read_errors", &[("reader", reader)])
        .get()
}

#[tokio::test]
async fn poller_publishes_the_node_batch_and_counts_failures() {
    let dir = proc_copy();
    let s = setup();
    let mut poller = Poller::new(
        HostReader::new(dir.path(), fake_statfs()),
        s.outputs.clone(),
        s.identity.clone(),
        &s.telemetry,
    );
    advance_stat(dir.path());
    poller.poll().await;
    let batch = s.store.get(Source::Node, None).expect("node batch");
    assert_eq!(batch.source, Source::Node);
    assert!(batch.container_id.is_none());
    assert_eq!(batch.dimensions.mesos_id, "agent-1");
    assert_eq!(batch.dimensions.cluster_id, "cluster-1");
    assert_eq!(batch.dimensions.hostname, "node-1.example");
    assert!(batch.dimensions.container_id.is_empty());
    assert!(batch.points.windows(2).all(|w| w[0].api_cmp(&w[1]).is_le()));
    assert_eq!(table(&batch.points), full_table_after_two_samples());
    assert_eq!(errors(&s.telemetry, "statvfs"), 1);
    assert_eq!(errors(&s.telemetry, "memory"), 0);

    // A failing reader is counted on every poll and drops only its own metrics; its old
    // values do not linger.
    std::fs::write(dir.path().join("meminfo"), "garbage\n").unwrap();
    poller.poll().await;
    poller.poll().await;
    assert_eq!(errors(&s.telemetry, "memory"), 2);
    let batch = s.store.get(Source::Node, None).unwrap();
    assert!(!batch.points.iter().any(|p| p.name().starts_with("memory.")));
    assert!(batch.points.iter().any(|p| p.name() == "load.1min"));

    std::fs::copy(fixtures().join("meminfo"), dir.path().join("meminfo")).unwrap();
    poller.poll().await;
    assert_eq!(errors(&s.telemetry, "memory"), 2);
    let batch = s.store.get(Source::Node, None).unwrap();
    assert!(batch.points.iter().any(|p| p.name() == "memory.total"));
    // The mesos_id learned later shows in the next poll.
    s.identity.set_mesos_id("agent-2");
    poller.poll().await;
    let batch = s.store.get(Source::Node, None).unwrap();
    assert_eq!(batch.dimensions.mesos_id, "agent-2");
}

#[tokio::test]
async fn a_hung_statvfs_drops_only_filesystem_metrics() {
    let dir = proc_copy();
    let s = setup();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let slow: StatFs = Arc::new(move |_p: &Path| {
        c.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        Ok(small_stats(1024))
    });
    let mut poller = Poller::new(
        HostReader::new(dir.path(), slow),
        s.outputs.clone(),
        s.identity.clone(),
        &s.telemetry,
    )
    .with_statvfs_timeout(Duration::from_millis(20));
    poller.poll().await;
    let batch = s.store.get(Source::Node, None).unwrap();
    assert!(!batch
        .points
        .iter()
        .any(|p| p.name().starts_with("filesystem.")));
    assert!(batch.points.iter().any(|p| p.name() == "memory.total"));
    assert_eq!(errors(&s.telemetry, "filesystem"), 1);
    // The stuck task is not joined by another one.
    poller.poll().await;
    assert_eq!(errors(&s.telemetry, "filesystem"), 2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = calls.load(Ordering::SeqCst);
    assert_eq!(started, 8, "one pass over the 8 mounts");
}

#[tokio::test]
async fn run_polls_at_once_and_stops_on_request() {
    let dir = proc_copy();
    let s = setup();
    let poller = Poller::new(
        HostReader::new(dir.path(), fake_statfs()),
        s.outputs.clone(),
        s.identity.clone(),
        &s.telemetry,
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(poller.run(Duration::from_secs(3600), rx));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.store.get(Source::Node, None).is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no poll");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .unwrap();
}

#[test]
fn real_proc_is_readable() {
    let mut r = HostReader::system();
    let reading = r.read();
    for reader in [
        Reader::Uptime,
        Reader::Cpu,
        Reader::CpuInfo,
        Reader::Load,
        Reader::Memory,
        Reader::Filesystem,
        Reader::Network,
        Reader::Process,
    ] {
        assert!(
            reading.error(reader).is_none(),
            "{reader:?}: {:?}",
            reading.error(reader)
        );
    }
    assert!(reading.points().any(|p| p.name() == "memory.total"));
}

/// Collects formatted log lines of the current thread.
#[derive(Clone, Default)]
struct Logs(Arc<parking_lot::Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock())
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

#[tokio::test]
async fn a_failure_is_logged_once_until_it_recovers() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = proc_copy();
    let s = setup();
    let mut poller = Poller::new(
        HostReader::new(dir.path(), fake_statfs()),
        s.outputs.clone(),
        s.identity.clone(),
        &s.telemetry,
    );
    std::fs::write(dir.path().join("meminfo"), "garbage\n").unwrap();
    for _ in 0..3 {
        poller.poll().await;
    }
    assert_eq!(logs.count("host metrics reader failed"), 1);
    assert_eq!(logs.count("reader=\"memory\""), 1);
    assert_eq!(logs.count("meminfo"), 1, "the error is in the message");
    // The mount whose statvfs is refused: once, though it fails on every poll.
    assert_eq!(logs.count("statvfs failed"), 1);
    assert_eq!(errors(&s.telemetry, "statvfs"), 3);

    std::fs::copy(fixtures().join("meminfo"), dir.path().join("meminfo")).unwrap();
    poller.poll().await;
    poller.poll().await;
    assert_eq!(logs.count("host metrics reader recovered"), 1);

    std::fs::remove_file(dir.path().join("meminfo")).unwrap();
    poller.poll().await;
    assert_eq!(logs.count("host metrics reader failed"), 2);
    assert_eq!(errors(&s.telemetry, "memory"), 4);
}
