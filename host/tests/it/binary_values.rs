//! `binary = true`: values arrive in the binary send format and must come out exactly as
//! in text mode. A text host and a binary host read the same publication; their lines must
//! be identical, and match `to_jsonb` value for value — composites (nested, with domains,
//! a dropped attribute) and hstore included. Types kept as text (inet, point, bit varying,
//! xml, citext, ltree: no binary decoder) are refused at start with one line listing them.

use serde_json::Value as Json;

use crate::common::*;
use crate::fixtures::{BINARY_DECODED as DECODED, TYPES_DDL, TYPES_ROWS};
use cdc_test_harness::{self as harness, HostProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_values_print_exactly_as_text_values() {
    if harness::server().major() < 15 {
        eprintln!("column lists need Postgres 15");
        return;
    }
    let db = db_with(
        "binary_types",
        TYPES_DDL,
        &format!("CREATE PUBLICATION p FOR TABLE typed ({DECODED})"),
    )
    .await;
    let (_d1, text_cfg) = config(&db.dsn(), "s_bin_text", "p", "");
    let (_d2, bin_cfg) = config(&db.dsn(), "s_bin_bin", "p", "binary = true\n");
    let mut text = start_host(&db, &text_cfg, "s_bin_text").await;
    let mut bin = start_host(&db, &bin_cfg, "s_bin_bin").await;
    db.exec(TYPES_ROWS).await;
    db.exec("UPDATE typed SET i4 = i4 WHERE id = 1; DELETE FROM typed WHERE id = 2")
        .await;
    let from_bin = wait_json(&mut bin, 7).await;
    let from_text = wait_json(&mut text, 7).await;
    assert_eq!(from_bin.len(), 7);
    let (bin_lines, text_lines) = (bin.stdout_lines(), text.stdout_lines());
    for (i, (b, t)) in bin_lines.iter().zip(&text_lines).enumerate() {
        assert_eq!(b, t, "line {i}: binary and text mode differ");
    }
    assert_eq!(from_bin, from_text);
    // And both are to_jsonb (the rows still there: 1, 3, 4, 5), published columns only.
    let want = to_jsonb_rows(&db, "typed").await;
    let published: Vec<&str> = DECODED.split(", ").collect();
    let inserts: Vec<&Json> = from_bin
        .iter()
        .filter(|c| c["op"] == "insert" && c["after"]["id"] != 2)
        .collect();
    assert_eq!(inserts.len(), want.len());
    for (got, want) in inserts.iter().zip(&want) {
        let got = got["after"].as_object().unwrap();
        for k in &published {
            if *k == "js" {
                continue; // json keeps the text as written; the lines above compare it
            }
            assert_eq!(got[*k], want[*k], "row {} column {k}", want["id"]);
        }
        assert_eq!(got.len(), published.len());
    }
    stop_clean(&mut bin).await;
    stop_clean(&mut text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_mode_refuses_columns_it_cannot_decode_in_one_line() {
    let db = db_with(
        "binary_refuse",
        TYPES_DDL,
        "CREATE PUBLICATION p FOR TABLE typed",
    )
    .await;
    let (_d, cfg) = config(&db.dsn(), "s_bin_refuse", "p", "binary = true\n");
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    let st = host.wait_exit(WAIT).await.unwrap();
    assert!(!st.success());
    let err = host.stderr();
    let want = "source.binary = true: cdc-host has no binary decoder for public.typed.ip (inet), public.typed.pt (point), public.typed.bits (bit varying), public.typed.x (xml), public.typed.ci (citext), public.typed.lt (ltree); set binary = false";
    assert!(err.contains(want), "{}", host.stderr_tail(10));
    // Refused before the slot was created.
    let client = db.client().await;
    let slots = client
        .query(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = 's_bin_refuse'",
            &[],
        )
        .await
        .unwrap();
    assert!(slots.is_empty());
}
