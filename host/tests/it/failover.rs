//! Failover slots (PostgreSQL 17+): a primary and a physical standby on 127.0.0.1, the
//! standby promoted mid-stream while a writer runs and the old primary stopped; cdc-host,
//! given both hosts with `target_session_attrs=primary`, carries on from the slot the
//! standby synchronised. Before 17, `failover = true` is refused at start.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use cdc_test_harness::{self as harness, HostProcess, PgServer};

fn pipeline(dir: &std::path::Path, dsn: &str, slot: &str) -> std::path::PathBuf {
    let path = dir.join("pipeline.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\ndsn = \"{dsn}\"\nslot = \"{slot}\"\npublication = \"p\"\nfailover = true\nstatus_interval_secs = 1\n[source.snapshot]\nmode = \"never\"\n\n[[sinks]]\ntype = \"stdout\"\nformat = \"json\"\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoted_standby_continues_from_the_synchronised_slot() {
    let major = harness::server().major();
    let dir = tempfile::tempdir().unwrap();
    if major < 17 {
        let db = harness::server().fresh_db("failover_old").await;
        db.exec("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
            .await;
        let cfg = pipeline(dir.path(), &db.dsn(), "s_failover_old");
        let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
        let st = host.wait_exit(WAIT).await.unwrap();
        assert!(!st.success());
        let err = host.stderr();
        assert!(
            err.contains(&format!(
                "failover = true needs PostgreSQL 17 or later, and this server is {major}"
            )),
            "{err}"
        );
        return;
    }
    let primary = PgServer::start().unwrap();
    primary
        .psql(
            "postgres",
            "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t;",
        )
        .unwrap();
    let standby = PgServer::start_standby_of(
        &primary,
        "sb",
        "hot_standby_feedback = on\nsync_replication_slots = on\n",
    )
    .await
    .unwrap();
    // Set after the copy: the standby must not inherit it (a promoted server would wait
    // for a slot it does not have).
    primary
        .psql(
            "postgres",
            "ALTER SYSTEM SET synchronized_standby_slots = 'sb'; SELECT pg_reload_conf();",
        )
        .unwrap();
    let dsn = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres sslmode=disable target_session_attrs=primary",
        primary.port(),
        standby.port()
    );
    let cfg = pipeline(dir.path(), &dsn, "s_failover");
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    host.wait_for_stderr("replication started", WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", host.stderr_tail(30)));
    assert!(
        host.stderr()
            .contains("the primary waits for these standbys"),
        "{}",
        host.stderr_tail(30)
    );

    // The writer: one row per transaction, to whichever server is the primary.
    let stop = Arc::new(AtomicBool::new(false));
    let dsns = [primary.dsn("postgres"), standby.dsn("postgres")];
    let writer = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut id = 0i32;
            let mut target = 0usize;
            let mut client = None;
            while !stop.load(Ordering::Relaxed) {
                if client.is_none() {
                    client = harness::try_connect(&dsns[target]).await.ok();
                    if client.is_none() {
                        target = 1 - target;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
                let c = client.as_ref().unwrap();
                match c
                    .execute(
                        "INSERT INTO t VALUES ($1) ON CONFLICT DO NOTHING",
                        &[&(id + 1)],
                    )
                    .await
                {
                    Ok(_) => id += 1,
                    // The old primary is gone, or the standby is still read-only.
                    Err(_) => {
                        client = None;
                        target = 1 - target;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            id
        })
    };

    // Mid-stream: some changes delivered, and the standby's copy of the slot synchronised.
    host.wait_for_lines(300, WAIT).await.unwrap();
    let sb = standby.client("postgres").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let synced = sb
            .query_opt(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 's_failover' AND synced AND NOT temporary AND confirmed_flush_lsn IS NOT NULL",
                &[],
            )
            .await
            .unwrap();
        if synced.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never synchronised the slot:\n{}",
            standby.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(sb);
    let before_promotion = host.stdout_lines().len();
    primary.stop_postgres(true).unwrap();
    let promoted_at = Instant::now();
    standby.promote().await.unwrap();
    // Resumed: a change committed on the new primary arrives.
    let new_primary = standby.client("postgres").await;
    let max_id = || async {
        let n: Option<i32> = new_primary
            .query_one("SELECT max(id) FROM t", &[])
            .await
            .unwrap()
            .get(0);
        n.unwrap_or(0)
    };
    let at_promotion = max_id().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while max_id().await < at_promotion + 10 {
        assert!(
            Instant::now() < deadline,
            "the writer never wrote to the new primary"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_new = at_promotion + 1;
    let mut resumed_after = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let out = parse_lines(&host.stdout_lines());
        if out
            .iter()
            .any(|c| c["after"]["id"].as_i64() >= Some(first_new as i64))
        {
            resumed_after = Some(promoted_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resumed_after = resumed_after.unwrap_or_else(|| {
        panic!(
            "nothing delivered from the new primary:\n{}",
            host.stderr_tail(40)
        )
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();

    // Everything the new primary holds arrives; nothing else does.
    let truth: BTreeSet<i64> = new_primary
        .query("SELECT id::int8 FROM t", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    harness::wait_confirmed_to_now(&new_primary, "s_failover", Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", host.stderr_tail(40)));
    stop_clean(&mut host).await;
    let out = parse_lines(&host.stdout_lines());
    let mut ids_per_row: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for c in &out {
        assert_eq!(c["op"], "insert", "{c}");
        ids_per_row
            .entry(c["after"]["id"].as_i64().unwrap())
            .or_default()
            .insert(c["id"].as_str().unwrap().to_owned());
    }
    let delivered: BTreeSet<i64> = ids_per_row.keys().copied().collect();
    let lost: Vec<&i64> = truth.difference(&delivered).collect();
    let phantom: Vec<&i64> = delivered.difference(&truth).collect();
    assert!(lost.is_empty(), "rows never delivered: {lost:?}");
    assert!(
        phantom.is_empty(),
        "rows delivered that the new primary does not have: {phantom:?}"
    );
    // A replay is the same change: one change id per row.
    let changed: Vec<_> = ids_per_row
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .collect();
    assert!(changed.is_empty(), "replayed with another id: {changed:?}");
    let replays = out.len() - delivered.len();
    eprintln!(
        "failover figures: rows written {written}, kept by the new primary {}, delivered before the promotion {before_promotion}, after {}, replays {replays}, resumed {:.1} s after the promotion",
        truth.len(),
        out.len() - before_promotion,
        resumed_after.as_secs_f64()
    );
}
