//! Running the `cdc-host` binary and writing its config.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::util::{send_signal, tail};

const POLL: Duration = Duration::from_millis(20);

/// A running `cdc-host` (or any binary taking `run <config>`), stdout and
/// stderr captured to files in its own temp dir.
///
/// Dropping it SIGKILLs the process if it is still running (tokio reaps it)
/// and removes the temp dir — unless `CDC_TEST_KEEP_OUTPUT` is set, in which
/// case the dir is kept and its path printed. When dropped during a panic,
/// the tail of its stderr is printed to help diagnose the failure.
#[derive(Debug)]
pub struct HostProcess {
    child: tokio::process::Child,
    pid: u32,
    exit: Option<ExitStatus>,
    dir: Option<tempfile::TempDir>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl HostProcess {
    /// `bin run <config>`; `bin` is typically `env!("CARGO_BIN_EXE_cdc-host")`.
    pub fn spawn(bin: impl AsRef<Path>, config: impl AsRef<Path>) -> Result<HostProcess> {
        let args = [OsStr::new("run"), config.as_ref().as_os_str()];
        Self::spawn_with(bin, &args, &[])
    }

    /// `bin <args...>` with extra environment variables. The rest of the environment is
    /// inherited, except what would change what a test sees: `RUST_LOG` is set to `info`
    /// (tests wait for info lines) and `CDC_HOST_MODULE_CACHE` is removed (each test's
    /// config names its module cache) unless `env` sets them; `RUST_BACKTRACE=1` unless set.
    pub fn spawn_with(
        bin: impl AsRef<Path>,
        args: &[&OsStr],
        env: &[(&str, &str)],
    ) -> Result<HostProcess> {
        let dir = tempfile::Builder::new()
            .prefix("cdc-host-out-")
            .tempdir()
            .context("creating output dir")?;
        let stdout_path = dir.path().join("stdout");
        let stderr_path = dir.path().join("stderr");
        let mut cmd = tokio::process::Command::new(bin.as_ref());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path)?)
            .stderr(File::create(&stderr_path)?)
            .kill_on_drop(true);
        if std::env::var_os("RUST_BACKTRACE").is_none() {
            cmd.env("RUST_BACKTRACE", "1");
        }
        cmd.env("RUST_LOG", "info")
            .env_remove("CDC_HOST_MODULE_CACHE");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.as_ref().display()))?;
        let pid = child.id().context("child has no pid")?;
        Ok(HostProcess {
            child,
            pid,
            exit: None,
            dir: Some(dir),
            stdout_path,
            stderr_path,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
    pub fn stdout_path(&self) -> &Path {
        &self.stdout_path
    }
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Exit status if the process has exited (non-blocking).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exit = Some(st);
            }
        }
        self.exit
    }

    /// SIGKILL (no-op if already exited). Use [`Self::wait_exit`] to reap.
    pub fn kill9(&mut self) -> Result<()> {
        if self.try_exit().is_some() {
            return Ok(());
        }
        self.child.start_kill().context("SIGKILL")
    }

    /// SIGTERM (no-op if already exited).
    pub fn sigterm(&mut self) -> Result<()> {
        self.signal("TERM")
    }

    /// SIGINT (no-op if already exited).
    pub fn sigint(&mut self) -> Result<()> {
        self.signal("INT")
    }

    /// Any signal by name, e.g. `"HUP"`, via the `kill` command.
    pub fn signal(&mut self, sig: &str) -> Result<()> {
        // Checking first means the pid is still ours (not reaped).
        if self.try_exit().is_some() {
            return Ok(());
        }
        send_signal(self.pid, sig)
    }

    /// Waits for exit at most `timeout`; error (with stderr tail) if still
    /// running then.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(st) = self.exit {
            return Ok(st);
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(r) => {
                let st = r.context("waiting for cdc-host")?;
                self.exit = Some(st);
                Ok(st)
            }
            Err(_) => bail!(
                "process {} still running after {timeout:?}; stderr tail:\n{}",
                self.pid,
                self.stderr_tail(30)
            ),
        }
    }

    /// Complete (newline-terminated) stdout lines so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        read_complete_lines(&self.stdout_path)
    }

    /// Complete stdout lines parsed as JSON (panics on a non-JSON line).
    pub fn stdout_json(&self) -> Vec<serde_json::Value> {
        self.stdout_lines()
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn stderr_tail(&self, lines: usize) -> String {
        tail(&self.stderr_path, lines)
    }

    /// Waits until at least `n` complete stdout lines exist (polling the
    /// file every 20 ms), at most `timeout`. Fails early if the process
    /// exits with fewer lines. Returns all lines seen.
    pub async fn wait_for_lines(&mut self, n: usize, timeout: Duration) -> Result<Vec<String>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let lines = self.stdout_lines();
            if lines.len() >= n {
                return Ok(lines);
            }
            if let Some(st) = self.try_exit() {
                // Re-read: output may have landed between the two checks.
                let lines = self.stdout_lines();
                if lines.len() >= n {
                    return Ok(lines);
                }
                bail!(
                    "process exited ({st}) after {} of {n} stdout lines; stderr tail:\n{}",
                    lines.len(),
                    self.stderr_tail(30)
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "only {} of {n} stdout lines after {timeout:?}; stderr tail:\n{}",
                    lines.len(),
                    self.stderr_tail(30)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until stderr contains `needle` (polling every 20 ms), at most
    /// `timeout`; fails early if the process exits without it.
    pub async fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.stderr().contains(needle) {
                return Ok(());
            }
            if let Some(st) = self.try_exit() {
                if self.stderr().contains(needle) {
                    return Ok(());
                }
                bail!(
                    "process exited ({st}) before stderr had {needle:?}:\n{}",
                    self.stderr_tail(30)
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "stderr lacks {needle:?} after {timeout:?}:\n{}",
                    self.stderr_tail(30)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.start_kill();
            // kill_on_drop + tokio's orphan reaper reap it.
        }
        if std::thread::panicking() {
            eprintln!(
                "--- cdc-host (pid {}) stderr tail ---\n{}\n--- ({} stdout lines) ---",
                self.pid,
                self.stderr_tail(40),
                self.stdout_lines().len()
            );
        }
        if std::env::var_os("CDC_TEST_KEEP_OUTPUT").is_some() {
            if let Some(d) = self.dir.take() {
                let p = d.keep();
                eprintln!("harness: cdc-host output kept in {}", p.display());
            }
        }
    }
}

/// `bin` as a blocking [`std::process::Command`] with the environment [`HostProcess`] gives
/// it: `RUST_LOG=info`, no `CDC_HOST_MODULE_CACHE` (set them on the command to override).
pub fn host_command(bin: impl AsRef<Path>) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin.as_ref());
    cmd.env("RUST_LOG", "info")
        .env_remove("CDC_HOST_MODULE_CACHE");
    cmd
}

fn read_complete_lines(path: &Path) -> Vec<String> {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    match s.rfind('\n') {
        Some(i) => s[..i].split('\n').map(str::to_owned).collect(),
        None => Vec::new(),
    }
}

/// TOML basic string with escapes.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes `dir/pipeline.toml` (overwriting) and returns its path:
///
/// ```toml
/// [source]
/// dsn = "..."
/// slot = "..."
/// publication = "..."
/// <extra_toml verbatim — keys here land in [source] unless it opens a table>
///
/// [source.snapshot]            # unless extra_toml has its own
/// mode = "never"
///
/// [[sinks]]
/// type = "stdout"
/// format = "json"
/// ```
///
/// Tests see only the changes they make: no initial snapshot of the rows a test wrote
/// before starting the host, unless it asks for one (the snapshot tests do).
///
/// Panics on I/O errors.
pub fn write_config(
    dir: &Path,
    dsn: &str,
    slot: &str,
    publication: &str,
    extra_toml: &str,
) -> PathBuf {
    let mut s = format!(
        "[source]\ndsn = {}\nslot = {}\npublication = {}\n",
        toml_str(dsn),
        toml_str(slot),
        toml_str(publication)
    );
    if !extra_toml.is_empty() {
        s.push_str(extra_toml);
        if !extra_toml.ends_with('\n') {
            s.push('\n');
        }
    }
    if !extra_toml.contains("[source.snapshot]") {
        s.push_str("\n[source.snapshot]\nmode = \"never\"\n");
    }
    s.push_str("\n[[sinks]]\ntype = \"stdout\"\nformat = \"json\"\n");
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, s).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}
