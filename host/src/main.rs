//! `cdc-host`: the command line over the `cdc_host` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;

use cdc_host::config::PipelineConfig;

/// Stream Postgres changes (logical replication, pgoutput) through Wasm transforms to sinks.
#[derive(Debug, Parser)]
#[command(name = "cdc-host", version, about)]
struct Cli {
    /// Log format on stderr (levels via RUST_LOG, default info).
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline until SIGINT/SIGTERM (a second signal exits at once).
    Run {
        /// Path to pipeline.toml.
        config: PathBuf,
    },
    /// Validate a pipeline file without connecting to anything.
    Check {
        /// Path to pipeline.toml.
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => run(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let loaded = PipelineConfig::load(path)?;
    println!(
        "{}: ok (source {} slot {} publication {}, {} sink(s))",
        path.display(),
        loaded.conn,
        loaded.config.source.slot.get_ref(),
        loaded.publication.name,
        loaded.config.sinks.len()
    );
    Ok(())
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let loaded = PipelineConfig::load(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!(
                "signal received: finishing in-flight batches (send another to exit at once)"
            );
            let _ = shutdown_tx.send(true);
            wait_for_signal().await;
            tracing::warn!(
                "second signal: exiting now; unacknowledged changes will be re-sent on restart"
            );
            std::process::exit(130);
        });
        let confirmed = cdc_host::pipeline::run(&loaded, shutdown_rx)
            .await
            .with_context(|| format!("pipeline {} stopped", path.display()))?;
        if confirmed.is_zero() {
            tracing::info!("stopped cleanly");
        } else {
            tracing::info!(confirmed_lsn = %confirmed, "stopped cleanly");
        }
        Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
