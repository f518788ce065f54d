//! `c-guest-tool`: the two steps of building a C transform that need the
//! component-model tooling, without installing `wit-bindgen-cli` and `wasm-tools`
//! (each takes ~10 minutes to `cargo install`).
//!
//! ```text
//! c-guest-tool bindgen --wit <dir> --world transform --out <dir>
//! c-guest-tool componentize --module <core.wasm> --out <component.wasm>
//! ```
//!
//! `bindgen` writes what `wit-bindgen c --autodrop-borrows yes` writes:
//! `<world_>.h`, `<world_>.c` and `<world_>_component_type.o` (`<world_>` is
//! the world's name with `-` written `_`; the `.o` holds the component type as
//! a custom section, linked into the module). Files are rewritten only when their contents change, so
//! `make`-style timestamp checks stay quiet.
//!
//! `componentize` is `wasm-tools component new --adapt <reactor adapter>`: the
//! core module (wasm32-wasip1, reactor) is wrapped with the
//! `wasi_snapshot_preview1` reactor adapter of wasmtime 48.0.8, so its WASI p1
//! imports become WASI p2 imports.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use wit_bindgen_core::wit_parser::Resolve;
use wit_component::ComponentEncoder;

const USAGE: &str = "usage:
  c-guest-tool bindgen --wit <dir> --world <name> --out <dir>
  c-guest-tool componentize --module <core.wasm> --out <component.wasm>";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("c-guest-tool: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_default();
    let mut opts = Flags::default();
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            return Ok(());
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--wit" => opts.wit = Some(value.into()),
            "--world" => opts.world = Some(value),
            "--out" => opts.out = Some(value.into()),
            "--module" => opts.module = Some(value.into()),
            _ => bail!("unknown option {flag}\n{USAGE}"),
        }
    }
    match cmd.as_str() {
        "bindgen" => bindgen(
            opts.wit.as_deref().context("bindgen needs --wit")?,
            opts.world.as_deref(),
            opts.out.as_deref().context("bindgen needs --out")?,
        ),
        "componentize" => componentize(
            opts.module.as_deref().context("componentize needs --module")?,
            opts.out.as_deref().context("componentize needs --out")?,
        ),
        "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("unknown command {cmd:?}\n{USAGE}"),
    }
}

#[derive(Default)]
struct Flags {
    wit: Option<PathBuf>,
    world: Option<String>,
    out: Option<PathBuf>,
    module: Option<PathBuf>,
}

fn bindgen(wit: &Path, world: Option<&str>, out: &Path) -> Result<()> {
    let mut resolve = Resolve::default();
    let (pkg, _sources) = resolve
        .push_path(wit)
        .with_context(|| format!("reading WIT from {}", wit.display()))?;
    let world = resolve.select_world(&[pkg], world)?;
    let mut files = wit_bindgen_core::Files::default();
    let mut opts = wit_bindgen_c::Opts::default();
    // An export that receives a `borrow<T>` of an imported resource (world
    // `transform-batch`: `transform(changes: borrow<changes>)`) must drop the
    // borrow before it returns, or the call fails ("borrow handles still remain
    // at the end of the call"). With this the generated export wrapper drops it
    // on every return path, so a module never does (and has no `*_drop_borrow`
    // to call). Worlds without resources are generated exactly as before.
    opts.autodrop_borrows = wit_bindgen_c::Enabled::Yes;
    opts.build().generate(&mut resolve, world, &mut files)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, contents) in files.iter() {
        write_if_changed(&out.join(name), contents)?;
    }
    Ok(())
}

fn componentize(module: &Path, out: &Path) -> Result<()> {
    let core = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    let component = ComponentEncoder::default()
        .module(&core)
        .with_context(|| format!("{} is not a core module with WIT metadata", module.display()))?
        .adapter(
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .validate(true)
        .encode()
        .with_context(|| format!("encoding {} as a component", module.display()))?;
    write_if_changed(out, &component)
}

fn write_if_changed(path: &Path, contents: &[u8]) -> Result<()> {
    if std::fs::read(path).ok().as_deref() == Some(contents) {
        return Ok(());
    }
    // Write beside it and rename, so a reader (or a concurrent build) never
    // sees half a file.
    let tmp = path.with_extension(format!("{}.tmp~", std::process::id()));
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
