//! Small process / OS helpers, all without `unsafe`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Runs `cmd` to completion with captured output, killing it (SIGKILL) if it
/// takes longer than `timeout`. Optional bytes are fed on stdin.
pub(crate) fn run_bounded(
    mut cmd: Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Output> {
    let desc = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {desc}"))?;
    let pid = child.id();
    if let Some(input) = stdin {
        let mut si = child.stdin.take().expect("piped stdin");
        std::thread::spawn(move || {
            let _ = si.write_all(&input);
            // dropped here: EOF for the child
        });
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(r) => r.with_context(|| format!("waiting for {desc}")),
        Err(_) => {
            let _ = send_signal(pid, "KILL");
            let _ = rx.recv_timeout(Duration::from_secs(5));
            bail!("{desc} did not finish within {timeout:?} (killed)")
        }
    }
}

/// Like [`run_bounded`] but fails unless the exit status is success.
pub(crate) fn run_ok(cmd: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Result<Output> {
    let desc = format!("{cmd:?}");
    let out = run_bounded(cmd, stdin, timeout)?;
    if !out.status.success() {
        bail!(
            "{desc} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Sends a signal by name (`TERM`, `KILL`, `QUIT`, `INT`, ...) with the
/// `kill` command (keeps the harness free of `unsafe`).
pub(crate) fn send_signal(pid: u32, sig: &str) -> Result<()> {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    if !st.success() {
        bail!("kill -{sig} {pid} failed ({st})");
    }
    Ok(())
}

/// Effective uid of this process, from `/proc/self/status` (no `unsafe`).
pub(crate) fn effective_uid() -> Result<u32> {
    let s = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = s
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .ok_or_else(|| anyhow!("no Uid: line in /proc/self/status"))?;
    // Uid: real effective saved fs
    let euid = line
        .split_whitespace()
        .nth(2)
        .ok_or_else(|| anyhow!("bad Uid: line {line:?}"))?;
    Ok(euid.parse()?)
}

/// uid/gid of a user from `/etc/passwd` (no `unsafe` getpwnam).
pub(crate) fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let s = std::fs::read_to_string("/etc/passwd").ok()?;
    s.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// Last `n` lines of a text file (for error messages).
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// True while `/proc/<pid>` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ..." — state follows the last ')'
        Ok(s) => match s.rfind(')') {
            Some(i) => !s[i + 1..].trim_start().starts_with('Z'),
            None => false,
        },
        Err(_) => false,
    }
}
