//! Exercises the integration-test harness itself (no cdc-host logic).

use std::process::Command;
use std::time::Duration;

use cdc_test_harness::*;

async fn show(client: &tokio_postgres::Client, setting: &str) -> String {
    client
        .query_one(&format!("SHOW {setting}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn server_settings_and_fresh_dbs() {
    let s = server();
    assert!(s.port() > 0);
    let a = s.fresh_db("smoke a").await;
    let b = s.fresh_db("smoke-b").await;
    assert_ne!(a.name, b.name);
    assert!(a.dsn().starts_with("postgres://postgres@127.0.0.1:"));
    assert!(a.dsn().ends_with(&format!("/{}?sslmode=disable", a.name)));

    let ca = a.client().await;
    assert_eq!(show(&ca, "wal_level").await, "logical");
    assert_eq!(show(&ca, "max_replication_slots").await, "100");
    assert_eq!(show(&ca, "max_wal_senders").await, "100");
    // A test holds at most a few slots and walsenders at once (the held-slot tests: two
    // hosts, one slot): the shared server must have room for every test thread doing so.
    let threads: usize = std::env::var("RUST_TEST_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    assert!(
        threads * 4 <= 100,
        "{threads} test threads could hold more than 100 slots/walsenders of the shared server"
    );
    assert_eq!(show(&ca, "fsync").await, "off");
    assert_eq!(show(&ca, "synchronous_commit").await, "off");
    assert_eq!(show(&ca, "full_page_writes").await, "off");
    assert_eq!(show(&ca, "TimeZone").await, "UTC");
    assert_eq!(show(&ca, "listen_addresses").await, "127.0.0.1");
    assert_eq!(
        show(&ca, "unix_socket_directories").await,
        s.dir().display().to_string()
    );
    let db: String = ca
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(db, a.name);

    // The databases are independent.
    a.exec("CREATE TABLE t(id int primary key); INSERT INTO t VALUES (1), (2);")
        .await;
    let cb = b.client().await;
    let n: i64 = cb
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename = 't'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let n: i64 = ca
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    assert!(a.try_exec("SELECT * FROM no_such_table").await.is_err());
}

#[tokio::test]
async fn password_roles() {
    let db = server().fresh_db("auth").await;

    for (user, pw, prefix) in [
        (SCRAM_USER, SCRAM_PASSWORD, "SCRAM-SHA-256$"),
        (MD5_USER, MD5_PASSWORD, "md5"),
    ] {
        let c = try_connect(&db.dsn_for(user, pw))
            .await
            .unwrap_or_else(|e| panic!("{user} login: {}", pg_err(&e)));
        let who: String = c
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, user);

        let err = try_connect(&db.dsn_for(user, "wrong-password"))
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} logged in with a wrong password"));
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("28P01"),
            "{user}: expected invalid_password, got {}",
            pg_err(&err)
        );

        // Stored hash kind matches the intended auth method.
        let admin = db.client().await;
        let (repl, pw_hash): (bool, String) = {
            let r = admin
                .query_one(
                    "SELECT rolreplication, rolpassword FROM pg_authid WHERE rolname = $1",
                    &[&user],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert!(repl, "{user} must have REPLICATION");
        assert!(
            pw_hash.starts_with(prefix),
            "{user} password hash {pw_hash:.16}..."
        );
    }

    // Method actually negotiated is as configured in pg_hba.conf.
    let admin = db.client().await;
    let hba: Vec<(String, String)> = admin
        .query("SELECT array_to_string(user_name, ','), auth_method FROM pg_hba_file_rules WHERE type = 'host'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        hba.contains(&(SCRAM_USER.to_string(), "scram-sha-256".to_string())),
        "{hba:?}"
    );
    assert!(
        hba.contains(&(MD5_USER.to_string(), "md5".to_string())),
        "{hba:?}"
    );

    // cdc_norepl: logs in (trust) but has no REPLICATION.
    let c = try_connect(&db.dsn_for(NOREPL_USER, ""))
        .await
        .expect("cdc_norepl login");
    let repl: bool = c
        .query_one(
            "SELECT rolreplication FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!repl);
}

/// Replication (walsender) connections through psql: allowed for the
/// REPLICATION roles, refused for cdc_norepl.
#[tokio::test]
async fn walsender_connections() {
    let s = server();
    let db = s.fresh_db("walsender").await;
    let run = |user: &str, pw: &str| {
        Command::new(s.bin_dir().join("psql"))
            .arg(format!(
                "host=127.0.0.1 port={} dbname={} user={user} replication=database",
                s.port(),
                db.name
            ))
            .args(["-X", "-A", "-t", "-c", "IDENTIFY_SYSTEM"])
            .env("PGPASSWORD", pw)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .unwrap()
    };
    for (user, pw) in [
        (SUPERUSER, ""),
        (SCRAM_USER, SCRAM_PASSWORD),
        (MD5_USER, MD5_PASSWORD),
    ] {
        let out = run(user, pw);
        assert!(
            out.status.success(),
            "{user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&db.name),
            "{user}"
        );
    }
    let out = run(NOREPL_USER, "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.to_lowercase().contains("replication"),
        "unexpected error: {err}"
    );
}

#[tokio::test]
async fn slots_lsns_and_db_drop() {
    let s = server();
    let db = s.fresh_db("slots").await;
    let name = db.name.clone();
    db.exec("CREATE TABLE t(id int primary key, v text); CREATE PUBLICATION p FOR TABLE t;")
        .await;
    let c = db.client().await;
    assert_eq!(confirmed_flush_lsn(&c, "smoke_slot").await, None);
    c.execute(
        "SELECT pg_create_logical_replication_slot('smoke_slot', 'pgoutput')",
        &[],
    )
    .await
    .unwrap();
    let start = confirmed_flush_lsn(&c, "smoke_slot")
        .await
        .expect("slot has confirmed_flush_lsn");

    // Durable commit, so the slot can be advanced up to its end right away.
    db.exec(
        "SET synchronous_commit = on; INSERT INTO t SELECT g, 'x' FROM generate_series(1, 100) g",
    )
    .await;
    let end = current_wal_lsn(&c).await;
    let e = wait_for_confirmed_flush(&c, "smoke_slot", &end, Duration::from_millis(200)).await;
    assert!(e.is_err(), "nothing consumed yet");
    c.execute(
        "SELECT pg_replication_slot_advance('smoke_slot', pg_current_wal_lsn())",
        &[],
    )
    .await
    .unwrap();
    let reached = wait_for_confirmed_flush(&c, "smoke_slot", &end, Duration::from_secs(10))
        .await
        .unwrap();
    assert_ne!(reached, start);

    // An *active* slot on the database too: a walsender streaming it.
    let mut recv = std::process::Command::new(s.bin_dir().join("pg_recvlogical"))
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "--slot",
            "smoke_slot",
            "--start",
            "-f",
            "/dev/null",
        ])
        .args(["-o", "proto_version=1", "-o", "publication_names=p"])
        .arg("-p")
        .arg(s.port().to_string())
        .arg("-d")
        .arg(&name)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let active: bool = c
            .query_one(
                "SELECT active FROM pg_replication_slots WHERE slot_name = 'smoke_slot'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if active {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pg_recvlogical never attached"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(c);

    // Dropping the TestDb removes the active slot and the database.
    drop(db);
    let admin = s.client("postgres").await;
    let slots: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'smoke_slot'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0);
    let dbs: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dbs, 0);
    // pg_recvlogical was disconnected (it may retry; we stop it either way).
    let _ = recv.kill();
    let _ = recv.wait();
}

#[test]
fn config_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(
        dir.path(),
        "postgres://postgres@127.0.0.1:5432/x?sslmode=disable",
        "slot_\"q\"",
        "pub",
        "create_slot = false",
    );
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.starts_with("[source]\n"), "{text}");
    let v: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(
        v["source"]["dsn"].as_str(),
        Some("postgres://postgres@127.0.0.1:5432/x?sslmode=disable")
    );
    assert_eq!(v["source"]["slot"].as_str(), Some("slot_\"q\""));
    assert_eq!(v["source"]["publication"].as_str(), Some("pub"));
    assert_eq!(v["source"]["create_slot"].as_bool(), Some(false));
    let sinks = v["sinks"].as_array().unwrap();
    assert_eq!(sinks.len(), 1);
    assert_eq!(sinks[0]["type"].as_str(), Some("stdout"));
    assert_eq!(sinks[0]["format"].as_str(), Some("json"));
}

/// HostProcess mechanics with a stand-in script taking `run <config>`.
#[tokio::test]
async fn host_process_helpers() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "postgres://x", "s", "p", "");
    let fake = dir.path().join("fake-host");
    std::fs::write(
        &fake,
        "#!/bin/sh\n\
         [ \"$1\" = run ] && [ -f \"$2\" ] || { echo bad args >&2; exit 2; }\n\
         i=0; while [ $i -lt 3 ]; do echo \"{\\\"i\\\":$i}\"; i=$((i+1)); done\n\
         echo streaming >&2\n\
         exec sleep 60\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();

    // SIGTERM path.
    let mut h = HostProcess::spawn(&fake, &cfg).unwrap();
    let lines = h.wait_for_lines(3, Duration::from_secs(10)).await.unwrap();
    assert_eq!(lines, vec![r#"{"i":0}"#, r#"{"i":1}"#, r#"{"i":2}"#]);
    assert_eq!(h.stdout_json()[2]["i"], 2);
    h.wait_for_stderr("streaming", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(h
        .wait_for_lines(4, Duration::from_millis(100))
        .await
        .is_err());
    assert!(
        h.wait_exit(Duration::from_millis(50)).await.is_err(),
        "still running"
    );
    h.sigterm().unwrap();
    let st = h.wait_exit(Duration::from_secs(10)).await.unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(15));
    h.sigterm().unwrap(); // no-op once exited

    // SIGKILL path.
    let mut h = HostProcess::spawn(&fake, &cfg).unwrap();
    h.wait_for_lines(3, Duration::from_secs(10)).await.unwrap();
    h.kill9().unwrap();
    assert_eq!(
        h.wait_exit(Duration::from_secs(10)).await.unwrap().signal(),
        Some(9)
    );

    // Early exit is reported promptly, not after the timeout.
    let mut h = HostProcess::spawn_with(&fake, &[std::ffi::OsStr::new("nope")], &[]).unwrap();
    let t = std::time::Instant::now();
    let err = h
        .wait_for_lines(1, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(format!("{err}").contains("bad args"), "{err}");

    // Drop kills a running process.
    let h = HostProcess::spawn(&fake, &cfg).unwrap();
    let pid = h.pid();
    drop(h);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "pid {pid} survived drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// A private server: restart keeps the port; drop stops it and removes its dir.
#[tokio::test]
async fn private_server_restart_and_drop() {
    let s = PgServer::start().unwrap();
    let dir = s.dir().to_path_buf();
    let pid1 = s.pid().unwrap();
    assert!(s.major() >= 10, "major {}", s.major());
    let c = s.client("postgres").await;
    c.batch_execute("CREATE TABLE keep(x int); INSERT INTO keep VALUES (7)")
        .await
        .unwrap();
    drop(c);

    s.restart().unwrap();
    let pid2 = s.pid().unwrap();
    assert_ne!(pid1, pid2);
    assert!(!alive(pid1));
    let c = s.client("postgres").await;
    let x: i32 = c.query_one("SELECT x FROM keep", &[]).await.unwrap().get(0);
    assert_eq!(x, 7);
    drop(c);

    drop(s);
    assert!(!alive(pid2), "postmaster survived drop");
    assert!(!dir.exists(), "{} left behind", dir.display());
}
