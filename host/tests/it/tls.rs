//! TLS with libpq's sslmode semantics, against a private Postgres with a test CA.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::common::*;
use cdc_test_harness as harness;
use cdc_test_harness::{HostProcess, PgServer};

struct Pki {
    ca_pem: String,
    other_ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A CA, a server certificate for `localhost` only (not 127.0.0.1), and an unrelated CA.
fn pki() -> Pki {
    let ca = ca("cdc-host test CA");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        other_ca_pem: ca_pem_of(&self::ca("someone else")),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn ca_pem_of(ca: &CertifiedIssuer<'static, KeyPair>) -> String {
    ca.pem()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_behave_like_libpq() {
    let pki = pki();
    let server = PgServer::start().unwrap();
    server.enable_tls(&pki.cert_pem, &pki.key_pem).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&other_ca, &pki.other_ca_pem).unwrap();
    let db = server.fresh_db("tls").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
        .await;
    let client = db.client().await;

    let dsn = |host: &str, query: &str| {
        format!(
            "postgres://postgres@{host}:{}/{}?{query}",
            db.port(),
            db.name
        )
    };
    let ok_cases = [
        ("s_require", dsn("127.0.0.1", "sslmode=require")),
        ("s_prefer", dsn("127.0.0.1", "sslmode=prefer")),
        (
            "s_verify_ca",
            dsn(
                "127.0.0.1",
                &format!("sslmode=verify-ca&sslrootcert={}", ca.display()),
            ),
        ),
        (
            "s_verify_full",
            dsn(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
            ),
        ),
    ];
    for (i, (slot, dsn)) in ok_cases.iter().enumerate() {
        let (_d, cfg) = config(dsn, slot, "p", "");
        let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
        wait_slot_active(&db, slot, &mut host).await;
        // The replication connection really is encrypted.
        let ssl: bool = {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let rows = client
                    .query(
                        "SELECT s.ssl FROM pg_replication_slots sl JOIN pg_stat_ssl s ON s.pid = sl.active_pid WHERE sl.slot_name = $1",
                        &[slot],
                    )
                    .await
                    .unwrap();
                if let Some(r) = rows.first() {
                    break r.get(0);
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{slot}: no walsender in pg_stat_ssl"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        assert!(ssl, "{slot}: replication connection is not TLS");
        db.exec(&format!("INSERT INTO t VALUES ({i})")).await;
        let out = wait_json(&mut host, 1).await;
        assert_eq!(out[0]["after"]["id"], i as i64, "{slot}");
        stop_clean(&mut host).await;
    }

    // verify-full checks the name: the certificate is for localhost, not 127.0.0.1.
    let (_d, cfg) = config(
        &dsn(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        ),
        "s_bad",
        "p",
        "",
    );
    let err = failing(&cfg).await;
    assert!(
        err.contains("TLS handshake with 127.0.0.1") && err.contains("not valid for name"),
        "{err}"
    );
    // verify-ca checks the chain.
    let (_d, cfg) = config(
        &dsn(
            "localhost",
            &format!("sslmode=verify-ca&sslrootcert={}", other_ca.display()),
        ),
        "s_bad",
        "p",
        "",
    );
    let err = failing(&cfg).await;
    assert!(
        err.contains("TLS handshake with localhost") && err.contains("invalid peer certificate"),
        "{err}"
    );
    // A missing CA file is a clear error.
    let (_d, cfg) = config(
        &dsn(
            "localhost",
            "sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
        ),
        "s_bad",
        "p",
        "",
    );
    let err = failing(&cfg).await;
    assert!(
        err.contains("cannot read sslrootcert /nonexistent/ca.pem"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_fails_clearly_when_the_server_has_no_tls() {
    let db = harness::server().fresh_db("notls").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
        .await;
    let dsn = format!(
        "postgres://postgres@127.0.0.1:{}/{}?sslmode=require",
        db.port(),
        db.name
    );
    let (_d, cfg) = config(&dsn, "s_notls", "p", "");
    let err = failing(&cfg).await;
    assert!(err.contains("does not support TLS"), "{err}");
}

async fn failing(cfg: &std::path::Path) -> String {
    let mut host = HostProcess::spawn(BIN, cfg).unwrap();
    let st = host.wait_exit(Duration::from_secs(60)).await.unwrap();
    assert!(!st.success());
    host.stderr()
}

/// Whether the walsender of `slot` runs over TLS (waits for it to appear).
async fn walsender_ssl(db: &harness::TestDb, slot: &str) -> bool {
    let client = db.client().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = client
            .query(
                "SELECT s.ssl FROM pg_replication_slots sl JOIN pg_stat_ssl s ON s.pid = sl.active_pid WHERE sl.slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap();
        if let Some(r) = rows.first() {
            return r.get(0);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{slot}: no walsender in pg_stat_ssl"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `prefer` (the default) and `allow` against a server without TLS: plain connections that
/// stream (libpq falls back the same way); `allow` against a server with TLS streams too.
/// `sslrootcert=system` verifies against the system store: a certificate from a private CA
/// is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_and_allow_without_server_tls_and_system_roots() {
    let plain = harness::server().fresh_db("notls_ok").await;
    plain
        .exec("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
        .await;
    for (i, mode) in ["prefer", "allow"].into_iter().enumerate() {
        let slot = format!("s_notls_{mode}");
        let dsn = format!(
            "postgres://postgres@127.0.0.1:{}/{}?sslmode={mode}",
            plain.port(),
            plain.name
        );
        let (_d, cfg) = config(&dsn, &slot, "p", "");
        let mut host = start_host(&plain, &cfg, &slot).await;
        assert!(
            !walsender_ssl(&plain, &slot).await,
            "{mode}: plain expected"
        );
        plain.exec(&format!("INSERT INTO t VALUES ({i})")).await;
        let out = wait_json(&mut host, 1).await;
        assert_eq!(out[0]["after"]["id"], i as i64, "{mode}");
        stop_clean(&mut host).await;
    }

    let pki = pki();
    let server = PgServer::start().unwrap();
    server.enable_tls(&pki.cert_pem, &pki.key_pem).unwrap();
    let db = server.fresh_db("tls_more").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
        .await;
    let dsn = |host: &str, query: &str| {
        format!(
            "postgres://postgres@{host}:{}/{}?{query}",
            db.port(),
            db.name
        )
    };
    let (_d, cfg) = config(&dsn("127.0.0.1", "sslmode=allow"), "s_allow_tls", "p", "");
    let mut host = start_host(&db, &cfg, "s_allow_tls").await;
    db.exec("INSERT INTO t VALUES (1)").await;
    assert_eq!(wait_json(&mut host, 1).await[0]["after"]["id"], 1);
    stop_clean(&mut host).await;

    let (_d, cfg) = config(
        &dsn("localhost", "sslmode=verify-full&sslrootcert=system"),
        "s_system",
        "p",
        "",
    );
    let err = failing(&cfg).await;
    assert!(
        err.contains("TLS handshake with localhost") && err.contains("invalid peer certificate"),
        "the private CA is not in the system store: {err}"
    );
}
