//! Native JSON lines (the stdout sink's format) back into changes, for
//! `cdc-host transform`: module authors test against recorded output, without Postgres.
//!
//! The native format carries values, not column types, so types are inferred: a JSON
//! integer that fits is `int8`, any other number `numeric` (exact text), a string
//! `text`, an object or array `jsonb`, `true`/`false` `bool`. That is enough to test
//! filtering, masking and routing logic; a module that depends on exact column types is
//! best tested on a real slot.
//!
//! Unless the line carries its types: `"types": {"column": oid, ...}` (an object
//! `{"oid": o, "base": b, "enum": true}` for a domain over `b` or an enum) and `"key":
//! ["column", ...]`, as [`write_typed`] writes them (`cdc-host transform --typed`). Then
//! every column gets exactly that type, and its value is parsed as that type from its
//! JSON form, so a module sees offline what it sees live (int4, timestamptz, numeric,
//! uuid, arrays...). Replaying a typed recording twice gives byte-identical output.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value as Json;

use crate::change::{
    Before, Change, ChangeId, Column, DecodingMessage, Op, Routing, Row, SnapshotRead, Table,
};
use crate::lsn::Lsn;
use crate::pgoutput::ReplicaIdentity;
use crate::value::{builtin_type, oid, parse_text, Numeric, PgText, TypeInfo, TypeKind, Value};

/// Parses one line of native JSON.
pub fn parse_line(line: &str) -> Result<Change, String> {
    let v: Json = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    parse_object(obj, None)
}

/// One change of native JSON. With `relation` (the JSON transform world: the table the
/// change's `rel` names), columns take their types and key flags from it, `"types"`
/// overriding; a change whose columns are exactly the relation's shares its table.
pub(crate) fn parse_object(
    obj: &serde_json::Map<String, Json>,
    relation: Option<&Arc<Table>>,
) -> Result<Change, String> {
    let s = |k: &str| obj.get(k).and_then(Json::as_str);
    let id: ChangeId = s("id").ok_or("missing \"id\"")?.parse()?;
    let op = match s("op").ok_or("missing \"op\"")? {
        "insert" => Op::Insert,
        "update" => Op::Update,
        "delete" => Op::Delete,
        "truncate" => Op::Truncate,
        "message" => Op::Message,
        "read" => Op::Read,
        other => return Err(format!("unknown op {other:?}")),
    };
    let lsn = |k: &str| -> Result<Lsn, String> {
        match s(k) {
            Some(t) => t.parse().map_err(|_| format!("{k}: invalid LSN {t:?}")),
            None => Ok(Lsn::ZERO),
        }
    };
    let toast: Vec<&str> = obj
        .get("unchanged_toast")
        .and_then(Json::as_array)
        .map(|a| a.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    let types = obj.get("types").and_then(Json::as_object);
    let after = obj.get("after").and_then(Json::as_object);
    let before = obj.get("before").and_then(Json::as_object);
    let table = match (s("schema"), s("table")) {
        _ if relation.is_some() && (after.is_some() || before.is_some()) => {
            let rel = relation.ok_or("relation")?;
            Some(table_from_relation(rel, after.or(before), &toast, types)?)
        }
        (Some(schema), Some(name)) => {
            // Columns: after's (plus unchanged TOAST ones), else before's.
            let mut names: Vec<(&str, &Json)> = match (after, before) {
                (Some(a), _) => a.iter().map(|(k, v)| (k.as_str(), v)).collect(),
                // A key-only old row of a typed line: the table's columns are the recorded
                // types' (a delete keeps its table's shape through a replay).
                (None, Some(b)) if types.is_some_and(|t| t.len() > b.len()) => types
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| (k.as_str(), b.get(k).unwrap_or(&Json::Null)))
                    .collect(),
                (None, Some(b)) => b.iter().map(|(k, v)| (k.as_str(), v)).collect(),
                _ => Vec::new(),
            };
            for t in &toast {
                if !names.iter().any(|(n, _)| n == t) {
                    names.push((t, &Json::Null));
                }
            }
            // A before image with fewer columns than the row is the replica identity key.
            let key_cols: Vec<&str> = match (before, after) {
                (Some(b), Some(a)) if b.len() < a.len() + toast.len() => {
                    b.keys().map(String::as_str).collect()
                }
                (Some(b), None) => b.keys().map(String::as_str).collect(),
                _ => Vec::new(),
            };
            let recorded_keys: Option<Vec<&str>> = obj
                .get("key")
                .and_then(Json::as_array)
                .map(|a| a.iter().filter_map(Json::as_str).collect());
            let columns = names
                .iter()
                .map(|(n, v)| {
                    let (type_oid, type_info) = match types.and_then(|t| t.get(*n)) {
                        Some(t) => recorded_type(t).map_err(|e| format!("types.{n}: {e}"))?,
                        None => {
                            let o = json_oid(v);
                            (o, builtin_type(o).unwrap_or_else(|| TypeInfo::other(o)))
                        }
                    };
                    let is_key = match &recorded_keys {
                        Some(k) => k.contains(n),
                        None => key_cols.contains(n),
                    };
                    Ok(Column {
                        name: (*n).into(),
                        type_oid,
                        type_info,
                        is_key,
                    })
                })
                .collect::<Result<_, String>>()?;
            Some(Arc::new(Table {
                id: 0,
                schema: schema.into(),
                name: name.into(),
                replica_identity: ReplicaIdentity::Default,
                columns,
            }))
        }
        _ => None,
    };
    // `toast`: unchanged TOAST columns are missing from the image they belong to (the new
    // row, or a full old row); a key-only old row lacks them because it holds only the key.
    let row =
        |img: &serde_json::Map<String, Json>, t: &Table, toast_fill: bool| -> Result<Row, String> {
            t.columns
                .iter()
                .map(|c| match img.get(&*c.name) {
                    Some(v)
                        if relation.is_some()
                            || types.is_some_and(|t| t.contains_key(&*c.name)) =>
                    {
                        typed_value(&c.type_info, v).map_err(|e| format!("{}: {e}", c.name))
                    }
                    Some(v) => json_value(v),
                    None if toast_fill && toast.contains(&&*c.name) => Ok(Value::UnchangedToast),
                    None => Ok(Value::Null),
                })
                .collect::<Result<_, _>>()
                .map(Row)
        };
    let after_row = match (after, &table) {
        (Some(a), Some(t)) => Some(row(a, t, true)?),
        _ => None,
    };
    let before_row = match (before, &table) {
        (Some(b), Some(t)) => {
            let kind = if relation.is_some() {
                // A key-only old row holds fewer columns than the table.
                if b.len() + toast.len() >= t.columns.len() {
                    Before::Full
                } else {
                    Before::Key
                }
            } else if t.columns.iter().any(|c| c.is_key) {
                Before::Key
            } else {
                Before::Full
            };
            let full = matches!(kind, Before::Full);
            Some((kind, row(b, t, full)?))
        }
        _ => None,
    };
    let commit_ts = match s("commit_ts") {
        Some(ts) => match parse_text(
            &builtin_type(oid::TIMESTAMPTZ).ok_or("timestamptz type")?,
            Bytes::from(ts.replacen('T', " ", 1)),
        ) {
            Ok(Value::TimestampTz(t)) => t,
            _ => return Err(format!("commit_ts: invalid timestamp {ts:?}")),
        },
        None => 0,
    };
    let truncate = (op == Op::Truncate).then(|| {
        (
            obj.get("cascade").and_then(Json::as_bool).unwrap_or(false),
            obj.get("restart_identity")
                .and_then(Json::as_bool)
                .unwrap_or(false),
        )
    });
    let message = match op {
        Op::Message => Some(DecodingMessage {
            prefix: s("prefix").unwrap_or_default().to_owned(),
            content: match (s("content"), s("content_bytea")) {
                (Some(text), _) => Bytes::from(text.to_owned()),
                (None, Some(hex)) => match parse_text(
                    &builtin_type(oid::BYTEA).ok_or("bytea type")?,
                    Bytes::from(hex.to_owned()),
                ) {
                    Ok(Value::Bytea(b)) => b,
                    _ => return Err("content_bytea: invalid".into()),
                },
                (None, None) => Bytes::new(),
            },
            transactional: obj
                .get("transactional")
                .and_then(Json::as_bool)
                .unwrap_or(true),
        }),
        _ => None,
    };
    let headers: Vec<(String, String)> = obj
        .get("headers")
        .and_then(Json::as_object)
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let route = s("route").map(str::to_owned);
    let routing =
        (route.is_some() || !headers.is_empty()).then(|| Box::new(Routing { route, headers }));
    Ok(Change {
        // A read keeps its id through a transform that turned it into an insert.
        op: if op == Op::Insert && id.read.is_some() {
            Op::Read
        } else {
            op
        },
        // A read's id names no WAL position: it keeps the one it was delivered at.
        commit_lsn: if id.read.is_some() {
            lsn("commit_lsn")?
        } else {
            id.commit_lsn
        },
        ordinal: id.ordinal,
        split: id.split,
        lsn: lsn("lsn")?,
        xid: obj.get("xid").and_then(Json::as_u64).unwrap_or(0) as u32,
        commit_ts,
        table,
        before: before_row,
        after: after_row,
        truncate,
        message,
        routing,
        read: id.read.map(|key| SnapshotRead {
            key,
            last: obj
                .get("snapshot")
                .and_then(|s| s.get("last"))
                .and_then(Json::as_bool)
                .unwrap_or(false),
        }),
        origin: obj.get("origin").and_then(Json::as_str).map(Arc::from),
    })
}

/// The table of a change of the JSON transform world: `rel` itself when the row holds
/// exactly its columns in its order with their types, else a table of the row's columns
/// (types from `types`, then `rel`, then inferred from the value), sharing `rel`'s names.
fn table_from_relation(
    rel: &Arc<Table>,
    image: Option<&serde_json::Map<String, Json>>,
    toast: &[&str],
    types: Option<&serde_json::Map<String, Json>>,
) -> Result<Arc<Table>, String> {
    let mut names: Vec<(&str, &Json)> = image
        .map(|a| a.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default();
    for t in toast {
        if !names.iter().any(|(n, _)| n == t) {
            names.push((t, &Json::Null));
        }
    }
    let overridden = |col: &Column| {
        types
            .and_then(|t| t.get(&*col.name))
            .is_some_and(|t| recorded_type(t).map_or(true, |(o, _)| o != col.type_oid))
    };
    // The relation itself: every column present (a key-only old row counts), in order.
    let key_only = names.len() < rel.columns.len()
        && names.len() == rel.columns.iter().filter(|c| c.is_key).count()
        && rel
            .columns
            .iter()
            .filter(|c| c.is_key)
            .zip(&names)
            .all(|(c, (n, _))| *c.name == **n);
    let same = key_only
        || (names.len() == rel.columns.len()
            && rel
                .columns
                .iter()
                .zip(&names)
                .all(|(c, (n, _))| *c.name == **n));
    if same && !rel.columns.iter().any(overridden) {
        return Ok(Arc::clone(rel));
    }
    let columns = names
        .iter()
        .map(|(n, v)| {
            let known = rel.columns.iter().find(|c| *c.name == **n);
            let (type_oid, type_info) = match (types.and_then(|t| t.get(*n)), known) {
                (Some(t), _) => recorded_type(t).map_err(|e| format!("types.{n}: {e}"))?,
                (None, Some(k)) => (k.type_oid, k.type_info.clone()),
                (None, None) => {
                    let o = json_oid(v);
                    (o, builtin_type(o).unwrap_or_else(|| TypeInfo::other(o)))
                }
            };
            Ok(Column {
                name: known.map_or_else(|| (*n).into(), |k| Arc::clone(&k.name)),
                type_oid,
                type_info,
                is_key: known.is_some_and(|k| k.is_key),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Arc::new(Table {
        id: rel.id,
        schema: Arc::clone(&rel.schema),
        name: Arc::clone(&rel.name),
        replica_identity: rel.replica_identity,
        columns,
    }))
}

/// A recorded type: an oid, or `{"oid", "base", "enum"}`.
fn recorded_type(t: &Json) -> Result<(u32, TypeInfo), String> {
    let num = |v: Option<&Json>| v.and_then(Json::as_u64).map(|o| o as u32);
    match t {
        Json::Number(_) => {
            let o = num(Some(t)).ok_or("not an oid")?;
            Ok((o, builtin_type(o).unwrap_or_else(|| TypeInfo::other(o))))
        }
        Json::Object(m) => {
            let o = num(m.get("oid")).ok_or("no oid")?;
            if m.get("enum").and_then(Json::as_bool).unwrap_or(false) {
                return Ok((o, TypeInfo::enumeration(o)));
            }
            let base = num(m.get("base")).unwrap_or(o);
            Ok((
                o,
                builtin_type(base).unwrap_or_else(|| TypeInfo::other(base)),
            ))
        }
        _ => Err("want an oid or {\"oid\", \"base\", \"enum\"}".into()),
    }
}

/// A value of a known type from its JSON form (what `to_jsonb` prints), through the
/// Postgres text form `parse_text` reads.
fn typed_value(ty: &TypeInfo, v: &Json) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let text = match (&ty.kind, v) {
        (TypeKind::Jsonb, v) => jsonb_text(v),
        (TypeKind::Json, v) => v.to_string(),
        (TypeKind::Array(_), Json::Array(_)) => array_literal(v),
        (TypeKind::Timestamp | TypeKind::TimestampTz | TypeKind::Date, Json::String(s)) => {
            s.replacen('T', " ", 1)
        }
        (_, Json::String(s)) => s.clone(),
        (_, Json::Bool(b)) => if *b { "t" } else { "f" }.to_owned(),
        (_, other) => other.to_string(),
    };
    parse_text(ty, Bytes::from(text)).map_err(|e| format!("not a {}: {e}", ty.kind.name()))
}

/// A JSON value as `jsonb` prints it: `", "` between items, `": "` after keys (the
/// recording holds the server's text, and its key order; a compact form would make a
/// replay differ from the live line).
fn jsonb_text(v: &Json) -> String {
    struct Jsonb;
    fn comma<W: ?Sized + std::io::Write>(w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    impl serde_json::ser::Formatter for Jsonb {
        fn begin_array_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            comma(w, first)
        }
        fn begin_object_key<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            comma(w, first)
        }
        fn begin_object_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
        ) -> std::io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Jsonb);
    match serde::Serialize::serialize(v, &mut ser) {
        Ok(()) => String::from_utf8(out).unwrap_or_else(|_| v.to_string()),
        Err(_) => v.to_string(),
    }
}

/// A JSON array as a Postgres array literal (`{1,"a b",NULL,{2,3}}`).
fn array_literal(v: &Json) -> String {
    match v {
        Json::Array(items) => {
            let inner: Vec<String> = items.iter().map(array_literal).collect();
            format!("{{{}}}", inner.join(","))
        }
        Json::Null => "NULL".into(),
        Json::Bool(b) => if *b { "t" } else { "f" }.into(),
        Json::String(s) => {
            let s = s.replacen('T', " ", usize::from(looks_like_timestamp(s)));
            format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
        }
        other => other.to_string(),
    }
}

/// `2024-05-06T07:08:09...`: to_jsonb's form of a timestamp element.
fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 19 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':'
}

/// One native-JSON line with its columns' types (`"types"`, `"key"`), as
/// [`parse_line`] replays them exactly.
pub fn write_typed(c: &Change, out: &mut Vec<u8>) {
    crate::encode::json::write_change(c, out);
    let Some(t) = &c.table else { return };
    if t.columns.is_empty() || out.last() != Some(&b'}') {
        return;
    }
    out.pop();
    let mut types = serde_json::Map::new();
    for col in &t.columns {
        let simple = col.type_info.oid == col.type_oid
            && builtin_type(col.type_oid).is_some_and(|b| b.kind == col.type_info.kind);
        let v = if simple {
            Json::from(col.type_oid)
        } else if col.type_info.kind == TypeKind::Enum {
            serde_json::json!({"oid": col.type_oid, "enum": true})
        } else {
            serde_json::json!({"oid": col.type_oid, "base": col.type_info.oid})
        };
        types.insert(col.name.to_string(), v);
    }
    let keys: Vec<&str> = t
        .columns
        .iter()
        .filter(|c| c.is_key)
        .map(|c| &*c.name)
        .collect();
    out.extend_from_slice(b",\"types\":");
    out.extend_from_slice(Json::Object(types).to_string().as_bytes());
    out.extend_from_slice(b",\"key\":");
    out.extend_from_slice(serde_json::to_string(&keys).unwrap_or_default().as_bytes());
    out.push(b'}');
}

fn json_oid(v: &Json) -> u32 {
    match v {
        Json::Null | Json::String(_) => oid::TEXT,
        Json::Bool(_) => oid::BOOL,
        Json::Number(n) if n.as_i64().is_some() => oid::INT8,
        Json::Number(_) => oid::NUMERIC,
        Json::Array(_) | Json::Object(_) => oid::JSONB,
    }
}

fn json_value(v: &Json) -> Result<Value, String> {
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int8(i),
            None => Value::Numeric(Numeric::Finite(Bytes::from(n.to_string()))),
        },
        Json::String(s) => Value::Text(PgText::from(s.clone())),
        other => Value::Jsonb(PgText::from(other.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::json::write_change;

    /// jsonb as the server prints it: the live line and its replay stay byte-identical.
    #[test]
    fn jsonb_is_printed_with_the_servers_separators() {
        let v: Json =
            serde_json::from_str(r#"{"a":null,"b":[1,2.50,{"c":"x, y"}],"d":{}}"#).unwrap();
        assert_eq!(
            jsonb_text(&v),
            r#"{"a": null, "b": [1, 2.50, {"c": "x, y"}], "d": {}}"#
        );
        assert_eq!(jsonb_text(&Json::from(7)), "7");
    }

    #[test]
    fn native_json_round_trips_for_inferable_types() {
        let lines = [
            r#"{"id":"0000000001000000-00000002","op":"update","schema":"public","table":"users","before":{"id":1},"after":{"id":1,"email":"a@b.c","score":1.50,"tags":["x"]},"lsn":"0/FFFFF0","commit_lsn":"0/1000000","xid":77,"commit_ts":"2024-05-06T07:08:09.123456+00:00","unchanged_toast":["bio"]}"#,
            r#"{"id":"0000000001000000-00000003","op":"message","schema":null,"table":null,"before":null,"after":null,"lsn":"0/1000001","commit_lsn":"0/1000000","xid":77,"commit_ts":"2024-05-06T07:08:09.123456+00:00","prefix":"outbox","content":"{}","transactional":true,"route":"a.b","headers":{"k":"v"}}"#,
        ];
        for line in lines {
            let c = parse_line(line).unwrap();
            let mut out = Vec::new();
            write_change(&c, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), line);
        }
    }

    /// With recorded types, columns get exactly those types (not int8/text/numeric by
    /// inference), and writing them back with their types gives the same line.
    #[test]
    fn typed_lines_replay_exact_types_byte_for_byte() {
        let line = r#"{"id":"0000000001000000-00000002","op":"insert","schema":"public","table":"orders","before":null,"after":{"id":7,"created_at":"2024-05-06T07:08:09.123456+00:00","total":0,"ref":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","tags":[1, 2, null],"note":"0","day":"2024-05-06"},"lsn":"0/FFFFF0","commit_lsn":"0/1000000","xid":77,"commit_ts":"2024-05-06T07:08:09.123456+00:00","types":{"id":23,"created_at":1184,"total":1700,"ref":2950,"tags":1007,"note":25,"day":1082},"key":["id"]}"#;
        let c = parse_line(line).unwrap();
        let t = c.table.as_deref().unwrap();
        let oids: Vec<u32> = t.columns.iter().map(|c| c.type_oid).collect();
        assert_eq!(oids, [23, 1184, 1700, 2950, 1007, 25, 1082]);
        let row = &c.after.as_ref().unwrap().0;
        assert!(matches!(row[0], Value::Int4(7)));
        assert!(matches!(row[1], Value::TimestampTz(_)));
        assert!(matches!(row[2], Value::Numeric(_)));
        assert!(matches!(row[3], Value::Uuid(_)));
        assert!(matches!(row[4], Value::Array(_)));
        assert!(matches!(row[5], Value::Text(_)));
        assert!(t.columns[0].is_key && !t.columns[1].is_key);
        let mut out = Vec::new();
        write_typed(&c, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), line);
        // A value that is not of its recorded type is an error naming the column.
        let bad = line.replace(r#""id":7,"#, r#""id":"x","#);
        assert!(parse_line(&bad).unwrap_err().contains("id: not a int4"));
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(parse_line("nope").is_err());
        assert!(parse_line("{}").unwrap_err().contains("id"));
        assert!(
            parse_line(r#"{"id":"0000000001000000-00000002","op":"upsert"}"#)
                .unwrap_err()
                .contains("upsert")
        );
    }
}
