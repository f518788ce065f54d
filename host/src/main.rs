//! `cdc-host`: the command line over the `cdc_host` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;

use cdc_host::config::PipelineConfig;

/// mimalloc rather than the libc allocator: the Wasm boundary allocates per column on both
/// sides, and glibc's (and, for the static build, musl's) malloc topped the profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_t` (the same index in v2 and v3;
/// libmimalloc-sys names only some of the options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long memory mimalloc freed stays mapped before it is returned to the OS. Its default
/// returned a batch's buffers between batches, and the next batch faulted the same pages in
/// again: a one-worker snapshot took 75–110k page faults instead of ~20k, and 7–10% more
/// CPU (`bench/snapshot.sh`, `MIMALLOC_PURGE_DELAY` set both ways). Ten seconds keeps a
/// busy pipeline's memory mapped and still gives back what a burst left, once it is idle.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Sets mimalloc's options; first thing in `main`, while no other thread exists
/// (`mi_option_set` is not thread safe). An `MIMALLOC_PURGE_DELAY` in the environment wins.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        #[allow(unsafe_code)]
        // SAFETY: a plain C call with an option index and a value; no other thread exists yet.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS)
        };
    }
}

/// Stream Postgres changes (logical replication, pgoutput) through Wasm transforms to sinks.
#[derive(Debug, Parser)]
#[command(name = "cdc-host", version, about)]
struct Cli {
    /// Log format on stderr (levels via RUST_LOG, default info). Default: the config's
    /// `[log] format`, else text (coloured on a terminal).
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormat>,
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
    /// Validate a pipeline file and compile every transform module (calling its init),
    /// without connecting to anything.
    Check {
        /// Path to pipeline.toml.
        config: PathBuf,
    },
    /// Ask the running instance to re-send a table's rows (op `read`) while the stream
    /// keeps flowing; or show (`--status`) or cancel (`--cancel`) snapshots and backfills.
    /// The request travels through the database (a row in cdc_host.snapshots and a
    /// message in the WAL): no port to open.
    #[command(group(clap::ArgGroup::new("action").required(true).args(["table", "status", "cancel"])))]
    Backfill {
        /// Path to pipeline.toml (for the DSN, slot and publication).
        config: PathBuf,
        /// The table to re-send, as schema.table.
        #[arg(long)]
        table: Option<String>,
        /// Only the rows matching this SQL condition (e.g. "created_at > now() - interval '1 day'").
        #[arg(long = "where", value_name = "SQL", requires = "table")]
        filter: Option<String>,
        /// Print every snapshot and backfill of the slot with its progress.
        #[arg(long)]
        status: bool,
        /// Cancel a snapshot by its number (as --status shows it), or all pending ones.
        #[arg(long, value_name = "NUMBER", num_args = 0..=1, default_missing_value = "all")]
        cancel: Option<String>,
    },
    /// Run one transform module over recorded changes (native JSON lines, the stdout
    /// sink's format) and print what it returns, in the same format.
    Transform {
        /// The module (a Wasm component implementing cdc:pipeline/transform).
        module: PathBuf,
        /// Recorded changes, one JSON object per line ("-" for stdin).
        #[arg(long, short)]
        input: PathBuf,
        /// A config entry for the module's init (repeatable).
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = parse_kv)]
        config: Vec<(String, String)>,
        /// Changes per call (the pipeline sends whole transactions up to max_changes).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Wall-clock limit per call.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// Linear memory cap.
        #[arg(long, default_value_t = 64)]
        memory_mb: u64,
        /// Write each change with its columns' types ("types", "key"), so replaying the
        /// output gives the module exactly these types again.
        #[arg(long)]
        typed: bool,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    // The config may choose the format; its errors are reported by the command itself.
    let configured = match &cli.command {
        Command::Run { config } | Command::Check { config } => PipelineConfig::load(config)
            .ok()
            .and_then(|l| l.config.log.format),
        #[allow(unreachable_patterns)]
        _ => None,
    };
    init_logging(cli.log_format.unwrap_or(match configured {
        Some(cdc_host::config::LogFormat::Json) => LogFormat::Json,
        _ => LogFormat::Text,
    }));
    let result = match cli.command {
        Command::Check { config } => check(&config),
        Command::Transform {
            module,
            input,
            config,
            batch,
            timeout_ms,
            memory_mb,
            typed,
        } => transform(&module, &input, config, batch, timeout_ms, memory_mb, typed),
        Command::Run { config } => run(&config),
        Command::Backfill {
            config,
            table,
            filter,
            status,
            cancel,
        } => backfill(&config, table, filter, status, cancel),
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let loaded = PipelineConfig::load(path)?;
    // Compile, link and init every module: a module that is not a component, targets
    // another world or WIT version, or rejects its config fails here, not at 3 a.m.
    let modules = cdc_host::pipeline::load_transforms(&loaded)?;
    cdc_host::transform::Chain::start(&modules)?;
    let options = cdc_host::source::StartOptions::from_config(
        &loaded.config.source,
        &loaded.publication.name,
    );
    println!(
        "{}: ok (source {} slot {} publication {}, {} transform(s), {} sink(s)); {}",
        path.display(),
        loaded.conn,
        loaded.config.source.slot.get_ref(),
        loaded.publication.name,
        modules.len(),
        loaded.config.sinks.len(),
        options.requirements_line()
    );
    Ok(())
}

/// `cdc-host transform`: one module over recorded changes, output on stdout.
fn transform(
    module: &std::path::Path,
    input: &std::path::Path,
    config: Vec<(String, String)>,
    batch: usize,
    timeout_ms: u64,
    memory_mb: u64,
    typed: bool,
) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let name = module
        .file_stem()
        .map_or("module".into(), |s| s.to_string_lossy().into_owned());
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut cfg =
        cdc_host::transform::TransformConfig::ad_hoc(&name, module, timeout_ms, memory_mb, config);
    cfg.validate(std::path::Path::new("."), &[])
        .map_err(|(_, key, m)| anyhow::anyhow!("{key}: {m}"))?;
    let cache = cdc_host::transform::cache_dir(None);
    let modules = cdc_host::transform::load_all(&[&cfg], cache.as_ref())?;
    let mut chain = cdc_host::transform::Chain::start(&modules)?;
    let reader: Box<dyn BufRead> = if input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?,
        ))
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut pending = Vec::with_capacity(batch.max(1));
    let mut lines = reader.lines().enumerate();
    loop {
        let next = lines.next();
        let done = next.is_none();
        if let Some((n, line)) = next {
            let line = line.with_context(|| format!("reading {}", input.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let change = cdc_host::transform::replay::parse_line(&line)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", input.display(), n + 1))?;
            pending.push(change);
            if pending.len() < batch.max(1) {
                continue;
            }
        }
        if !pending.is_empty() {
            let result = chain.run(std::mem::take(&mut pending))?;
            let cdc_host::transform::Outcome::Changes(changes) = result else {
                anyhow::bail!("unexpected outcome of a fail-policy chain");
            };
            for c in &changes {
                let mut buf = Vec::with_capacity(256);
                if typed {
                    cdc_host::transform::replay::write_typed(c, &mut buf);
                } else {
                    cdc_host::encode::json::write_change(c, &mut buf);
                }
                buf.push(b'\n');
                out.write_all(&buf)?;
            }
        }
        if done {
            break;
        }
    }
    out.flush()?;
    Ok(())
}

/// `cdc-host backfill`: request, status or cancel.
fn backfill(
    path: &std::path::Path,
    table: Option<String>,
    filter: Option<String>,
    status: bool,
    cancel: Option<String>,
) -> anyhow::Result<()> {
    use cdc_host::source::snapshot::request;
    let loaded = PipelineConfig::load(path)?;
    let slot = loaded.config.source.slot.get_ref().clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        if let Some(table) = table {
            let n = request::backfill(&loaded, &table, filter.as_deref())
                .await
                .with_context(|| format!("requesting a backfill of {table}"))?;
            println!("backfill {n} of {table} requested for slot {slot}; follow it with `cdc-host backfill {} --status`", path.display());
        } else if status {
            let rows = request::status(&loaded).await.context("reading snapshot status")?;
            print!("{}", status_table(&rows));
        } else if let Some(which) = cancel {
            let number = match which.as_str() {
                "all" => None,
                n => Some(n.parse::<i64>().map_err(|_| {
                    anyhow::anyhow!("--cancel {n:?}: expected a snapshot number (see --status)")
                })?),
            };
            let n = request::cancel(&loaded, number).await.context("cancelling")?;
            println!("cancelled {n} table(s) of slot {slot}");
        }
        Ok(())
    })
}

/// `--status` as a table a person reads.
fn status_table(rows: &[cdc_host::source::snapshot::state::Status]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>8}  {:<8}  {:<32}  {:<9}  {:>12}  {:>12}  {:>6}  {:>10}  {:>7}",
        "SNAPSHOT", "KIND", "TABLE", "STATE", "ROWS", "ESTIMATED", "%", "ROWS/S", "CHUNKS"
    );
    for r in rows {
        let est = r.rows_estimated.unwrap_or(0).max(r.rows_done);
        let pct = if r.state == "done" {
            100.0
        } else if est > 0 {
            r.rows_done as f64 * 100.0 / est as f64
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "{:>8}  {:<8}  {:<32}  {:<9}  {:>12}  {:>12}  {:>6.1}  {:>10.0}  {:>7}",
            r.snapshot,
            r.kind,
            r.table,
            r.state,
            r.rows_done,
            est,
            pct,
            r.rows_per_sec.unwrap_or(0.0),
            r.chunks_done
        );
        if let Some(f) = &r.filter {
            let _ = writeln!(out, "{:>8}  where {f}", "");
        }
        if let Some(e) = &r.error {
            let _ = writeln!(out, "{:>8}  error: {e}", "");
        }
    }
    if rows.is_empty() {
        out.push_str("(no snapshots or backfills for this slot)\n");
    }
    out
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let loaded = PipelineConfig::load(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let health = cdc_host::health::Health::handle();
        if let Some(admin) = &loaded.config.admin {
            cdc_host::admin::start(admin, std::sync::Arc::clone(&health)).await?;
        }
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
        let confirmed = cdc_host::pipeline::run(&loaded, &health, shutdown_rx)
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
