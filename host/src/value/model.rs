//! The value model: [`Value`] and the types it is made of.
//!
//! A leaf of `value/`: the parsers (`text`, `array`) and the writer (`json`)
//! all build on it, and it depends on nothing but [`TypeInfo`] (for error
//! messages), so none of them has to import another to get at the types.

use bytes::Bytes;

use super::types::TypeInfo;

/// One decoded column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL (pgoutput `n`).
    Null,
    /// pgoutput `u`: a TOASTed column that the UPDATE did not change, so the
    /// server did not send it. It is *not* a null: the column still holds its
    /// old value, which we simply do not know. [`write_json`](super::write_json) renders it as
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

/// Whether `b` is UTF-8: SIMD validation (`simdutf8`), several times the standard
/// library's speed on the text of a snapshot's rows, where it was 2–3% of the host's CPU.
fn is_utf8(b: &[u8]) -> bool {
    simdutf8::basic::from_utf8(b).is_ok()
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
        if !is_utf8(&bytes) {
            // The standard library's error says where the text stops being UTF-8.
            std::str::from_utf8(&bytes)?;
        }
        Ok(PgText(bytes))
    }

    /// [`PgText::new`], handing the bytes back when they are not UTF-8 (for the error
    /// message) instead of taking a second reference to them.
    pub fn try_new(bytes: Bytes) -> Result<Self, Bytes> {
        if is_utf8(&bytes) {
            Ok(PgText(bytes))
        } else {
            Err(bytes)
        }
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

impl Value {
    /// A text-like value (`wrap`: `Value::Text`, `Value::Enum`, …) that takes `raw` itself,
    /// not a second reference to it: `raw` is usually a slice of a network buffer shared
    /// with many rows, whose reference count costs an atomic operation per clone here and
    /// per drop on the thread that drops the change.
    pub(super) fn text_of(
        ty: &TypeInfo,
        raw: Bytes,
        wrap: fn(PgText) -> Value,
    ) -> Result<Value, ValueError> {
        PgText::try_new(raw)
            .map(wrap)
            .map_err(|raw| ValueError::new(ty, &raw, "invalid UTF-8"))
    }
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
