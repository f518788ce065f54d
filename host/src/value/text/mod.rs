//! Parsing Postgres text-format output into [`Value`]s.
//!
//! Each parser accepts what the matching Postgres output function prints
//! under the replication session's settings (`DateStyle=ISO`,
//! `IntervalStyle=postgres`, `TimeZone=UTC`, `bytea_output=hex`), plus a few
//! harmless variants (other UTC offsets, `bytea` escape format). Input
//! syntaxes the server never prints (`'yesterday'`, `1e5` numerics, ...) are
//! errors: accepting them would only hide a mismatch between the session
//! settings and this code.
//!
//! Every parser is total: malformed input gives an error, never a panic.
//!
//! Layout: `scalar` (numbers, bool, bytea, uuid) and `datetime` (dates,
//! times, intervals) are the parsers; this module dispatches on the type and
//! hands [`parse_text`] to `array` as its element parser.

mod datetime;
pub(super) mod record;
mod scalar;

use bytes::Bytes;

use self::datetime::{parse_date, parse_interval, parse_time, parse_timestamp, parse_timetz};
use self::scalar::{
    parse_bool, parse_bytea, parse_float, parse_int, parse_numeric, parse_uuid, Reason,
};
use super::array::parse_array;
use super::json::validate::is_valid_json;
use super::model::{PgText, Value, ValueError};
use super::types::{TypeInfo, TypeKind};

/// Parses the text output of a value of type `ty`.
///
/// `raw` is normally a slice of the network buffer; text-like results share
/// it instead of copying.
pub fn parse_text(ty: &TypeInfo, raw: Bytes) -> Result<Value, ValueError> {
    match &ty.kind {
        TypeKind::Text => return Value::text_of(ty, raw, Value::Text),
        TypeKind::Enum => return Value::text_of(ty, raw, Value::Enum),
        _ => {}
    }
    let s: &[u8] = &raw;
    let parsed = match &ty.kind {
        TypeKind::Bool => parse_bool(s).map(Value::Bool),
        TypeKind::Int2 => parse_int(s).map(Value::Int2),
        TypeKind::Int4 => parse_int(s).map(Value::Int4),
        TypeKind::Int8 => parse_int(s).map(Value::Int8),
        TypeKind::Float4 => parse_float(s).map(Value::Float4),
        TypeKind::Float8 => parse_float(s).map(Value::Float8),
        TypeKind::Numeric => parse_numeric(&raw).map(Value::Numeric),
        TypeKind::Bytea => parse_bytea(s).map(Value::Bytea),
        TypeKind::Uuid => parse_uuid(s).map(Value::Uuid),
        TypeKind::Date => parse_date(s).map(Value::Date),
        TypeKind::Time => parse_time(s).map(Value::Time),
        TypeKind::TimeTz => parse_timetz(s).map(|(micros, offset_secs)| Value::TimeTz {
            micros,
            offset_secs,
        }),
        TypeKind::Timestamp => parse_timestamp(s, false).map(Value::Timestamp),
        TypeKind::TimestampTz => parse_timestamp(s, true).map(Value::TimestampTz),
        TypeKind::Interval => parse_interval(s).map(|(months, days, micros)| Value::Interval {
            months,
            days,
            micros,
        }),
        TypeKind::Text => text(&raw).map(Value::Text),
        TypeKind::Json => json(&raw).map(Value::Json),
        TypeKind::Jsonb => json(&raw).map(Value::Jsonb),
        TypeKind::Enum => text(&raw).map(Value::Enum),
        TypeKind::Other | TypeKind::ExtText { .. } => text(&raw).map(|text| Value::Other {
            type_oid: ty.oid,
            text,
        }),
        TypeKind::Array(elem) => return parse_array(ty, elem, raw, parse_text),
        TypeKind::Composite(c) => return record::parse_composite(ty, c, s, parse_text),
        TypeKind::Hstore => return record::parse_hstore(ty, s),
    };
    parsed.map_err(|reason| ValueError::new(ty, s, reason))
}

fn text(raw: &Bytes) -> Result<PgText, Reason> {
    PgText::new(raw.clone()).map_err(|_| "invalid UTF-8")
}

/// `json` and `jsonb` text is embedded in our JSON output as-is, so it is
/// checked: a wrongly typed column must not corrupt the output document.
fn json(raw: &Bytes) -> Result<PgText, Reason> {
    let t = text(raw)?;
    if is_valid_json(t.as_bytes()) {
        Ok(t)
    } else {
        Err("invalid JSON")
    }
}

/// Helpers for the parsers' tests (they go through [`parse_text`], as the
/// replication stream does).
#[cfg(test)]
mod check {
    use bytes::Bytes;

    use super::parse_text;
    use crate::value::{builtin_type, Value, ValueError};

    pub(super) fn parse(type_oid: u32, text: &str) -> Result<Value, ValueError> {
        parse_text(
            &builtin_type(type_oid).unwrap(),
            Bytes::copy_from_slice(text.as_bytes()),
        )
    }

    pub(super) fn ok(type_oid: u32, text: &str) -> Value {
        parse(type_oid, text).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(super) fn rejects(type_oid: u32, texts: &[&str]) {
        for text in texts {
            assert!(
                parse(type_oid, text).is_err(),
                "type {type_oid} accepted {text:?}"
            );
        }
    }
}
