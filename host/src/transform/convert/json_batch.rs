//! The JSON transform world (`wit/json.wit`): a batch as one JSON document for the
//! guest, and the document it returns back into changes.
//!
//! Scripting runtimes compiled to Wasm (SpiderMonkey, CPython) build an object per
//! field when the canonical ABI hands them records, in interpreted glue code; their
//! native JSON parsers build the same objects many times faster. The document keeps
//! the types: each table of the batch is listed once with its columns' oids and key
//! flags, and each change names its table by index (`rel`).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value as Json;

use super::from_wit::check_routing;
use super::ConvertError;
use crate::change::{Change, ChangeId, SnapshotRead, Table};
use crate::encode::json::write_change_as;
use crate::transform::replay::parse_object;
use crate::value::{builtin_type, write_json_exact, write_json_str, TypeKind};

/// The batch as the guest gets it, and the relations its `rel` indexes name.
#[derive(Debug)]
pub struct Encoded {
    pub json: String,
    pub relations: Vec<Arc<Table>>,
}

/// `{"relations": [...], "changes": [...]}`.
pub fn encode(changes: &[Change]) -> Encoded {
    let mut relations: Vec<Arc<Table>> = Vec::new();
    let mut rel_of = Vec::with_capacity(changes.len());
    let mut last: Option<(usize, &Arc<Table>)> = None;
    for c in changes {
        let rel = c.table.as_ref().map(|t| match last {
            Some((i, l)) if Arc::ptr_eq(l, t) => i,
            _ => {
                let i = relations
                    .iter()
                    .position(|r| Arc::ptr_eq(r, t))
                    .unwrap_or_else(|| {
                        relations.push(Arc::clone(t));
                        relations.len() - 1
                    });
                last = Some((i, t));
                i
            }
        });
        rel_of.push(rel);
    }
    let mut out = Vec::with_capacity(64 + changes.len() * 320);
    out.extend_from_slice(b"{\"relations\":[");
    for (i, t) in relations.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_relation(t, &mut out);
    }
    out.extend_from_slice(b"],\"changes\":[");
    for (i, (c, rel)) in changes.iter().zip(rel_of).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_change_as(c, &mut out, write_json_exact);
        if let Some(rel) = rel {
            out.pop();
            out.extend_from_slice(b",\"rel\":");
            out.extend_from_slice(rel.to_string().as_bytes());
            out.push(b'}');
        }
    }
    out.extend_from_slice(b"]}");
    Encoded {
        // Everything written is UTF-8 (names and values are); checked, not assumed.
        json: String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        relations,
    }
}

/// `{"schema","table","columns":[{"name","type","key"[,"base"|"enum"]}]}`: `type` is the
/// declared oid (a domain's own), `base` the type a domain's values have, `enum` marks
/// a user-defined enum.
fn write_relation(t: &Table, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"schema\":");
    write_json_str(&t.schema, out);
    out.extend_from_slice(b",\"table\":");
    write_json_str(&t.name, out);
    out.extend_from_slice(b",\"columns\":[");
    for (i, c) in t.columns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        write_json_str(&c.name, out);
        out.extend_from_slice(format!(",\"type\":{},\"key\":{}", c.type_oid, c.is_key).as_bytes());
        let simple = c.type_info.oid == c.type_oid
            && builtin_type(c.type_oid).is_some_and(|b| b.kind == c.type_info.kind);
        if !simple {
            if c.type_info.kind == TypeKind::Enum {
                out.extend_from_slice(b",\"enum\":true");
            } else {
                out.extend_from_slice(format!(",\"base\":{}", c.type_info.oid).as_bytes());
            }
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

/// The guest's document (`{"changes": [...]}`, or just the array) back into changes:
/// `inputs` is the batch as it went in (for the snapshot `last` flag), `relations` what
/// `rel` indexes.
pub fn decode(
    inputs: &[Change],
    relations: &[Arc<Table>],
    json: &[u8],
) -> Result<Vec<Change>, ConvertError> {
    let whole = |message: String| ConvertError {
        index: 0,
        id: String::new(),
        message,
    };
    let doc: Json = serde_json::from_slice(json).map_err(|e| whole(format!("not JSON: {e}")))?;
    let list = match &doc {
        Json::Array(a) => a,
        Json::Object(o) => o
            .get("changes")
            .and_then(Json::as_array)
            .ok_or_else(|| whole("no \"changes\" array".into()))?,
        _ => return Err(whole("want {\"changes\": [...]}".into())),
    };
    let last_read = inputs
        .iter()
        .find_map(|c| c.read.filter(|r| r.last).map(|r| r.key));
    let mut seen: HashMap<ChangeId, u32> = HashMap::new();
    let mut result = Vec::with_capacity(list.len());
    for (index, v) in list.iter().enumerate() {
        let id_text = v.get("id").and_then(Json::as_str).unwrap_or_default();
        let err = |message: String| ConvertError {
            index,
            id: id_text.to_owned(),
            message,
        };
        let obj = v
            .as_object()
            .ok_or_else(|| err("not a JSON object".into()))?;
        let rel = match obj.get("rel") {
            Some(Json::Null) | None => by_name(relations, obj),
            Some(r) => Some(
                r.as_u64()
                    .and_then(|i| relations.get(i as usize))
                    .ok_or_else(|| err(format!("rel {r}: no such relation in the batch")))?,
            ),
        };
        let mut change = parse_object(obj, rel).map_err(err)?;
        // Splits: the same id again gets the next free `.n`.
        let base = ChangeId {
            split: 0,
            ..change.id()
        };
        let next = seen.entry(base).or_insert(0);
        if change.split < *next {
            change.split = *next;
        }
        *next = change.split + 1;
        if let Some(r) = &mut change.read {
            *r = SnapshotRead {
                key: r.key,
                last: Some(r.key) == last_read,
            };
        }
        if let Some(r) = &change.routing {
            check_routing(r).map_err(err)?;
        }
        result.push(change);
    }
    Ok(result)
}

/// A change that names its table instead of `rel`: the batch's relation of that name.
fn by_name<'a>(
    relations: &'a [Arc<Table>],
    obj: &serde_json::Map<String, Json>,
) -> Option<&'a Arc<Table>> {
    let (schema, table) = (obj.get("schema")?.as_str()?, obj.get("table")?.as_str()?);
    relations
        .iter()
        .find(|t| &*t.schema == schema && &*t.name == table)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::change::{Before, Column, Op, ReadKey, Row};
    use crate::encode::json::write_change;
    use crate::lsn::Lsn;
    use crate::pgoutput::ReplicaIdentity;
    use crate::value::{oid, Array, Numeric, PgText, Value};

    fn table() -> Arc<Table> {
        let col = |name: &str, type_oid: u32, is_key: bool| Column {
            name: name.into(),
            type_oid,
            type_info: builtin_type(type_oid).unwrap(),
            is_key,
        };
        Arc::new(Table {
            id: 3,
            schema: "public".into(),
            name: "orders".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                col("id", oid::INT8, true),
                col("email", oid::TEXT, false),
                col("total", oid::NUMERIC, false),
                col("at", oid::TIMESTAMPTZ, false),
                col("ids", 1016, false),
                col("bio", oid::TEXT, false),
            ],
        })
    }

    fn change(t: &Arc<Table>, op: Op, ordinal: u32) -> Change {
        let row = Row(vec![
            Value::Int8(9_007_199_254_740_993),
            Value::Text(PgText::from("a\"b@c.d".to_string())),
            Value::Numeric(Numeric::Finite(Bytes::from_static(b"1.50"))),
            Value::TimestampTz(757_382_400_123_456),
            Value::Array(Array {
                elem_oid: oid::INT8,
                dims: vec![2],
                elements: vec![Value::Int8(i64::MAX), Value::Null],
            }),
            Value::UnchangedToast,
        ]);
        let key = Row(vec![
            Value::Int8(9_007_199_254_740_993),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ]);
        Change {
            op,
            commit_lsn: Lsn(0x1000),
            ordinal,
            split: 0,
            lsn: Lsn(0xF00),
            xid: 7,
            commit_ts: 1_000,
            table: Some(Arc::clone(t)),
            before: (op != Op::Insert && op != Op::Read).then_some((Before::Key, key)),
            after: (op != Op::Delete).then_some(row),
            truncate: None,
            message: None,
            routing: None,
            read: (op == Op::Read).then_some(SnapshotRead {
                key: ReadKey {
                    snapshot: 4,
                    key: 0xABCD,
                },
                last: true,
            }),
            origin: None,
        }
    }

    fn text(c: &Change) -> String {
        let mut out = Vec::new();
        write_change(c, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// What goes in comes back identical, sharing the input's table, with int8 and
    /// numeric as exact strings in the document.
    #[test]
    fn identity_round_trip_is_exact_and_keeps_the_table() {
        let t = table();
        let batch = vec![
            change(&t, Op::Insert, 0),
            change(&t, Op::Update, 1),
            change(&t, Op::Delete, 2),
            change(&t, Op::Read, 3),
        ];
        let enc = encode(&batch);
        assert!(
            enc.json.contains(r#""id":"9007199254740993""#),
            "{}",
            enc.json
        );
        assert!(enc.json.contains(r#""total":"1.50""#), "{}", enc.json);
        assert!(
            enc.json.contains(r#""ids":["9223372036854775807", null]"#),
            "{}",
            enc.json
        );
        assert!(
            enc.json.contains(r#"{"name":"id","type":20,"key":true}"#),
            "{}",
            enc.json
        );
        assert_eq!(enc.relations.len(), 1);
        let back = decode(&batch, &enc.relations, enc.json.as_bytes()).unwrap();
        assert_eq!(back.len(), batch.len());
        for (a, b) in batch.iter().zip(&back) {
            assert_eq!(text(a), text(b));
            assert_eq!(a.op, b.op);
            assert_eq!(a.after, b.after);
            assert_eq!(a.before, b.before);
            assert_eq!(a.read, b.read);
            assert_eq!(a.commit_lsn, b.commit_lsn);
            assert!(Arc::ptr_eq(
                a.table.as_ref().unwrap(),
                b.table.as_ref().unwrap()
            ));
        }
    }

    /// A masked column says its new type in `types`; the change gets a table with that
    /// type, and a value that is not of its column's type is an error naming the column.
    #[test]
    fn types_override_the_relation_and_values_are_checked() {
        let t = table();
        let batch = vec![change(&t, Op::Insert, 0)];
        let enc = encode(&batch);
        let masked = enc
            .json
            .replace(r#""total":"1.50""#, r#""total":"***""#)
            .replace(r#""rel":0"#, r#""rel":0,"types":{"total":25}"#);
        let back = decode(&batch, &enc.relations, masked.as_bytes()).unwrap();
        let bt = back[0].table.as_ref().unwrap();
        assert_eq!(bt.columns[2].type_oid, oid::TEXT);
        assert_eq!(bt.columns[0].type_oid, oid::INT8);
        assert!(bt.columns[0].is_key);
        assert!(text(&back[0]).contains(r#""total":"***""#));
        let bad = enc.json.replace(r#""total":"1.50""#, r#""total":"***""#);
        let err = decode(&batch, &enc.relations, bad.as_bytes()).unwrap_err();
        assert!(err.message.contains("total"), "{err}");
        // Splitting a change: the copy gets the next split suffix.
        let doc: Json = serde_json::from_str(&enc.json).unwrap();
        let c = &doc["changes"][0];
        let two = serde_json::json!([c, c]).to_string();
        let back = decode(&batch, &enc.relations, two.as_bytes()).unwrap();
        assert_eq!(back[1].split, 1);
        assert!(decode(&batch, &enc.relations, br#"{"changes":[{"id":"x"}]}"#).is_err());
        assert!(decode(&batch, &enc.relations, b"[1").is_err());
    }
}
