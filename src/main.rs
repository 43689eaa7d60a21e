//! `corral`: the per-node metrics daemon. See the README for what it does and how to run it.

mod cli;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use corral_collector::attribution::Attribution;
use corral_collector::config::{Config, LogFormat};
use corral_collector::telemetry::Telemetry;
use corral_collector::{Collector, Shared};
use corral_model::{Identity, Store};
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::AvroDump { file }) = &cli.command {
        return avro_dump(file);
    }
    let config = match Config::load(
        cli.config.as_deref(),
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        &cli.overrides(),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("corral: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::CheckConfig) = cli.command {
        print!("{}", config.to_toml());
        eprintln!("corral: configuration is valid");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = init_logging(&config) {
        eprintln!("corral: {e:#}");
        return ExitCode::from(2);
    }
    match run(config) {
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

fn init_logging(config: &Config) -> Result<()> {
    let filter = EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("log_level: invalid filter {:?}", config.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

fn run(config: Config) -> Result<()> {
    config.prepare_data_dir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("corral-worker")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> Result<()> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), data_dir = %config.data_dir.display(), "corral starting");
    // Signals are caught from here on: a SIGTERM during startup still gets a clean stop.
    let signal = shutdown_signal()?;
    let shared = Shared {
        store: Arc::new(Store::new()),
        identity: Arc::new(Identity::new(corral_collector::identity::discover(
            &config.node,
        ))),
        telemetry: Arc::new(Telemetry::new()),
        attribution: Arc::new(Attribution::new()),
    };
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
    let signal = signal.await;
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
