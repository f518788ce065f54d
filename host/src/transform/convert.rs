//! Changes to and from the WIT record (`cdc:pipeline/types.change`).
//!
//! The host keeps Postgres's conventions (epoch 2000-01-01, text sharing the network
//! buffer); the WIT record uses what a guest author expects (Unix epoch, plain
//! strings). Values coming back from a guest are checked before anything encodes
//! them — a numeric that is not a number or a json that is not JSON would otherwise
//! become invalid output downstream.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::runtime::wit;
use crate::change::{Before, Change, ChangeId, Column, DecodingMessage, Op, Routing, Row, Table};
use crate::lsn::Lsn;
use crate::pgoutput::ReplicaIdentity;
use crate::value::{
    builtin_type, oid, Array, Numeric, PgText, TypeInfo, Value, DATE_NEG_INFINITY,
    DATE_POS_INFINITY, TS_NEG_INFINITY, TS_POS_INFINITY,
};

/// Days from 1970-01-01 to 2000-01-01.
const EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A change a guest returned that cannot be turned back into a host change.
#[derive(Debug, thiserror::Error)]
#[error("change {index} ({id}): {message}")]
pub struct ConvertError {
    pub index: usize,
    pub id: String,
    pub message: String,
}

// ---- host → guest -------------------------------------------------------------------

pub fn to_wit(c: &Change) -> wit::Change {
    let (schema, table) = match &c.table {
        Some(t) => (t.schema.to_string(), t.name.to_string()),
        None => (String::new(), String::new()),
    };
    let (before, before_is_full) = match (&c.before, &c.table) {
        (Some((kind, row)), Some(t)) => (
            Some(row_to_wit(t, row, *kind == Before::Key)),
            *kind == Before::Full,
        ),
        _ => (None, false),
    };
    let after = match (&c.after, &c.table) {
        (Some(row), Some(t)) => Some(row_to_wit(t, row, false)),
        _ => None,
    };
    let (route, headers) = match &c.routing {
        Some(r) => (r.route.clone(), r.headers.clone()),
        None => (None, Vec::new()),
    };
    wit::Change {
        id: c.id().to_text(),
        op: match c.op {
            Op::Insert => wit::Op::Insert,
            Op::Update => wit::Op::Update,
            Op::Delete => wit::Op::Delete,
            Op::Truncate => wit::Op::Truncate,
            Op::Message => wit::Op::Message,
        },
        schema,
        table,
        before,
        before_is_full,
        after,
        lsn: c.lsn.0,
        commit_lsn: c.commit_lsn.0,
        xid: c.xid,
        commit_ts: ts_to_unix(c.commit_ts),
        truncate: c
            .truncate
            .map(|(cascade, restart_identity)| wit::TruncateOptions {
                cascade,
                restart_identity,
            }),
        message: c.message.as_ref().map(|m| wit::LogicalMessage {
            prefix: m.prefix.clone(),
            content: m.content.to_vec(),
            transactional: m.transactional,
        }),
        route,
        headers,
    }
}

/// A row image; with `key_only` (the old key of REPLICA IDENTITY DEFAULT/INDEX) just
/// the key columns, which are all pgoutput sent.
fn row_to_wit(t: &Table, row: &Row, key_only: bool) -> Vec<wit::Column> {
    t.columns
        .iter()
        .zip(&row.0)
        .filter(|(col, _)| !key_only || col.is_key)
        .map(|(col, v)| wit::Column {
            name: col.name.to_string(),
            type_oid: col.type_oid,
            is_key: col.is_key,
            value: value_to_wit(v),
        })
        .collect()
}

fn date_to_unix(d: i32) -> i32 {
    match d {
        DATE_NEG_INFINITY | DATE_POS_INFINITY => d,
        d => d.saturating_add(EPOCH_DAYS),
    }
}

fn date_from_unix(d: i32) -> i32 {
    match d {
        DATE_NEG_INFINITY | DATE_POS_INFINITY => d,
        d => d.saturating_sub(EPOCH_DAYS),
    }
}

fn ts_to_unix(t: i64) -> i64 {
    match t {
        TS_NEG_INFINITY | TS_POS_INFINITY => t,
        t => t.saturating_add(EPOCH_MICROS),
    }
}

fn ts_from_unix(t: i64) -> i64 {
    match t {
        TS_NEG_INFINITY | TS_POS_INFINITY => t,
        t => t.saturating_sub(EPOCH_MICROS),
    }
}

fn uuid_text(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    s
}

fn value_to_wit(v: &Value) -> wit::Value {
    use wit::Value as W;
    match v {
        Value::Null => W::Null,
        Value::UnchangedToast => W::UnchangedToast,
        Value::Array(a) => W::Array(wit::PgArray {
            element_oid: a.elem_oid,
            dims: a.dims.clone(),
            elements: a.elements.iter().map(element_to_wit).collect(),
        }),
        other => match element_to_wit(other) {
            wit::Element::Null => W::Null,
            wit::Element::Boolean(b) => W::Boolean(b),
            wit::Element::Int2(x) => W::Int2(x),
            wit::Element::Int4(x) => W::Int4(x),
            wit::Element::Int8(x) => W::Int8(x),
            wit::Element::Float4(x) => W::Float4(x),
            wit::Element::Float8(x) => W::Float8(x),
            wit::Element::Numeric(x) => W::Numeric(x),
            wit::Element::Text(x) => W::Text(x),
            wit::Element::Bytea(x) => W::Bytea(x),
            wit::Element::Json(x) => W::Json(x),
            wit::Element::Jsonb(x) => W::Jsonb(x),
            wit::Element::Uuid(x) => W::Uuid(x),
            wit::Element::Date(x) => W::Date(x),
            wit::Element::Time(x) => W::Time(x),
            wit::Element::Timetz(x) => W::Timetz(x),
            wit::Element::Timestamp(x) => W::Timestamp(x),
            wit::Element::Timestamptz(x) => W::Timestamptz(x),
            wit::Element::Interval(x) => W::Interval(x),
            wit::Element::EnumLabel(x) => W::EnumLabel(x),
            wit::Element::Other(x) => W::Other(x),
        },
    }
}

fn element_to_wit(v: &Value) -> wit::Element {
    use wit::Element as E;
    match v {
        // Neither occurs inside an array; `value_to_wit` handles them at the top level.
        Value::Null | Value::UnchangedToast | Value::Array(_) => E::Null,
        Value::Bool(b) => E::Boolean(*b),
        Value::Int2(x) => E::Int2(*x),
        Value::Int4(x) => E::Int4(*x),
        Value::Int8(x) => E::Int8(*x),
        Value::Float4(x) => E::Float4(*x),
        Value::Float8(x) => E::Float8(*x),
        Value::Numeric(n) => E::Numeric(n.as_str().to_owned()),
        Value::Text(t) => E::Text(t.as_str().to_owned()),
        Value::Bytea(b) => E::Bytea(b.to_vec()),
        Value::Json(t) => E::Json(t.as_str().to_owned()),
        Value::Jsonb(t) => E::Jsonb(t.as_str().to_owned()),
        Value::Uuid(u) => E::Uuid(uuid_text(u)),
        Value::Date(d) => E::Date(date_to_unix(*d)),
        Value::Time(t) => E::Time(*t),
        Value::TimeTz {
            micros,
            offset_secs,
        } => E::Timetz(wit::TimeTz {
            micros: *micros,
            offset_secs: *offset_secs,
        }),
        Value::Timestamp(t) => E::Timestamp(ts_to_unix(*t)),
        Value::TimestampTz(t) => E::Timestamptz(ts_to_unix(*t)),
        Value::Interval {
            months,
            days,
            micros,
        } => E::Interval(wit::Interval {
            months: *months,
            days: *days,
            micros: *micros,
        }),
        Value::Enum(t) => E::EnumLabel(t.as_str().to_owned()),
        Value::Other { type_oid, text } => E::Other(wit::OtherValue {
            type_oid: *type_oid,
            text: text.as_str().to_owned(),
        }),
    }
}

// ---- guest → host -------------------------------------------------------------------

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
            let change = self.change(w, id).map_err(|m| ConvertError {
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

    fn change(&mut self, w: wit::Change, id: ChangeId) -> Result<Change, String> {
        let op = match w.op {
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
        if matches!(op, Op::Insert | Op::Update | Op::Delete | Op::Truncate) && table.is_none() {
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
            commit_lsn: id.commit_lsn,
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

fn check_routing(r: &Routing) -> Result<(), String> {
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
fn oid_of(v: &wit::Value) -> u32 {
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

fn value_from_wit(v: wit::Value) -> Result<Value, String> {
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

fn uuid(s: &str) -> Result<[u8; 16], String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Arc<Table> {
        Arc::new(Table {
            id: 7,
            schema: "public".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                Column {
                    name: "id".into(),
                    type_oid: oid::INT8,
                    type_info: builtin_type(oid::INT8).unwrap(),
                    is_key: true,
                },
                Column {
                    name: "v".into(),
                    type_oid: oid::TEXT,
                    type_info: builtin_type(oid::TEXT).unwrap(),
                    is_key: false,
                },
            ],
        })
    }

    fn change(values: Vec<Value>) -> Change {
        Change {
            op: Op::Insert,
            commit_lsn: Lsn(0x100),
            ordinal: 2,
            split: 0,
            lsn: Lsn(0xF0),
            xid: 9,
            commit_ts: 1_000,
            table: Some(table()),
            before: None,
            after: Some(Row(values)),
            truncate: None,
            message: None,
            routing: None,
        }
    }

    #[test]
    fn round_trip_keeps_values_and_the_table() {
        let values = vec![
            Value::Int8(i64::MIN),
            Value::Text(PgText::from("héllo".to_string())),
        ];
        let c = change(values.clone());
        let mut fg = FromGuest::default();
        let back = fg
            .convert(std::slice::from_ref(&c), vec![to_wit(&c)])
            .unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].after, Some(Row(values)));
        assert!(Arc::ptr_eq(
            back[0].table.as_ref().unwrap(),
            c.table.as_ref().unwrap()
        ));
        assert_eq!(back[0].id(), c.id());
        assert_eq!(back[0].commit_ts, c.commit_ts);
    }

    #[test]
    fn epochs_move_to_unix_and_back_but_infinities_stay() {
        assert_eq!(date_to_unix(0), 10_957);
        assert_eq!(date_from_unix(date_to_unix(-5)), -5);
        assert_eq!(date_to_unix(DATE_POS_INFINITY), DATE_POS_INFINITY);
        assert_eq!(ts_to_unix(0), EPOCH_MICROS);
        assert_eq!(ts_to_unix(TS_NEG_INFINITY), TS_NEG_INFINITY);
        assert_eq!(ts_from_unix(ts_to_unix(123)), 123);
    }

    #[test]
    fn splits_get_distinct_stable_ids() {
        let c = change(vec![Value::Int8(1), Value::Null]);
        let w = to_wit(&c);
        let mut fg = FromGuest::default();
        let out = fg
            .convert(std::slice::from_ref(&c), vec![w.clone(), w.clone(), w])
            .unwrap();
        let ids: Vec<String> = out.iter().map(|c| c.id().to_string()).collect();
        assert_eq!(
            ids,
            [
                "0000000000000100-00000002",
                "0000000000000100-00000002.1",
                "0000000000000100-00000002.2"
            ]
        );
    }

    #[test]
    fn reshaped_rows_get_a_new_table_once() {
        let c = change(vec![Value::Int8(1), Value::Null]);
        let mut w = to_wit(&c);
        let after = w.after.as_mut().unwrap();
        after[1].type_oid = oid::BOOL;
        after[1].value = wit::Value::Boolean(true);
        after.push(wit::Column {
            name: "extra".into(),
            type_oid: 0,
            is_key: false,
            value: wit::Value::Int4(5),
        });
        let mut fg = FromGuest::default();
        let out = fg
            .convert(std::slice::from_ref(&c), vec![w.clone(), w])
            .unwrap();
        let t0 = out[0].table.as_ref().unwrap();
        assert!(Arc::ptr_eq(t0, out[1].table.as_ref().unwrap()));
        assert_eq!(t0.columns.len(), 3);
        assert_eq!(t0.columns[2].type_oid, oid::INT4);
        assert_eq!(t0.columns[1].type_oid, oid::BOOL);
    }

    #[test]
    fn bad_values_from_a_guest_are_errors() {
        for (bad, needle) in [
            (wit::Value::Numeric("1e5".into()), "invalid numeric"),
            (wit::Value::Numeric("".into()), "invalid numeric"),
            (wit::Value::Json("{".into()), "invalid json"),
            (wit::Value::Uuid("nope".into()), "invalid uuid"),
            (wit::Value::Time(-1), "out of range"),
        ] {
            let c = change(vec![Value::Int8(1), Value::Null]);
            let mut w = to_wit(&c);
            w.after.as_mut().unwrap()[1].value = bad;
            let err = FromGuest::default()
                .convert(std::slice::from_ref(&c), vec![w])
                .unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
        let c = change(vec![Value::Int8(1), Value::Null]);
        let mut w = to_wit(&c);
        w.id = "x".into();
        assert!(FromGuest::default()
            .convert(std::slice::from_ref(&c), vec![w])
            .is_err());
    }

    #[test]
    fn uuid_text_round_trips() {
        let u = [
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ];
        let s = uuid_text(&u);
        assert_eq!(s, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        assert_eq!(uuid(&s).unwrap(), u);
    }
}
