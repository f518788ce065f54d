//! World `transform-batch` (`wit/batch.wit`) on a real slot: the batch stays in the host
//! and the guest reads and edits it through calls. Every edit (set, discard, route,
//! headers), and a failed call leaves the batch exactly as it came in. (The batch-world
//! masks of every language print what the records-world ones print:
//! `transforms::mask_columns_in_every_language`.)

use serde_json::{json, Value as Json};

use crate::common::*;
use crate::transforms::{guest, transform, wait_failure, Case};
use cdc_test_harness::http_receiver::Receiver;

const LIMITS: &str = "timeout_ms = 5000\nmemory_mb = 256";

/// Every edit of the batch world on a real slot (`guests/rust/batch-edits`): deletes
/// discarded (and still confirmed), a route and two headers per change, a text column
/// upper-cased in both rows, ids kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_world_edits_route_and_discard_on_a_real_slot() {
    let body = transform(
        "edits",
        &guest("rust", "batch-edits"),
        LIMITS,
        &[("upper", "note")],
    );
    let case = Case::users("txb_edits", &body).await;
    let (db, mut host) = (&case.db, case.start().await);
    db.exec(
        "ALTER TABLE users REPLICA IDENTITY FULL;
         INSERT INTO users VALUES (1, 'a@x', '555', 'first'), (2, NULL, NULL, NULL);
         UPDATE users SET note = 'second' WHERE id = 1;
         DELETE FROM users WHERE id = 2;
         INSERT INTO other VALUES (7, 'note');",
    )
    .await;
    let out = wait_json(&mut host, 4).await;
    case.wait_confirmed_to_now().await;
    stop_clean(&mut host).await;
    let ops: Vec<&str> = out.iter().map(|c| c["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["insert", "insert", "update", "insert"], "{out:?}");
    assert_eq!(out[0]["after"]["note"], "FIRST");
    assert_eq!(out[1]["after"]["note"], Json::Null);
    assert_eq!(out[2]["before"]["note"], "FIRST");
    assert_eq!(out[2]["after"]["note"], "SECOND");
    assert_eq!(out[2]["after"]["email"], "a@x");
    assert_eq!(
        out[3]["after"],
        json!({"id": 7, "v": "note"}),
        "no `note` column there"
    );
    for (c, route) in out.iter().zip([
        "cdc.users.insert",
        "cdc.users.insert",
        "cdc.users.update",
        "cdc.other.insert",
    ]) {
        assert_eq!(c["route"], route, "{c}");
        assert_eq!(c["headers"]["x-id"], c["id"], "{c}");
        assert_eq!(c["headers"]["x-table"], c["table"], "{c}");
    }
}

/// A call that fails after editing: the dead-letter sink gets the batch as it came from
/// Postgres (none of the edits), an index out of range names itself in the log, and an
/// invalid value the guest passes on as its error stops the pipeline with the host's
/// message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_call_leaves_the_batch_as_it_came() {
    // 1. on_error = "dead-letter", the module returns an error after its edits.
    let mut dlq = Receiver::start().await;
    let mut body = transform(
        "edits",
        &guest("rust", "batch-edits"),
        "on_error = \"dead-letter\"\ndead_letter_sink = \"dlq\"",
        &[("upper", "email"), ("fail", "error")],
    );
    body.push_str(&format!(
        "[[sinks]]\nname = \"out\"\ntype = \"stdout\"\n[[sinks]]\nname = \"dlq\"\ntype = \"http\"\nurl = \"{}\"\nbatch = \"ndjson\"\n",
        dlq.url("/dlq")
    ));
    let case = Case::users("txb_dlq", &body).await;
    let (db, mut host) = (&case.db, case.start().await);
    db.exec("INSERT INTO users VALUES (1, 'a@x', '1', 'n'); DELETE FROM users WHERE id = 1")
        .await;
    let dead: Vec<Json> = String::from_utf8(dlq.next().await.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    case.wait_confirmed_to_now().await;
    stop_clean(&mut host).await;
    assert_eq!(dead.len(), 2, "the discarded delete is there too: {dead:?}");
    assert_eq!(dead[0]["after"]["email"], "a@x", "not upper-cased");
    assert!(
        dead[0].get("route").is_none() && dead[0].get("headers").is_none(),
        "{}",
        dead[0]
    );
    assert_eq!(dead[1]["op"], "delete");
    assert!(host.stdout_lines().is_empty());
    assert!(host.stderr().contains("batch-edits: failing on purpose"));

    // 2. on_error = "skip", the module reads past the end of the batch: a trap naming it.
    let body = transform(
        "edits",
        &guest("rust", "batch-edits"),
        "on_error = \"skip\"",
        &[("fail", "index")],
    );
    let case = Case::users("txb_index", &body).await;
    let (db, mut host) = (&case.db, case.start().await);
    db.exec("INSERT INTO users VALUES (1, 'a@x', '1', 'n'), (2, 'b@x', '2', 'n')")
        .await;
    host.wait_for_stderr("batch skipped", WAIT).await.unwrap();
    case.wait_confirmed_to_now().await;
    stop_clean(&mut host).await;
    let log = host.stderr();
    assert!(
        log.contains("change index 2 is out of range (the batch holds 2)"),
        "{log}"
    );

    // 3. on_error = "fail", an invalid numeric: the host's message reaches the log.
    let body = transform(
        "edits",
        &guest("rust", "batch-edits"),
        "",
        &[("fail", "numeric")],
    );
    let case = Case::users("txb_numeric", &body).await;
    let (db, mut host) = (&case.db, case.start().await);
    db.exec("INSERT INTO users VALUES (1, 'a@x', '1', 'n')")
        .await;
    let err = wait_failure(&mut host).await;
    assert!(err.contains("invalid numeric \"12abc\""), "{err}");
    assert!(host.stdout_lines().is_empty());
}
