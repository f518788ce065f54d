//! A guest's WIT records → host changes, checked on the way.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::{date_from_unix, ts_from_unix, ConvertError};
use crate::change::{
    Before, Change, ChangeId, Column, DecodingMessage, Op, ReadKey, Routing, Row, SnapshotRead,
    Table,
};
use crate::lsn::Lsn;
use crate::pgoutput::ReplicaIdentity;
use crate::transform::runtime::wit;
use crate::value::{builtin_type, oid, Array, Numeric, PgText, TypeInfo, Value};

/// Turns a guest's output back into host changes.
///
/// Tables are shared (`Arc`) by every change of a table; a transform that keeps a
/// table's columns gets the very same `Arc` back, and one that reshapes rows (masking
/// changes a column's type, an added column) gets one new table per distinct shape,
/// remembered across batches so the shape is not rebuilt for every change.
#[derive(Debug, Default)]
pub struct FromGuest {
    /// By `schema.table`: every shape seen of that table, most recent first.
    /// A few tables per pipeline: a linear scan over borrowed names beats hashing
    /// freshly allocated keys for every change.
    shapes: Vec<(String, String, Vec<Arc<Table>>)>,
}

/// Bound on remembered tables.
const MAX_TABLES: usize = 4096;

/// Bound on remembered shapes per table (a guest inventing columns per change must not
/// grow memory without end).
const MAX_SHAPES: usize = 16;

impl FromGuest {
    /// `inputs`: the batch as it went in (for tables and ids); `out`: what came back.
    pub fn convert(
        &mut self,
        inputs: &[Change],
        out: Vec<wit::Change>,
    ) -> Result<Vec<Change>, ConvertError> {
        let mut last: Option<&Arc<Table>> = None;
        for c in inputs {
            if let Some(t) = &c.table {
                if !last.is_some_and(|l| Arc::ptr_eq(l, t)) {
                    self.remember(t);
                    last = Some(t);
                }
            }
        }
        // The batch's last snapshot read, if it holds it: the flag survives the guest.
        let last_read = inputs
            .iter()
            .find_map(|c| c.read.filter(|r| r.last).map(|r| r.key));
        let mut seen: HashMap<ChangeId, u32> = HashMap::new();
        let mut result = Vec::with_capacity(out.len());
        for (index, w) in out.into_iter().enumerate() {
            let err = |message: String| ConvertError {
                index,
                id: w.id.clone(),
                message,
            };
            let mut id: ChangeId = w.id.parse().map_err(err)?;
            // Splits: the same id again gets the next free `.n`.
            let base = ChangeId { split: 0, ..id };
            let next = seen.entry(base).or_insert(0);
            if id.split < *next {
                id.split = *next;
            }
            *next = id.split + 1;
            let change = self.change(w, id, last_read).map_err(|m| ConvertError {
                index,
                id: id.to_string(),
                message: m,
            })?;
            result.push(change);
        }
        Ok(result)
    }

    /// The remembered shapes of `schema.name`.
    fn shapes_of(&mut self, schema: &str, name: &str) -> &mut Vec<Arc<Table>> {
        let pos = match self
            .shapes
            .iter()
            .position(|(s, n, _)| s == schema && n == name)
        {
            Some(p) => p,
            None => {
                // A guest inventing table names must not grow memory without end.
                if self.shapes.len() >= MAX_TABLES {
                    self.shapes.clear();
                }
                self.shapes
                    .push((schema.to_owned(), name.to_owned(), Vec::new()));
                self.shapes.len() - 1
            }
        };
        &mut self.shapes[pos].2
    }

    fn remember(&mut self, t: &Arc<Table>) {
        let shapes = self.shapes_of(&t.schema, &t.name);
        if let Some(pos) = shapes.iter().position(|s| Arc::ptr_eq(s, t)) {
            if pos != 0 {
                let s = shapes.remove(pos);
                shapes.insert(0, s);
            }
            return;
        }
        shapes.insert(0, Arc::clone(t));
        shapes.truncate(MAX_SHAPES);
    }

    fn change(
        &mut self,
        w: wit::Change,
        id: ChangeId,
        last_read: Option<ReadKey>,
    ) -> Result<Change, String> {
        let op = match w.op {
            // A read reaches a WIT 0.1 module as an insert with a read id (and a 0.2
            // module that turns a read into an insert keeps the row's read id).
            wit::Op::Insert if id.read.is_some() => Op::Read,
            wit::Op::Read if id.read.is_none() => {
                return Err(
                    "a read needs a read id (`r<snapshot>-<key hash>`, as it came in)".into(),
                )
            }
            wit::Op::Read => Op::Read,
            wit::Op::Insert => Op::Insert,
            wit::Op::Update => Op::Update,
            wit::Op::Delete => Op::Delete,
            wit::Op::Truncate => Op::Truncate,
            wit::Op::Message => Op::Message,
        };
        let has_rows = w.before.is_some() || w.after.is_some();
        let table = if w.table.is_empty() && w.schema.is_empty() {
            if has_rows {
                return Err("a change with rows needs a schema and a table".into());
            }
            None
        } else {
            // A key-only old row describes only the key columns of its table.
            let (shape, key_only) = match (&w.after, &w.before) {
                (Some(a), _) => (Some(a), false),
                (None, Some(b)) => (Some(b), !w.before_is_full),
                (None, None) => (None, false),
            };
            Some(self.table_for(&w.schema, &w.table, shape, key_only)?)
        };
        if matches!(
            op,
            Op::Insert | Op::Update | Op::Delete | Op::Truncate | Op::Read
        ) && table.is_none()
        {
            return Err(format!(
                "a {} change needs a schema and a table",
                op.as_str()
            ));
        }
        let t = table.as_deref();
        let before = match w.before {
            Some(row) => {
                let t = t.ok_or("before without a table")?;
                let kind = if w.before_is_full {
                    Before::Full
                } else {
                    Before::Key
                };
                Some((kind, row_from_wit(t, row)?))
            }
            None => None,
        };
        let after = match w.after {
            Some(row) => Some(row_from_wit(t.ok_or("after without a table")?, row)?),
            None => None,
        };
        let message = w.message.map(|m| DecodingMessage {
            prefix: m.prefix,
            content: Bytes::from(m.content),
            transactional: m.transactional,
        });
        if op == Op::Message && message.is_none() {
            return Err("a message change needs its message".into());
        }
        let routing = (w.route.is_some() || !w.headers.is_empty()).then(|| {
            Box::new(Routing {
                route: w.route,
                headers: w.headers,
            })
        });
        if let Some(r) = &routing {
            check_routing(r)?;
        }
        Ok(Change {
            op,
            // A read's id names no WAL position: it keeps the one it was delivered at.
            commit_lsn: if id.read.is_some() {
                Lsn(w.commit_lsn)
            } else {
                id.commit_lsn
            },
            ordinal: id.ordinal,
            split: id.split,
            lsn: Lsn(w.lsn),
            xid: w.xid,
            commit_ts: ts_from_unix(w.commit_ts),
            table,
            before,
            after,
            truncate: w.truncate.map(|o| (o.cascade, o.restart_identity)),
            message,
            routing,
            read: id.read.map(|key| SnapshotRead {
                key,
                last: Some(key) == last_read,
            }),
            // The WIT carries no origin: the chain puts each transaction's back
            // (`transform::origins`).
            origin: None,
        })
    }

    /// The table whose columns match the row's (names, types, key flags), reusing a
    /// known shape when there is one.
    fn table_for(
        &mut self,
        schema: &str,
        name: &str,
        row: Option<&Vec<wit::Column>>,
        key_only: bool,
    ) -> Result<Arc<Table>, String> {
        let shapes = self.shapes_of(schema, name);
        let matches = |t: &Table| match row {
            None => true,
            Some(row) => {
                let cols = t.columns.iter().filter(|c| !key_only || c.is_key);
                cols.clone().count() == row.len()
                    && cols.zip(row).all(|(c, w)| {
                        *c.name == *w.name
                            && (c.type_oid == w.type_oid || w.type_oid == 0)
                            && c.is_key == w.is_key
                    })
            }
        };
        if let Some(pos) = shapes.iter().position(|t| matches(t)) {
            return Ok(Arc::clone(&shapes[pos]));
        }
        let Some(row) = row else {
            // A truncate of a table the batch never mentioned: no columns needed.
            let t = Arc::new(Table {
                id: 0,
                schema: schema.into(),
                name: name.into(),
                replica_identity: ReplicaIdentity::Default,
                columns: Vec::new(),
            });
            shapes.insert(0, Arc::clone(&t));
            return Ok(t);
        };
        let template = shapes.first().cloned();
        let mut names = std::collections::HashSet::new();
        let mut columns = Vec::with_capacity(row.len());
        for w in row {
            if w.name.is_empty() {
                return Err("a column without a name".into());
            }
            if !names.insert(w.name.as_str()) {
                return Err(format!("column {:?} appears twice", w.name));
            }
            let known = template
                .as_ref()
                .and_then(|t| t.columns.iter().find(|c| *c.name == *w.name));
            let type_oid = match (w.type_oid, known) {
                (0, Some(k)) => k.type_oid,
                (0, None) => oid_of(&w.value),
                (o, _) => o,
            };
            let type_info = match known {
                Some(k) if k.type_oid == type_oid => k.type_info.clone(),
                _ => builtin_type(type_oid).unwrap_or_else(|| TypeInfo::other(type_oid)),
            };
            columns.push(Column {
                name: w.name.as_str().into(),
                type_oid,
                type_info,
                is_key: w.is_key,
            });
        }
        let t = Arc::new(Table {
            id: template.as_ref().map_or(0, |t| t.id),
            schema: schema.into(),
            name: name.into(),
            replica_identity: template
                .as_ref()
                .map_or(ReplicaIdentity::Default, |t| t.replica_identity),
            columns,
        });
        shapes.insert(0, Arc::clone(&t));
        shapes.truncate(MAX_SHAPES);
        Ok(t)
    }
}

pub(crate) fn check_routing(r: &Routing) -> Result<(), String> {
    if let Some(route) = &r.route {
        if route.is_empty() || route.chars().any(char::is_control) {
            return Err(format!("invalid route {route:?}"));
        }
    }
    for (k, v) in &r.headers {
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(format!("invalid header name {k:?}"));
        }
        if v.chars().any(|c| c == '\r' || c == '\n') {
            return Err(format!("header {k}: value contains a line break"));
        }
    }
    Ok(())
}

/// The builtin type oid a value stands for (for columns a transform adds with oid 0).
pub(crate) fn oid_of(v: &wit::Value) -> u32 {
    use wit::Value as W;
    match v {
        W::Null | W::UnchangedToast | W::Text(_) => oid::TEXT,
        W::Boolean(_) => oid::BOOL,
        W::Int2(_) => oid::INT2,
        W::Int4(_) => oid::INT4,
        W::Int8(_) => oid::INT8,
        W::Float4(_) => oid::FLOAT4,
        W::Float8(_) => oid::FLOAT8,
        W::Numeric(_) => oid::NUMERIC,
        W::Bytea(_) => oid::BYTEA,
        W::Json(_) => oid::JSON,
        W::Jsonb(_) => oid::JSONB,
        W::Uuid(_) => oid::UUID,
        W::Date(_) => oid::DATE,
        W::Time(_) => oid::TIME,
        W::Timetz(_) => oid::TIMETZ,
        W::Timestamp(_) => oid::TIMESTAMP,
        W::Timestamptz(_) => oid::TIMESTAMPTZ,
        W::Interval(_) => oid::INTERVAL,
        W::Array(_) => 0,
        W::EnumLabel(_) => oid::TEXT,
        W::Other(o) => o.type_oid,
    }
}

fn row_from_wit(t: &Table, row: Vec<wit::Column>) -> Result<Row, String> {
    // `table_for` picked a table with exactly these columns for `after` (or `before`
    // when there is no after); the other image of an update may hold only the key.
    let mut values = vec![Value::Null; t.columns.len()];
    for w in row {
        let Some(pos) = t.columns.iter().position(|c| *c.name == *w.name) else {
            return Err(format!(
                "column {:?} is in one row image of {}.{} but not the other",
                w.name, t.schema, t.name
            ));
        };
        values[pos] = value_from_wit(w.value).map_err(|m| format!("column {}: {m}", w.name))?;
    }
    Ok(Row(values))
}

fn text(s: String) -> PgText {
    PgText::from(s)
}

pub(crate) fn value_from_wit(v: wit::Value) -> Result<Value, String> {
    use wit::Value as W;
    Ok(match v {
        W::Null => Value::Null,
        W::UnchangedToast => Value::UnchangedToast,
        W::Array(a) => {
            let n: u64 = a.dims.iter().map(|&d| u64::from(d)).product();
            let expected = if a.dims.is_empty() { 0 } else { n };
            if expected != a.elements.len() as u64 {
                return Err(format!(
                    "array dims {:?} need {expected} elements, got {}",
                    a.dims,
                    a.elements.len()
                ));
            }
            Value::Array(Array {
                elem_oid: a.element_oid,
                dims: a.dims,
                elements: a
                    .elements
                    .into_iter()
                    .map(element_from_wit)
                    .collect::<Result<_, _>>()?,
            })
        }
        W::Boolean(b) => Value::Bool(b),
        W::Int2(x) => Value::Int2(x),
        W::Int4(x) => Value::Int4(x),
        W::Int8(x) => Value::Int8(x),
        W::Float4(x) => Value::Float4(x),
        W::Float8(x) => Value::Float8(x),
        W::Numeric(s) => numeric(s)?,
        W::Text(s) => Value::Text(text(s)),
        W::Bytea(b) => Value::Bytea(Bytes::from(b)),
        W::Json(s) => Value::Json(json(s)?),
        W::Jsonb(s) => Value::Jsonb(json(s)?),
        W::Uuid(s) => Value::Uuid(uuid(&s)?),
        W::Date(d) => Value::Date(date_from_unix(d)),
        W::Time(t) => Value::Time(time(t)?),
        W::Timetz(t) => Value::TimeTz {
            micros: time(t.micros)?,
            offset_secs: t.offset_secs,
        },
        W::Timestamp(t) => Value::Timestamp(ts_from_unix(t)),
        W::Timestamptz(t) => Value::TimestampTz(ts_from_unix(t)),
        W::Interval(i) => Value::Interval {
            months: i.months,
            days: i.days,
            micros: i.micros,
        },
        W::EnumLabel(s) => Value::Enum(text(s)),
        W::Other(o) => Value::Other {
            type_oid: o.type_oid,
            text: text(o.text),
        },
    })
}

fn element_from_wit(e: wit::Element) -> Result<Value, String> {
    use wit::Element as E;
    use wit::Value as W;
    let v = match e {
        E::Null => W::Null,
        E::Boolean(x) => W::Boolean(x),
        E::Int2(x) => W::Int2(x),
        E::Int4(x) => W::Int4(x),
        E::Int8(x) => W::Int8(x),
        E::Float4(x) => W::Float4(x),
        E::Float8(x) => W::Float8(x),
        E::Numeric(x) => W::Numeric(x),
        E::Text(x) => W::Text(x),
        E::Bytea(x) => W::Bytea(x),
        E::Json(x) => W::Json(x),
        E::Jsonb(x) => W::Jsonb(x),
        E::Uuid(x) => W::Uuid(x),
        E::Date(x) => W::Date(x),
        E::Time(x) => W::Time(x),
        E::Timetz(x) => W::Timetz(x),
        E::Timestamp(x) => W::Timestamp(x),
        E::Timestamptz(x) => W::Timestamptz(x),
        E::Interval(x) => W::Interval(x),
        E::EnumLabel(x) => W::EnumLabel(x),
        E::Other(x) => W::Other(x),
    };
    value_from_wit(v)
}

fn numeric(s: String) -> Result<Value, String> {
    Ok(Value::Numeric(match s.as_str() {
        "NaN" => Numeric::NaN,
        "Infinity" => Numeric::PosInf,
        "-Infinity" => Numeric::NegInf,
        t => {
            let digits = t.strip_prefix('-').unwrap_or(t);
            let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
            let ok = !int.is_empty()
                && !frac.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit());
            if !ok {
                return Err(format!(
                    "invalid numeric {s:?} (expected -?digits[.digits], NaN or [-]Infinity)"
                ));
            }
            Numeric::Finite(Bytes::from(s))
        }
    }))
}

fn json(s: String) -> Result<PgText, String> {
    serde_json::from_str::<serde::de::IgnoredAny>(&s).map_err(|e| format!("invalid json ({e})"))?;
    Ok(text(s))
}

fn time(micros: i64) -> Result<i64, String> {
    if (0..=86_400_000_000).contains(&micros) {
        Ok(micros)
    } else {
        Err(format!("time of day out of range: {micros} µs"))
    }
}

pub(super) fn uuid(s: &str) -> Result<[u8; 16], String> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    let bad = || format!("invalid uuid {s:?}");
    if hex.len() != 32 || s.len() != 36 {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16).ok_or_else(bad)?;
        let lo = (pair[1] as char).to_digit(16).ok_or_else(bad)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Ok(out)
}
