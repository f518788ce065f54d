//! The HTTP sink against a real HTTP/1.1 receiver on 127.0.0.1, scripted per test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cdc_sinks::http::{HttpBatching, HttpOptions, HttpSink};
use cdc_sinks::{EncodedBatch, Message, Sink, SinkError};
use cdc_test_harness::http_receiver::{status, Receiver, Reply};

/// Upper bound for any single test.
const TEST_LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// Helpers

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test took too long")
}

fn id(n: u64) -> String {
    // Fixed-width, WAL-derived-looking ids.
    format!("{:016X}-{:08X}", 0x1_6B37_4D48 + n * 0x40, n)
}

fn msg(n: u64, table: &str, op: &'static str) -> Message {
    Message {
        id: id(n).into(),
        schema: Some(Arc::from("public")),
        table: Some(Arc::from(table)),
        op,
        lsn: format!("0/{:X}", 0x1_6B37_4D48_u64 + n).into(),
        commit_lsn: "0/16B37500".into(),
        route: None,
        headers: Vec::new(),
        payload: Bytes::from(format!(r#"{{"n":{n},"table":"{table}","op":"{op}"}}"#)),
    }
}

fn batch(seq: u64, messages: Vec<Message>) -> Arc<EncodedBatch> {
    Arc::new(EncodedBatch {
        seq,
        messages,
        continues: false,
        lines: None,
    })
}

fn options(url: String) -> HttpOptions {
    let mut o = HttpOptions::new("hook", url);
    o.retry_initial = Duration::from_millis(10);
    o.retry_max = Duration::from_millis(50);
    o.timeout = Duration::from_secs(5);
    o
}

fn ndjson(msgs: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        out.extend_from_slice(&m.payload);
        out.push(b'\n');
    }
    out
}

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn ndjson_batch_is_one_post_of_the_payloads_in_order() {
    bounded(async {
        let mut rx = Receiver::start().await;
        let mut opts = options(rx.url("/ingest?x=1"));
        opts.headers = vec![
            ("Authorization".into(), "Bearer s3cret".into()),
            ("X-Source".into(), "pg-main".into()),
        ];
        let mut sink = HttpSink::new(opts).unwrap();
        assert_eq!(sink.name(), "hook");
        let msgs: Vec<_> = (1..=3).map(|n| msg(n, "users", "insert")).collect();
        sink.deliver(batch(1, msgs.clone())).await.unwrap();

        let r = rx.next().await;
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/ingest?x=1");
        assert_eq!(r.body, ndjson(&msgs));
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        assert_eq!(r.key(), format!("{}..{}", id(1), id(3)));
        assert_eq!(
            r.header("cdc-change-ids"),
            Some(format!("{},{},{}", id(1), id(2), id(3)).as_str())
        );
        assert_eq!(r.header("cdc-first-id"), Some(id(1).as_str()));
        assert_eq!(r.header("cdc-last-id"), Some(id(3).as_str()));
        assert_eq!(r.header("cdc-count"), Some("3"));
        assert_eq!(r.header("authorization"), Some("Bearer s3cret"));
        assert_eq!(r.header("x-source"), Some("pg-main"));
        let ua = r.header("user-agent").unwrap();
        assert!(ua.starts_with("cdc-host/"), "{ua}");
        // Batch mode has no per-change headers.
        assert_eq!(r.header("cdc-op"), None);
        assert!(rx.drain().is_empty(), "one request per batch");

        // A batch of one change: the key is its id.
        let one = vec![msg(9, "users", "delete")];
        sink.deliver(batch(2, one.clone())).await.unwrap();
        let r = rx.next().await;
        assert_eq!(r.key(), id(9));
        assert_eq!(r.body, ndjson(&one));
        // Keep-alive: the second batch came over the same connection.
        assert_eq!(r.conn, 0);
        rx.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn array_batch_is_a_json_array_of_the_payloads() {
    bounded(async {
        let mut rx = Receiver::start().await;
        let mut opts = options(rx.url("/array"));
        opts.batching = HttpBatching::Array;
        let mut sink = HttpSink::new(opts).unwrap();
        let msgs: Vec<_> = (1..=4).map(|n| msg(n, "orders", "update")).collect();
        sink.deliver(batch(1, msgs.clone())).await.unwrap();

        let r = rx.next().await;
        assert_eq!(r.header("content-type"), Some("application/json"));
        let expected = format!(
            "[{}]",
            msgs.iter()
                .map(|m| std::str::from_utf8(&m.payload).unwrap())
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(std::str::from_utf8(&r.body).unwrap(), expected);
        assert_eq!(r.header("cdc-count"), Some("4"));
        assert!(rx.drain().is_empty());
        rx.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn per_change_mode_posts_each_change_to_its_url_with_its_headers() {
    bounded(async {
        let mut rx = Receiver::start().await;
        let mut opts = options(rx.url("/hooks/{schema}/{table}/{op}"));
        opts.batching = HttpBatching::None;
        let mut sink = HttpSink::new(opts).unwrap();
        let a = msg(1, "users", "insert");
        let mut b = msg(2, "orders", "delete");
        b.headers = vec![
            ("X-Tenant".into(), "acme".into()),
            ("X-Tag".into(), "one".into()),
            ("X-Tag".into(), "two".into()),
            // Cannot replace the sink's own headers.
            ("Idempotency-Key".into(), "spoofed".into()),
        ];
        let mut c = msg(3, "users", "update");
        c.route = Some(rx.url("/routed/special"));
        sink.deliver(batch(1, vec![a.clone(), b.clone(), c.clone()]))
            .await
            .unwrap();

        let ra = rx.next().await;
        let rb = rx.next().await;
        let rc = rx.next().await;
        assert!(rx.drain().is_empty());
        assert_eq!(ra.path, "/hooks/public/users/insert");
        assert_eq!(rb.path, "/hooks/public/orders/delete");
        assert_eq!(rc.path, "/routed/special");
        for (r, m) in [(&ra, &a), (&rb, &b), (&rc, &c)] {
            assert_eq!(r.method, "POST");
            assert_eq!(r.body, m.payload.to_vec());
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.key(), m.id);
            assert_eq!(r.header("cdc-change-ids"), Some(m.id.as_str()));
            assert_eq!(r.header("cdc-first-id"), Some(m.id.as_str()));
            assert_eq!(r.header("cdc-last-id"), Some(m.id.as_str()));
            assert_eq!(r.header("cdc-count"), Some("1"));
            assert_eq!(r.header("cdc-op"), Some(m.op));
            assert_eq!(
                r.header("cdc-table"),
                Some(format!("public.{}", m.table.as_deref().unwrap()).as_str())
            );
            assert_eq!(r.header("cdc-lsn"), Some(&*m.lsn));
        }
        assert_eq!(rb.header("x-tenant"), Some("acme"));
        let tags: Vec<_> = rb.headers.iter().filter(|(k, _)| k == "x-tag").collect();
        assert_eq!(tags.len(), 2);
        let keys = rb.headers.iter().filter(|(k, _)| k == "idempotency-key");
        assert_eq!(keys.count(), 1);
        assert_eq!(ra.header("x-tenant"), None);
        rx.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn server_errors_are_retried_with_the_same_idempotency_key() {
    bounded(async {
        let mut rx = Receiver::start().await;
        rx.script([status(500), status(502), status(503)]);
        let mut sink = HttpSink::new(options(rx.url("/"))).unwrap();
        let msgs: Vec<_> = (1..=2).map(|n| msg(n, "t", "insert")).collect();
        sink.deliver(batch(1, msgs.clone())).await.unwrap();

        let attempts = [
            rx.next().await,
            rx.next().await,
            rx.next().await,
            rx.next().await,
        ];
        assert!(rx.drain().is_empty(), "delivered once, after the 200");
        let key = format!("{}..{}", id(1), id(2));
        for r in &attempts {
            assert_eq!(r.key(), key);
            assert_eq!(r.body, ndjson(&msgs));
        }
        rx.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    bounded(async {
        let mut rx = Receiver::start().await;
        rx.script([Reply::Status {
            code: 429,
            headers: vec![("Retry-After", "1".to_owned())],
            body: "slow down".to_owned(),
        }]);
        // Backoff alone would retry within 50 ms.
        let mut sink = HttpSink::new(options(rx.url("/"))).unwrap();
        let started = Instant::now();
        sink.deliver(batch(1, vec![msg(1, "t", "insert")]))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_secs(1));
        let first = rx.next().await;
        let second = rx.next().await;
        assert!(
            second.at - first.at >= Duration::from_millis(990),
            "retried after {:?}",
            second.at - first.at
        );
        assert_eq!(first.key(), second.key());
        assert!(rx.drain().is_empty());
        rx.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    bounded(async {
        let mut rx = Receiver::start().await;
        // An HTTP-date has whole seconds: 2 s ahead is 1–2 s from now.
        let when = std::time::SystemTime::now() + Duration::from_secs(2);
        rx.script([Reply::Status {
            code: 503,
            headers: vec![("Retry-After", httpdate::fmt_http_date(when))],
            body: String::new(),
        }]);
        let mut sink = HttpSink::new(options(rx.url("/"))).unwrap();
        sink.deliver(batch(1, vec![msg(1, "t", "insert")]))
            .await
            .unwrap();
        let first = rx.next().await;
        let second = rx.next().await;
        assert!(
            second.at - first.at >= Duration::from_millis(900),
            "retried after {:?}",
            second.at - first.at
        );
        rx.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_timeout_is_retried() {
    bounded(async {
        let mut rx = Receiver::start().await;
        rx.script([Reply::Hang(Duration::from_secs(10))]);
        let mut opts = options(rx.url("/"));
        opts.timeout = Duration::from_millis(300);
        let mut sink = HttpSink::new(opts).unwrap();
        let started = Instant::now();
        sink.deliver(batch(1, vec![msg(1, "t", "insert")]))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not wait for the hang"
        );
        let first = rx.next().await;
        let second = rx.next().await;
        assert_eq!(first.key(), id(1));
        assert_eq!(second.key(), id(1));
        assert_ne!(
            first.conn, second.conn,
            "the timed-out connection is not reused"
        );
        assert!(rx.drain().is_empty());
        rx.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_error_is_rejected_naming_the_change() {
    bounded(async {
        let mut rx = Receiver::start().await;
        rx.script([
            status(200),
            Reply::Status {
                code: 400,
                headers: Vec::new(),
                body: format!("field \"email\" is required{}", " ".repeat(500) + "tail"),
            },
        ]);
        let mut opts = options(rx.url("/c/{table}"));
        opts.batching = HttpBatching::None;
        let mut sink = HttpSink::new(opts).unwrap();
        let msgs: Vec<_> = (1..=3).map(|n| msg(n, "users", "insert")).collect();
        let err = sink.deliver(batch(1, msgs)).await.unwrap_err();
        match &err {
            SinkError::Rejected {
                sink,
                id: bad,
                message,
            } => {
                assert_eq!(sink, "hook");
                assert_eq!(*bad, id(2));
                assert!(message.contains("400"), "{message}");
                assert!(message.contains("field \"email\" is required"), "{message}");
                assert!(
                    !message.contains("tail"),
                    "body excerpt is bounded: {message}"
                );
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
        assert!(err.to_string().contains(&id(2)), "{err}");
        // Not retried, and nothing sent past the rejected change.
        let got = [rx.next().await, rx.next().await];
        assert_eq!(got[0].key(), id(1));
        assert_eq!(got[1].key(), id(2));
        assert!(rx.drain().is_empty());
        rx.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn large_batches_are_split_with_distinct_stable_keys() {
    bounded(async {
        let mut rx = Receiver::start().await;
        let msgs: Vec<_> = (1..=10).map(|n| msg(n, "events", "insert")).collect();
        let line = msgs[0].payload.len() + 1;
        let mut opts = options(rx.url("/split"));
        // Three lines per request.
        opts.max_batch_bytes = line * 3 + 2;
        let mut sink = HttpSink::new(opts).unwrap();
        let b = batch(7, msgs.clone());

        sink.deliver(b.clone()).await.unwrap();
        let first: Vec<_> = rx.drain();
        assert_eq!(first.len(), 4, "10 changes at 3 per request");
        let keys: Vec<_> = first.iter().map(|r| r.key().to_owned()).collect();
        assert_eq!(
            keys,
            [
                format!("{}..{}", id(1), id(3)),
                format!("{}..{}", id(4), id(6)),
                format!("{}..{}", id(7), id(9)),
                id(10),
            ]
        );
        let body: Vec<u8> = first.iter().flat_map(|r| r.body.clone()).collect();
        assert_eq!(
            body,
            ndjson(&msgs),
            "the requests hold every change, in order"
        );
        for r in &first {
            assert!(r.body.len() <= line * 3 + 2);
            assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        }
        assert_eq!(first[3].header("cdc-count"), Some("1"));

        // The same batch again (a replay after a crash): the same requests and keys.
        let mut again_sink = HttpSink::new({
            let mut o = options(rx.url("/split"));
            o.max_batch_bytes = line * 3 + 2;
            o
        })
        .unwrap();
        again_sink.deliver(b).await.unwrap();
        let mut replay = Vec::new();
        for _ in 0..4 {
            replay.push(rx.next().await);
        }
        assert!(rx.drain().is_empty());
        let replay_keys: Vec<_> = replay.iter().map(|r| r.key().to_owned()).collect();
        assert_eq!(replay_keys, keys);
        for (a, b) in first.iter().zip(&replay) {
            assert_eq!(a.body, b.body);
        }
        rx.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn array_split_respects_the_limit_and_a_big_change_goes_alone() {
    bounded(async {
        let mut rx = Receiver::start().await;
        let mut msgs: Vec<_> = (1..=5).map(|n| msg(n, "t", "insert")).collect();
        msgs[2].payload = Bytes::from(format!(r#"{{"big":"{}"}}"#, "x".repeat(1000)));
        let small = msgs[0].payload.len();
        let mut opts = options(rx.url("/a"));
        opts.batching = HttpBatching::Array;
        // Two small ones per array: '[' + a + ',' + b + ']'.
        opts.max_batch_bytes = 2 * small + 3;
        let mut sink = HttpSink::new(opts).unwrap();
        sink.deliver(batch(1, msgs.clone())).await.unwrap();
        let got = rx.drain();
        let keys: Vec<_> = got.iter().map(|r| r.key().to_owned()).collect();
        assert_eq!(
            keys,
            [
                format!("{}..{}", id(1), id(2)),
                id(3),
                format!("{}..{}", id(4), id(5))
            ]
        );
        assert_eq!(got[1].body, [b"[", &msgs[2].payload[..], b"]"].concat());
        for r in &got {
            let v = std::str::from_utf8(&r.body).unwrap();
            assert!(v.starts_with('[') && v.ends_with(']'), "{v}");
        }
        rx.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn many_ids_fall_back_to_first_and_last() {
    bounded(async {
        let mut rx = Receiver::start().await;
        let mut sink = HttpSink::new(options(rx.url("/"))).unwrap();
        let msgs: Vec<_> = (1..=600).map(|n| msg(n, "t", "insert")).collect();
        sink.deliver(batch(1, msgs)).await.unwrap();
        let r = rx.next().await;
        assert_eq!(r.header("cdc-change-ids"), None, "over 8 KB of ids");
        assert_eq!(r.header("cdc-first-id"), Some(id(1).as_str()));
        assert_eq!(r.header("cdc-last-id"), Some(id(600).as_str()));
        assert_eq!(r.header("cdc-count"), Some("600"));
        rx.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_retry_budget_gives_up() {
    bounded(async {
        let mut rx = Receiver::start().await;
        rx.script((0..10).map(|_| status(500)));
        let mut opts = options(rx.url("/"));
        opts.max_retries = Some(2);
        let mut sink = HttpSink::new(opts).unwrap();
        let err = sink
            .deliver(batch(1, vec![msg(1, "t", "insert")]))
            .await
            .unwrap_err();
        assert!(matches!(err, SinkError::Other { .. }), "{err:?}");
        assert!(err.to_string().contains("500"), "{err}");
        for _ in 0..3 {
            rx.next().await;
        }
        assert!(rx.drain().is_empty(), "one attempt and two retries");
        rx.shutdown().await;

        // Nobody listening: connect errors, then Connect once the budget is spent.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut opts = options(format!("http://127.0.0.1:{port}/"));
        opts.max_retries = Some(1);
        let mut sink = HttpSink::new(opts).unwrap();
        let err = sink
            .deliver(batch(1, vec![msg(1, "t", "insert")]))
            .await
            .unwrap_err();
        assert!(matches!(err, SinkError::Connect { .. }), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn bad_options_are_refused() {
    let mut o = options("http://127.0.0.1:1/{table}".to_owned());
    assert!(
        HttpSink::new(o.clone()).is_err(),
        "templates need batching = none"
    );
    o.batching = HttpBatching::None;
    assert!(HttpSink::new(o.clone()).is_ok());
    let o = options("ftp://127.0.0.1/".to_owned());
    assert!(HttpSink::new(o).is_err());
    let mut o = options("http://127.0.0.1:1/".to_owned());
    o.headers = vec![("X-Key".into(), "line\nbreak-secret".into())];
    let err = HttpSink::new(o).unwrap_err().to_string();
    assert!(err.contains("X-Key") && !err.contains("secret"), "{err}");
}

// ---------------------------------------------------------------------------------------
// TLS

struct Pki {
    ca_pem: String,
    server: rustls::ServerConfig,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "cdc-sinks test CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server,
    }
}

#[tokio::test]
async fn https_with_an_extra_ca() {
    bounded(async {
        let pki = pki();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server));
        let mut rx = Receiver::start_with(Some(acceptor)).await;
        let url = format!("https://{}/secure", rx.addr);
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &pki.ca_pem).unwrap();

        // Trusted through ca_file.
        let mut opts = options(url.clone());
        opts.ca_file = Some(ca_file);
        let mut sink = HttpSink::new(opts).unwrap();
        let msgs = vec![msg(1, "t", "insert")];
        sink.deliver(batch(1, msgs.clone())).await.unwrap();
        let r = rx.next().await;
        assert_eq!(r.path, "/secure");
        assert_eq!(r.body, ndjson(&msgs));

        // Without it the certificate is not trusted: nothing is delivered.
        let mut opts = options(url.clone());
        opts.max_retries = Some(0);
        let mut sink = HttpSink::new(opts).unwrap();
        let err = sink.deliver(batch(2, msgs.clone())).await.unwrap_err();
        assert!(matches!(err, SinkError::Connect { .. }), "{err:?}");
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{err}"
        );

        // Unless verification is explicitly turned off.
        let mut opts = options(url);
        opts.danger_accept_invalid_certs = true;
        let mut sink = HttpSink::new(opts).unwrap();
        sink.deliver(batch(3, msgs)).await.unwrap();
        assert_eq!(rx.next().await.path, "/secure");
        assert!(rx.drain().is_empty());
        rx.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_missing_ca_file_is_an_error() {
    let mut opts = options("https://127.0.0.1:1/".to_owned());
    opts.ca_file = Some("/nonexistent/ca.pem".into());
    let err = HttpSink::new(opts).unwrap_err().to_string();
    assert!(err.contains("ca_file"), "{err}");
}
