//! Boundary cost of Wasm transforms: changes/s through a module at several batch sizes.
//!
//! ```text
//! transform-boundary [--changes N] [--batches 1,100,1000] MODULE...
//! ```
//!
//! Each change is a 6-column insert (int8 id, two text, numeric, timestamptz, bool), like a
//! typical row. The figure includes everything the pipeline pays per batch: host → WIT
//! conversion, the call (lowering into and lifting out of guest memory), and WIT → host
//! conversion with validation; for a `transform-batch` module, the calls it makes. The
//! batches are built before the clock starts (the pipeline hands the chain owned
//! batches). Not a test: run on demand, see README "Benchmarks".

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;

use cdc_host::change::{Change, Column, Op, Row, Table};
use cdc_host::lsn::Lsn;
use cdc_host::pgoutput::ReplicaIdentity;
use cdc_host::transform::{self, Outcome, TransformConfig};
use cdc_host::value::{builtin_type, oid, Numeric, PgText, Value};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Changes per measurement (per module and batch size).
    #[arg(long, default_value_t = 200_000)]
    changes: usize,
    /// Batch sizes, comma separated.
    #[arg(long, default_value = "1,100,1000", value_delimiter = ',')]
    batches: Vec<usize>,
    /// A config entry for every module's init (repeatable), e.g. `columns=email`.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// Components implementing cdc:pipeline/transform (identity modules, typically).
    #[arg(required = true)]
    modules: Vec<std::path::PathBuf>,
}

fn table() -> Arc<Table> {
    let col = |name: &str, type_oid: u32, is_key: bool| Column {
        name: name.into(),
        type_oid,
        type_info: builtin_type(type_oid).expect("builtin"),
        is_key,
    };
    Arc::new(Table {
        id: 1,
        schema: "public".into(),
        name: "orders".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![
            col("id", oid::INT8, true),
            col("customer", oid::TEXT, false),
            col("email", oid::TEXT, false),
            col("total", oid::NUMERIC, false),
            col("created_at", oid::TIMESTAMPTZ, false),
            col("paid", oid::BOOL, false),
        ],
    })
}

fn change(t: &Arc<Table>, i: u64) -> Change {
    Change {
        op: Op::Insert,
        commit_lsn: Lsn(0x1000_0000 + i * 100),
        ordinal: 0,
        split: 0,
        lsn: Lsn(0x1000_0000 + i * 100 - 50),
        xid: 1000 + i as u32,
        commit_ts: 757_382_400_000_000,
        table: Some(Arc::clone(t)),
        before: None,
        after: Some(Row(vec![
            Value::Int8(i as i64),
            Value::Text(PgText::from(format!("customer number {i}"))),
            Value::Text(PgText::from(format!("user{i}@example.com"))),
            Value::Numeric(Numeric::Finite(Bytes::from(format!(
                "{}.{:02}",
                i % 1000,
                i % 100
            )))),
            Value::TimestampTz(757_382_400_000_000 + i as i64),
            Value::Bool(i.is_multiple_of(2)),
        ])),
        truncate: None,
        message: None,
        routing: None,
        read: None,
        origin: None,
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let t = table();
    let changes: Vec<Change> = (0..args.changes as u64).map(|i| change(&t, i)).collect();
    println!("module\tbatch\tchanges/s\tµs/batch");
    for path in &args.modules {
        let name = path
            .file_stem()
            .map_or("m".into(), |s| s.to_string_lossy().replace('.', "_"));
        let config = args
            .config
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| anyhow::anyhow!("--config {kv}: want KEY=VALUE"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut cfg = TransformConfig::ad_hoc(&name, path, 60_000, 512, config);
        cfg.validate(std::path::Path::new("."), &[])
            .map_err(|(_, k, m)| anyhow::anyhow!("{}: {k}: {m}", path.display()))?;
        let modules = transform::load_all(&[&cfg], transform::cache_dir(None).as_ref())
            .with_context(|| path.display().to_string())?;
        let mut chain = transform::Chain::start(&modules)?;
        for &batch in &args.batches {
            // Batch size 1 pays per-call costs per change: fewer changes keep it short.
            let n = if batch == 1 {
                args.changes.min(50_000)
            } else {
                args.changes
            };
            // The pipeline hands the chain owned batches: build them before the clock
            // starts, so the figure is the boundary's cost and not the bench's copying.
            let batches: Vec<Vec<Change>> =
                changes[..n].chunks(batch).map(<[Change]>::to_vec).collect();
            let started = Instant::now();
            let mut out = 0usize;
            for chunk in batches {
                match chain.run(chunk)? {
                    Outcome::Changes(c) => out += c.len(),
                    other => anyhow::bail!("unexpected outcome {other:?}"),
                }
            }
            let secs = started.elapsed().as_secs_f64();
            anyhow::ensure!(out == n, "module returned {out} of {n} changes");
            println!(
                "{}\t{batch}\t{:.0}\t{:.1}",
                path.display(),
                n as f64 / secs,
                secs * 1e6 / n.div_ceil(batch) as f64
            );
        }
    }
    Ok(())
}
