//! The Debezium envelope, for consumers built around Debezium's PostgreSQL connector.
//!
//! ```json
//! {"before":null,"after":{"id":1},"source":{"version":"cdc-host-0.1.0","connector":"postgresql",
//!  "name":"cdc_host","ts_ms":1700000000000,"snapshot":"false","db":"app","schema":"public",
//!  "table":"orders","txId":742,"lsn":23803720,"xmin":null},"op":"c","ts_ms":1700000000123,
//!  "transaction":null}
//! ```
//! The envelope and `source` block follow Debezium's (JSON converter, schemas disabled).
//! Column values are rendered as in the native format (exactly `to_jsonb()`), not with
//! Debezium's type-specific encodings (e.g. microsecond integers for timestamps).

use std::io::Write;

use super::json::write_images;
use super::EncodeContext;
use crate::change::{Change, Op};
use crate::value::write_json_str;

/// Microseconds between 1970-01-01 and 2000-01-01 (Postgres's epoch).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// Appends one change as a Debezium envelope (no newline). `now_ms` is the processing time.
pub fn write_change(c: &Change, ctx: &EncodeContext, now_ms: i64, out: &mut Vec<u8>) {
    out.push(b'{');
    write_images(c, out);
    let commit_ms = c.commit_ts.saturating_add(PG_EPOCH_UNIX_MICROS) / 1000;
    out.extend_from_slice(b",\"source\":{\"version\":\"cdc-host-");
    out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    out.extend_from_slice(b"\",\"connector\":\"postgresql\",\"name\":");
    write_json_str(&ctx.server_name, out);
    // As Debezium writes it: "true" for snapshot rows, "last" for the final one.
    let snapshot = match c.read {
        Some(r) if r.last => "last",
        Some(_) => "true",
        None => "false",
    };
    let _ = write!(
        out,
        ",\"ts_ms\":{commit_ms},\"snapshot\":\"{snapshot}\",\"db\":"
    );
    write_json_str(&ctx.database, out);
    out.extend_from_slice(b",\"schema\":");
    match &c.table {
        Some(t) => {
            write_json_str(&t.schema, out);
            out.extend_from_slice(b",\"table\":");
            write_json_str(&t.name, out);
        }
        None => out.extend_from_slice(b"null,\"table\":null"),
    }
    let _ = write!(out, ",\"txId\":{},\"lsn\":{},\"xmin\":null", c.xid, c.lsn.0);
    // Not a Debezium field (it has no multi-master source); present only for changes that
    // came through another node's replication.
    if let Some(origin) = &c.origin {
        out.extend_from_slice(b",\"origin\":");
        write_json_str(origin, out);
    }
    out.push(b'}');
    let op = match c.op {
        Op::Insert => "c",
        Op::Update => "u",
        Op::Delete => "d",
        Op::Truncate => "t",
        Op::Message => "m",
        Op::Read => "r",
    };
    let _ = write!(
        out,
        ",\"op\":\"{op}\",\"ts_ms\":{now_ms},\"transaction\":null"
    );
    if let Some(m) = &c.message {
        out.extend_from_slice(b",\"message\":{\"prefix\":");
        write_json_str(&m.prefix, out);
        out.extend_from_slice(b",\"content\":");
        match std::str::from_utf8(&m.content) {
            Ok(text) => write_json_str(text, out),
            Err(_) => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }
    out.push(b'}');
}
