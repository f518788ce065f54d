//! `http-sink-receiver`: a fast local HTTP/1.1 endpoint for `bench/sinks.sh`.
//!
//! Answers `200 OK` (empty body, keep-alive) to every request, and counts requests, body
//! bytes and NDJSON lines (`\n` bytes in the bodies). Bodies with `Content-Length` and
//! `Transfer-Encoding: chunked` are both understood; pipelined requests too.
//!
//! `--port-file` gets the bound port once listening (bind to port 0 to avoid races);
//! `--status-file` is rewritten every 100 ms and on exit with
//! `requests=… lines=… bytes=…`; the same line is printed on stdout on SIGTERM/SIGINT.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Parser)]
#[command(about = "Answer 200 to every HTTP POST and count NDJSON lines")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Write the bound port here once listening.
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// Rewrite `requests=… lines=… bytes=…` here every 100 ms and on exit.
    #[arg(long)]
    status_file: Option<PathBuf>,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    lines: AtomicU64,
    bytes: AtomicU64,
}

impl Counters {
    fn line(&self) -> String {
        format!(
            "requests={} lines={} bytes={}",
            self.requests.load(Relaxed),
            self.lines.load(Relaxed),
            self.bytes.load(Relaxed)
        )
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let port = listener.local_addr()?.port();
    if let Some(p) = &args.port_file {
        write_atomically(p, &format!("{port}\n"))?;
    }
    eprintln!("http-sink-receiver: listening on 127.0.0.1:{port}");
    let counters = Arc::new(Counters::default());
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let _ = stream.set_nodelay(true);
                let counters = counters.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, &counters).await {
                        eprintln!("http-sink-receiver: connection: {e:#}");
                    }
                });
            }
            _ = tick.tick() => {
                if let Some(p) = &args.status_file {
                    write_atomically(p, &format!("{}\n", counters.line()))?;
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let line = counters.line();
    if let Some(p) = &args.status_file {
        write_atomically(p, &format!("{line}\n"))?;
    }
    println!("{line}");
    Ok(())
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
const OK_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Serves one connection until the peer closes it.
async fn serve(mut stream: TcpStream, counters: &Counters) -> Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut start = 0usize; // unconsumed data is buf[start..]
    loop {
        // --- head ---
        let head_end = loop {
            if let Some(i) = find(&buf[start..], b"\r\n\r\n") {
                break start + i + 4;
            }
            if !fill(&mut stream, &mut buf, &mut start).await? {
                return Ok(()); // closed between requests
            }
        };
        let head = std::str::from_utf8(&buf[start..head_end]).context("request head")?;
        let mut content_length = 0usize;
        let mut chunked = false;
        let mut close = false;
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        let http10 = request_line.ends_with("HTTP/1.0");
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                content_length = v.parse().context("content-length")?;
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.to_ascii_lowercase().contains("chunked");
            } else if k.eq_ignore_ascii_case("connection") {
                close = v.eq_ignore_ascii_case("close");
            } else if k.eq_ignore_ascii_case("expect") && v.eq_ignore_ascii_case("100-continue") {
                stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            }
        }
        start = head_end;
        // --- body ---
        let (body_bytes, body_lines) = if chunked {
            let mut total = (0usize, 0usize);
            loop {
                let line_end = loop {
                    if let Some(i) = find(&buf[start..], b"\r\n") {
                        break start + i;
                    }
                    if !fill(&mut stream, &mut buf, &mut start).await? {
                        bail!("closed inside a chunked body");
                    }
                };
                let size_text = std::str::from_utf8(&buf[start..line_end])?;
                let size_text = size_text.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16).context("chunk size")?;
                start = line_end + 2;
                if size == 0 {
                    // Trailers (none expected) end with an empty line.
                    loop {
                        if let Some(i) = find(&buf[start..], b"\r\n") {
                            let empty = i == 0;
                            start += i + 2;
                            if empty {
                                break;
                            }
                        } else if !fill(&mut stream, &mut buf, &mut start).await? {
                            bail!("closed inside chunked trailers");
                        }
                    }
                    break total;
                }
                let n = consume(&mut stream, &mut buf, &mut start, size).await?;
                total.0 += size;
                total.1 += n;
                // The CRLF after the chunk data.
                while buf.len() - start < 2 {
                    if !fill(&mut stream, &mut buf, &mut start).await? {
                        bail!("closed inside a chunked body");
                    }
                }
                start += 2;
            }
        } else {
            let n = consume(&mut stream, &mut buf, &mut start, content_length).await?;
            (content_length, n)
        };
        counters.bytes.fetch_add(body_bytes as u64, Relaxed);
        counters.lines.fetch_add(body_lines as u64, Relaxed);
        counters.requests.fetch_add(1, Relaxed);
        if close || http10 {
            stream.write_all(OK_CLOSE).await?;
            stream.shutdown().await.ok();
            return Ok(());
        }
        stream.write_all(OK).await?;
    }
}

/// Reads more into `buf` (compacting consumed bytes first); `false` at end of stream.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, start: &mut usize) -> Result<bool> {
    if *start > 0 {
        buf.drain(..*start);
        *start = 0;
    }
    if buf.capacity() - buf.len() < 64 * 1024 {
        buf.reserve(256 * 1024);
    }
    // Into the spare capacity: no zeroing.
    let n = stream.read_buf(buf).await?;
    Ok(n > 0)
}

/// Consumes `n` body bytes (from `buf`, then the socket), returning how many `\n` they hold.
async fn consume(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    start: &mut usize,
    mut n: usize,
) -> Result<usize> {
    let mut lines = 0usize;
    loop {
        let avail = (buf.len() - *start).min(n);
        lines += count_newlines(&buf[*start..*start + avail]);
        *start += avail;
        n -= avail;
        if n == 0 {
            return Ok(lines);
        }
        if !fill(stream, buf, start).await? {
            bail!("closed inside a body ({n} bytes missing)");
        }
    }
}

fn count_newlines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
