//! Schema changes while streaming: DDL between and inside transactions, and tables added to
//! or removed from the publication, all without a restart.

use serde_json::{json, Value as Json};

use crate::common::*;
use crate::transforms::guest;
use cdc_test_harness::HostProcess;

/// `(op, table, after)` of each change, for one comparison per test.
fn shapes(out: &[Json]) -> Vec<(String, String, Json)> {
    out.iter()
        .map(|c| {
            (
                c["op"].as_str().unwrap().to_owned(),
                c["table"].as_str().unwrap_or("").to_owned(),
                c["after"].clone(),
            )
        })
        .collect()
}

/// ADD/DROP/RENAME COLUMN, a type change, a renamed table, a table dropped and recreated
/// under the same name — between and inside transactions. Each change carries the shape it
/// was written with (pgoutput sends a Relation message before the first change after a
/// change of shape), nothing stops, and an identity transform sees and returns every shape
/// (its output is byte for byte the output without it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_mid_stream_each_change_has_the_shape_it_was_written_with() {
    let db = db_with(
        "ddl",
        "CREATE TABLE t (id int PRIMARY KEY, a text)",
        "CREATE PUBLICATION p FOR ALL TABLES",
    )
    .await;
    let (_d1, plain) = config(&db.dsn(), "s_ddl", "p", "");
    let cache = tempfile::tempdir().unwrap();
    let (_d2, with_identity) = config(
        &db.dsn(),
        "s_ddl_id",
        "p",
        &format!(
            "[pipeline]\nmodule_cache = \"{}\"\n[[transforms]]\nname = \"id\"\nmodule = \"{}\"\n",
            cache.path().display(),
            guest("rust", "identity").display()
        ),
    );
    let mut host = start_host(&db, &plain, "s_ddl").await;
    let mut identity = start_host(&db, &with_identity, "s_ddl_id").await;
    for sql in [
        "INSERT INTO t VALUES (1, 'a')",
        "ALTER TABLE t ADD COLUMN b int",
        "INSERT INTO t VALUES (2, 'b', 2)",
        // Inside one transaction: a change before the DDL keeps the old shape.
        "BEGIN; INSERT INTO t VALUES (3, 'c', 3); ALTER TABLE t DROP COLUMN a; INSERT INTO t VALUES (4, 4); COMMIT;",
        "ALTER TABLE t RENAME COLUMN b TO c",
        "INSERT INTO t VALUES (5, 5)",
        "ALTER TABLE t ALTER COLUMN c TYPE text USING c::text",
        "INSERT INTO t VALUES (6, 'six')",
        "UPDATE t SET c = 'x' WHERE id = 5",
        "ALTER TABLE t RENAME TO t_old",
        "INSERT INTO t_old VALUES (7, '7')",
        "DROP TABLE t_old",
        "CREATE TABLE t (id int PRIMARY KEY, z bool)",
        "INSERT INTO t VALUES (8, true)",
        "BEGIN; ALTER TABLE t ADD COLUMN n numeric; INSERT INTO t VALUES (9, false, 1.50); COMMIT;",
    ] {
        db.exec(sql).await;
    }
    let out = wait_json(&mut host, 10).await;
    let t = |s: &str| s.to_owned();
    let exact_150: Json = serde_json::from_str("1.50").unwrap();
    assert_eq!(
        shapes(&out),
        [
            (t("insert"), t("t"), json!({"id": 1, "a": "a"})),
            (t("insert"), t("t"), json!({"id": 2, "a": "b", "b": 2})),
            (t("insert"), t("t"), json!({"id": 3, "a": "c", "b": 3})),
            (t("insert"), t("t"), json!({"id": 4, "b": 4})),
            (t("insert"), t("t"), json!({"id": 5, "c": 5})),
            (t("insert"), t("t"), json!({"id": 6, "c": "six"})),
            (t("update"), t("t"), json!({"id": 5, "c": "x"})),
            (t("insert"), t("t_old"), json!({"id": 7, "c": "7"})),
            (t("insert"), t("t"), json!({"id": 8, "z": true})),
            (
                t("insert"),
                t("t"),
                json!({"id": 9, "z": false, "n": exact_150})
            ),
        ]
    );
    identity.wait_for_lines(10, WAIT).await.unwrap();
    stop_clean(&mut host).await;
    stop_clean(&mut identity).await;
    assert_eq!(identity.stdout_lines(), host.stdout_lines());
}

/// `ALTER TYPE … ADD/DROP ATTRIBUTE` on a composite a column holds: Postgres sends no new
/// Relation message, so the first value of the new shape does not fit the cached fields;
/// cdc-host reads the type again and goes on — each value the object `to_jsonb` made of it
/// when written, in text and in binary mode, in an array too. A change written before an
/// `ALTER TYPE` that cdc-host reads only afterwards (it was stopped) has fields the catalog
/// no longer knows: text mode delivers it as the composite's text with a warning, binary
/// mode stops with an error that says to switch to text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_altered_mid_stream_is_read_again() {
    let db = db_with(
        "alter_type",
        "CREATE TYPE pair AS (a int, b text);
         CREATE TABLE t (id int PRIMARY KEY, p pair, ps pair[])",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;
    let (_d1, text_cfg) = config(&db.dsn(), "s_alter_text", "p", "");
    let (_d2, bin_cfg) = config(&db.dsn(), "s_alter_bin", "p", "binary = true\n");
    let mut text = start_host(&db, &text_cfg, "s_alter_text").await;
    let mut bin = start_host(&db, &bin_cfg, "s_alter_bin").await;
    let steps = [
        (
            "",
            "INSERT INTO t VALUES (1, '(1,x)', ARRAY['(1,x)'::pair])",
        ),
        (
            "ALTER TYPE pair ADD ATTRIBUTE c numeric",
            "INSERT INTO t VALUES (2, '(2,y,2.50)', ARRAY['(2,y,2.50)'::pair])",
        ),
        (
            "ALTER TYPE pair DROP ATTRIBUTE a",
            "INSERT INTO t VALUES (3, '(z,3)', ARRAY['(z,3)'::pair])",
        ),
    ];
    // Each step only once both hosts delivered the one before (they keep up).
    for (n, (ddl, insert)) in steps.iter().enumerate() {
        if !ddl.is_empty() {
            db.exec(ddl).await;
        }
        db.exec(insert).await;
        wait_json(&mut text, n + 1).await;
        wait_json(&mut bin, n + 1).await;
    }
    let want = [
        r#"{"id": 1, "p": {"a": 1, "b": "x"}, "ps": [{"a": 1, "b": "x"}]}"#,
        r#"{"id": 2, "p": {"a": 2, "b": "y", "c": 2.50}, "ps": [{"a": 2, "b": "y", "c": 2.50}]}"#,
        r#"{"id": 3, "p": {"b": "z", "c": 3}, "ps": [{"b": "z", "c": 3}]}"#,
    ]
    .map(|s| serde_json::from_str::<Json>(s).unwrap());
    for host in [&mut text, &mut bin] {
        let out = wait_json(host, 3).await;
        let afters: Vec<&Json> = out.iter().map(|c| &c["after"]).collect();
        assert_eq!(afters, want.iter().collect::<Vec<_>>());
        assert!(host.stderr().contains("reading the composite types again"));
    }
    assert_eq!(to_jsonb_rows(&db, "t").await[2], want[2]);
    stop_clean(&mut text).await;
    stop_clean(&mut bin).await;

    // Stopped while a row is written and the type altered after it.
    db.exec("INSERT INTO t VALUES (4, '(w,4)', ARRAY['(w,4)'::pair])")
        .await;
    db.exec("ALTER TYPE pair ADD ATTRIBUTE d bool").await;
    db.exec("INSERT INTO t VALUES (5, '(v,5,t)', ARRAY['(v,5,t)'::pair])")
        .await;
    let mut text = start_host(&db, &text_cfg, "s_alter_text").await;
    let out = wait_json(&mut text, 2).await;
    let afters: Vec<&Json> = out.iter().map(|c| &c["after"]).collect();
    assert_eq!(
        afters,
        [
            &json!({"id": 4, "p": "(w,4)", "ps": ["(w,4)"]}),
            &json!({"id": 5, "p": {"b": "v", "c": 5, "d": true}, "ps": [{"b": "v", "c": 5, "d": true}]}),
        ]
    );
    assert!(text
        .stderr()
        .contains("delivering this row's composites as their text"));
    stop_clean(&mut text).await;
    let mut bin = HostProcess::spawn(BIN, &bin_cfg).unwrap();
    let st = bin.wait_exit(WAIT).await.unwrap();
    assert!(!st.success());
    assert!(
        bin.stderr().contains(
            "binary mode cannot deliver the value; set source.binary = false and restart"
        ),
        "{}",
        bin.stderr_tail(5)
    );
    assert!(bin.stdout_lines().is_empty());
}

/// ALTER PUBLICATION ADD TABLE while running: the table's changes flow from the next
/// transaction on, without a restart; DROP TABLE from the publication stops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_added_to_and_dropped_from_the_publication_while_running() {
    let db = db_with(
        "pubalter",
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE a",
    )
    .await;
    let (_dir, cfg) = config(&db.dsn(), "s_pubalter", "p", "");
    let mut host = start_host(&db, &cfg, "s_pubalter").await;
    for sql in [
        "INSERT INTO a VALUES (1)",
        "INSERT INTO b VALUES (1)", // b is not published yet
        "ALTER PUBLICATION p ADD TABLE b",
        "INSERT INTO b VALUES (2)",
        "INSERT INTO a VALUES (2)",
        "ALTER PUBLICATION p DROP TABLE a",
        "INSERT INTO a VALUES (3)", // a is no longer published
        "INSERT INTO b VALUES (3)",
    ] {
        db.exec(sql).await;
    }
    // b(3) is the last commit: once it is there, a(3) would have come before it.
    let out = wait_json(&mut host, 4).await;
    let got: Vec<(String, Json)> = out
        .iter()
        .map(|c| {
            (
                c["table"].as_str().unwrap().to_owned(),
                c["after"]["id"].clone(),
            )
        })
        .collect();
    let w = |t: &str, id: i32| (t.to_owned(), json!(id));
    assert_eq!(got, [w("a", 1), w("b", 2), w("a", 2), w("b", 3)]);
    let client = db.client().await;
    cdc_test_harness::wait_confirmed_to_now(&client, "s_pubalter", WAIT)
        .await
        .unwrap();
    stop_clean(&mut host).await;
    assert_eq!(host.stdout_lines().len(), 4, "{:?}", host.stdout_lines());
}

/// Stored generated columns (Postgres 18): a publication cdc-host creates with
/// `publish_generated_columns = true` publishes them, and their values arrive like any
/// column's, in the snapshot's reads too; on an older server the setting stops the start
/// with one clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_columns_arrive_on_18_and_are_refused_before() {
    let major = cdc_test_harness::server().major();
    let db = cdc_test_harness::server().fresh_db("gencols").await;
    db.exec(
        "CREATE TABLE g (id int PRIMARY KEY, a int, s int GENERATED ALWAYS AS (a * 2) STORED);
         INSERT INTO g (id, a) VALUES (1, 5);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pipeline.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\ndsn = \"{}\"\nslot = \"s_gencols\"\n[source.publication]\nname = \"pg\"\ncreate = true\ntables = [\"public.g\"]\npublish_generated_columns = true\n\n[[sinks]]\ntype = \"stdout\"\nformat = \"json\"\n",
            db.dsn()
        ),
    )
    .unwrap();
    if major < 18 {
        let mut host = cdc_test_harness::HostProcess::spawn(BIN, &cfg).unwrap();
        let st = host.wait_exit(WAIT).await.unwrap();
        assert!(!st.success());
        let err = host.stderr();
        assert!(
            err.contains(&format!(
                "publish_generated_columns = true needs PostgreSQL 18 or later, and this server is {major}"
            )),
            "{err}"
        );
        return;
    }
    let mut host = start_host(&db, &cfg, "s_gencols").await;
    // The initial snapshot's read first: a write during its copy could replace it.
    wait_json(&mut host, 1).await;
    db.exec("INSERT INTO g (id, a) VALUES (2, 7); UPDATE g SET a = 6 WHERE id = 1")
        .await;
    let out = wait_json(&mut host, 3).await;
    stop_clean(&mut host).await;
    let got: Vec<(&str, &Json)> = out
        .iter()
        .map(|c| (c["op"].as_str().unwrap(), &c["after"]))
        .collect();
    assert_eq!(
        got,
        [
            ("read", &json!({"id": 1, "a": 5, "s": 10})),
            ("insert", &json!({"id": 2, "a": 7, "s": 14})),
            ("update", &json!({"id": 1, "a": 6, "s": 12})),
        ]
    );
}
