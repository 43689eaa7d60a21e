//! Starting and stopping the collector: sockets, pollers, sinks, the flush loop, and a final
//! flush on shutdown; applying a reloaded configuration in between.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use corral_model::{Identity, Store};
use corral_statsd::{AggregatorConfig, GaugeSign};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::attribution::Attribution;
use crate::config::{self, Config};
use crate::outputs::Outputs;
use crate::pipeline::Pipeline;
use crate::reload::LiveDuration;
use crate::sinks::{ConfiguredSink, SinkChange};
use crate::sources::agent::ContainerDirectory;
use crate::sources::container_ports::{ContainerPortRegistry, ContainerPortsConfig};
use crate::sources::statsd::{StatsdSource, StatsdSourceConfig};
use crate::telemetry::Telemetry;

/// How long a stopping Corral waits for sinks to deliver (or spool) what they hold.
const SINK_SHUTDOWN: Duration = Duration::from_secs(15);

/// The running collector.
pub struct Collector {
    pipeline: Arc<Mutex<Pipeline>>,
    outputs: Arc<Outputs>,
    statsd_addrs: Vec<SocketAddr>,
    container_ports: Arc<ContainerPortRegistry>,
    agg_config: Arc<AggregatorConfig>,
    /// `statsd.expiry` for the container ports and the agent source.
    expiry: Arc<LiveDuration>,
    /// Held across a reload's sink change, which waits for sinks to start and stop.
    sink: tokio::sync::Mutex<ConfiguredSink>,
    flush_interval: watch::Sender<Duration>,
    stop_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Shared parts the collector is built from; the binary keeps clones for the API.
pub struct Shared {
    pub store: Arc<Store>,
    pub identity: Arc<Identity>,
    pub telemetry: Arc<Telemetry>,
    pub attribution: Arc<Attribution>,
}

fn gauge_sign(sign: config::GaugeSign) -> GaugeSign {
    match sign {
        config::GaugeSign::Delta => GaugeSign::Delta,
        config::GaugeSign::Absolute => GaugeSign::Absolute,
    }
}

/// How many flushes make up `expiry`, at least one.
fn expiry_flushes(expiry: Duration, flush: Duration) -> u32 {
    let n = expiry.as_secs_f64() / flush.as_secs_f64().max(1e-3);
    (n.ceil() as u32).max(1)
}

impl Collector {
    /// Binds the StatsD sockets, starts the pollers, the sinks and the flush loop. Must run
    /// inside a tokio runtime.
    pub fn start(config: &Config, shared: &Shared) -> Result<Collector> {
        let s = &config.statsd;
        let agg_config = Arc::new(AggregatorConfig::new(
            s.percentiles.clone(),
            gauge_sign(s.gauge_sign),
            expiry_flushes(s.expiry, s.flush_interval),
            s.max_series,
        ));
        let sink = ConfiguredSink::start(config, &shared.telemetry)?;
        let outputs = Arc::new(Outputs::new(shared.store.clone(), sink.sinks()));
        let expiry = Arc::new(LiveDuration::new(s.expiry));
        let container_ports = ContainerPortRegistry::start(
            ContainerPortsConfig {
                host: s.container_listen_host,
                range: s.container_port_range,
                dir: config.data_dir.join("container-ports"),
                expiry: expiry.clone(),
                receive_buffer: usize::try_from(s.receive_buffer).unwrap_or(usize::MAX),
            },
            agg_config.clone(),
            Instant::now(),
        )?;
        let source = StatsdSource::start(
            &StatsdSourceConfig {
                listen: s.listen.clone(),
                unix_socket: s.unix_socket.clone(),
                threads_per_address: s.receive_threads,
                receive_buffer: usize::try_from(s.receive_buffer).unwrap_or(usize::MAX),
            },
            agg_config.clone(),
            shared.attribution.clone(),
        )?;
        let statsd_addrs = source.udp_addrs.clone();
        source.add_receiver(container_ports.receiver());
        let directory = Arc::new(ContainerDirectory::new());
        let pipeline = Arc::new(Mutex::new(
            Pipeline::new(
                source,
                agg_config.clone(),
                outputs.clone(),
                shared.identity.clone(),
                shared.telemetry.clone(),
            )
            .with_directory(directory.clone()),
        ));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (flush_interval, flush_interval_rx) = watch::channel(s.flush_interval);
        let mut tasks = vec![tokio::spawn(flush_loop(
            pipeline.clone(),
            flush_interval_rx,
            stop_rx.clone(),
        ))];
        tasks.extend(crate::sources::host::spawn(
            config,
            outputs.clone(),
            shared.identity.clone(),
            shared.telemetry.clone(),
            stop_rx.clone(),
        ));
        tasks.extend(crate::sources::agent::spawn(
            config,
            expiry.clone(),
            outputs.clone(),
            shared.identity.clone(),
            shared.attribution.clone(),
            shared.telemetry.clone(),
            stop_rx,
            directory,
            Some(container_ports.clone()),
        )?);
        Ok(Collector {
            pipeline,
            outputs,
            statsd_addrs,
            container_ports,
            agg_config,
            expiry,
            sink: tokio::sync::Mutex::new(sink),
            flush_interval,
            stop_tx,
            tasks,
        })
    }

    /// Applies the reloadable settings of `config` (see [`crate::reload::RELOADABLE`]).
    ///
    /// The `[kafka]` section first, since only it can fail: the running sink takes the new
    /// settings, or is replaced by the other kind of sink when `kafka.brokers` goes from empty
    /// to set or back (see [`crate::sinks`]). On an error nothing at all has changed. Then the
    /// StatsD settings, which cannot fail: the flush interval from the next tick, percentiles
    /// and series expiry from the next flush, the gauge sign from the next line, and
    /// `statsd.expiry` for the container ports and the agent source from their next poll.
    pub async fn reload(&self, config: &Config) -> Result<SinkChange> {
        let change = self
            .sink
            .lock()
            .await
            .reconfigure(&config.kafka, &self.outputs)
            .await
            .context("kafka")?;
        let s = &config.statsd;
        let a = &self.agg_config;
        if *a.percentiles() != *s.percentiles {
            a.set_percentiles(s.percentiles.clone());
        }
        a.set_gauge_sign(gauge_sign(s.gauge_sign));
        a.set_expiry_flushes(expiry_flushes(s.expiry, s.flush_interval));
        self.expiry.set(s.expiry);
        self.flush_interval.send_if_modified(|d| {
            let changed = *d != s.flush_interval;
            *d = s.flush_interval;
            changed
        });
        Ok(change)
    }

    /// The bound StatsD UDP addresses, one per `statsd.listen` entry.
    pub fn statsd_addrs(&self) -> &[SocketAddr] {
        &self.statsd_addrs
    }

    /// The per-container StatsD port registry, for the API.
    pub fn container_ports(&self) -> Arc<dyn corral_model::ContainerPorts> {
        self.container_ports.clone()
    }

    /// Stops receiving (after draining the sockets), flushes the current interval, and lets the
    /// sinks deliver or persist what they hold.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop_tx.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let pipeline = self.pipeline.clone();
        let container_ports = self.container_ports.clone();
        let report = tokio::task::spawn_blocking(move || {
            container_ports.stop();
            let mut p = pipeline.lock();
            p.statsd_mut().stop();
            p.flush()
        })
        .await
        .context("final flush failed")?;
        tracing::info!(datapoints = report.datapoints, "final flush done");
        self.outputs.shutdown(SINK_SHUTDOWN).await;
        Ok(())
    }
}

/// Flushes every interval; a new interval from `every` takes effect from the last flush (or
/// now, when that is already past).
async fn flush_loop(
    pipeline: Arc<Mutex<Pipeline>>,
    mut every: watch::Receiver<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    let ticker = |start: tokio::time::Instant, period: Duration| {
        let mut t = tokio::time::interval_at(start, period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    };
    let mut period = *every.borrow_and_update();
    let mut last = tokio::time::Instant::now();
    let mut ticks = ticker(last + period, period);
    // Until the collector drops the sender, which it does only after stopping this loop.
    let mut reloadable = true;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
            changed = every.changed(), if reloadable => {
                if changed.is_err() {
                    reloadable = false;
                    continue;
                }
                let new = *every.borrow_and_update();
                if new != period {
                    tracing::info!(from = ?period, to = ?new, "flush interval changed");
                    period = new;
                    let now = tokio::time::Instant::now();
                    ticks = ticker((last + period).max(now), period);
                }
                continue;
            }
        }
        last = tokio::time::Instant::now();
        let p = pipeline.clone();
        match tokio::task::spawn_blocking(move || p.lock().flush()).await {
            Ok(r) => tracing::debug!(
                datapoints = r.datapoints,
                containers = r.containers,
                duration_ms = r.duration.as_secs_f64() * 1e3,
                "flushed"
            ),
            Err(e) => tracing::error!(error = %e, "flush failed"),
        }
    }
}
