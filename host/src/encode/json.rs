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

use crate::change::{Before, Change, Row, Table};
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
    out.extend_from_slice(b"\",\"schema\":");
    match &c.table {
        Some(t) => {
            write_json_str(&t.schema, out);
            out.extend_from_slice(b",\"table\":");
            write_json_str(&t.name, out);
        }
        None => out.extend_from_slice(b"null,\"table\":null"),
    }
    out.push(b',');
    write_images_as(c, out, value);
    out.extend_from_slice(b",\"lsn\":\"");
    c.lsn.write_text(out);
    out.extend_from_slice(b"\",\"commit_lsn\":\"");
    c.commit_lsn.write_text(out);
    out.extend_from_slice(b"\",\"xid\":");
    write_json(&Value::Int8(i64::from(c.xid)), out);
    out.extend_from_slice(b",\"commit_ts\":");
    write_commit_ts(c.commit_ts, out);
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
        write_json(&Value::Int8(i64::from(r.key.snapshot)), out);
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

thread_local! {
    /// The last `commit_ts` written and its JSON: a transaction's changes (and a snapshot
    /// chunk's rows) share one, and formatting a timestamp is a fair share of a change.
    static LAST_COMMIT_TS: RefCell<(Option<i64>, Vec<u8>)> = const { RefCell::new((None, Vec::new())) };
}

fn write_commit_ts(ts: i64, out: &mut Vec<u8>) {
    LAST_COMMIT_TS.with_borrow_mut(|(last, text)| {
        if *last != Some(ts) {
            text.clear();
            write_json(&Value::TimestampTz(ts), text);
            *last = Some(ts);
        }
        out.extend_from_slice(text);
    });
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
    write_images_as(c, out, write_json)
}

fn write_images_as(c: &Change, out: &mut Vec<u8>, value: fn(&Value, &mut Vec<u8>)) {
    out.extend_from_slice(b"\"before\":");
    match (&c.before, &c.table) {
        (Some((kind, row)), Some(t)) => write_row(t, row, *kind == Before::Key, out, value),
        _ => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"after\":");
    match (&c.after, &c.table) {
        (Some(row), Some(t)) => write_row(t, row, false, out, value),
        _ => out.extend_from_slice(b"null"),
    }
}

/// A row as an object keyed by column name. Unchanged TOAST columns are left out (they are
/// listed in `unchanged_toast`); with `key_only`, only replica-identity columns appear.
fn write_row(
    table: &Table,
    row: &Row,
    key_only: bool,
    out: &mut Vec<u8>,
    write_value: fn(&Value, &mut Vec<u8>),
) {
    out.push(b'{');
    let mut first = true;
    for (col, value) in table.columns.iter().zip(&row.0) {
        if (key_only && !col.is_key) || matches!(value, Value::UnchangedToast) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_json_str(&col.name, out);
        out.push(b':');
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
