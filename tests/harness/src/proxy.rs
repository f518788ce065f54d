//! A TCP proxy on 127.0.0.1 for fault tests: point a DSN at it instead of the server and
//! the test can cut every connection at once, refuse new ones for a while, or tamper with
//! the server→client stream message by message.
//!
//! * [`Proxy::cut`] resets every open connection, both ways (`SO_LINGER` 0, then close:
//!   each peer gets a RST, as when a middlebox dies or a cable is pulled).
//! * [`Proxy::set_refusing`] / [`Proxy::refuse_for`]: new connections are accepted and
//!   reset at once, before a byte is forwarded (the client sees its connection reset during
//!   the startup handshake).
//! * [`Proxy::hold_upstream`] / [`Proxy::release_upstream`]: client→server bytes are read but
//!   kept instead of forwarded (on every connection, also new ones) until released; a
//!   [`Proxy::cut`] meanwhile drops them. With the host's replication connection behind it,
//!   this holds back its standby status updates: a test can let a sink acknowledge and know
//!   that the confirmation has not reached Postgres ([`Proxy::held_status_flushes`] shows the
//!   flush positions the host tried to confirm).
//! * [`Proxy::start_tampering`]: the server→client direction is parsed as Postgres backend
//!   messages (type byte + big-endian i32 length that counts itself) and each message goes
//!   through the hook before it is forwarded; the length is recomputed from what the hook
//!   leaves, so a hook may change bytes or truncate a body without breaking the framing.
//!   The stream must be plain protocol from its first byte: use `sslmode=disable`
//!   (an SSLRequest's one-byte answer is not a framed message).
//!
//! Everything runs on the current tokio runtime. Dropping the proxy stops the listener and
//! closes every connection it still forwards.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// One backend message as the proxy forwards it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendMessage {
    /// Message type, e.g. `b'd'` for CopyData.
    pub tag: u8,
    /// The body, without type byte and length.
    pub body: Vec<u8>,
}

/// Byte offset of the payload of an XLogData message inside a CopyData body:
/// `'w'`, WAL start (i64), WAL end (i64), send time (i64).
pub const XLOG_DATA_HEADER: usize = 1 + 8 + 8 + 8;

impl BackendMessage {
    /// For a CopyData carrying XLogData (`'d'` whose body starts with `'w'`): the message's
    /// WAL start and the logical replication message it carries (pgoutput), mutable.
    pub fn xlog_data_mut(&mut self) -> Option<(u64, &mut [u8])> {
        if self.tag != b'd'
            || self.body.first() != Some(&b'w')
            || self.body.len() < XLOG_DATA_HEADER
        {
            return None;
        }
        let wal_start = u64::from_be_bytes(self.body[1..9].try_into().unwrap());
        Some((wal_start, &mut self.body[XLOG_DATA_HEADER..]))
    }
}

/// Called for every server→client message of every connection (in tampering mode).
pub type Tamper = Arc<dyn Fn(&mut BackendMessage) + Send + Sync>;

struct Shared {
    target: SocketAddr,
    tamper: Option<Tamper>,
    /// Bumped by `cut`: every connection task watches it.
    cuts: watch::Sender<u64>,
    refuse_until: Mutex<Option<Instant>>,
    /// While true, client→server bytes are kept, not forwarded.
    hold: watch::Sender<bool>,
    /// Every client→server byte, per connection (in accept order), and whether it was read
    /// while holding.
    upstream: Mutex<Vec<Vec<(bool, u8)>>>,
    accepted: AtomicUsize,
    refused: AtomicUsize,
    live: AtomicUsize,
}

impl Shared {
    fn refusing(&self) -> bool {
        self.refuse_until
            .lock()
            .unwrap()
            .is_some_and(|t| Instant::now() < t)
    }
}

/// See the module docs.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("target", &self.shared.target)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A plain forwarding proxy to `target` on a free 127.0.0.1 port.
    pub async fn start(target: SocketAddr) -> Proxy {
        Self::start_inner(target, None).await
    }

    /// A proxy whose server→client messages go through `tamper` (see the module docs).
    pub async fn start_tampering(
        target: SocketAddr,
        tamper: impl Fn(&mut BackendMessage) + Send + Sync + 'static,
    ) -> Proxy {
        Self::start_inner(target, Some(Arc::new(tamper))).await
    }

    async fn start_inner(target: SocketAddr, tamper: Option<Tamper>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target,
            tamper,
            cuts: watch::channel(0).0,
            refuse_until: Mutex::new(None),
            hold: watch::channel(false).0,
            upstream: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Proxy { addr, shared, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resets every connection open now, both ways. Returns how many there were.
    pub fn cut(&self) -> usize {
        let live = self.shared.live.load(Ordering::SeqCst);
        self.shared.cuts.send_modify(|n| *n += 1);
        live
    }

    /// While true, new connections are reset as soon as they are accepted.
    pub fn set_refusing(&self, on: bool) {
        // Far enough in the future to mean "until told otherwise".
        *self.shared.refuse_until.lock().unwrap() =
            on.then(|| Instant::now() + Duration::from_secs(24 * 3600));
    }

    /// Resets new connections for the next `d`, then accepts them again.
    pub fn refuse_for(&self, d: Duration) {
        *self.shared.refuse_until.lock().unwrap() = Some(Instant::now() + d);
    }

    /// From now on, client→server bytes are read but not forwarded (every connection, new
    /// ones too) until [`Self::release_upstream`]; a [`Self::cut`] drops what is held.
    pub fn hold_upstream(&self) {
        self.shared.hold.send_replace(true);
    }

    /// Forwards what was held (on connections still open) and stops holding.
    pub fn release_upstream(&self) {
        self.shared.hold.send_replace(false);
    }

    /// The `flush` positions of every standby status update (`CopyData` `'r'`) clients
    /// sent through the proxy, in order per connection, each with whether it was held.
    pub fn status_flushes(&self) -> Vec<(u64, bool)> {
        // CopyData 'd', length 38 (itself + 34), 'r', write (8), flush (8), apply (8),
        // time (8), reply requested (1).
        const HEAD: [u8; 6] = [b'd', 0, 0, 0, 38, b'r'];
        const LEN: usize = 6 + 33;
        let upstream = self.shared.upstream.lock().unwrap();
        let mut out = Vec::new();
        for bytes in upstream.iter() {
            let mut i = 0;
            while i + LEN <= bytes.len() {
                if bytes[i..i + 6].iter().map(|b| b.1).eq(HEAD) {
                    let flush: Vec<u8> = bytes[i + 14..i + 22].iter().map(|b| b.1).collect();
                    out.push((u64::from_be_bytes(flush.try_into().unwrap()), bytes[i].0));
                    i += LEN;
                } else {
                    i += 1;
                }
            }
        }
        out
    }

    /// The `flush` positions of the standby status updates held (see [`Self::hold_upstream`]).
    pub fn held_status_flushes(&self) -> Vec<u64> {
        let all = self.status_flushes();
        all.into_iter().filter(|f| f.1).map(|f| f.0).collect()
    }

    /// Connections accepted and forwarded so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections reset on arrival because the proxy was refusing.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections being forwarded now.
    pub fn live(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a JoinSet): aborting it drops them,
        // which closes both sockets of every connection.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                if shared.refusing() {
                    shared.refused.fetch_add(1, Ordering::SeqCst);
                    let _ = client.set_zero_linger();
                    drop(client);
                    continue;
                }
                let conn = shared.accepted.fetch_add(1, Ordering::SeqCst);
                shared.upstream.lock().unwrap().push(Vec::new());
                // Subscribed before anything else: a cut from now on reaches this connection.
                let cut = shared.cuts.subscribe();
                conns.spawn(forward(client, shared.clone(), cut, conn));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Counts a connection as live while it exists.
struct LiveGuard<'a>(&'a AtomicUsize);

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn forward(
    mut client: TcpStream,
    shared: Arc<Shared>,
    mut cut: watch::Receiver<u64>,
    conn: usize,
) {
    shared.live.fetch_add(1, Ordering::SeqCst);
    let _live = LiveGuard(&shared.live);
    let _ = client.set_nodelay(true);
    let connect = tokio::select! {
        r = TcpStream::connect(shared.target) => r,
        _ = cut.changed() => {
            let _ = client.set_zero_linger();
            return;
        }
    };
    let Ok(mut server) = connect else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = server.set_nodelay(true);
    // The upstream side checks it too: a release right after a cut must not forward what
    // was held (the outer select below may see the release first).
    let cut_since = cut.clone();
    let was_cut = {
        let (mut cr, mut cw) = client.split();
        let (sr, mut sw) = server.split();
        let upstream = async {
            let mut hold = shared.hold.subscribe();
            let mut buf = vec![0u8; 64 * 1024];
            // Read while holding, kept here until released (or dropped by a cut).
            let mut kept: Vec<u8> = Vec::new();
            loop {
                tokio::select! {
                    r = cr.read(&mut buf) => {
                        let n = r?;
                        if n == 0 {
                            break;
                        }
                        let held = *hold.borrow();
                        shared.upstream.lock().unwrap()[conn]
                            .extend(buf[..n].iter().map(|b| (held, *b)));
                        if held {
                            kept.extend_from_slice(&buf[..n]);
                        } else {
                            sw.write_all(&buf[..n]).await?;
                        }
                    }
                    Ok(()) = hold.changed() => {
                        if cut_since.has_changed().unwrap_or(true) {
                            return Err(std::io::Error::other("cut: what was held is dropped"));
                        }
                        if !*hold.borrow_and_update() && !kept.is_empty() {
                            sw.write_all(&kept).await?;
                            kept.clear();
                        }
                    }
                }
            }
            if *hold.borrow() {
                // The client is gone; what it sent last stays held (never forwarded).
                std::future::pending::<()>().await;
            }
            sw.write_all(&kept).await?;
            sw.shutdown().await
        };
        let downstream = async {
            match &shared.tamper {
                None => {
                    let mut sr = sr;
                    tokio::io::copy(&mut sr, &mut cw).await?;
                }
                Some(tamper) => pump_messages(sr, &mut cw, tamper).await?,
            }
            cw.shutdown().await
        };
        tokio::select! {
            biased;
            _ = cut.changed() => true,
            // An error either way (a reset) ends both directions.
            _ = async { tokio::try_join!(upstream, downstream) } => false,
        }
    };
    if was_cut {
        // Close with a RST rather than a FIN, both ways.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// Server→client, one backend message at a time through the hook.
async fn pump_messages<R, W>(read: R, write: &mut W, tamper: &Tamper) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut read = BufReader::with_capacity(256 * 1024, read);
    let mut out = Vec::with_capacity(256 * 1024);
    loop {
        let mut head = [0u8; 5];
        match read.read_exact(&mut head).await {
            Ok(_) => {}
            // The server closed (a partial header can only come from a dying connection).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len < 4 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("backend message {:?} with length {len}", head[0] as char),
            ));
        }
        let mut msg = BackendMessage {
            tag: head[0],
            body: vec![0; len - 4],
        };
        read.read_exact(&mut msg.body).await?;
        tamper(&mut msg);
        out.push(msg.tag);
        out.extend_from_slice(&(msg.body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(&msg.body);
        // Forward as soon as nothing more is buffered: latency as without the proxy.
        if read.buffer().is_empty() || out.len() >= 256 * 1024 {
            write.write_all(&out).await?;
            write.flush().await?;
            out.clear();
        }
    }
    write.write_all(&out).await?;
    write.flush().await
}
