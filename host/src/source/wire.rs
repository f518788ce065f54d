//! The replication connection's wire protocol: TCP/TLS, startup, authentication,
//! simple queries, and raw frames for the COPY BOTH stream.
//!
//! tokio-postgres cannot open a `replication=database` session nor speak COPY BOTH, so
//! this transport is ours; `postgres-protocol` provides the message encoders and SCRAM.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::error::{Context, PgError, SourceError};
use super::tls;
use crate::dsn::ConnParams;

/// Whether a read of `n` bytes is short: the socket had less than a full window's worth
/// queued, so the walsender is not ahead of us and the next read should wait. "Full" is
/// relative to the largest read seen: a small receive window (see [`LOCAL_RECV_BUFFER`])
/// delivers reads far below [`COALESCE_BELOW`] even when data is waiting, and pausing after
/// each of those would cap the stream at one window per pause.
fn is_short_read(n: usize, largest: usize) -> bool {
    n < COALESCE_BELOW.min(largest / 2)
}

/// Whether `tcp` connects two ends on this machine: the peer is a loopback address or the
/// very address we connect from.
fn same_host(tcp: &TcpStream) -> bool {
    match (tcp.peer_addr(), tcp.local_addr()) {
        (Ok(peer), Ok(local)) => peer.ip().is_loopback() || peer.ip() == local.ip(),
        _ => false,
    }
}

/// Plain TCP or TLS: one type so the rest of the code need not be generic.
#[allow(clippy::large_enum_variant)]
enum Stream {
    Plain(TcpStream),
    Tls(TlsStream<TcpStream>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// One backend message: its tag and its body (zero-copy slice of the read buffer).
#[derive(Debug)]
pub struct Frame {
    pub tag: u8,
    pub body: Bytes,
}

/// Rows of a simple query, as text.
pub type Rows = Vec<Vec<Option<String>>>;

/// An authenticated `replication=database` session.
pub struct WireConn {
    stream: Stream,
    buf: BytesMut,
    out: BytesMut,
    target: String,
    user: String,
    /// Set after a short read in the replication stream: `fill_coalesced` reads no sooner.
    read_after: Option<tokio::time::Instant>,
    /// The largest read so far: what the socket's buffers deliver at most in one read.
    largest_read: usize,
}

impl std::fmt::Debug for WireConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireConn")
            .field("target", &self.target)
            .finish()
    }
}

/// Session settings that make pgoutput's text values unambiguous to parse.
const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
];

const READ_CHUNK: usize = 256 * 1024;

/// A replication-stream read smaller than this (or than half the largest read so far, see
/// [`is_short_read`]) means the host drains the socket faster than the walsender fills it (it
/// flushes every message on its own, a few hundred bytes each): the next read waits
/// [`COALESCE_PAUSE`] so that it finds many messages instead of one.
const COALESCE_BELOW: usize = 32 * 1024;

/// How long a short read defers the next one. One wakeup and one `recv` per millisecond
/// instead of one per message: in a 1M-change drain the host made ~1 `recv` and ~1 wakeup per
/// change, half of its CPU in the kernel. A change waits at most this much longer; the
/// socket buffers hold far more than a millisecond of the walsender's output.
const COALESCE_PAUSE: Duration = Duration::from_millis(1);

/// The receive buffer of a replication connection to a server on this machine (see
/// [`same_host`]). The walsender flushes every message on its own with `TCP_NODELAY`; while
/// the receiver's window is open each of those sends runs the whole loopback transmit path in
/// the walsender's process (40 % of its CPU in a drain, plus a wakeup of the reader). With a
/// window this small it closes between two of our reads: the walsender's sends then only
/// append to its socket's queue, and the queued data is transmitted in our process when a
/// read reopens the window. Measured on a 1M-change drain (`bench/drain.sh`): the walsender's
/// CPU per change fell by ~40 % and the drain ran 1.5–1.8 × faster. Not applied to remote
/// servers: a window this small would cap throughput at window / round trip.
const LOCAL_RECV_BUFFER: usize = 32 * 1024;

/// How long a polite close waits for the server to end COPY.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

impl WireConn {
    /// Connects, negotiates TLS per `sslmode`, starts a logical replication session and
    /// authenticates.
    pub async fn connect(params: &ConnParams, ctx: &Context<'_>) -> Result<WireConn, SourceError> {
        let target = format!("{}:{}", params.host, params.port);
        let timeout = params.connect_timeout.unwrap_or(Duration::from_secs(30));
        let fut = Self::connect_inner(params, ctx, target.clone());
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(SourceError::ConnectTimeout {
                target,
                secs: timeout.as_secs(),
            }),
        }
    }

    async fn connect_inner(
        params: &ConnParams,
        ctx: &Context<'_>,
        target: String,
    ) -> Result<WireConn, SourceError> {
        let tcp = TcpStream::connect((params.host.as_str(), params.port))
            .await
            .map_err(|source| SourceError::Connect {
                target: target.clone(),
                cause: source,
            })?;
        let _ = tcp.set_nodelay(true);
        if same_host(&tcp) {
            // Best effort: without it the stream works as before, only costlier to the server.
            if let Err(e) = socket2::SockRef::from(&tcp).set_recv_buffer_size(LOCAL_RECV_BUFFER) {
                tracing::debug!(error = %e, "could not size the receive buffer");
            }
        }
        let stream = Self::negotiate_tls(tcp, params, &target).await?;
        let mut conn = WireConn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::with_capacity(1024),
            target,
            user: params.user.clone(),
            read_after: None,
            largest_read: 0,
        };
        conn.startup(params, ctx).await?;
        Ok(conn)
    }

    async fn negotiate_tls(
        mut tcp: TcpStream,
        params: &ConnParams,
        target: &str,
    ) -> Result<Stream, SourceError> {
        let Some(config) = tls::client_config(params.ssl_mode, params.ssl_root_cert.as_deref())?
        else {
            return Ok(Stream::Plain(tcp));
        };
        let io_err = |source| SourceError::Io {
            target: target.to_owned(),
            cause: source,
        };
        let mut req = BytesMut::new();
        frontend::ssl_request(&mut req);
        tcp.write_all(&req).await.map_err(io_err)?;
        let answer = tcp.read_u8().await.map_err(io_err)?;
        match answer {
            b'S' => {}
            b'N' if params.ssl_mode.requires_tls() => {
                return Err(SourceError::TlsUnsupported(target.to_owned()))
            }
            b'N' => return Ok(Stream::Plain(tcp)),
            other => {
                return Err(SourceError::Protocol(format!(
                    "unexpected answer {other:#x} to SSLRequest"
                )))
            }
        }
        let name = ServerName::try_from(params.host.clone()).map_err(|e| {
            SourceError::Setup(format!("invalid TLS server name {:?}: {e}", params.host))
        })?;
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|source| SourceError::TlsHandshake {
                target: target.to_owned(),
                cause: source,
            })?;
        Ok(Stream::Tls(tls))
    }

    async fn startup(&mut self, params: &ConnParams, ctx: &Context<'_>) -> Result<(), SourceError> {
        let mut startup: Vec<(&str, &str)> = vec![
            ("user", params.user.as_str()),
            ("database", params.dbname.as_str()),
            ("replication", "database"),
            ("application_name", params.application_name.as_str()),
        ];
        startup.extend_from_slice(SESSION_SETTINGS);
        frontend::startup_message(startup.iter().copied(), &mut self.out)
            .map_err(|e| SourceError::Protocol(e.to_string()))?;
        self.flush_out().await?;

        let mut scram: Option<ScramSha256> = None;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                b'R' => self.authenticate(&frame.body, params, &mut scram).await?,
                b'E' => return Err(SourceError::server(PgError::parse(&frame.body), ctx)),
                b'Z' => return Ok(()),
                // ParameterStatus, BackendKeyData, NoticeResponse: nothing to do.
                _ => {}
            }
        }
    }

    async fn authenticate(
        &mut self,
        body: &[u8],
        params: &ConnParams,
        scram: &mut Option<ScramSha256>,
    ) -> Result<(), SourceError> {
        let mut b = body;
        if b.len() < 4 {
            return Err(SourceError::Protocol("short authentication message".into()));
        }
        let kind = b.get_i32();
        let password = || {
            params
                .password
                .as_deref()
                .ok_or_else(|| SourceError::NoPassword(self.user.clone()))
        };
        match kind {
            0 => return Ok(()),
            3 => {
                frontend::password_message(password()?, &mut self.out)
                    .map_err(|e| SourceError::Protocol(e.to_string()))?;
            }
            5 => {
                let salt: [u8; 4] = b
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| SourceError::Protocol("short md5 salt".into()))?;
                let hash = postgres_protocol::authentication::md5_hash(
                    self.user.as_bytes(),
                    password()?,
                    salt,
                );
                frontend::password_message(hash.as_bytes(), &mut self.out)
                    .map_err(|e| SourceError::Protocol(e.to_string()))?;
            }
            10 => {
                let offers_scram = b.split(|&c| c == 0).any(|m| m == SCRAM_SHA_256.as_bytes());
                if !offers_scram {
                    return Err(SourceError::UnsupportedAuth(
                        String::from_utf8_lossy(b)
                            .replace('\0', " ")
                            .trim()
                            .to_owned(),
                    ));
                }
                // Channel binding is optional for SCRAM-SHA-256; we do not offer it.
                let s = ScramSha256::new(password()?, ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.out)
                    .map_err(|e| SourceError::Protocol(e.to_string()))?;
                *scram = Some(s);
            }
            11 => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| SourceError::Protocol("SASLContinue before SASL".into()))?;
                s.update(b).map_err(SourceError::Scram)?;
                frontend::sasl_response(s.message(), &mut self.out)
                    .map_err(|e| SourceError::Protocol(e.to_string()))?;
            }
            12 => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| SourceError::Protocol("SASLFinal before SASL".into()))?;
                s.finish(b).map_err(SourceError::Scram)?;
                return Ok(());
            }
            2 => return Err(SourceError::UnsupportedAuth("Kerberos V5".into())),
            7 | 8 => return Err(SourceError::UnsupportedAuth("GSSAPI".into())),
            9 => return Err(SourceError::UnsupportedAuth("SSPI".into())),
            other => return Err(SourceError::UnsupportedAuth(format!("code {other}"))),
        }
        self.flush_out().await
    }

    /// Runs one simple-protocol command and returns its rows (as text).
    pub async fn simple_query(
        &mut self,
        sql: &str,
        ctx: &Context<'_>,
    ) -> Result<Rows, SourceError> {
        frontend::query(sql, &mut self.out).map_err(|e| SourceError::Protocol(e.to_string()))?;
        self.flush_out().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                b'D' => rows.push(parse_data_row(&frame.body)?),
                b'E' => error = Some(PgError::parse(&frame.body)),
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(SourceError::server(e, ctx)),
            None => Ok(rows),
        }
    }

    /// Sends `START_REPLICATION …` and waits for the server to enter COPY BOTH mode.
    pub async fn start_copy_both(
        &mut self,
        sql: &str,
        ctx: &Context<'_>,
    ) -> Result<(), SourceError> {
        frontend::query(sql, &mut self.out).map_err(|e| SourceError::Protocol(e.to_string()))?;
        self.flush_out().await?;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                b'W' => return Ok(()),
                b'E' => return Err(SourceError::server(PgError::parse(&frame.body), ctx)),
                b'N' | b'S' => {}
                other => {
                    return Err(SourceError::Protocol(format!(
                        "unexpected message {:?} after START_REPLICATION",
                        other as char
                    )))
                }
            }
        }
    }

    /// Reads the next backend message. Cancel-safe: a partial frame stays buffered.
    pub async fn read_frame(&mut self) -> Result<Frame, SourceError> {
        loop {
            if let Some(frame) = self.try_frame()? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// Reads whatever the socket has into the buffer. Cancel-safe (`read_buf` is).
    pub async fn fill(&mut self) -> Result<(), SourceError> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        let n = self
            .stream
            .read_buf(&mut self.buf)
            .await
            .map_err(|source| self.io_err(source))?;
        if n == 0 {
            return Err(self.io_err(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    /// [`fill`](Self::fill) for the replication stream's loop: after a short read, the next
    /// one waits until [`COALESCE_PAUSE`] has passed since it. Cancel-safe: a pending pause
    /// keeps its deadline when the future is dropped (a select! loop that wakes often for
    /// other reasons does not push the read further out).
    pub async fn fill_coalesced(&mut self) -> Result<(), SourceError> {
        if let Some(at) = self.read_after {
            tokio::time::sleep_until(at).await;
            self.read_after = None;
        }
        let before = self.buf.len();
        self.fill().await?;
        let n = self.buf.len() - before;
        self.largest_read = self.largest_read.max(n);
        if is_short_read(n, self.largest_read) {
            self.read_after = Some(tokio::time::Instant::now() + COALESCE_PAUSE);
        }
        Ok(())
    }

    /// A complete buffered frame, if there is one.
    pub fn try_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let tag = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len < 4 {
            return Err(SourceError::Protocol(format!(
                "invalid message length {len}"
            )));
        }
        if self.buf.len() < len + 1 {
            self.buf.reserve(len + 1 - self.buf.len());
            return Ok(None);
        }
        // Each frame gets its own allocation rather than a slice of the read buffer: decoded
        // values keep slices of their frame until the pipeline has encoded them on another
        // thread, and slices of one shared buffer share one reference count, which the reader
        // (cloning) and the encoder (dropping) then fought over for every column
        // (`shared_v_clone`/`shared_v_drop` were ~10 % of a drain's CPU). It also lets the
        // read buffer be reused in place instead of a new one per 256 KiB read.
        let body = Bytes::copy_from_slice(&self.buf[5..len + 1]);
        self.buf.advance(len + 1);
        Ok(Some(Frame { tag, body }))
    }

    /// Sends a CopyData message (a standby status update).
    pub async fn send_copy_data(&mut self, payload: &[u8]) -> Result<(), SourceError> {
        frontend::CopyData::new(payload)
            .map_err(|e| SourceError::Protocol(e.to_string()))?
            .write(&mut self.out);
        self.flush_out().await
    }

    /// Ends COPY BOTH and the session politely: CopyDone, then read (and discard) what the
    /// server still sends until it ends COPY too, then Terminate.
    ///
    /// Why wait: closing a socket with unread data makes the kernel send a reset, and the
    /// server may then drop our last messages unread — including the final standby status
    /// update, so the slot would not be confirmed up to what was delivered.
    pub async fn close(mut self) {
        frontend::copy_done(&mut self.out);
        if self.flush_out().await.is_ok() {
            let drain = async {
                loop {
                    match self.read_frame().await {
                        Ok(f) if f.tag == b'Z' || f.tag == b'E' => break,
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            };
            if tokio::time::timeout(CLOSE_TIMEOUT, drain).await.is_err() {
                tracing::debug!("server did not end COPY in time; closing anyway");
            }
        }
        frontend::terminate(&mut self.out);
        let _ = self.flush_out().await;
        let _ = self.stream.shutdown().await;
    }

    async fn flush_out(&mut self) -> Result<(), SourceError> {
        let out = self.out.split();
        self.stream
            .write_all(&out)
            .await
            .map_err(|source| self.io_err(source))?;
        self.stream
            .flush()
            .await
            .map_err(|source| self.io_err(source))
    }

    fn io_err(&self, source: std::io::Error) -> SourceError {
        SourceError::Io {
            target: self.target.clone(),
            cause: source,
        }
    }
}

fn parse_data_row(body: &[u8]) -> Result<Vec<Option<String>>, SourceError> {
    let bad = || SourceError::Protocol("malformed DataRow".into());
    let mut b = body;
    if b.len() < 2 {
        return Err(bad());
    }
    let n = b.get_i16();
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        if b.len() < 4 {
            return Err(bad());
        }
        let len = b.get_i32();
        if len < 0 {
            row.push(None);
            continue;
        }
        let len = len as usize;
        let v = b.get(..len).ok_or_else(bad)?;
        row.push(Some(String::from_utf8_lossy(v).into_owned()));
        b.advance(len);
    }
    Ok(row)
}

/// Quotes an SQL identifier (`"a""b"`).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes an SQL string literal (`'it''s'`).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_rows() {
        let body = [0u8, 2, 0, 0, 0, 2, b'h', b'i', 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            parse_data_row(&body).unwrap(),
            vec![Some("hi".to_owned()), None]
        );
        assert!(parse_data_row(&body[..7]).is_err());
    }

    #[test]
    fn short_reads_are_relative_to_the_largest() {
        // Before any large read nothing counts as short: a quiet stream reads as it arrives.
        assert!(!is_short_read(300, 300));
        // A default-sized window: reads under COALESCE_BELOW are short.
        assert!(is_short_read(20_000, 200_000));
        assert!(!is_short_read(COALESCE_BELOW, 200_000));
        // A small window whose reads never reach COALESCE_BELOW: half the largest decides.
        assert!(!is_short_read(20_000, 24_000));
        assert!(is_short_read(11_000, 24_000));
    }

    #[tokio::test]
    async fn loopback_is_the_same_host() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (client, _server) = (client.unwrap(), accepted.unwrap());
        assert!(same_host(&client));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
