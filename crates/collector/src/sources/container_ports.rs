//! Per-container StatsD ports (CONTRACT §3): a UDP socket per registered container on
//! `statsd.container_listen_host`, all read by one thread through epoll, every sample
//! attributed to the socket's container. Assignments are kept in
//! `data_dir/container-ports/` so that a restart binds the same ports again; containers the
//! agent stops reporting are released after `statsd.expiry` (its current value: a reload may
//! change it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use corral_model::{ContainerPorts, PortAssignment, PortError};
use corral_statsd::{Aggregator, AggregatorConfig, Batcher};
use parking_lot::Mutex;
use serde::Deserialize;
use socket2::{Domain, Protocol, Socket, Type};

use super::statsd::{process_datagram, Receiver, ReceiverStats, Tally};
use super::udp::{enable_rxq_ovfl, set_receive_buffer, RecvBatch};
use crate::reload::LiveDuration;

/// Container ids longer than this are refused (Mesos' are UUIDs, 36 bytes).
pub const MAX_ID_LEN: usize = 256;
/// Receive buffer asked for each container socket (the shared ports may ask for more).
const MAX_SOCKET_BUFFER: usize = 4 << 20;
/// A container the agent has never reported is kept at least this long: it may still be
/// starting (pulling its image) when it registers.
const NEVER_SEEN_GRACE: Duration = Duration::from_secs(3600);
/// How long the reader waits for datagrams before checking for shutdown.
const POLL_MS: i32 = 100;
/// Batches read from one ready socket before the next is served.
const BATCHES_PER_WAKE: usize = 8;

pub struct ContainerPortsConfig {
    pub host: IpAddr,
    /// Inclusive; `None` means ephemeral ports.
    pub range: Option<(u16, u16)>,
    /// `data_dir/container-ports`.
    pub dir: PathBuf,
    /// `statsd.expiry`, shared with the reload.
    pub expiry: Arc<LiveDuration>,
    pub receive_buffer: usize,
}

/// The registry and its reader thread.
pub struct ContainerPortRegistry {
    cfg: ContainerPortsConfig,
    inner: Mutex<Inner>,
    reader: Arc<Reader>,
    receiver: Arc<Receiver>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    entries: BTreeMap<String, Entry>,
    next_token: u64,
    /// Where the search for a free port in the range starts.
    cursor: u16,
}

struct Entry {
    port: u16,
    token: u64,
    assigned: Instant,
    /// When the agent last reported the container (`None`: not since it was registered).
    seen: Option<Instant>,
}

/// What the reader thread shares with the registry.
struct Reader {
    epoll: OwnedFd,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
}

struct Slot {
    socket: Socket,
    container: Arc<str>,
    /// The socket's kernel drop count when last read, to add only what is new.
    drops: AtomicU32,
}

#[derive(Deserialize)]
struct Persisted {
    container_id: String,
    #[allow(dead_code)]
    statsd_host: String,
    statsd_port: u16,
}

impl ContainerPortRegistry {
    /// Re-binds the persisted assignments and starts the reader thread. `epoch` is the
    /// instant the aggregators count time from.
    pub fn start(
        cfg: ContainerPortsConfig,
        agg_config: Arc<AggregatorConfig>,
        epoch: Instant,
    ) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&cfg.dir)
            .with_context(|| format!("data_dir: cannot create {}", cfg.dir.display()))?;
        // SAFETY: plain epoll_create1; the fd is owned from here on.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(io::Error::last_os_error()).context("cannot create an epoll instance");
        }
        // SAFETY: a fresh, valid fd that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(epfd) };
        let reader = Arc::new(Reader {
            epoll,
            slots: Mutex::new(HashMap::new()),
        });
        let stats = Arc::new(ReceiverStats::default());
        let aggregator = Arc::new(Mutex::new(Aggregator::new(agg_config)));
        let receiver = Arc::new(Receiver {
            endpoint: format!("container-ports://{}", cfg.host),
            receive_buffer: cfg.receive_buffer.min(MAX_SOCKET_BUFFER),
            stats: stats.clone(),
            aggregator: aggregator.clone(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let registry = Arc::new(ContainerPortRegistry {
            inner: Mutex::new(Inner {
                entries: BTreeMap::new(),
                next_token: 1,
                cursor: cfg.range.map_or(0, |(lo, _)| lo),
            }),
            cfg,
            reader: reader.clone(),
            receiver,
            stop: stop.clone(),
            thread: Mutex::new(None),
        });
        registry.recover();
        let thread = std::thread::Builder::new()
            .name("statsd-containers".into())
            .spawn(move || read_loop(&reader, &stats, &aggregator, &stop, epoch))
            .context("cannot start the container port reader")?;
        *registry.thread.lock() = Some(thread);
        Ok(registry)
    }

    /// The receiver to register with the StatsD source, so its intervals are flushed.
    pub fn receiver(&self) -> Arc<Receiver> {
        self.receiver.clone()
    }

    /// Tells the registry which containers the agent reports now; those registered but no
    /// longer reported for `expiry` are released. Call only after a successful poll.
    pub fn seen(&self, containers: &HashSet<&str>) {
        let now = Instant::now();
        let expiry = self.cfg.expiry.get();
        let expired: Vec<String> = {
            let mut inner = self.inner.lock();
            for (id, e) in inner.entries.iter_mut() {
                if containers.contains(id.as_str()) {
                    e.seen = Some(now);
                }
            }
            inner
                .entries
                .iter()
                .filter(|(_, e)| match e.seen {
                    Some(t) => now.duration_since(t) > expiry,
                    None => now.duration_since(e.assigned) > expiry.max(NEVER_SEEN_GRACE),
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in expired {
            match self.release(&id) {
                Ok(_) => tracing::info!(
                    container_id = %id,
                    "container port released: the agent no longer reports the container"
                ),
                Err(e) => {
                    tracing::warn!(container_id = %id, error = %e, "cannot release a container port")
                }
            }
        }
    }

    /// Stops the reader after it has drained what the kernel holds.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }

    fn recover(&self) {
        let entries = match std::fs::read_dir(&self.cfg.dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %self.cfg.dir.display(), error = %e, "cannot read container port assignments");
                return;
            }
        };
        let mut found: Vec<(PathBuf, Persisted)> = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Persisted>(&b).map_err(|e| e.to_string()))
                .and_then(|p| {
                    validate_id(&p.container_id)
                        .map(|_| p)
                        .map_err(|e| e.to_string())
                });
            match parsed {
                Ok(p) => found.push((path, p)),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "unusable container port assignment removed");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        found.sort_by(|a, b| a.1.container_id.cmp(&b.1.container_id));
        let mut inner = self.inner.lock();
        for (path, p) in found {
            if inner.entries.contains_key(&p.container_id) {
                continue;
            }
            let in_range = self
                .cfg
                .range
                .is_none_or(|(lo, hi)| (lo..=hi).contains(&p.statsd_port));
            let socket = if p.statsd_port != 0 && in_range {
                bind(
                    SocketAddr::new(self.cfg.host, p.statsd_port),
                    self.receiver.receive_buffer,
                )
                .ok()
            } else {
                None
            };
            let result = match socket {
                Some(s) => Ok((s, p.statsd_port)),
                None => {
                    let r = self.bind_new(&inner);
                    if let Ok((_, port)) = &r {
                        tracing::warn!(
                            container_id = %p.container_id,
                            old_port = p.statsd_port,
                            new_port = port,
                            "container port could not be bound again; assigned a new one (the container keeps sending to the old one until it restarts)"
                        );
                    }
                    r
                }
            };
            match result.and_then(|(socket, port)| {
                self.install(&mut inner, &p.container_id, socket, port)
                    .map(|_| port)
            }) {
                Ok(port) => {
                    let e = inner.entries.get_mut(&p.container_id);
                    // Registered before the restart: the agent reported it then, or may still.
                    if let Some(e) = e {
                        e.seen = Some(Instant::now());
                    }
                    if port != p.statsd_port {
                        if let Err(e) = self.persist(&p.container_id, port) {
                            tracing::warn!(container_id = %p.container_id, error = %e, "cannot persist a container port");
                        }
                    }
                    tracing::info!(container_id = %p.container_id, port, "container port restored");
                }
                Err(e) => {
                    tracing::warn!(container_id = %p.container_id, error = %e, "container port not restored");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }

    /// Binds a new socket: an ephemeral port, or the next free one in the range.
    fn bind_new(&self, inner: &Inner) -> Result<(Socket, u16), PortError> {
        let buffer = self.receiver.receive_buffer;
        let Some((lo, hi)) = self.cfg.range else {
            let s = bind(SocketAddr::new(self.cfg.host, 0), buffer).map_err(|e| {
                PortError::Io(format!("cannot bind a UDP port on {}: {e}", self.cfg.host))
            })?;
            let port = s
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map(|a| a.port())
                .ok_or_else(|| PortError::Io("bound socket has no port".into()))?;
            return Ok((s, port));
        };
        let used: HashSet<u16> = inner.entries.values().map(|e| e.port).collect();
        let span = u32::from(hi - lo) + 1;
        let start = if (lo..=hi).contains(&inner.cursor) {
            inner.cursor
        } else {
            lo
        };
        for i in 0..span {
            let port = (u32::from(start - lo) + i) % span + u32::from(lo);
            let port = port as u16;
            if used.contains(&port) {
                continue;
            }
            if let Ok(s) = bind(SocketAddr::new(self.cfg.host, port), buffer) {
                return Ok((s, port));
            }
        }
        Err(PortError::Exhausted)
    }

    fn install(
        &self,
        inner: &mut Inner,
        id: &str,
        socket: Socket,
        port: u16,
    ) -> Result<(), PortError> {
        let token = inner.next_token;
        inner.next_token += 1;
        let slot = Arc::new(Slot {
            socket,
            container: Arc::from(id),
            drops: AtomicU32::new(0),
        });
        self.reader.slots.lock().insert(token, slot.clone());
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both fds are valid; `ev` is a valid epoll_event.
        let r = unsafe {
            libc::epoll_ctl(
                self.reader.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                slot.socket.as_raw_fd(),
                &mut ev,
            )
        };
        if r != 0 {
            self.reader.slots.lock().remove(&token);
            return Err(PortError::Io(format!(
                "cannot watch the container socket: {}",
                io::Error::last_os_error()
            )));
        }
        if let (Some(_), Some(hi)) = (self.cfg.range, self.cfg.range.map(|r| r.1)) {
            inner.cursor = if port >= hi {
                self.cfg.range.map_or(0, |r| r.0)
            } else {
                port + 1
            };
        }
        inner.entries.insert(
            id.to_string(),
            Entry {
                port,
                token,
                assigned: Instant::now(),
                seen: None,
            },
        );
        Ok(())
    }

    fn persist(&self, id: &str, port: u16) -> io::Result<()> {
        let body = serde_json::to_vec(&PortAssignment {
            container_id: id.to_string(),
            statsd_host: self.cfg.host.to_string(),
            statsd_port: port,
        })
        .map_err(io::Error::other)?;
        let path = self.cfg.dir.join(file_name(id));
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, &path)
    }

    fn assignment(&self, id: &str, port: u16) -> PortAssignment {
        PortAssignment {
            container_id: id.to_string(),
            statsd_host: self.cfg.host.to_string(),
            statsd_port: port,
        }
    }
}

impl ContainerPorts for ContainerPortRegistry {
    fn assign(&self, container_id: &str) -> Result<PortAssignment, PortError> {
        validate_id(container_id)?;
        let mut inner = self.inner.lock();
        if let Some(e) = inner.entries.get(container_id) {
            return Ok(self.assignment(container_id, e.port));
        }
        let (socket, port) = self.bind_new(&inner)?;
        self.install(&mut inner, container_id, socket, port)?;
        if let Err(e) = self.persist(container_id, port) {
            // Without the file the port would not survive a restart: undo.
            if let Some(entry) = inner.entries.remove(container_id) {
                self.unwatch(entry.token);
            }
            return Err(PortError::Io(format!(
                "cannot persist the assignment in {}: {e}",
                self.cfg.dir.display()
            )));
        }
        tracing::info!(container_id, port, "container port assigned");
        Ok(self.assignment(container_id, port))
    }

    fn release(&self, container_id: &str) -> Result<bool, PortError> {
        validate_id(container_id)?;
        let mut inner = self.inner.lock();
        let Some(entry) = inner.entries.remove(container_id) else {
            return Ok(false);
        };
        self.unwatch(entry.token);
        let path = self.cfg.dir.join(file_name(container_id));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(PortError::Io(format!(
                    "cannot remove {}: {e}",
                    path.display()
                )))
            }
        }
        Ok(true)
    }

    fn list(&self) -> Vec<PortAssignment> {
        self.inner
            .lock()
            .entries
            .iter()
            .map(|(id, e)| self.assignment(id, e.port))
            .collect()
    }
}

impl ContainerPortRegistry {
    fn unwatch(&self, token: u64) {
        if let Some(slot) = self.reader.slots.lock().remove(&token) {
            // SAFETY: valid fds; a null event is allowed for EPOLL_CTL_DEL.
            unsafe {
                libc::epoll_ctl(
                    self.reader.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    slot.socket.as_raw_fd(),
                    std::ptr::null_mut(),
                );
            }
            // The socket closes when the reader drops its last reference.
        }
    }
}

impl Drop for ContainerPortRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Non-empty, at most [`MAX_ID_LEN`] bytes, no `/` and no control characters.
pub fn validate_id(id: &str) -> Result<(), PortError> {
    if id.is_empty() {
        return Err(PortError::InvalidId("empty".into()));
    }
    if id.len() > MAX_ID_LEN {
        return Err(PortError::InvalidId(format!(
            "longer than {MAX_ID_LEN} bytes"
        )));
    }
    if id.contains('/') {
        return Err(PortError::InvalidId("contains '/'".into()));
    }
    if id.chars().any(char::is_control) {
        return Err(PortError::InvalidId("contains a control character".into()));
    }
    Ok(())
}

/// A file name for a container id: safe characters kept, others `%XX`-escaped, long names
/// shortened with a hash (the file itself holds the full id).
pub fn file_name(id: &str) -> String {
    let mut name = String::with_capacity(id.len() + 5);
    for (i, b) in id.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if keep {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    if name.len() > 200 {
        let mut cut = 150;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name = format!("{}~{:016x}", &name[..cut], fnv1a(id.as_bytes()));
    }
    name.push_str(".json");
    name
}

/// FNV-1a: stable across Rust releases, unlike the standard hasher.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn bind(addr: SocketAddr, receive_buffer: usize) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    let _ = enable_rxq_ovfl(socket.as_raw_fd());
    socket.bind(&addr.into())?;
    let _ = set_receive_buffer(&socket, receive_buffer);
    Ok(socket)
}

fn read_loop(
    reader: &Reader,
    stats: &ReceiverStats,
    aggregator: &Mutex<Aggregator>,
    stop: &AtomicBool,
    epoch: Instant,
) {
    let mut r = Reading {
        batch: RecvBatch::new(),
        tally: Tally::default(),
        datagrams: 0,
        truncated: 0,
        drops_total: 0,
        epoch,
    };
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    let mut errors_logged = 0u32;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        // While stopping, take what is ready without waiting, then leave.
        // SAFETY: `events` has room for the number of events passed.
        let n = unsafe {
            libc::epoll_wait(
                reader.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                if stopping { 0 } else { POLL_MS },
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                if errors_logged < 5 {
                    tracing::error!(error = %e, "container port wait failed");
                    errors_logged += 1;
                }
                std::thread::sleep(Duration::from_millis(POLL_MS as u64));
            }
            continue;
        }
        if n == 0 {
            if stopping {
                break;
            }
            continue;
        }
        for ev in &events[..n as usize] {
            let token = ev.u64;
            let Some(slot) = reader.slots.lock().get(&token).cloned() else {
                continue;
            };
            r.read_socket(&slot, aggregator);
        }
        r.publish(stats);
    }
    r.publish(stats);
}

/// The reader thread's buffers and tallies.
struct Reading {
    batch: RecvBatch,
    tally: Tally,
    datagrams: u64,
    truncated: u64,
    /// Kernel drops over every container socket, past and present.
    drops_total: u64,
    epoch: Instant,
}

impl Reading {
    fn read_socket(&mut self, slot: &Slot, aggregator: &Mutex<Aggregator>) {
        let fd: RawFd = slot.socket.as_raw_fd();
        for _ in 0..BATCHES_PER_WAKE {
            let got = match self.batch.recv(fd, false) {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(container_id = %slot.container, error = %e, "container port receive failed");
                    0
                }
            };
            if got == 0 {
                return;
            }
            let now = self.epoch.elapsed().as_nanos() as u64;
            {
                let mut agg = aggregator.lock();
                let mut pending = Batcher::new(&mut agg, now);
                for d in self.batch.datagrams() {
                    self.datagrams += 1;
                    self.truncated += u64::from(d.truncated);
                    process_datagram(
                        d.data,
                        Some(&slot.container),
                        None,
                        &mut pending,
                        &mut self.tally,
                    );
                }
                self.tally.refused += pending.finish();
            }
            if let Some(drops) = self.batch.kernel_drops() {
                let before = slot.drops.swap(drops, Ordering::Relaxed);
                self.drops_total += u64::from(drops.wrapping_sub(before));
            }
        }
    }

    fn publish(&mut self, stats: &ReceiverStats) {
        // Datagram counts go straight to the shared counters (the tally's fields are the
        // receive threads' own).
        stats
            .datagrams
            .fetch_add(std::mem::take(&mut self.datagrams), Ordering::Relaxed);
        stats
            .truncated
            .fetch_add(std::mem::take(&mut self.truncated), Ordering::Relaxed);
        stats
            .kernel_drops
            .store(self.drops_total, Ordering::Relaxed);
        self.tally.publish(stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_statsd::GaugeSign;
    use std::net::{Ipv4Addr, UdpSocket};
    use std::path::Path;

    fn registry(
        dir: &Path,
        range: Option<(u16, u16)>,
        expiry: Duration,
    ) -> Arc<ContainerPortRegistry> {
        let agg = Arc::new(AggregatorConfig::new(
            vec![50.0],
            GaugeSign::Delta,
            3,
            100_000,
        ));
        ContainerPortRegistry::start(
            ContainerPortsConfig {
                host: Ipv4Addr::LOCALHOST.into(),
                range,
                dir: dir.join("container-ports"),
                expiry: Arc::new(LiveDuration::new(expiry)),
                receive_buffer: 1 << 20,
            },
            agg,
            Instant::now(),
        )
        .unwrap()
    }

    #[test]
    fn ids_are_validated() {
        assert!(validate_id("").is_err());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id("a\nb").is_err());
        assert!(validate_id(&"x".repeat(257)).is_err());
        assert!(validate_id(&"x".repeat(256)).is_ok());
        assert!(validate_id("e4faacb2-f69f-4ea1-9d96-eb06fea75eef.check-1").is_ok());
    }

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(file_name("abc-1.2_x"), "abc-1.2_x.json");
        assert_eq!(file_name(".."), "%2E..json");
        assert_eq!(file_name("a b"), "a%20b.json");
        let long_a = format!("{}a", "é".repeat(120));
        let long_b = format!("{}b", "é".repeat(120));
        assert!(file_name(&long_a).len() < 255);
        assert_ne!(file_name(&long_a), file_name(&long_b));
    }

    #[test]
    fn assign_is_idempotent_persisted_and_restored() {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let r = registry(dir.path(), None, Duration::from_secs(60));
            let a = r.assign("c1").unwrap();
            assert_eq!(r.assign("c1").unwrap(), a);
            assert_eq!(a.statsd_host, "127.0.0.1");
            assert_ne!(a.statsd_port, 0);
            assert_eq!(r.list(), vec![a.clone()]);
            let file = dir.path().join("container-ports/c1.json");
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
            assert_eq!(v["container_id"], "c1");
            assert_eq!(v["statsd_port"], a.statsd_port);
            r.stop();
            a.statsd_port
        };
        let r = registry(dir.path(), None, Duration::from_secs(60));
        assert_eq!(r.list()[0].statsd_port, port);
        assert!(r.release("c1").unwrap());
        assert!(!r.release("c1").unwrap());
        assert!(r.list().is_empty());
        assert!(!dir.path().join("container-ports/c1.json").exists());
    }

    #[test]
    fn a_port_taken_meanwhile_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let old = {
            let r = registry(dir.path(), None, Duration::from_secs(60));
            r.assign("c1").unwrap().statsd_port
        };
        let _squatter = UdpSocket::bind(("127.0.0.1", old)).unwrap();
        let r = registry(dir.path(), None, Duration::from_secs(60));
        let new = r.list()[0].statsd_port;
        assert_ne!(new, old);
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("container-ports/c1.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(v["statsd_port"], new);
    }

    #[test]
    fn ranges_are_used_in_order_and_can_run_out() {
        let dir = tempfile::tempdir().unwrap();
        // Find three consecutive free ports.
        let base = (20000u16..60000)
            .step_by(7)
            .find(|p| (0..3).all(|i| UdpSocket::bind(("127.0.0.1", p + i)).is_ok()))
            .unwrap();
        let r = registry(dir.path(), Some((base, base + 2)), Duration::from_secs(60));
        let ports: Vec<u16> = ["a", "b", "c"]
            .iter()
            .map(|id| r.assign(id).unwrap().statsd_port)
            .collect();
        let mut sorted = ports.clone();
        sorted.sort();
        assert_eq!(sorted, vec![base, base + 1, base + 2]);
        assert_eq!(r.assign("d"), Err(PortError::Exhausted));
        r.release("b").unwrap();
        assert_eq!(r.assign("d").unwrap().statsd_port, ports[1]);
    }

    #[test]
    fn samples_on_a_container_port_belong_to_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path(), None, Duration::from_secs(60));
        let a = r.assign("c1").unwrap();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(b"hits:2|c\nhits:3|c|c:other", ("127.0.0.1", a.statsd_port))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while r.receiver.stats.lines.load(Ordering::Relaxed) < 2 {
            assert!(Instant::now() < deadline, "lines not received");
            std::thread::sleep(Duration::from_millis(10));
        }
        let parts = r.receiver.aggregator.lock().take_interval();
        let agg = Arc::new(AggregatorConfig::new(
            vec![50.0],
            GaugeSign::Delta,
            3,
            100_000,
        ));
        let out = corral_statsd::FlushState::new(agg).flush(vec![parts]);
        let groups: Vec<_> = out
            .groups
            .iter()
            .map(|(c, p)| (c.as_deref().map(str::to_string), p.len()))
            .collect();
        assert_eq!(groups, vec![(Some("c1".to_string()), 1)]);
        assert_eq!(out.groups[0].1[0].value, 5.0);
        assert_eq!(r.receiver.stats.datagrams.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn containers_the_agent_stops_reporting_are_released_after_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path(), None, Duration::from_millis(50));
        r.assign("gone").unwrap();
        r.assign("kept").unwrap();
        r.assign("never-seen").unwrap();
        r.seen(&["gone", "kept"].into_iter().collect());
        std::thread::sleep(Duration::from_millis(80));
        r.seen(&["kept"].into_iter().collect());
        let ids: Vec<String> = r.list().into_iter().map(|a| a.container_id).collect();
        assert_eq!(ids, vec!["kept", "never-seen"]);
    }

    #[test]
    fn a_reloaded_expiry_applies_from_the_next_poll() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path(), None, Duration::from_secs(3600));
        r.assign("gone").unwrap();
        r.seen(&["gone"].into_iter().collect());
        std::thread::sleep(Duration::from_millis(80));
        r.seen(&HashSet::new());
        assert_eq!(r.list().len(), 1, "kept under the expiry it started with");
        r.cfg.expiry.set(Duration::from_millis(50));
        r.seen(&HashSet::new());
        assert!(r.list().is_empty(), "released under the reloaded expiry");
    }
}
