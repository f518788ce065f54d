//! The on-disk cache of compiled modules.
//!
//! A cached file is native code: wasmtime maps it and runs it without checking it, so
//! whoever can write the cache can run code as cdc-host. The rules are therefore those
//! of ssh for `~/.ssh`:
//!
//! - The directory is created with mode 0700. Before anything is loaded from it, it must
//!   be owned by cdc-host's uid and not be writable by group or others; so must every
//!   file loaded from it, which must also be a regular file (never a symlink: files are
//!   opened with `O_NOFOLLOW`, relative to the directory's descriptor, and checked on
//!   that descriptor, so nothing can be swapped between the check and the load).
//!   When a directory or file breaks these rules, an explicitly named directory
//!   (`CDC_HOST_MODULE_CACHE`, `[pipeline] module_cache`) is refused with an error — the
//!   operator asked for that directory and must fix it — while the default directory is
//!   not used (one warning; modules are compiled in memory), so a sloppy `$HOME` never
//!   stops a pipeline but never feeds it foreign code either.
//! - Each compiled file `<key>.cwasm` has a sidecar `<key>.sum` naming the SHA-256 of the
//!   component it was compiled from and of the compiled code itself. The key (the file
//!   name) is the component's SHA-256 plus wasmtime's version and settings. At load the
//!   sidecar must name the component being loaded and the code must hash to what the
//!   sidecar says: another module's compiled code, a truncated or garbage file, fail
//!   and are recompiled (with a warning) and replaced.
//! - Files are written to a temporary file in the same directory (mode 0600, `O_EXCL`)
//!   and renamed into place, so a reader never sees half a file.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

use super::runtime::Runtime;
use super::TransformError;

/// How a module's code was obtained (reported in logs; tests look for the cache hit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSource {
    Compiled,
    Cache,
}

/// Who chose the cache directory: that decides whether an unsafe one is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOrigin {
    /// `CDC_HOST_MODULE_CACHE`.
    Env,
    /// `[pipeline] module_cache`.
    Config,
    /// `$XDG_CACHE_HOME/cdc-host/modules` or `$HOME/.cache/cdc-host/modules`.
    Default,
}

/// The cache directory to use and where that choice came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDir {
    pub path: PathBuf,
    pub origin: CacheOrigin,
}

impl CacheDir {
    fn explicit(&self) -> bool {
        self.origin != CacheOrigin::Default
    }

    /// The other way out: the setting that chose this directory.
    fn elsewhere(&self) -> &'static str {
        match self.origin {
            CacheOrigin::Env => "point CDC_HOST_MODULE_CACHE elsewhere or set it to \"off\"",
            CacheOrigin::Config => "point [pipeline] module_cache elsewhere or set it to \"off\"",
            CacheOrigin::Default => {
                "set [pipeline] module_cache to another directory or to \"off\""
            }
        }
    }
}

/// The wasmtime version this binary links (pinned in the workspace).
const WASMTIME_VERSION: &str = "48.0.8";

/// First line of a sidecar file (bump the number when the format changes).
const SUM_MAGIC: &str = "cdc-host module cache 1";

/// What identifies a module's compiled code: its component's SHA-256 and the file name
/// (that digest plus everything that makes compiled code incompatible).
#[derive(Debug, Clone)]
pub(crate) struct Key {
    source: [u8; 32],
    name: String,
}

impl Key {
    pub(crate) fn new(engine: &Engine, component: &[u8]) -> Self {
        use std::hash::{Hash, Hasher};
        let source: [u8; 32] = Sha256::digest(component).into();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let name = format!(
            "{}-wasmtime-{WASMTIME_VERSION}-{:016x}",
            hex(&source),
            h.finish()
        );
        Key { source, name }
    }

    fn code_file(&self) -> String {
        format!("{}.cwasm", self.name)
    }

    fn sum_file(&self) -> String {
        format!("{}.sum", self.name)
    }
}

/// The outcome of looking a module up.
pub(crate) enum Lookup {
    /// Verified compiled code.
    Hit(Component),
    /// Nothing usable: compile, then store.
    Miss,
    /// An unsafe file in the default directory (already warned about): compile in
    /// memory and leave the file alone.
    Unusable,
}

/// An opened, checked cache directory.
pub(crate) struct ModuleCache {
    dir: File,
    at: CacheDir,
    uid: u32,
}

impl std::fmt::Debug for ModuleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleCache").field("at", &self.at).finish()
    }
}

/// Why a directory or file may not be trusted (its mode and owner), or `None`.
fn unsafe_because(meta: &std::fs::Metadata, uid: u32) -> Option<String> {
    let mode = meta.mode() & 0o7777;
    (meta.uid() != uid || mode & 0o022 != 0)
        .then(|| format!("is mode {mode:04o} and owned by uid {}", meta.uid()))
}

/// The commands that make `path` safe.
fn fix_for(path: &Path, meta: Option<&std::fs::Metadata>, uid: u32, dir: bool) -> String {
    let p = path.display();
    let chmod = if dir { "700" } else { "600" };
    match meta {
        Some(m) if m.uid() != uid => format!("`chown {uid} {p} && chmod {chmod} {p}`"),
        Some(_) => format!("`chmod {chmod} {p}`"),
        None => format!("`rm {p}`"),
    }
}

impl ModuleCache {
    /// Creates the directory (0700) if needed, opens and checks it. `Ok(None)`: do not
    /// use a cache (the default directory is unsafe or cannot be opened; warned about
    /// once here). `Err`: an explicitly named directory is unsafe.
    pub(crate) fn open(at: &CacheDir) -> Result<Option<Self>, TransformError> {
        let uid = rustix::process::getuid().as_raw();
        let dir = match create_and_open(&at.path) {
            Ok(dir) => dir,
            Err(e) => {
                tracing::warn!(dir = %at.path.display(), error = %e, "cannot open the module cache; compiling modules at every start");
                return Ok(None);
            }
        };
        let meta = match dir.metadata() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(dir = %at.path.display(), error = %e, "cannot open the module cache; compiling modules at every start");
                return Ok(None);
            }
        };
        let cache = ModuleCache {
            dir,
            at: at.clone(),
            uid,
        };
        match unsafe_because(&meta, uid) {
            None => Ok(Some(cache)),
            Some(why) => {
                let reason = cache.refusal(&why, &at.path, Some(&meta), true);
                if at.explicit() {
                    Err(TransformError::Cache {
                        dir: at.path.clone(),
                        reason,
                    })
                } else {
                    tracing::warn!(
                        dir = %at.path.display(),
                        mode = format_args!("{:04o}", meta.mode() & 0o7777),
                        owner = meta.uid(),
                        "module cache {} {reason}; not using it: compiling modules in memory at every start",
                        at.path.display()
                    );
                    Ok(None)
                }
            }
        }
    }

    /// The sentence for an unsafe directory or file: what is wrong, why it matters, the fix.
    fn refusal(
        &self,
        why: &str,
        path: &Path,
        meta: Option<&std::fs::Metadata>,
        dir: bool,
    ) -> String {
        let what = if dir {
            "the directory must be"
        } else {
            "each file loaded from it must be a regular file"
        };
        format!(
            "{why}; cached modules are native code loaded as trusted, so {what} owned by cdc-host's uid ({}) and not writable by group or others; fix: {}, or {}",
            self.uid,
            fix_for(path, meta, self.uid, dir),
            self.at.elsewhere()
        )
    }

    /// An unsafe file: an error for an explicit directory, else one warning and
    /// [`Lookup::Unusable`].
    fn unsafe_file(
        &self,
        name: &str,
        why: &str,
        meta: Option<&std::fs::Metadata>,
    ) -> Result<Lookup, String> {
        let path = self.at.path.join(name);
        let reason = self.refusal(why, &path, meta, false);
        if self.at.explicit() {
            Err(format!("module cache file {} {reason}", path.display()))
        } else {
            tracing::warn!(file = %path.display(), "module cache file {} {reason}; not using it: compiling the module in memory", path.display());
            Ok(Lookup::Unusable)
        }
    }

    /// Opens `name` in the directory without following a symlink, checks it is a
    /// regular file owned by us and not writable by others.
    fn open_checked(&self, name: &str) -> Result<Result<File, Lookup>, String> {
        // NONBLOCK: opening a FIFO planted here must not hang; it is refused below.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let file = match rustix::fs::openat(&self.dir, name, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(Errno::NOENT) => return Ok(Err(Lookup::Miss)),
            Err(Errno::LOOP) => return self.unsafe_file(name, "is a symbolic link", None).map(Err),
            Err(e) => {
                tracing::warn!(file = %self.at.path.join(name).display(), error = %std::io::Error::from(e), "cannot read a cached module; recompiling");
                return Ok(Err(Lookup::Miss));
            }
        };
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(e) => {
                tracing::warn!(file = %self.at.path.join(name).display(), error = %e, "cannot read a cached module; recompiling");
                return Ok(Err(Lookup::Miss));
            }
        };
        if !meta.file_type().is_file() {
            return self
                .unsafe_file(name, "is not a regular file", None)
                .map(Err);
        }
        if let Some(why) = unsafe_because(&meta, self.uid) {
            return self.unsafe_file(name, &why, Some(&meta)).map(Err);
        }
        Ok(Ok(file))
    }

    /// Loads the compiled code of `key`, verified. `Err`: an explicitly named cache
    /// holds an unsafe file (symlink, not ours, writable by others).
    pub(crate) fn lookup(&self, engine: &Engine, key: &Key) -> Result<Lookup, String> {
        let code = match self.open_checked(&key.code_file())? {
            Ok(f) => f,
            Err(lookup) => return Ok(lookup),
        };
        let mut sum = match self.open_checked(&key.sum_file())? {
            Ok(f) => f,
            Err(Lookup::Miss) => {
                tracing::info!(file = %self.at.path.join(key.code_file()).display(), "cached module has no checksum file (written by an older cdc-host?); recompiling");
                return Ok(Lookup::Miss);
            }
            Err(other) => return Ok(other),
        };
        let mismatch = |why: String| {
            tracing::warn!(file = %self.at.path.join(key.code_file()).display(), "ignoring a cached module that {why}; recompiling and replacing it");
            Ok(Lookup::Miss)
        };
        let mut text = String::new();
        if let Err(e) = (&mut sum).take(4096).read_to_string(&mut text) {
            return mismatch(format!("has an unreadable checksum file ({e})"));
        }
        let Some(expected) = Sum::parse(&text) else {
            return mismatch("has a malformed checksum file".into());
        };
        if expected.source != key.source {
            return mismatch(format!(
                "was compiled from another module (sha256 {}, not {})",
                hex(&expected.source),
                hex(&key.source)
            ));
        }
        match load_verified(engine, code, &expected) {
            Ok(component) => Ok(Lookup::Hit(component)),
            Err(why) => mismatch(why),
        }
    }

    /// Stores compiled code and its sidecar (each written to a temporary file and
    /// renamed into place, mode 0600).
    pub(crate) fn store(&self, key: &Key, code: &[u8]) -> std::io::Result<()> {
        let sum = Sum {
            source: key.source,
            code: Sha256::digest(code).into(),
            len: code.len() as u64,
        };
        self.write_atomically(&key.code_file(), code)?;
        self.write_atomically(&key.sum_file(), sum.render().as_bytes())
    }

    fn write_atomically(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = format!(
            ".tmp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.dir, &tmp, flags, Mode::RUSR | Mode::WUSR)?;
        let result = File::from(fd).write_all(bytes).and_then(|()| {
            rustix::fs::renameat(&self.dir, &tmp, &self.dir, name).map_err(Into::into)
        });
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&self.dir, &tmp, AtFlags::empty());
        }
        result
    }
}

/// Compiles `component`, or loads its compiled code from the cache (storing it there
/// after a miss). `Err`: it does not compile, or an explicitly named cache holds an
/// unsafe file for it.
pub(crate) fn compile_cached(
    runtime: &Runtime,
    component: &[u8],
    cache: Option<&ModuleCache>,
) -> Result<(Component, CodeSource), String> {
    let compile = || {
        Component::new(&runtime.engine, component).map_err(|e| format!("does not compile: {e:#}"))
    };
    let Some(cache) = cache else {
        return Ok((compile()?, CodeSource::Compiled));
    };
    let key = Key::new(&runtime.engine, component);
    match cache.lookup(&runtime.engine, &key)? {
        Lookup::Hit(c) => return Ok((c, CodeSource::Cache)),
        Lookup::Unusable => return Ok((compile()?, CodeSource::Compiled)),
        Lookup::Miss => {}
    }
    let code = runtime
        .engine
        .precompile_component(component)
        .map_err(|e| format!("does not compile: {e:#}"))?;
    if let Err(e) = cache.store(&key, &code) {
        tracing::warn!(dir = %cache.at.path.display(), error = %e, "cannot write the module cache; compiling at every start");
    }
    // SAFETY: `code` comes from this engine's `precompile_component`, just now, in memory.
    #[allow(unsafe_code)]
    let loaded = unsafe { Component::deserialize(&runtime.engine, &code) };
    let c = loaded.map_err(|e| format!("cannot load compiled code: {e:#}"))?;
    Ok((c, CodeSource::Compiled))
}

/// Creates the directory with mode 0700 (missing parents too) and opens it. The last
/// component may be a symlink to a directory (a cache on another volume): what is
/// checked is the directory itself, through this descriptor.
fn create_and_open(path: &Path) -> std::io::Result<File> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// The sidecar: what a compiled file was made from and what it must hash to.
#[derive(Debug, PartialEq, Eq)]
struct Sum {
    source: [u8; 32],
    code: [u8; 32],
    len: u64,
}

impl Sum {
    fn render(&self) -> String {
        format!(
            "{SUM_MAGIC}\nsource-sha256 {}\ncode-sha256 {}\ncode-bytes {}\n",
            hex(&self.source),
            hex(&self.code),
            self.len
        )
    }

    fn parse(text: &str) -> Option<Sum> {
        let mut lines = text.lines();
        if lines.next()? != SUM_MAGIC {
            return None;
        }
        let mut field = |name: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .map(str::to_owned)
        };
        let source = unhex(&field("source-sha256")?)?;
        let code = unhex(&field("code-sha256")?)?;
        let len = field("code-bytes")?.parse().ok()?;
        lines.next().is_none().then_some(Sum { source, code, len })
    }
}

/// Checks `file` against `sum` and hands exactly the checked bytes to wasmtime.
fn load_verified(engine: &Engine, mut file: File, sum: &Sum) -> Result<Component, String> {
    let len = file
        .metadata()
        .map_err(|e| format!("cannot be read ({e})"))?
        .len();
    if len != sum.len {
        return Err(format!(
            "is {len} bytes, not the {} its checksum file says",
            sum.len
        ));
    }
    // Through our own descriptor: the file that was checked is the file that is mapped,
    // whatever happens to the name meanwhile.
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    if by_fd.exists() {
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(|e| format!("cannot be read ({e})"))?;
        if <[u8; 32]>::from(hasher.finalize()) != sum.code {
            return Err("does not match its checksum".into());
        }
        // SAFETY: the file is owned by cdc-host's uid and writable by nobody else, in a
        // directory with the same guarantees; its content hashes to the sidecar's code
        // digest, and the sidecar names the component being loaded. wasmtime also checks
        // its own version/settings header and refuses a mismatch.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize_file(engine, &by_fd) };
        loaded.map_err(|e| format!("was refused by wasmtime ({e:#})"))
    } else {
        // No /proc: read the bytes once, check and load those very bytes.
        let mut bytes = Vec::with_capacity(len as usize);
        file.read_to_end(&mut bytes)
            .map_err(|e| format!("cannot be read ({e})"))?;
        if <[u8; 32]>::from(Sha256::digest(&bytes)) != sum.code {
            return Err("does not match its checksum".into());
        }
        // SAFETY: as above.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize(engine, &bytes) };
        loaded.map_err(|e| format!("was refused by wasmtime ({e:#})"))
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
