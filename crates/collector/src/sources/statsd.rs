//! The StatsD source: receive threads that read datagrams, parse them and aggregate in place.
//!
//! Each `statsd.listen` address gets `receive_threads` UDP sockets bound with `SO_REUSEPORT`
//! (the kernel spreads senders over them), each read by its own thread with `recvmmsg`. A
//! thread parses and aggregates into its own [`Aggregator`], so a line costs no channel hop
//! and no shared lock; the flusher takes each aggregator's interval under its mutex, which the
//! receive thread holds once per batch of datagrams. An optional unixgram socket is read the
//! same way.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use corral_statsd::{
    lines, parse, Aggregator, AggregatorConfig, Batcher, Parsed, Partial, Refused, Reject,
};
use parking_lot::Mutex;
use socket2::{Domain, Protocol, Socket, Type};

use super::udp::{enable_rxq_ovfl, set_receive_buffer, RecvBatch};
use crate::attribution::Attribution;

/// Counters of one receive thread, published once per batch.
#[derive(Default)]
pub struct ReceiverStats {
    pub datagrams: AtomicU64,
    pub truncated: AtomicU64,
    pub lines: AtomicU64,
    pub dropped: [AtomicU64; Reject::ALL.len()],
    pub bad_sample_rate: AtomicU64,
    pub events: AtomicU64,
    pub service_checks: AtomicU64,
    /// Lines refused by the aggregator: a new series past `max_series`.
    pub series_dropped: AtomicU64,
    /// Lines refused by the aggregator: another type than the series has in the interval.
    pub type_mismatch: AtomicU64,
    /// The socket's cumulative kernel drop count (`SO_RXQ_OVFL`).
    pub kernel_drops: AtomicU64,
}

/// Thread-local tallies, added to [`ReceiverStats`] after each batch.
#[derive(Default)]
pub(crate) struct Tally {
    datagrams: u64,
    truncated: u64,
    lines: u64,
    dropped: [u64; Reject::ALL.len()],
    bad_sample_rate: u64,
    events: u64,
    service_checks: u64,
    /// Lines the aggregator refused.
    pub(crate) refused: Refused,
}

impl Tally {
    pub(crate) fn publish(&mut self, s: &ReceiverStats) {
        let add = |a: &AtomicU64, v: &mut u64| {
            if *v != 0 {
                a.fetch_add(*v, Ordering::Relaxed);
                *v = 0;
            }
        };
        add(&s.datagrams, &mut self.datagrams);
        add(&s.truncated, &mut self.truncated);
        add(&s.lines, &mut self.lines);
        for (a, v) in s.dropped.iter().zip(self.dropped.iter_mut()) {
            add(a, v);
        }
        add(&s.bad_sample_rate, &mut self.bad_sample_rate);
        add(&s.events, &mut self.events);
        add(&s.service_checks, &mut self.service_checks);
        add(&s.series_dropped, &mut self.refused.series_limit);
        add(&s.type_mismatch, &mut self.refused.type_mismatch);
    }
}

/// One socket read by one thread.
pub struct Receiver {
    /// `udp://127.0.0.1:8125` or `unix:///path`.
    pub endpoint: String,
    /// Effective receive buffer in bytes, as the kernel reports it.
    pub receive_buffer: usize,
    pub stats: Arc<ReceiverStats>,
    pub aggregator: Arc<Mutex<Aggregator>>,
}

/// The running StatsD source.
pub struct StatsdSource {
    /// The shared-port receivers, then any added later (per-container ports).
    receivers: Mutex<Vec<Arc<Receiver>>>,
    /// The bound UDP addresses, one per `statsd.listen` entry (ephemeral ports resolved).
    pub udp_addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    unix_path: Option<PathBuf>,
}

/// Settings the source needs from the configuration.
pub struct StatsdSourceConfig {
    pub listen: Vec<SocketAddr>,
    pub unix_socket: Option<PathBuf>,
    pub threads_per_address: usize,
    pub receive_buffer: usize,
}

impl StatsdSource {
    pub fn start(
        cfg: &StatsdSourceConfig,
        agg_config: Arc<AggregatorConfig>,
        attribution: Arc<Attribution>,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let mut src = StatsdSource {
            receivers: Mutex::new(Vec::new()),
            udp_addrs: Vec::new(),
            stop: stop.clone(),
            threads: Vec::new(),
            unix_path: None,
        };
        let mut sockets: Vec<(String, RawSocket)> = Vec::new();
        for addr in &cfg.listen {
            let mut bound = *addr;
            for i in 0..cfg.threads_per_address.max(1) {
                let socket = udp_socket(bound)
                    .with_context(|| format!("statsd.listen: cannot listen on udp {addr}"))?;
                if i == 0 {
                    // Later sockets join the first one's port (which may have been ephemeral).
                    bound = socket
                        .local_addr()?
                        .as_socket()
                        .context("statsd.listen: bound address is not an IP address")?;
                    src.udp_addrs.push(bound);
                }
                sockets.push((format!("udp://{bound}"), RawSocket::Udp(socket)));
            }
        }
        if let Some(path) = &cfg.unix_socket {
            let socket = unix_socket(path).with_context(|| {
                format!("statsd.unix_socket: cannot listen on {}", path.display())
            })?;
            src.unix_path = Some(path.clone());
            sockets.push((
                format!("unix://{}", path.display()),
                RawSocket::Unix(socket),
            ));
        }
        for (endpoint, socket) in sockets {
            let receive_buffer = match &socket {
                RawSocket::Udp(s) | RawSocket::Unix(s) => {
                    set_receive_buffer(s, cfg.receive_buffer)?
                }
            };
            if receive_buffer < cfg.receive_buffer {
                tracing::warn!(
                    %endpoint,
                    requested = cfg.receive_buffer,
                    effective = receive_buffer,
                    "receive buffer is smaller than statsd.receive_buffer; raise net.core.rmem_max \
                     or grant CAP_NET_ADMIN to avoid kernel drops under bursts"
                );
            }
            let stats = Arc::new(ReceiverStats::default());
            let aggregator = Arc::new(Mutex::new(Aggregator::new(agg_config.clone())));
            let thread = {
                let (stats, aggregator, stop) = (stats.clone(), aggregator.clone(), stop.clone());
                let attribution = attribution.clone();
                let name = format!("statsd-rx-{}", src.threads.len());
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || {
                        receive_loop(socket, &stats, &aggregator, &attribution, &stop, epoch)
                    })
                    .context("cannot start a receive thread")?
            };
            tracing::info!(%endpoint, receive_buffer, "statsd listening");
            src.threads.push(thread);
            src.receivers.get_mut().push(Arc::new(Receiver {
                endpoint,
                receive_buffer,
                stats,
                aggregator,
            }));
        }
        Ok(src)
    }

    /// Takes the interval's accumulations from every receiver.
    pub fn take_interval(&self) -> Vec<Vec<Partial>> {
        self.receivers()
            .iter()
            .map(|r| r.aggregator.lock().take_interval())
            .collect()
    }

    /// Every receiver (for self-metrics).
    pub fn receivers(&self) -> Vec<Arc<Receiver>> {
        self.receivers.lock().clone()
    }

    /// Adds a receiver run by another component (the per-container ports), so that its
    /// intervals are flushed and its counts reported with the others.
    pub fn add_receiver(&self, receiver: Arc<Receiver>) {
        self.receivers.lock().push(receiver);
    }

    /// Stops the receive threads after they have drained what the kernel still holds.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(p) = self.unix_path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for StatsdSource {
    fn drop(&mut self) {
        self.stop();
    }
}

enum RawSocket {
    Udp(Socket),
    Unix(Socket),
}

impl RawSocket {
    fn fd(&self) -> RawFd {
        match self {
            RawSocket::Udp(s) | RawSocket::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// How long a blocked receive waits before checking for shutdown.
const POLL: Duration = Duration::from_millis(100);

fn udp_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_read_timeout(Some(POLL))?;
    let _ = enable_rxq_ovfl(socket.as_raw_fd());
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn unix_socket(path: &Path) -> io::Result<Socket> {
    // A socket file left by an earlier run would make bind fail; anything else at that path
    // is not ours to remove.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::DGRAM, None)?;
    socket.set_read_timeout(Some(POLL))?;
    let _ = enable_rxq_ovfl(socket.as_raw_fd());
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    // Any local user may send, as with the Datadog agent's socket.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o722))?;
    Ok(socket)
}

fn receive_loop(
    socket: RawSocket,
    stats: &ReceiverStats,
    aggregator: &Mutex<Aggregator>,
    attribution: &Attribution,
    stop: &AtomicBool,
    epoch: Instant,
) {
    let fd = socket.fd();
    let mut batch = RecvBatch::new();
    let mut tally = Tally::default();
    let mut errors_logged = 0u32;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        // While stopping, drain what is queued without waiting, then leave.
        let n = match batch.recv(fd, !stopping) {
            Ok(n) => n,
            Err(e) => {
                if errors_logged < 5 {
                    tracing::error!(error = %e, "statsd receive failed");
                    errors_logged += 1;
                }
                std::thread::sleep(POLL);
                0
            }
        };
        if n == 0 {
            if stopping {
                break;
            }
            continue;
        }
        let now = epoch.elapsed().as_nanos() as u64;
        let ips = attribution.ips();
        {
            let mut agg = aggregator.lock();
            let mut pending = Batcher::new(&mut agg, now);
            for d in batch.datagrams() {
                tally.datagrams += 1;
                tally.truncated += d.truncated as u64;
                let by_ip = match (ips.is_empty(), d.source) {
                    (false, Some(ip)) => ips.get(&ip).map(|c| &**c),
                    _ => None,
                };
                process_datagram(d.data, None, by_ip, &mut pending, &mut tally);
            }
            tally.refused += pending.finish();
        }
        if let Some(drops) = batch.kernel_drops() {
            stats.kernel_drops.store(drops as u64, Ordering::Relaxed);
        }
        tally.publish(stats);
    }
    tally.publish(stats);
}

/// Parses every line of one datagram and hands them to `pending`, which aggregates them a
/// batch at a time (the caller finishes it, and adds the lines it dropped to the tally). A
/// sample's container is, in order: the port's own container, the line's `|c:` field, the
/// container of the sender's IP.
pub(crate) fn process_datagram<'a>(
    data: &'a [u8],
    port_container: Option<&'a str>,
    ip_container: Option<&'a str>,
    pending: &mut Batcher<'a, '_>,
    tally: &mut Tally,
) {
    for line in lines(data) {
        tally.lines += 1;
        match parse(line) {
            Ok(Parsed::Metric(m)) => {
                tally.bad_sample_rate += m.bad_sample_rate as u64;
                let container = port_container.or(m.container_id).or(ip_container);
                pending.push(m, container);
            }
            Ok(Parsed::ServiceCheck(sc)) => {
                tally.service_checks += 1;
                let container = port_container.or(sc.container_id).or(ip_container);
                if let Err(e) = pending.add_service_check(&sc, container) {
                    tally.refused.count(e);
                }
            }
            Ok(Parsed::Event(_)) => tally.events += 1,
            Err(reason) => tally.dropped[reason.index()] += 1,
        }
    }
}
