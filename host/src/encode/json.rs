//! The native JSON format: one object per change, column values as `to_jsonb()` renders them.
//!
//! ```json
//! {"id":"00000000016B3748-00000000","op":"update","schema":"public","table":"orders",
//!  "before":{"id":1},"after":{"id":1,"status":"paid"},"lsn":"0/16B3700",
//!  "commit_lsn":"0/16B3748","xid":750,"commit_ts":"2026-11-21T10:00:00.123456+00:00"}
//! ```
//! Written straight into the output buffer: no intermediate `serde_json::Value`.

use std::cell::RefCell;
use std::io::Write;
use std::sync::Arc;

use crate::change::{Before, Change, Row, Table};
use crate::lsn::Lsn;
use crate::value::{write_json, write_json_str, Value};

/// Appends one change as a JSON object (no newline).
pub fn write_change(c: &Change, out: &mut Vec<u8>) {
    write_change_as(c, out, write_json)
}

/// [`write_change`] with row values rendered by `value` (the JSON transform world quotes
/// int8 and numeric, see [`crate::value::write_json_exact`]).
pub(crate) fn write_change_as(c: &Change, out: &mut Vec<u8>, value: fn(&Value, &mut Vec<u8>)) {
    out.extend_from_slice(b"{\"id\":\"");
    c.id().write_text(out);
    out.extend_from_slice(b"\",\"op\":\"");
    out.extend_from_slice(c.op.as_str().as_bytes());
    out.extend_from_slice(b"\",");
    match &c.table {
        Some(t) => with_names(t, |names| {
            out.extend_from_slice(&names.head);
            write_images_named(c, names, out, value);
        }),
        None => {
            out.extend_from_slice(b"\"schema\":null,\"table\":null,");
            write_images_named(c, &Names::NONE, out, value);
        }
    }
    write_positions(c, out);
    if let (Some(row), Some(t)) = (&c.after, &c.table) {
        write_unchanged_toast(t, row, out);
    }
    if let Some((cascade, restart_identity)) = c.truncate {
        let _ = write!(
            out,
            ",\"cascade\":{cascade},\"restart_identity\":{restart_identity}"
        );
    }
    if let Some(m) = &c.message {
        out.extend_from_slice(b",\"prefix\":");
        write_json_str(&m.prefix, out);
        match std::str::from_utf8(&m.content) {
            Ok(text) => {
                out.extend_from_slice(b",\"content\":");
                write_json_str(text, out);
            }
            Err(_) => {
                // Not text: hex like bytea, under its own key so it is never mistaken for text.
                out.extend_from_slice(b",\"content_bytea\":");
                write_json(&Value::Bytea(m.content.clone()), out);
            }
        }
        let _ = write!(out, ",\"transactional\":{}", m.transactional);
    }
    if let Some(r) = &c.read {
        // Which snapshot (or backfill) the row belongs to; `last` marks its final row.
        out.extend_from_slice(b",\"snapshot\":{\"id\":");
        push_u32(out, r.key.snapshot);
        out.extend_from_slice(if r.last {
            b",\"last\":true}"
        } else {
            b",\"last\":false}"
        });
    }
    if let Some(origin) = &c.origin {
        // Present only for a transaction applied here by another node's replication.
        out.extend_from_slice(b",\"origin\":");
        write_json_str(origin, out);
    }
    if let Some(r) = &c.routing {
        write_routing(r, out);
    }
    out.push(b'}');
}

/// The text of the fields a transaction's changes share (`commit_lsn`, `xid`, `commit_ts`),
/// and of the last `lsn`, as last written (each buffer reused when its value changes: a
/// stream change has an LSN of its own).
#[derive(Default)]
struct Positions {
    lsn: Option<Lsn>,
    lsn_text: Vec<u8>,
    txn: Option<(Lsn, u32, i64)>,
    txn_text: Vec<u8>,
}

thread_local! {
    /// A transaction's changes share their commit LSN, xid and commit time, and a snapshot
    /// chunk's reads their LSN too: their text is copied rather than formatted again per
    /// change (a timestamp, two LSNs and an integer were a tenth of a snapshot row's
    /// encoding).
    static POSITIONS: RefCell<Positions> = RefCell::new(Positions::default());
}

/// `,"lsn":"…","commit_lsn":"…","xid":…,"commit_ts":"…"`.
fn write_positions(c: &Change, out: &mut Vec<u8>) {
    POSITIONS.with_borrow_mut(|p| {
        if p.lsn != Some(c.lsn) {
            p.lsn = Some(c.lsn);
            p.lsn_text.clear();
            p.lsn_text.extend_from_slice(b",\"lsn\":\"");
            c.lsn.write_text(&mut p.lsn_text);
            p.lsn_text.push(b'"');
        }
        out.extend_from_slice(&p.lsn_text);
        let txn = (c.commit_lsn, c.xid, c.commit_ts);
        if p.txn != Some(txn) {
            p.txn = Some(txn);
            let text = &mut p.txn_text;
            text.clear();
            text.extend_from_slice(b",\"commit_lsn\":\"");
            c.commit_lsn.write_text(text);
            text.extend_from_slice(b"\",\"xid\":");
            push_u32(text, c.xid);
            text.extend_from_slice(b",\"commit_ts\":");
            write_json(&Value::TimestampTz(c.commit_ts), text);
        }
        out.extend_from_slice(&p.txn_text);
    });
}

/// `v` in decimal.
fn push_u32(out: &mut Vec<u8>, v: u32) {
    write_json(&Value::Int8(i64::from(v)), out);
}

/// `"route":…,"headers":{…}`, present only when a transform set them.
fn write_routing(r: &crate::change::Routing, out: &mut Vec<u8>) {
    if let Some(route) = &r.route {
        out.extend_from_slice(b",\"route\":");
        write_json_str(route, out);
    }
    if !r.headers.is_empty() {
        out.extend_from_slice(b",\"headers\":{");
        for (i, (k, v)) in r.headers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_str(k, out);
            out.push(b':');
            write_json_str(v, out);
        }
        out.push(b'}');
    }
}

/// `"before":…,"after":…` — the row images, shared by every format.
pub(crate) fn write_images(c: &Change, out: &mut Vec<u8>) {
    match &c.table {
        Some(t) => with_names(t, |names| write_images_named(c, names, out, write_json)),
        None => write_images_named(c, &Names::NONE, out, write_json),
    }
}

/// The JSON of a table's names, escaped once per table instead of once per change (a
/// snapshot writes the same names for every row): `"schema":…,"table":…,` and each
/// column's `"name":`.
struct Names {
    /// Held, so the table's address (what [`with_names`] compares) is not reused while the
    /// names are cached.
    table: Option<Arc<Table>>,
    head: Vec<u8>,
    /// Every column's `"name":`, one after another; `ends[i]` is where column `i`'s ends.
    keys: Vec<u8>,
    ends: Vec<usize>,
}

impl Names {
    /// For a change without a table (no rows either).
    const NONE: Names = Names {
        table: None,
        head: Vec::new(),
        keys: Vec::new(),
        ends: Vec::new(),
    };

    fn of(t: &Arc<Table>) -> Names {
        let mut head = b"\"schema\":".to_vec();
        write_json_str(&t.schema, &mut head);
        head.extend_from_slice(b",\"table\":");
        write_json_str(&t.name, &mut head);
        head.push(b',');
        let mut keys = Vec::new();
        let mut ends = Vec::with_capacity(t.columns.len());
        for col in &t.columns {
            write_json_str(&col.name, &mut keys);
            keys.push(b':');
            ends.push(keys.len());
        }
        Names {
            table: Some(Arc::clone(t)),
            head,
            keys,
            ends,
        }
    }

    /// Column `i`'s `"name":`.
    fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.keys[start..self.ends[i]]
    }
}

/// Tables whose names are cached per thread: more than a pipeline interleaves in a batch
/// as a rule; past that, the oldest entry is replaced.
const NAMES_CACHED: usize = 16;

thread_local! {
    static NAMES: RefCell<(Vec<Names>, usize)> = const { RefCell::new((Vec::new(), 0)) };
}

/// Runs `f` with `t`'s cached [`Names`] (made on first use).
fn with_names<R>(t: &Arc<Table>, f: impl FnOnce(&Names) -> R) -> R {
    NAMES.with_borrow_mut(|(cache, next)| {
        let found = cache
            .iter()
            .position(|n| n.table.as_ref().is_some_and(|c| Arc::ptr_eq(c, t)));
        let i = match found {
            Some(i) => i,
            None if cache.len() < NAMES_CACHED => {
                cache.push(Names::of(t));
                cache.len() - 1
            }
            None => {
                let i = *next;
                *next = (i + 1) % NAMES_CACHED;
                cache[i] = Names::of(t);
                i
            }
        };
        f(&cache[i])
    })
}

fn write_images_named(
    c: &Change,
    names: &Names,
    out: &mut Vec<u8>,
    value: fn(&Value, &mut Vec<u8>),
) {
    out.extend_from_slice(b"\"before\":");
    match &c.before {
        Some((kind, row)) if names.table.is_some() => {
            write_row(names, row, *kind == Before::Key, out, value)
        }
        _ => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"after\":");
    match &c.after {
        Some(row) if names.table.is_some() => write_row(names, row, false, out, value),
        _ => out.extend_from_slice(b"null"),
    }
}

/// A row as an object keyed by column name. Unchanged TOAST columns are left out (they are
/// listed in `unchanged_toast`); with `key_only`, only replica-identity columns appear.
fn write_row(
    names: &Names,
    row: &Row,
    key_only: bool,
    out: &mut Vec<u8>,
    write_value: fn(&Value, &mut Vec<u8>),
) {
    let Some(table) = &names.table else {
        return out.extend_from_slice(b"null");
    };
    out.push(b'{');
    let mut first = true;
    for (i, (col, value)) in table.columns.iter().zip(&row.0).enumerate() {
        if (key_only && !col.is_key) || matches!(value, Value::UnchangedToast) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(names.key(i));
        write_value(value, out);
    }
    out.push(b'}');
}

fn write_unchanged_toast(table: &Table, row: &Row, out: &mut Vec<u8>) {
    let mut cols = table
        .columns
        .iter()
        .zip(&row.0)
        .filter(|(_, v)| matches!(v, Value::UnchangedToast));
    let Some((first, _)) = cols.next() else {
        return;
    };
    out.extend_from_slice(b",\"unchanged_toast\":[");
    write_json_str(&first.name, out);
    for (col, _) in cols {
        out.push(b',');
        write_json_str(&col.name, out);
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Column, Op};
    use crate::lsn::Lsn;
    use crate::pgoutput::ReplicaIdentity;
    use crate::value::{builtin_type, oid};

    fn table(id: u32, name: &str, columns: &[&str]) -> Arc<Table> {
        Arc::new(Table {
            id,
            schema: "s\"q".into(),
            name: name.into(),
            replica_identity: ReplicaIdentity::Default,
            columns: columns
                .iter()
                .enumerate()
                .map(|(i, c)| Column {
                    name: (*c).into(),
                    type_oid: oid::INT4,
                    type_info: builtin_type(oid::INT4).unwrap(),
                    is_key: i == 0,
                })
                .collect(),
        })
    }

    fn update(t: &Arc<Table>, values: &[i32]) -> Change {
        let row = Row(values.iter().map(|v| Value::Int4(*v)).collect());
        Change {
            op: Op::Update,
            commit_lsn: Lsn(16),
            ordinal: 0,
            lsn: Lsn(8),
            xid: 7,
            commit_ts: 0,
            table: Some(Arc::clone(t)),
            before: Some((Before::Key, row.clone())),
            after: Some(row),
            truncate: None,
            message: None,
            split: 0,
            routing: None,
            read: None,
            origin: None,
        }
    }

    /// A batch's lines are its payloads, each followed by a newline, in one buffer.
    #[test]
    fn a_batch_is_its_payloads_as_lines() {
        let t = table(1, "t", &["id", "v"]);
        let changes = [
            update(&t, &[1, 2]),
            update(&t, &[3, 4]),
            update(&t, &[5, 6]),
        ];
        let ctx = crate::encode::EncodeContext {
            database: "db".into(),
            server_name: "slot".into(),
        };
        let batch = crate::encode::encode_batch(9, &changes, crate::config::Format::Json, &ctx);
        let mut expected = Vec::new();
        for m in &batch.messages {
            assert!(!m.payload.ends_with(b"\n"));
            expected.extend_from_slice(&m.payload);
            expected.push(b'\n');
        }
        assert_eq!(batch.messages.len(), 3);
        assert_eq!(batch.lines.as_deref(), Some(&expected[..]));
    }

    /// The positions' text is reused only while it repeats: each change shows its own.
    #[test]
    fn positions_follow_each_change() {
        let t = table(1, "t", &["id"]);
        let mut changes = Vec::new();
        for (lsn, commit_lsn, xid, ts) in [
            (8, 16, 7, 0),
            (8, 16, 7, 0),
            (9, 16, 7, 0),
            (9, 0x1_0000_0020, 8, 1_000_000),
            (10, 0x1_0000_0020, 9, 1_000_000),
            (10, 0x1_0000_0020, 9, 2),
        ] {
            let mut c = update(&t, &[1]);
            (c.lsn, c.commit_lsn, c.xid, c.commit_ts) = (Lsn(lsn), Lsn(commit_lsn), xid, ts);
            changes.push(c);
        }
        for c in &changes {
            let mut out = Vec::new();
            write_change(c, &mut out);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["lsn"], c.lsn.to_text());
            assert_eq!(v["commit_lsn"], c.commit_lsn.to_text());
            assert_eq!(v["xid"], c.xid);
            let mut ts = Vec::new();
            write_json(&Value::TimestampTz(c.commit_ts), &mut ts);
            assert_eq!(
                v["commit_ts"],
                serde_json::from_slice::<serde_json::Value>(&ts).unwrap()
            );
        }
    }

    /// The images as serde_json writes them (its escapes agree with Postgres' for these
    /// names): what the cached names must add up to.
    fn images(t: &Table, values: &[i32]) -> serde_json::Value {
        let obj = |key_only: bool| {
            let mut m = serde_json::Map::new();
            for (c, v) in t.columns.iter().zip(values) {
                if !key_only || c.is_key {
                    m.insert(c.name.to_string(), (*v).into());
                }
            }
            serde_json::Value::Object(m)
        };
        serde_json::json!({"schema": *t.schema, "table": *t.name, "before": obj(true), "after": obj(false)})
    }

    /// Tables interleaved, more than the cache holds, and a table replaced by a new
    /// description (new address, new columns): every change carries its own table's names.
    #[test]
    fn cached_names_follow_each_changes_table() {
        let mut tables: Vec<Arc<Table>> = (0..NAMES_CACHED as u32 + 3)
            .map(|i| table(i, &format!("t{i}\n"), &["id", &format!("c\"{i}"), "é"]))
            .collect();
        for round in 0..3 {
            for (i, t) in tables.iter().enumerate() {
                let values = [i as i32, round, -1];
                let mut out = Vec::new();
                write_change(&update(t, &values), &mut out);
                let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
                let want = images(t, &values);
                for key in ["schema", "table", "before", "after"] {
                    assert_eq!(got[key], want[key], "{key} of table {i}, round {round}");
                }
            }
            tables[0] = table(0, "renamed", &["k", "v", "w"]);
        }
    }
}
