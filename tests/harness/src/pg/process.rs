//! The processes around a server: psql, signals, ports, temp dirs and the watchdog that
//! removes a server whose test process died.

use super::*;

pub(super) fn psql_command(psql: &Path, port: u16, db: &str) -> Command {
    let mut cmd = Command::new(psql);
    cmd.args([
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
    ])
    .arg("-p")
    .arg(port.to_string())
    .args(["-U", "postgres", "-d", db, "-f", "-"])
    .env("PGCONNECT_TIMEOUT", "10")
    .env("PGTZ", "UTC")
    .env_remove("PGPASSWORD")
    .env_remove("PGSERVICE")
    .env_remove("PGOPTIONS")
    .env_remove("PGSSLMODE");
    cmd
}

/// `kill -SIG`, then wait for exit (bounded), SIGKILL after the deadline.
pub(super) fn stop_child(mut child: Child, sig: &str, timeout: Duration) -> Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let pid = child.id();
    let _ = send_signal(pid, sig);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("pid {pid} ignored SIG{sig} for {timeout:?}; killed")
}

pub(super) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub(super) fn make_temp_dir() -> Result<PathBuf> {
    let base = std::env::var_os("CDC_TEST_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    for _ in 0..100 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = base.join(format!(
            "cdc-pg-{}-{}-{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", p.display())),
        }
    }
    bail!("could not create a temp dir under {}", base.display())
}

const WATCHDOG: &str = r#"
trap '' INT TERM HUP QUIT PIPE
d="$1"
cat >/dev/null 2>&1
alive() { s=$(sed -n 's/^.*) \(.\).*$/\1/p' "/proc/$1/stat" 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }
f="$d/data/postmaster.pid"
if [ -f "$f" ]; then
  pid=$(head -n 1 "$f" 2>/dev/null)
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ]; then
    kill -QUIT "$pid" 2>/dev/null
    i=0
    while alive "$pid" && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
fi
for p in /proc/[0-9]*; do
  case "$(readlink "$p/cwd" 2>/dev/null)" in
    "$d"|"$d"/*) kill -KILL "${p#/proc/}" 2>/dev/null ;;
  esac
done
i=0
while [ -e "$d" ] && [ "$i" -lt 50 ]; do
  rm -rf "$d" 2>/dev/null
  [ -e "$d" ] && sleep 0.1
  i=$((i+1))
done
"#;

pub(super) fn spawn_watchdog(dir: &Path) -> Result<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("cdc-pg-watchdog")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning watchdog sh")
}
