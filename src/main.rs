//! `corral`: the per-node metrics daemon. See the README for what it does and how to run it.

mod cli;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use corral_collector::attribution::Attribution;
use corral_collector::config::{Config, ConfigError, LogFormat, Overrides};
use corral_collector::probe;
use corral_collector::telemetry::{Counter, Telemetry};
use corral_collector::{Collector, Shared};
use corral_model::{Identity, Store};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::cli::{Cli, Command};

/// `0.1.0 (commit 0123456789ab)`; the commit comes from build.rs.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CORRAL_COMMIT"),
    ")"
);

fn main() -> ExitCode {
    keep_large_buffers_unheld();
    let cli = Cli::parse();
    if let Some(Command::AvroDump { file }) = &cli.command {
        return avro_dump(file);
    }
    let sources = Sources {
        file: cli.config.clone(),
        overrides: cli.overrides(),
    };
    let config = match sources.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("corral: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::CheckConfig { no_probe }) = cli.command {
        return check_config(&config, no_probe);
    }
    let log = match init_logging(&config) {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("corral: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(config, Reloader::new(sources, log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("corral: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `corral avro-dump FILE`: needs no configuration and logs nothing.
fn avro_dump(file: &std::path::Path) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let result = corral_collector::sinks::avro_dump(file, &mut out);
    let flushed = out.flush();
    match (result, flushed) {
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Err(e), _) => {
            eprintln!("corral: avro-dump {}: {e:#}", file.display());
            ExitCode::FAILURE
        }
        (Ok(()), Err(e)) => {
            eprintln!("corral: avro-dump {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// Makes large buffers (a flush's datapoints, a rendered API response) go back to the system
/// when freed. glibc otherwise raises its mmap threshold to the largest block freed so far (up
/// to 32 MiB), after which such buffers come from the heap and stay resident once freed: at
/// 100k series that kept tens of MiB resident between flushes.
fn keep_large_buffers_unheld() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called first thing in main, before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Where the configuration comes from; a reload reads the same file, environment and flags.
struct Sources {
    file: Option<std::path::PathBuf>,
    overrides: Overrides,
}

impl Sources {
    fn load(&self) -> Result<Config, ConfigError> {
        Config::load(
            self.file.as_deref(),
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
            &self.overrides,
        )
    }
}

/// `corral check-config`: the effective configuration on stdout; the probes and a verdict on
/// stderr. Exit 1 when a probe fails (an invalid configuration already exited with 2).
fn check_config(config: &Config, no_probe: bool) -> ExitCode {
    // The daemon would refuse it at start: an invalid configuration.
    if let Err(e) = log_filter(&config.log_level) {
        eprintln!("corral: {e:#}");
        return ExitCode::from(2);
    }
    print!("{}", config.to_toml());
    if no_probe {
        eprintln!("corral: configuration is valid");
        return ExitCode::SUCCESS;
    }
    let outcomes = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(probe::run(config)),
        Err(e) => {
            eprintln!("corral: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    for o in &outcomes {
        eprintln!("{o}");
    }
    eprintln!("{}", probe::verdict_line(&outcomes));
    match probe::verdict(&outcomes) {
        probe::Level::Fail => ExitCode::FAILURE,
        probe::Level::Ok | probe::Level::Warn => ExitCode::SUCCESS,
    }
}

type LogHandle = reload::Handle<EnvFilter, Registry>;

fn log_filter(level: &str) -> Result<EnvFilter> {
    EnvFilter::try_new(level).with_context(|| format!("log_level: invalid filter {level:?}"))
}

/// Logs to stderr; the returned handle swaps the filter when `log_level` is reloaded.
fn init_logging(config: &Config) -> Result<LogHandle> {
    let (filter, handle) = reload::Layer::new(log_filter(&config.log_level)?);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match config.log_format {
        LogFormat::Json => registry.with(fmt.json()).try_init(),
        LogFormat::Text => registry.with(fmt).try_init(),
    }
    .context("cannot set up logging")?;
    Ok(handle)
}

/// Applies a SIGHUP: reads the configuration sources again and applies what can change
/// without a restart (the log level, StatsD settings and the whole `[kafka]` section); an
/// invalid configuration, or Kafka settings the sink refuses, leave the running one as it is.
struct Reloader {
    sources: Sources,
    log: LogHandle,
    counters: Option<(Arc<Counter>, Arc<Counter>)>,
}

impl Reloader {
    fn new(sources: Sources, log: LogHandle) -> Self {
        Reloader {
            sources,
            log,
            counters: None,
        }
    }

    /// Registers `corral.config.reloads{result=ok|error}`, so both show from the start.
    fn register(&mut self, telemetry: &Telemetry) {
        let c = |r| telemetry.counter("corral.config.reloads", &[("result", r)]);
        self.counters = Some((c("ok"), c("error")));
    }

    fn count(&self, ok: bool) {
        if let Some((good, bad)) = &self.counters {
            if ok { good } else { bad }.inc();
        }
    }

    /// Reloads into `running`.
    async fn reload(&self, running: &mut Config, collector: &Collector) {
        tracing::info!("SIGHUP: reloading the configuration");
        match self.try_reload(running, collector).await {
            Ok(()) => self.count(true),
            Err(e) => {
                tracing::error!(
                    error = %format!("{e:#}"),
                    "configuration reload failed; the running configuration stays in effect"
                );
                self.count(false);
            }
        }
    }

    async fn try_reload(&self, running: &mut Config, collector: &Collector) -> Result<()> {
        let new = self.sources.load()?;
        let plan = corral_collector::reload::plan(running, &new);
        // Everything is checked before anything is applied: the file, environment and flags
        // by loading them, the log filter here. The Kafka settings are checked by the sink as
        // it takes them, so the collector goes first: when it refuses them it has changed
        // nothing, and neither has the log filter.
        let filter = (plan.next.log_level != running.log_level)
            .then(|| log_filter(&plan.next.log_level))
            .transpose()?;
        let sink = collector.reload(&plan.next).await?;
        if let Some(filter) = filter {
            // Fails only when the subscriber is gone, which it never is while Corral runs.
            self.log
                .reload(filter)
                .context("cannot change the log filter")?;
        }
        *running = plan.next;
        if !plan.restart.is_empty() {
            let keys = plan.restart.join(", ");
            tracing::warn!(keys = %keys, "needs a restart: {keys}");
        }
        tracing::info!(
            applied = %plan.apply.join(", "),
            needs_restart = %plan.restart.join(", "),
            sink = sink.as_str(),
            "configuration reloaded"
        );
        Ok(())
    }
}

fn run(config: Config, reloader: Reloader) -> Result<()> {
    config.prepare_data_dir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("corral-worker")
        // Flushing, the API and the pollers give way to the receive threads (see
        // `corral_collector::priority`).
        .on_thread_start(corral_collector::priority::background)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, reloader))
}

async fn serve(mut config: Config, mut reloader: Reloader) -> Result<()> {
    tracing::info!(version = VERSION, data_dir = %config.data_dir.display(), "corral starting");
    // Signals are caught from here on: a SIGTERM during startup still gets a clean stop, and
    // an early SIGHUP does not kill the process (its default action).
    let signal = shutdown_signal()?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot handle SIGHUP")?;
    let shared = Shared {
        store: Arc::new(Store::new()),
        identity: Arc::new(Identity::new(corral_collector::identity::discover(
            &config.node,
        ))),
        telemetry: Arc::new(Telemetry::new()),
        attribution: Arc::new(Attribution::new()),
    };
    reloader.register(&shared.telemetry);
    let collector = Collector::start(&config, &shared)?;
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("api.listen: cannot listen on {}", config.api.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "api listening");
    let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(corral_api::serve(
        listener,
        corral_api::ApiState::new(shared.store.clone(), shared.identity.clone())
            .with_container_ports(collector.container_ports()),
        async move {
            let _ = api_stopped.await;
        },
    ));
    tokio::pin!(signal);
    let signal = loop {
        tokio::select! {
            s = &mut signal => break s,
            Some(()) = hangup.recv() => reloader.reload(&mut config, &collector).await,
        }
    };
    tracing::info!(signal, "shutting down: flushing the current interval");
    collector.shutdown().await?;
    let _ = api_stop.send(());
    api.await
        .context("api task failed")?
        .context("api server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Installs the SIGTERM/SIGINT handlers now; the future resolves with the first signal.
fn shutdown_signal() -> Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
