//! `binary = true`: values arrive in the binary send format and must come out exactly as
//! in text mode. A text host and a binary host read the same publication; their lines must
//! be identical, and match `to_jsonb` value for value — composites (nested, with domains,
//! a dropped attribute), hstore and the types kept as text whose text is rebuilt from the
//! send format (inet/cidr, point, bit strings, macaddr, xml, citext, ltree, …) included.
//! Types with no binary decoder (money, ranges, tsvector, pg_lsn) are refused at start with
//! one line listing them.

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

/// Many values of each type kept as text that binary mode decodes (IPv6 forms, float edge
/// cases in points, bit strings of every length mod 8, …): the binary host prints exactly
/// what the text host prints, and both are `to_jsonb`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_like_types_decode_from_binary_exactly_as_their_output_functions() {
    let db = db_with(
        "binary_text_like",
        "CREATE EXTENSION citext; CREATE EXTENSION ltree;
         CREATE TABLE tl (id int PRIMARY KEY, ip inet, net cidr, pt point, bits bit varying,
           b8 bit(8), mac macaddr, mac8 macaddr8, x xml, ci citext, lt ltree, o oid, x8 xid8,
           t tid, jp jsonpath, a_ip inet[], a_pt point[], a_ci citext[], a_lt ltree[])",
        "CREATE PUBLICATION p FOR TABLE tl",
    )
    .await;
    let (_d1, text_cfg) = config(&db.dsn(), "s_tl_text", "p", "");
    let (_d2, bin_cfg) = config(&db.dsn(), "s_tl_bin", "p", "binary = true\n");
    let mut text = start_host(&db, &text_cfg, "s_tl_text").await;
    let mut bin = start_host(&db, &bin_cfg, "s_tl_bin").await;
    // Hand-picked edge cases, then generated ones.
    db.exec(
        r#"INSERT INTO tl VALUES
         (1, '::', '::/0', '(0,-0)', B'', B'00000000', '00:00:00:00:00:00', '00:00:00:00:00:00:00:00',
          '<?xml version="1.0"?><a/>', '', 'a', 0, '0', '(0,0)', '$', '{}', '{}', '{}', '{}'),
         (2, '::ffff:1.2.3.4/120', '::ffff:1.2.3.0/120', '(1e20,1e-5)', B'1', B'11111111',
          'ff:ff:ff:ff:ff:ff', 'ff:ff:ff:ff:ff:ff:ff:ff', '<a b="c">x &amp; y</a>', 'Ünï Cödé',
          'Top.Science.Astronomy', 4294967295, '18446744073709551615', '(4294967295,65535)',
          '$.a[*] ? (@ > 2)', '{10.0.0.1,NULL,::1}', '{"(1,2)",NULL}', '{A,"b c",NULL}', '{a.b,c}'),
         (3, '::1.2.3.4', '2001:db8::/32', '(NaN,Infinity)', B'101', B'10101010', '08:00:2b:01:02:03',
          '08:00:2b:01:02:03:04:05', 'text only', 'x', 'a.b.c', 1, '1', '(1,1)', 'strict $.x', NULL, NULL, NULL, NULL),
         (4, '1:0:0:1:0:0:0:1/64', '10.0.0.0/8', '(-Infinity,1.7976931348623157e308)', B'1111111101',
          B'00000001', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
         (5, '0.0.0.0/0', '192.168.0.0/16', '(123456789012345,0.0001)', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
         INSERT INTO tl (id, ip, net, pt, bits, b8, mac, o, t)
           SELECT 100 + g,
             -- IPv6 with zero runs in every position and length, and IPv4 with every mask
             CASE WHEN g % 2 = 0
               THEN (array_to_string(ARRAY(SELECT CASE WHEN (g >> w) & 1 = 1 THEN to_hex(g * 37 + w) ELSE '0' END
                                           FROM generate_series(0, 7) w), ':') || '/' || (g % 129))::inet
               ELSE ((g % 256) || '.' || (g * 7 % 256) || '.0.' || (g * 13 % 256) || '/' || (g % 33))::inet END,
             CASE WHEN g % 2 = 0 THEN set_masklen(('2001:db8::' || to_hex(g))::inet, 128)::cidr
               ELSE network(((g % 256) || '.1.2.3/' || (g % 33))::inet)::cidr END,
             point(g * pi() * 10 ^ (g % 40 - 20), -g / 7.0),
             substring(B'1011001110001111000011111' FROM 1 FOR g % 25),
             (g % 256)::bit(8),
             ('08:00:2b:' || lpad(to_hex(g % 256), 2, '0') || ':02:03')::macaddr,
             g::bigint * 16777259 % 4294967296,
             ('(' || g * 1000 || ',' || g % 65536 || ')')::tid
           FROM generate_series(1, 256) g"#,
    )
    .await;
    let n = 5 + 256;
    let from_bin = wait_json(&mut bin, n).await;
    let from_text = wait_json(&mut text, n).await;
    let (bin_lines, text_lines) = (bin.stdout_lines(), text.stdout_lines());
    assert_eq!(bin_lines.len(), n);
    for (i, (b, t)) in bin_lines.iter().zip(&text_lines).enumerate() {
        assert_eq!(b, t, "line {i}: binary and text mode differ");
    }
    assert_eq!(from_bin, from_text);
    let want = to_jsonb_rows(&db, "tl").await;
    assert_eq!(want.len(), n);
    for (got, want) in from_bin.iter().zip(&want) {
        assert_eq!(&got["after"], want, "row {}", want["id"]);
    }
    stop_clean(&mut bin).await;
    stop_clean(&mut text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_mode_refuses_columns_it_cannot_decode_in_one_line() {
    let db = db_with(
        "binary_refuse",
        &format!("{TYPES_DDL}; CREATE TABLE undecodable (id int PRIMARY KEY, m money, r int4range, tv tsvector, l pg_lsn)"),
        "CREATE PUBLICATION p FOR TABLE typed, undecodable",
    )
    .await;
    let (_d, cfg) = config(&db.dsn(), "s_bin_refuse", "p", "binary = true\n");
    let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
    let st = host.wait_exit(WAIT).await.unwrap();
    assert!(!st.success());
    let err = host.stderr();
    // Every column of `typed` decodes; these four do not.
    let want = "source.binary = true: cdc-host has no binary decoder for public.undecodable.m (money), public.undecodable.r (int4range), public.undecodable.tv (tsvector), public.undecodable.l (pg_lsn); set binary = false";
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
