//! Typed column values.
//!
//! pgoutput sends every column in Postgres *text* format (we never ask for
//! binary). [`parse_text`] turns that text into a [`Value`], and
//! [`write_json`] renders a [`Value`] exactly as the server's own
//! `to_jsonb(value)::text` would, so downstream consumers see the same JSON
//! whether they read it from us or from `SELECT to_jsonb(..)`.
//!
//! The text is expected to come from a session with `DateStyle=ISO`,
//! `IntervalStyle=postgres`, `TimeZone=UTC`, `extra_float_digits>=1` and
//! `bytea_output=hex`; those are what the replication connection sets.
//!
//! Text-like values keep the network buffer alive through [`bytes::Bytes`]
//! slices instead of copying: a row's values usually outlive the parse of the
//! row only briefly, and copying every string would double the memory traffic
//! of the hot path.

mod array;
mod json;
mod text;
mod types;

use bytes::Bytes;

pub use json::{write_json, write_json_str};
pub use text::parse_text;
pub use types::{builtin_type, oid, TypeInfo, TypeKind};

/// One decoded column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL (pgoutput `n`).
    Null,
    /// pgoutput `u`: a TOASTed column that the UPDATE did not change, so the
    /// server did not send it. It is *not* a null: the column still holds its
    /// old value, which we simply do not know. [`write_json`] renders it as
    /// `null` only so that output stays valid JSON; callers should handle it
    /// before rendering (e.g. omit the column).
    UnchangedToast,
    Bool(bool),
    Int2(i16),
    Int4(i32),
    Int8(i64),
    Float4(f32),
    Float8(f64),
    Numeric(Numeric),
    /// `text`, `varchar`, `bpchar` (padding kept, as Postgres outputs it),
    /// `name` and `"char"`.
    Text(PgText),
    /// Decoded bytes (not the `\x..` text).
    Bytea(Bytes),
    /// `json` text exactly as stored (the server keeps it verbatim).
    Json(PgText),
    /// `jsonb` text as the server printed it (already normalised).
    Jsonb(PgText),
    Uuid([u8; 16]),
    /// Days since 2000-01-01 (the Postgres epoch). [`DATE_NEG_INFINITY`] and
    /// [`DATE_POS_INFINITY`] stand for `-infinity` / `infinity`, as in
    /// Postgres itself (`DATEVAL_NOBEGIN` / `DATEVAL_NOEND`).
    Date(i32),
    /// Microseconds since midnight, `0..=86_400_000_000` (`24:00:00` is
    /// a valid `time`).
    Time(i64),
    /// Time of day with its UTC offset. `offset_secs` is seconds **east** of
    /// UTC, i.e. the sign is the one printed (`+05:30` is `19800`). Postgres
    /// stores the opposite sign internally; we use the printed convention
    /// because that is what every consumer expects.
    TimeTz {
        micros: i64,
        offset_secs: i32,
    },
    /// Microseconds since 2000-01-01 00:00:00. [`TS_NEG_INFINITY`] and
    /// [`TS_POS_INFINITY`] stand for `-infinity` / `infinity`.
    Timestamp(i64),
    /// Microseconds since 2000-01-01 00:00:00 UTC; infinities as for
    /// [`Value::Timestamp`].
    TimestampTz(i64),
    /// Postgres keeps the three fields separately because a month and a day
    /// have no fixed length; so do we. Postgres 17's infinite intervals are
    /// all-`MAX` (`infinity`) or all-`MIN` (`-infinity`).
    Interval {
        months: i32,
        days: i32,
        micros: i64,
    },
    Array(Array),
    /// The label of a user-defined enum value.
    Enum(PgText),
    /// Any type we do not decode: its text output plus its type oid.
    Other {
        type_oid: u32,
        text: PgText,
    },
}

/// `Value::Date` of `-infinity`.
pub const DATE_NEG_INFINITY: i32 = i32::MIN;
/// `Value::Date` of `infinity`.
pub const DATE_POS_INFINITY: i32 = i32::MAX;
/// `Value::Timestamp`/`TimestampTz` of `-infinity`.
pub const TS_NEG_INFINITY: i64 = i64::MIN;
/// `Value::Timestamp`/`TimestampTz` of `infinity`.
pub const TS_POS_INFINITY: i64 = i64::MAX;

/// A `numeric` value. Finite values keep the exact decimal text the server
/// sent (`-?digits(.digits)?`, never an exponent): converting to a binary
/// float would lose precision, and `to_jsonb` prints numeric with exactly
/// that text (`1.50` stays `1.50`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Numeric {
    Finite(Bytes),
    NaN,
    PosInf,
    NegInf,
}

impl Numeric {
    /// The text as Postgres prints it.
    pub fn as_str(&self) -> &str {
        match self {
            // Finite text is validated ASCII at construction.
            Numeric::Finite(b) => std::str::from_utf8(b).unwrap_or("0"),
            Numeric::NaN => "NaN",
            Numeric::PosInf => "Infinity",
            Numeric::NegInf => "-Infinity",
        }
    }
}

/// UTF-8-validated text sharing the network buffer.
///
/// The bytes are validated once at construction; the field is private so the
/// invariant cannot be broken afterwards.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PgText(Bytes);

impl PgText {
    /// Validates `bytes` as UTF-8 without copying them.
    pub fn new(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(PgText(bytes))
    }

    pub fn from_static(s: &'static str) -> Self {
        PgText(Bytes::from_static(s.as_bytes()))
    }

    /// The text. This re-checks UTF-8 (we forbid `unsafe`, so there is no
    /// unchecked conversion); the hot JSON path uses [`PgText::as_bytes`]
    /// and skips the check.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("PgText holds validated UTF-8")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for PgText {
    fn from(s: String) -> Self {
        PgText(Bytes::from(s))
    }
}

impl From<&'static str> for PgText {
    fn from(s: &'static str) -> Self {
        PgText::from_static(s)
    }
}

impl std::fmt::Debug for PgText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for PgText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Postgres array, flattened.
///
/// `dims` holds the length of each dimension (outermost first) and
/// `elements` the values in row-major order, so `elements.len()` is the
/// product of `dims`. An empty array has no dimensions, as in Postgres.
/// Lower bounds (`[0:1]={..}`) are dropped: `to_jsonb` drops them too.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub elem_oid: u32,
    pub dims: Vec<u32>,
    pub elements: Vec<Value>,
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Renders this value as `to_jsonb(value)` would, appending to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        write_json(self, out)
    }
}

/// Column text that does not parse as its declared type.
///
/// Carries the type and (a prefix of) the offending text, so a log line is
/// enough to reproduce the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {type_name} value (type oid {type_oid}): {reason}: {text:?}")]
pub struct ValueError {
    pub type_name: &'static str,
    pub type_oid: u32,
    /// The offending text, lossily decoded and cut to [`ValueError::MAX_TEXT`]
    /// characters (a `…` marks a cut).
    pub text: String,
    pub reason: &'static str,
}

impl ValueError {
    /// How many characters of the offending text an error keeps.
    pub const MAX_TEXT: usize = 64;

    pub fn new(ty: &TypeInfo, raw: &[u8], reason: &'static str) -> Self {
        let lossy = String::from_utf8_lossy(raw);
        let mut text: String = lossy.chars().take(Self::MAX_TEXT).collect();
        if lossy.chars().nth(Self::MAX_TEXT).is_some() {
            text.push('…');
        }
        ValueError {
            type_name: ty.kind.name(),
            type_oid: ty.oid,
            text,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(type oid, text as the server sends it, to_jsonb(value)::text)`,
    /// captured from PostgreSQL 15 with `TimeZone=UTC`, `DateStyle=ISO`,
    /// `IntervalStyle=postgres`, `extra_float_digits=3`, `bytea_output=hex`.
    /// The floats include values where plain shortest-round-trip formatting
    /// differs from Postgres (boundaries and ties; see json.rs).
    const SERVER_CASES: &[(u32, &str, &str)] = &[
        (701, "1e+100", "10000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"),
        (701, "1.5e-05", "0.000015"),
        (701, "-0", "0"),
        (701, "0", "0"),
        (701, "NaN", "\"NaN\""),
        (701, "Infinity", "\"Infinity\""),
        (701, "-Infinity", "\"-Infinity\""),
        (701, "0.1", "0.1"),
        (701, "1e+15", "1000000000000000"),
        (701, "100000000000000", "100000000000000"),
        (701, "1.2345678901234568e+17", "123456789012345680"),
        (701, "0.0001", "0.0001"),
        (701, "1e-05", "0.00001"),
        (701, "1.7976931348623157e+308", "179769313486231570000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"),
        (701, "5e-324", "0.000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000005"),
        (701, "2.2250738585072014e-308", "0.000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000022250738585072014"),
        (701, "-1.25", "-1.25"),
        (701, "100", "100"),
        (701, "0.30000000000000004", "0.30000000000000004"),
        (701, "2.0887026882759562e+15", "2088702688275956.2"),
        (701, "1.9722120508600672e+16", "19722120508600672"),
        (701, "-139821218632934.62", "-139821218632934.62"),
        (701, "4.6106460129601597e+18", "4610646012960159700"),
        (701, "4.8190162303894016e+16", "48190162303894016"),
        (701, "9.007199254740992e+15", "9007199254740992"),
        (701, "4.503599627370496e+15", "4503599627370496"),
        (700, "1e+06", "1000000"),
        (700, "100000", "100000"),
        (700, "123456", "123456"),
        (700, "1.234567e+06", "1234567"),
        (700, "1.1", "1.1"),
        (700, "1e-05", "0.00001"),
        (700, "3.4028235e+38", "340282350000000000000000000000000000000"),
        (700, "1e-45", "0.000000000000000000000000000000000000000000001"),
        (700, "-0", "0"),
        (700, "NaN", "\"NaN\""),
        (700, "-Infinity", "\"-Infinity\""),
        (700, "0.1", "0.1"),
        (700, "1.6777216e+07", "16777216"),
        (700, "-3.6717882e+06", "-3671788.2"),
        (700, "-3.9823128e+07", "-39823128"),
        (700, "3.9853281e+09", "3985328100"),
        (700, "-475044.62", "-475044.62"),
        (700, "7.3452016e+07", "73452016"),
        (1700, "1.50", "1.50"),
        (1700, "NaN", "\"NaN\""),
        (1700, "Infinity", "\"Infinity\""),
        (1700, "-Infinity", "\"-Infinity\""),
        (1700, "0.000", "0.000"),
        (1700, "0.00000000000000000001", "0.00000000000000000001"),
        (1700, "12345678901234567890.123456789", "12345678901234567890.123456789"),
        (1700, "0.00000000000000000000001234", "0.00000000000000000000001234"),
        (1700, "-5", "-5"),
        (1700, "1000000000000000000000000000000", "1000000000000000000000000000000"),
        (1700, "0", "0"),
        (21, "-32768", "-32768"),
        (21, "32767", "32767"),
        (23, "2147483647", "2147483647"),
        (23, "-2147483648", "-2147483648"),
        (23, "0", "0"),
        (20, "-9223372036854775808", "-9223372036854775808"),
        (20, "9223372036854775807", "9223372036854775807"),
        (26, "4294967295", "\"4294967295\""),
        (16, "t", "true"),
        (16, "f", "false"),
        (1082, "2024-01-15", "\"2024-01-15\""),
        (1082, "0044-03-15 BC", "\"0044-03-15 BC\""),
        (1082, "10000-01-01", "\"10000-01-01\""),
        (1082, "infinity", "\"infinity\""),
        (1082, "-infinity", "\"-infinity\""),
        (1082, "4714-11-24 BC", "\"4714-11-24 BC\""),
        (1082, "5874897-12-31", "\"5874897-12-31\""),
        (1082, "0001-01-01 BC", "\"0001-01-01 BC\""),
        (1082, "0001-01-01", "\"0001-01-01\""),
        (1082, "2000-02-29", "\"2000-02-29\""),
        (1082, "1900-03-01", "\"1900-03-01\""),
        (1082, "0005-02-29 BC", "\"0005-02-29 BC\""),
        (1114, "2024-01-15 10:20:30.123456", "\"2024-01-15T10:20:30.123456\""),
        (1114, "2024-01-15 10:20:30", "\"2024-01-15T10:20:30\""),
        (1114, "2024-01-15 10:20:30.1", "\"2024-01-15T10:20:30.1\""),
        (1114, "0044-03-15 10:00:00 BC", "\"0044-03-15T10:00:00 BC\""),
        (1114, "10000-01-01 00:00:00", "\"10000-01-01T00:00:00\""),
        (1114, "infinity", "\"infinity\""),
        (1114, "-infinity", "\"-infinity\""),
        (1114, "294276-12-31 23:59:59.999999", "\"294276-12-31T23:59:59.999999\""),
        (1114, "4714-11-24 00:00:00 BC", "\"4714-11-24T00:00:00 BC\""),
        (1114, "1999-12-31 23:59:59.999999", "\"1999-12-31T23:59:59.999999\""),
        (1114, "1970-01-01 00:00:00.000001", "\"1970-01-01T00:00:00.000001\""),
        (1184, "2024-01-15 10:20:30.123456+00", "\"2024-01-15T10:20:30.123456+00:00\""),
        (1184, "2024-01-15 04:50:30+00", "\"2024-01-15T04:50:30+00:00\""),
        (1184, "0044-03-15 10:00:00+00 BC", "\"0044-03-15T10:00:00+00:00 BC\""),
        (1184, "10000-01-01 00:00:00+00", "\"10000-01-01T00:00:00+00:00\""),
        (1184, "infinity", "\"infinity\""),
        (1184, "-infinity", "\"-infinity\""),
        (1184, "1900-01-01 03:00:00.5+00", "\"1900-01-01T03:00:00.5+00:00\""),
        (1184, "4714-11-24 00:00:00+00 BC", "\"4714-11-24T00:00:00+00:00 BC\""),
        (1184, "294276-12-31 23:59:59.999999+00", "\"294276-12-31T23:59:59.999999+00:00\""),
        (1083, "10:20:30", "\"10:20:30\""),
        (1083, "10:20:30.12345", "\"10:20:30.12345\""),
        (1083, "24:00:00", "\"24:00:00\""),
        (1083, "00:00:00.000001", "\"00:00:00.000001\""),
        (1083, "00:00:00", "\"00:00:00\""),
        (1266, "10:20:30+02", "\"10:20:30+02\""),
        (1266, "10:20:30.5+05:30", "\"10:20:30.5+05:30\""),
        (1266, "10:20:30-03", "\"10:20:30-03\""),
        (1266, "10:20:30+00", "\"10:20:30+00\""),
        (1266, "10:20:30-05:30:15", "\"10:20:30-05:30:15\""),
        (1266, "24:00:00-15:59:59", "\"24:00:00-15:59:59\""),
        (1266, "00:00:00+15:59:59", "\"00:00:00+15:59:59\""),
        (1186, "1 year 2 mons -3 days +04:05:06.789", "\"1 year 2 mons -3 days +04:05:06.789\""),
        (1186, "-00:00:01", "\"-00:00:01\""),
        (1186, "00:00:00", "\"00:00:00\""),
        (1186, "1 day", "\"1 day\""),
        (1186, "2 days -01:00:00", "\"2 days -01:00:00\""),
        (1186, "-1 years -2 mons", "\"-1 years -2 mons\""),
        (1186, "-10 mons", "\"-10 mons\""),
        (1186, "1 mon", "\"1 mon\""),
        (1186, "100:00:00", "\"100:00:00\""),
        (1186, "-1 days +01:00:00", "\"-1 days +01:00:00\""),
        (1186, "1 day -01:00:00", "\"1 day -01:00:00\""),
        (1186, "00:00:00.000001", "\"00:00:00.000001\""),
        (1186, "-1 days -00:00:00.5", "\"-1 days -00:00:00.5\""),
        (1186, "1 year -1 days", "\"1 year -1 days\""),
        (1186, "-1 mons +1 day", "\"-1 mons +1 day\""),
        (1186, "1 mon -1 days -00:00:01", "\"1 mon -1 days -00:00:01\""),
        (1186, "01:00:01.5", "\"01:00:01.5\""),
        (1186, "-1 years +1 day", "\"-1 years +1 day\""),
        (1186, "1 year", "\"1 year\""),
        (1186, "-2562047788:00:00", "\"-2562047788:00:00\""),
        (17, "\\x0102ff", "\"\\\\x0102ff\""),
        (17, "\\x", "\"\\\\x\""),
        (17, "\\xdeadbeef00", "\"\\\\xdeadbeef00\""),
        (25, "a\"b\\c", "\"a\\\"b\\\\c\""),
        (25, "ctl\x01\x1f\t\n\r\x08\x0c\x7f", "\"ctl\\u0001\\u001f\\t\\n\\r\\b\\f\x7f\""),
        (25, "emoji 😀 é 中", "\"emoji 😀 é 中\""),
        (25, "", "\"\""),
        (25, "</script>", "\"</script>\""),
        (25, "/slash\\/", "\"/slash\\\\/\""),
        (25, "NULL", "\"NULL\""),
        (1043, "var", "\"var\""),
        (1042, "ab", "\"ab\""),
        (1042, "ab   ", "\"ab   \""),
        (18, "a", "\"a\""),
        (19, "nm", "\"nm\""),
        (114, "{\"a\": 1, \"b\": [true, null, \"x\"]}", "{\"a\": 1, \"b\": [true, null, \"x\"]}"),
        (114, "[]", "[]"),
        (114, "\"str\"", "\"str\""),
        (114, "123.5", "123.5"),
        (3802, "{\"a\": [1, 2], \"b\": 100}", "{\"a\": [1, 2], \"b\": 100}"),
        (3802, "{\"k\": \"é\\n\"}", "{\"k\": \"é\\n\"}"),
        (3802, "null", "null"),
        (2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\""),
        (2950, "00000000-0000-0000-0000-000000000000", "\"00000000-0000-0000-0000-000000000000\""),
        (1007, "{1,2,NULL}", "[1, 2, null]"),
        (1007, "{{1,2},{3,4}}", "[[1, 2], [3, 4]]"),
        (1009, "{\"a,b\",\"c\\\"d\",NULL,\"NULL\",\"\",\" x \",\"a\\\\b\",\"{}\"}", "[\"a,b\", \"c\\\"d\", null, \"NULL\", \"\", \" x \", \"a\\\\b\", \"{}\"]"),
        (1007, "{}", "[]"),
        (1007, "[0:1]={1,2}", "[1, 2]"),
        (1022, "{NaN,1e+100,-0}", "[\"NaN\", 10000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000, 0]"),
        (1021, "{1.1,-Infinity}", "[1.1, \"-Infinity\"]"),
        (1231, "{1.50,NaN}", "[1.50, \"NaN\"]"),
        (1182, "{infinity,2024-01-01,\"0044-03-15 BC\"}", "[\"infinity\", \"2024-01-01\", \"0044-03-15 BC\"]"),
        (1185, "{\"2024-01-01 00:00:00+00\"}", "[\"2024-01-01T00:00:00+00:00\"]"),
        (1115, "{\"2024-01-01 00:00:00\",NULL}", "[\"2024-01-01T00:00:00\", null]"),
        (1183, "{10:00:00}", "[\"10:00:00\"]"),
        (1270, "{10:00:00+02}", "[\"10:00:00+02\"]"),
        (1187, "{\"1 day\",-00:00:01}", "[\"1 day\", \"-00:00:01\"]"),
        (1028, "{1,2}", "[\"1\", \"2\"]"),
        (1000, "{t,f}", "[true, false]"),
        (1020, "{(1,1),(0,0);(2,2),(1,1)}", "[\"(1,1),(0,0)\", \"(2,2),(1,1)\"]"),
        (199, "{\"{\\\"a\\\": 1}\",NULL}", "[{\"a\": 1}, null]"),
        (3807, "{\"{\\\"a\\\": 1}\",\"[1, 2]\"}", "[{\"a\": 1}, [1, 2]]"),
        (1007, "{{{1},{2}},{{3},{4}}}", "[[[1], [2]], [[3], [4]]]"),
        (1007, "[1:1][3:4]={{1,2}}", "[[1, 2]]"),
        (1001, "{\"\\\\x01\",NULL}", "[\"\\\\x01\", null]"),
        (2951, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", "[\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"]"),
        (1014, "{a,b}", "[\"a\", \"b\"]"),
        (1003, "{x,\"y z\"}", "[\"x\", \"y z\"]"),
        (1015, "{\"with space\",plain}", "[\"with space\", \"plain\"]"),
        (1016, "{9223372036854775807}", "[9223372036854775807]"),
        (1005, "{-1}", "[-1]"),
        (22, "1 2", "[1, 2]"),
        (22, "", "[]"),
        (30, "1 2", "[\"1\", \"2\"]"),
        (1013, "{\"1 2\",3}", "[[\"1\", \"2\"], [\"3\"]]"),
        (1006, "{\"\"}", "[[]]"),
        (1041, "{10.0.0.1/8,::1}", "[\"10.0.0.1/8\", \"::1\"]"),
        (869, "10.0.0.1/8", "\"10.0.0.1/8\""),
        (790, "$12.34", "\"$12.34\""),
        (600, "(1,2)", "\"(1,2)\""),
        (1560, "1", "\"1\""),
        (142, "<a/>", "\"<a/>\""),
        (2205, "pg_class", "\"pg_class\""),
        (3614, "'a' 'b'", "\"'a' 'b'\""),
        (3904, "[1,5)", "\"[1,5)\""),
        (829, "08:00:2b:01:02:03", "\"08:00:2b:01:02:03\""),
        (3220, "0/16B3748", "\"0/16B3748\""),
        (1562, "1", "\"1\""),
    ];

    fn render(ty: &TypeInfo, text: &str) -> Result<String, ValueError> {
        let v = parse_text(ty, Bytes::copy_from_slice(text.as_bytes()))?;
        let mut out = Vec::new();
        write_json(&v, &mut out);
        Ok(String::from_utf8(out).expect("JSON output is UTF-8"))
    }

    #[test]
    fn renders_like_server_to_jsonb() {
        for &(oid, text, expected) in SERVER_CASES {
            let ty = builtin_type(oid).unwrap();
            let got = render(&ty, text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, expected, "type {oid}, text {text:?}");
        }
    }

    /// The integration tests compare values after parsing both sides with
    /// serde_json (arbitrary_precision); do the same here.
    #[test]
    fn equal_as_serde_json_values() {
        for &(oid, text, expected) in SERVER_CASES {
            let got = render(&builtin_type(oid).unwrap(), text).unwrap();
            let got: serde_json::Value = serde_json::from_str(&got).unwrap();
            let want: serde_json::Value = serde_json::from_str(expected).unwrap();
            assert_eq!(got, want, "type {oid}, text {text:?}");
        }
    }

    /// `json` is kept as sent: `to_jsonb` would normalise it to
    /// `{"a": 2, "b": 100}` (last duplicate wins, `1.0e2` → `100`).
    #[test]
    fn json_is_embedded_verbatim() {
        let ty = builtin_type(oid::JSON).unwrap();
        let text = r#"  {"a": 1, "a": 2, "b": 1.0e2} "#;
        assert_eq!(
            render(&ty, text).unwrap(),
            r#"{"a": 1, "a": 2, "b": 1.0e2}"#
        );
    }

    #[test]
    fn domains_enums_and_unknown_types() {
        let domain = TypeInfo::domain(&builtin_type(oid::NUMERIC).unwrap());
        assert_eq!(render(&domain, "2.50").unwrap(), "2.50");
        let mood = TypeInfo::enumeration(70000);
        assert_eq!(render(&mood, "happy \"so\"").unwrap(), r#""happy \"so\"""#);
        let moods = TypeInfo::array(70001, mood);
        assert_eq!(
            render(&moods, "{happy,sad,NULL}").unwrap(),
            r#"["happy", "sad", null]"#
        );
        let composite = TypeInfo::other(70002);
        let v = parse_text(&composite, Bytes::from_static(b"(1,\"a b\")")).unwrap();
        assert_eq!(
            v,
            Value::Other {
                type_oid: 70002,
                text: PgText::from_static("(1,\"a b\")")
            }
        );
    }

    #[test]
    fn text_values_share_the_input_buffer() {
        let raw = Bytes::from_static(b"shared");
        let Value::Text(t) = parse_text(&builtin_type(oid::TEXT).unwrap(), raw.clone()).unwrap()
        else {
            panic!("not text");
        };
        assert_eq!(t.as_bytes().as_ptr(), raw.as_ptr());
    }

    #[test]
    fn errors_name_the_type_and_show_the_text() {
        let ty = builtin_type(oid::INT4).unwrap();
        let e = parse_text(&ty, Bytes::from_static(b"12x")).unwrap_err();
        assert_eq!(e.type_name, "int4");
        assert_eq!(e.type_oid, 23);
        assert_eq!(e.text, "12x");
        assert!(
            e.to_string().contains("int4") && e.to_string().contains("12x"),
            "{e}"
        );

        let long = "9".repeat(100);
        let e = parse_text(&ty, Bytes::from(long)).unwrap_err();
        assert_eq!(e.text.chars().count(), ValueError::MAX_TEXT + 1);
        assert!(e.text.ends_with('…'));

        // An element error inside an array reports the element.
        let e =
            parse_text(&builtin_type(1007).unwrap(), Bytes::from_static(b"{1,zz}")).unwrap_err();
        assert_eq!((e.type_name, e.text.as_str()), ("int4", "zz"));
    }

    #[test]
    fn unchanged_toast_and_null_render_as_null() {
        for v in [Value::Null, Value::UnchangedToast] {
            let mut out = Vec::new();
            write_json(&v, &mut out);
            assert_eq!(out, b"null");
        }
    }
}
