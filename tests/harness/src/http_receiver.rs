//! A scriptable HTTP/1.1 receiver on 127.0.0.1 for sink tests: records every request and
//! answers from a script (status codes, Retry-After, hangs), 200 otherwise.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// How long to wait for the next request before failing: generous, since it only bounds
/// how long a broken test hangs (a restarted host on a loaded machine may take seconds).
pub const WAIT: Duration = Duration::from_secs(60);

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Which connection it came on (0, 1, … in accept order).
    pub conn: usize,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn key(&self) -> &str {
        self.header("idempotency-key").expect("Idempotency-Key")
    }
}

/// What the receiver answers to the next request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status {
        code: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Answer nothing for this long (longer than the client's timeout), then close.
    Hang(Duration),
    /// Wait this long, then answer 200 (a slow endpoint).
    Delay(Duration),
    /// Run the action (a fault injected at this exact point: e.g. hold a proxy, kill a
    /// process), then answer with the reply.
    After(Action, Box<Reply>),
}

/// Something a test does inside the receiver, right before it answers (see [`Reply::After`]).
#[derive(Clone)]
pub struct Action(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Action(..)")
    }
}

/// `action()`, then `reply`.
pub fn after(action: impl Fn() + Send + Sync + 'static, reply: Reply) -> Reply {
    Reply::After(Action(Arc::new(action)), Box::new(reply))
}

pub fn status(code: u16) -> Reply {
    Reply::Status {
        code,
        headers: Vec::new(),
        body: format!("status {code}"),
    }
}

#[derive(Debug, Default)]
struct Shared {
    script: Mutex<VecDeque<Reply>>,
    /// Answer when the script is empty (None = 200).
    default: Mutex<Option<Reply>>,
}

#[derive(Debug)]
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    requests: mpsc::UnboundedReceiver<Recorded>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::start_with(None).await
    }

    pub async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let (tx, requests) = mpsc::unbounded_channel();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut conns = JoinSet::new();
                let mut next_conn = 0;
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { break };
                            let (shared, tx, tls) = (shared.clone(), tx.clone(), tls.clone());
                            let conn = next_conn;
                            next_conn += 1;
                            conns.spawn(async move {
                                match tls {
                                    Some(acceptor) => {
                                        if let Ok(s) = acceptor.accept(stream).await {
                                            serve(s, conn, shared, tx).await;
                                        }
                                    }
                                    None => serve(stream, conn, shared, tx).await,
                                }
                            });
                        }
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    }
                }
                // Dropping the set aborts the connections still open.
                conns.shutdown().await;
            })
        };
        Receiver {
            addr,
            shared,
            requests,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next requests with `replies`, in order; then 200s again.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().unwrap().extend(replies);
    }

    /// Answers every request not covered by the script with `reply` (e.g. a 500 while a
    /// test plays "the endpoint is down"); `None` restores 200.
    pub fn set_default(&self, reply: Option<Reply>) {
        *self.shared.default.lock().unwrap() = reply;
    }

    /// The next request received (waits for it, bounded).
    pub async fn next(&mut self) -> Recorded {
        tokio::time::timeout(WAIT, self.requests.recv())
            .await
            .expect("no request arrived in time")
            .expect("receiver stopped")
    }

    /// Every request received so far, without waiting.
    pub fn drain(&mut self) -> Vec<Recorded> {
        let mut out = Vec::new();
        while let Ok(r) = self.requests.try_recv() {
            out.push(r);
        }
        out
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// HTTP/1.1 with keep-alive and Content-Length bodies: what the sink sends.
async fn serve<S>(stream: S, conn: usize, shared: Arc<Shared>, tx: mpsc::UnboundedSender<Recorded>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match stream.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let at = Instant::now();
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if stream.read_line(&mut h).await.unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').expect("header line");
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        assert!(
            !headers
                .iter()
                .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")),
            "the sink sends Content-Length bodies"
        );
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let mut reply = shared
            .script
            .lock()
            .unwrap()
            .pop_front()
            .or_else(|| shared.default.lock().unwrap().clone())
            .unwrap_or_else(|| status(200));
        while let Reply::After(Action(action), then) = reply {
            action();
            reply = *then;
        }
        let _ = tx.send(Recorded {
            method,
            path,
            headers,
            body,
            conn,
            at,
        });
        match reply {
            Reply::Status {
                code,
                headers,
                body,
            } => {
                let mut head = format!(
                    "HTTP/1.1 {code} Scripted\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                head.push_str(&body);
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                if stream.flush().await.is_err() {
                    return;
                }
            }
            Reply::Delay(d) => {
                tokio::time::sleep(d).await;
                let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                if stream.write_all(ok).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
            Reply::Hang(d) => {
                // The client gives up first; then this connection is done.
                tokio::time::sleep(d).await;
                return;
            }
            Reply::After(..) => unreachable!("unwrapped above"),
        }
    }
}
