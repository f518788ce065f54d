//! Fuzz targets for the value parsers (`parse_text` and the array parser behind it) and the
//! JSON they feed (`write_json`).
//!
//! Properties, for every type oid the parsers know:
//! - no input panics; a rejected text is a [`ValueError`] naming the type (or, inside an
//!   array, the element type);
//! - an accepted text gives a well-formed value of the column's kind (ranges, array shape);
//! - its `write_json` output is valid JSON (serde_json), and reads back through the parser as
//!   the same value (the JSON of a date/time/interval/... is the Postgres text form);
//! - valid texts generated per type parse to the value they spell.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::BoxedStrategy;

use super::fuzz;
use cdc_host::value::*;

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;
/// 4714-11-24 BC, in days since 2000-01-01.
const MIN_DATE_DAYS: i32 = -2_451_545;
/// 5874898-01-01 (one past the last date).
const END_DATE_DAYS: i32 = 2_147_483_494 - 2_451_545;
const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;
const MAX_TZ_OFFSET_SECS: i32 = 16 * 3600 - 1;

/// Every type the parsers know: the builtins and their arrays, `int2vector`/`oidvector`
/// and their arrays, an enum, arrays of an enum and of an undecoded type, a domain.
pub(super) fn all_types() -> Vec<TypeInfo> {
    let mut types: Vec<TypeInfo> = (0..7000).filter_map(builtin_type).collect();
    types.push(TypeInfo::enumeration(70000));
    types.push(TypeInfo::array(70001, TypeInfo::enumeration(70000)));
    types.push(TypeInfo::other(70002));
    types.push(TypeInfo::array(70003, TypeInfo::other(70002)));
    types.push(TypeInfo::domain(&builtin_type(oid::NUMERIC).unwrap()));
    types
}

/// The scalar (non-array) types of [`all_types`].
pub(super) fn scalar_types() -> Vec<TypeInfo> {
    all_types()
        .into_iter()
        .filter(|t| t.element().is_none())
        .collect()
}

// ---------------------------------------------------------------------------
// Checks

/// Floats compare as equal when both are NaN (any NaN) or `==` (so `-0 == 0`: `to_jsonb`
/// prints both as `0`); everything else as `PartialEq`.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float4(x), Value::Float4(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Value::Float8(x), Value::Float8(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Value::Array(x), Value::Array(y)) => {
            x.elem_oid == y.elem_oid
                && x.dims == y.dims
                && x.elements.len() == y.elements.len()
                && x.elements.iter().zip(&y.elements).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

fn json_of(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_json(v, &mut out);
    out
}

/// serde_json's reading of our output, with two allowances for `json` values, which we
/// embed verbatim:
/// - Postgres' `json` input checks `\uXXXX` escapes only for syntax, so a stored value may
///   hold a lone surrogate half (`"\ud800"`). RFC 8259's grammar allows it; serde_json
///   refuses it. Such escapes are read here as U+FFFD (our own escaping never writes
///   surrogate escapes, so only embedded json can contain them).
/// - serde_json stops at 128 levels of nesting, which a `json` value may exceed; such output
///   is accepted unchecked.
fn serde_reads(out: &[u8]) -> Result<Option<serde_json::Value>, String> {
    match serde_json::from_slice::<serde_json::Value>(&lone_surrogates_replaced(out)) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.to_string().contains("recursion limit exceeded") => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// `out` with every `\uXXXX` escape of an unpaired UTF-16 surrogate half replaced by
/// `\ufffd` (same length, same grammar).
fn lone_surrogates_replaced(out: &[u8]) -> Vec<u8> {
    let mut b = out.to_vec();
    // The code unit of a `\uXXXX` escape at `i`, if there is one.
    let unit = |b: &[u8], i: usize| -> Option<u16> {
        let hex = b.get(i..i + 6)?.strip_prefix(b"\\u")?;
        u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        match unit(&b, i) {
            Some(0xd800..=0xdbff) if matches!(unit(&b, i + 6), Some(0xdc00..=0xdfff)) => i += 12,
            Some(0xd800..=0xdfff) => {
                b[i + 2..i + 6].copy_from_slice(b"fffd");
                i += 6;
            }
            Some(_) => i += 6,
            // Any other escape: skip the escaped byte too.
            None => i += 2,
        }
    }
    b
}

/// Whether `v` is a well-formed value of `ty`. `Null` only occurs inside arrays.
fn well_formed(ty: &TypeInfo, v: &Value, in_array: bool) -> Result<(), TestCaseError> {
    let ok = match (&ty.kind, v) {
        (_, Value::Null) => in_array,
        (TypeKind::Bool, Value::Bool(_))
        | (TypeKind::Int2, Value::Int2(_))
        | (TypeKind::Int4, Value::Int4(_))
        | (TypeKind::Int8, Value::Int8(_))
        | (TypeKind::Float4, Value::Float4(_))
        | (TypeKind::Float8, Value::Float8(_))
        | (TypeKind::Bytea, Value::Bytea(_))
        | (TypeKind::Uuid, Value::Uuid(_))
        | (TypeKind::Interval, Value::Interval { .. })
        | (TypeKind::Text, Value::Text(_))
        | (TypeKind::Json, Value::Json(_))
        | (TypeKind::Jsonb, Value::Jsonb(_))
        | (TypeKind::Enum, Value::Enum(_)) => true,
        (TypeKind::Numeric, Value::Numeric(n)) => match n {
            Numeric::Finite(t) => {
                !t.is_empty()
                    && t.iter()
                        .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'.'))
            }
            _ => true,
        },
        (TypeKind::Date, Value::Date(d)) => {
            matches!(*d, DATE_NEG_INFINITY | DATE_POS_INFINITY)
                || (MIN_DATE_DAYS..END_DATE_DAYS).contains(d)
        }
        (TypeKind::Time, Value::Time(t)) => (0..=USECS_PER_DAY).contains(t),
        (
            TypeKind::TimeTz,
            Value::TimeTz {
                micros,
                offset_secs,
            },
        ) => {
            (0..=USECS_PER_DAY).contains(micros)
                && (-MAX_TZ_OFFSET_SECS..=MAX_TZ_OFFSET_SECS).contains(offset_secs)
        }
        (TypeKind::Timestamp, Value::Timestamp(ts))
        | (TypeKind::TimestampTz, Value::TimestampTz(ts)) => {
            matches!(*ts, TS_NEG_INFINITY | TS_POS_INFINITY)
                || (MIN_TIMESTAMP..END_TIMESTAMP).contains(ts)
        }
        (TypeKind::Other | TypeKind::ExtText { .. }, Value::Other { type_oid, .. }) => {
            *type_oid == ty.oid
        }
        (TypeKind::Array(elem), Value::Array(a)) => {
            prop_assert_eq!(a.elem_oid, elem.oid);
            prop_assert!(a.dims.len() <= 6, "{} dimensions", a.dims.len());
            if a.dims.is_empty() {
                prop_assert!(a.elements.is_empty());
            } else {
                prop_assert!(!a.dims.contains(&0), "zero-length dimension {:?}", a.dims);
                let product: u64 = a.dims.iter().map(|&d| u64::from(d)).product();
                prop_assert_eq!(product, a.elements.len() as u64, "dims {:?}", &a.dims);
            }
            for e in &a.elements {
                well_formed(elem, e, true)?;
            }
            true
        }
        _ => false,
    };
    prop_assert!(ok, "type {} ({:?}) parsed to {:?}", ty.oid, ty.kind, v);
    Ok(())
}

/// The text form of a value as its JSON shows it: what `to_jsonb` prints is the type's
/// text output (a timestamp's with `T` for the space), so it must parse back to `v`.
fn reparses(ty: &TypeInfo, v: &Value) -> Result<(), TestCaseError> {
    match (&ty.kind, v) {
        (_, Value::Null) => return Ok(()),
        (TypeKind::Array(elem), Value::Array(a)) => {
            for e in &a.elements {
                reparses(elem, e)?;
            }
            return Ok(());
        }
        // Embedded verbatim; `check_value` compares the bytes.
        (TypeKind::Json | TypeKind::Jsonb, _) => return Ok(()),
        _ => {}
    }
    let out = json_of(v);
    let text = match serde_json::from_slice::<serde_json::Value>(&out) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Number(n)) => n.to_string(),
        Ok(serde_json::Value::Bool(b)) => if b { "t" } else { "f" }.to_owned(),
        other => {
            prop_assert!(false, "{:?} rendered as {:?}", v, other);
            unreachable!()
        }
    };
    let text = match ty.kind {
        TypeKind::Timestamp | TypeKind::TimestampTz => text.replacen('T', " ", 1),
        _ => text,
    };
    match parse_text(ty, Bytes::from(text.clone())) {
        Ok(back) => prop_assert!(
            same(&back, v),
            "type {}: {:?} printed as {:?} reads back as {:?}",
            ty.oid,
            v,
            text,
            back
        ),
        Err(e) => prop_assert!(
            false,
            "type {}: {:?} printed as {:?} does not read back: {}",
            ty.oid,
            v,
            text,
            e
        ),
    }
    Ok(())
}

/// The oids an error for `ty` may name: its own, or (inside arrays) an element type's.
fn error_oids(ty: &TypeInfo) -> Vec<u32> {
    let mut oids = vec![ty.oid];
    let mut t = ty;
    while let Some(e) = t.element() {
        oids.push(e.oid);
        t = e;
    }
    oids
}

/// Everything that must hold for any input text.
fn check_value(ty: &TypeInfo, raw: &[u8]) -> Result<Option<Value>, TestCaseError> {
    match parse_text(ty, Bytes::copy_from_slice(raw)) {
        Err(e) => {
            prop_assert!(
                error_oids(ty).contains(&e.type_oid),
                "{:?} for {}",
                e,
                ty.oid
            );
            prop_assert!(e.text.chars().count() <= ValueError::MAX_TEXT + 1);
            prop_assert!(!e.reason.is_empty());
            prop_assert!(!e.to_string().is_empty());
            Ok(None)
        }
        Ok(v) => {
            well_formed(ty, &v, false)?;
            let out = json_of(&v);
            if let Err(e) = serde_reads(&out) {
                prop_assert!(
                    false,
                    "type {} text {:?}: invalid JSON {:?}: {}",
                    ty.oid,
                    String::from_utf8_lossy(raw),
                    String::from_utf8_lossy(&out),
                    e
                );
            }
            if let Value::Json(t) | Value::Jsonb(t) = &v {
                prop_assert_eq!(&out[..], t.as_bytes().trim_ascii());
            }
            reparses(ty, &v)?;
            Ok(Some(v))
        }
    }
}

// ---------------------------------------------------------------------------
// Valid texts per type

/// What a generated valid text must parse to.
#[derive(Debug, Clone)]
pub(super) enum Expect {
    /// Exactly this value.
    Value(Value),
    /// Some value whose `write_json` is exactly this.
    Json(String),
    /// Any value (the round-trip checks still apply).
    Parses,
    /// An error (a well-formed text out of the type's range).
    Rejected,
    /// Either outcome (a text at the edge of the range); only the general checks apply.
    Either,
}

fn plus_sign() -> impl Strategy<Value = &'static str> {
    prop_oneof![4 => Just(""), 1 => Just("+")]
}

fn int_text<T>() -> impl Strategy<Value = (String, T)>
where
    T: Arbitrary + Copy + PartialOrd + Default + std::fmt::Display + 'static,
{
    (any::<T>(), plus_sign()).prop_map(|(v, plus)| {
        let sign = if v >= T::default() { plus } else { "" };
        (format!("{sign}{v}"), v)
    })
}

/// Float texts in the spellings Postgres prints (`1e+100`, `1.5e-05`, `NaN`, `-Infinity`)
/// and the others Rust's parser (and so ours) accepts.
fn float_texts(display: String, exp: String) -> Vec<String> {
    let pg_exp = match exp.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => exp.clone(),
    };
    vec![display, exp, pg_exp]
}

fn float_special<T: Copy + std::fmt::Debug + 'static>(
    nan: T,
    inf: T,
    neg_inf: T,
) -> impl Strategy<Value = (String, T)> {
    prop::sample::select(vec![
        ("NaN".to_owned(), nan),
        ("Infinity".to_owned(), inf),
        ("-Infinity".to_owned(), neg_inf),
    ])
}

fn f64_text() -> impl Strategy<Value = (String, f64)> {
    prop_oneof![
        4 => (any::<f64>(), any::<Index>()).prop_map(|(v, i)| {
            let texts = float_texts(format!("{v}"), format!("{v:e}"));
            (i.get(&texts).clone(), v)
        }),
        1 => float_special(f64::NAN, f64::INFINITY, f64::NEG_INFINITY),
    ]
}

fn f32_text() -> impl Strategy<Value = (String, f32)> {
    prop_oneof![
        4 => (any::<f32>(), any::<Index>()).prop_map(|(v, i)| {
            let texts = float_texts(format!("{v}"), format!("{v:e}"));
            (i.get(&texts).clone(), v)
        }),
        1 => float_special(f32::NAN, f32::INFINITY, f32::NEG_INFINITY),
    ]
}

fn is_leap(astro_year: i64) -> bool {
    astro_year % 4 == 0 && (astro_year % 100 != 0 || astro_year % 400 == 0)
}

fn days_in_month(astro_year: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(astro_year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A valid date as printed: (year as shown, BC?, month, day), no later than `max_ad_year`.
fn date_parts(max_ad_year: i64) -> impl Strategy<Value = (i64, bool, i64, i64)> {
    let year = prop_oneof![
        4 => 1i64..=2200,
        2 => 1i64..=max_ad_year,
        1 => prop::sample::select(vec![1i64, 4, 100, 400, 1582, 1900, 2000, 4713, 4714, max_ad_year]),
    ];
    (year, prop::bool::weighted(0.2), 1i64..=12, 1i64..=31).prop_map(|(y, bc, m, d)| {
        let y = if bc { (y - 1) % 4714 + 1 } else { y };
        let astro = if bc { 1 - y } else { y };
        // 4714-11-24 BC is the first date.
        let (m, d) = if bc && y == 4714 {
            (m.max(11), if m <= 11 { d.max(24) } else { d })
        } else {
            (m, d)
        };
        (y, bc, m, d.min(days_in_month(astro, m)))
    })
}

fn date_text((y, _, m, d): (i64, bool, i64, i64)) -> String {
    format!("{y:04}-{m:02}-{d:02}")
}

fn bc_suffix(bc: bool) -> &'static str {
    if bc {
        " BC"
    } else {
        ""
    }
}

/// `HH:MM:SS[.ffffff]` as `time_out` prints it (fraction without trailing zeros).
fn time_text(h: i64, m: i64, s: i64, micros: i64) -> String {
    let mut t = format!("{h:02}:{m:02}:{s:02}");
    if micros > 0 {
        let f = format!("{micros:06}");
        t.push('.');
        t.push_str(f.trim_end_matches('0'));
    }
    t
}

fn time_parts() -> impl Strategy<Value = (i64, i64, i64, i64)> {
    let micros = prop_oneof![2 => Just(0i64), 1 => 0i64..1_000_000, 1 => prop::sample::select(vec![1i64, 10, 500_000, 999_999])];
    (0i64..24, 0i64..60, 0i64..60, micros)
}

/// A time of day, including `24:00:00`.
fn time_of_day() -> impl Strategy<Value = String> {
    prop_oneof![
        20 => time_parts().prop_map(|(h, m, s, f)| time_text(h, m, s, f)),
        1 => Just("24:00:00".to_owned()),
    ]
}

/// A UTC offset as `timetz_out` prints it: `+HH`, `+HH:MM` or `+HH:MM:SS`.
fn offset_text(secs: i32) -> String {
    let sign = if secs >= 0 { '+' } else { '-' };
    let a = secs.unsigned_abs();
    let (h, m, s) = (a / 3600, a / 60 % 60, a % 60);
    let mut t = format!("{sign}{h:02}");
    if m != 0 || s != 0 {
        t.push_str(&format!(":{m:02}"));
    }
    if s != 0 {
        t.push_str(&format!(":{s:02}"));
    }
    t
}

fn offset() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(0),
        (-15i32..=15).prop_map(|h| h * 3600),
        (-MAX_TZ_OFFSET_SECS..=MAX_TZ_OFFSET_SECS),
    ]
}

fn hex_text(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

/// `bytea` in the legacy escape format: printable ASCII as is, `\\` doubled, the rest octal.
fn bytea_escape_text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'\\' => "\\\\".to_owned(),
            0x20..=0x7e => char::from(b).to_string(),
            _ => format!("\\{b:03o}"),
        })
        .collect()
}

/// A JSON text (RFC 8259) with random whitespace, escapes (including `\u` ones, surrogate
/// halves among them) and nesting.
fn json_text() -> impl Strategy<Value = String> {
    let ws = || "[ \\t\\n\\r]{0,2}";
    let string = r#""([^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4}|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}){0,6}""#;
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,6})?([eE][+-]?[0-9]{1,3})?",
        string,
    ];
    leaf.prop_recursive(4, 24, 4, move |inner| {
        prop_oneof![
            (vec((ws(), inner.clone(), ws()), 0..4)).prop_map(|items| {
                let body: Vec<String> = items
                    .into_iter()
                    .map(|(a, v, b)| format!("{a}{v}{b}"))
                    .collect();
                format!("[{}]", body.join(","))
            }),
            (vec((string, ws(), inner, ws()), 0..4)).prop_map(|members| {
                let body: Vec<String> = members
                    .into_iter()
                    .map(|(k, a, v, b)| format!("{k}{a}:{b}{v}"))
                    .collect();
                format!("{{{}}}", body.join(", "))
            }),
        ]
    })
    .prop_flat_map(move |j| (ws(), Just(j), ws()).prop_map(|(a, j, b)| format!("{a}{j}{b}")))
}

/// An interval in `IntervalStyle=postgres` form, built from independently signed parts, with
/// the value it spells (or `None` when that is out of range).
fn interval_text() -> impl Strategy<Value = (String, Option<(i32, i32, i64)>)> {
    let num = || {
        prop_oneof![
            4 => -1000i64..=1000,
            1 => any::<i32>().prop_map(i64::from),
            1 => prop::sample::select(vec![
                i64::from(i32::MIN), i64::from(i32::MAX), 178_956_970, -178_956_970,
                178_956_971, 2_147_483_648, -2_147_483_649,
            ]),
        ]
    };
    let unit = |one: &'static str, many: &'static str| {
        (num(), any::<bool>())
            .prop_map(move |(n, plural)| (n, if plural || n != 1 { many } else { one }))
    };
    let hours = prop_oneof![
        4 => 0i64..100,
        1 => 0i64..=2_562_047_788,
        1 => Just(2_562_047_788i64),
    ];
    let time = (any::<bool>(), hours, 0i64..60, 0i64..60, 0i64..1_000_000);
    (
        proptest::option::of(unit("year", "years")),
        proptest::option::of(unit("mon", "mons")),
        proptest::option::of(unit("day", "days")),
        proptest::option::of(time),
        plus_sign(),
    )
        .prop_filter("an interval has at least one part", |(y, mo, d, t, _)| {
            y.is_some() || mo.is_some() || d.is_some() || t.is_some()
        })
        .prop_map(|(y, mo, d, t, plus)| {
            let mut parts = Vec::new();
            let mut months: Option<i64> = Some(0);
            let mut days = 0i64;
            let mut micros = 0i64;
            let mut in_range = true;
            if let Some((n, u)) = y {
                parts.push(format!("{n} {u}"));
                months = months.and_then(|m| m.checked_add(n.checked_mul(12)?));
            }
            if let Some((n, u)) = mo {
                parts.push(format!("{n} {u}"));
                months = months.and_then(|m| m.checked_add(n));
            }
            if let Some((n, u)) = d {
                parts.push(format!("{n} {u}"));
                days = n;
            }
            if let Some((neg, h, m, s, f)) = t {
                let sign = if neg { "-" } else { plus };
                parts.push(format!("{sign}{}", time_text(h, m, s, f)));
                let magnitude = i128::from((h * 60 + m) * 60 + s) * 1_000_000 + i128::from(f);
                match i64::try_from(if neg { -magnitude } else { magnitude }) {
                    Ok(v) => micros = v,
                    Err(_) => in_range = false,
                }
            }
            let months = months.and_then(|m| i32::try_from(m).ok());
            let days = i32::try_from(days).ok();
            let value = match (months, days) {
                (Some(mo), Some(d)) if in_range => Some((mo, d, micros)),
                _ => None,
            };
            (parts.join(" "), value)
        })
}

/// A valid text of a value of `ty` (a scalar type), with what it must parse to.
pub(super) fn valid_text(ty: &TypeInfo) -> BoxedStrategy<(String, Expect)> {
    let oid = ty.oid;
    match ty.kind {
        TypeKind::Bool => prop::sample::select(vec![
            ("t".to_owned(), Expect::Value(Value::Bool(true))),
            ("f".to_owned(), Expect::Value(Value::Bool(false))),
        ])
        .boxed(),
        TypeKind::Int2 => int_text::<i16>()
            .prop_map(|(t, v)| (t, Expect::Value(Value::Int2(v))))
            .boxed(),
        TypeKind::Int4 => int_text::<i32>()
            .prop_map(|(t, v)| (t, Expect::Value(Value::Int4(v))))
            .boxed(),
        TypeKind::Int8 => int_text::<i64>()
            .prop_map(|(t, v)| (t, Expect::Value(Value::Int8(v))))
            .boxed(),
        TypeKind::Float4 => f32_text()
            .prop_map(|(t, v)| (t, Expect::Value(Value::Float4(v))))
            .boxed(),
        TypeKind::Float8 => f64_text()
            .prop_map(|(t, v)| (t, Expect::Value(Value::Float8(v))))
            .boxed(),
        TypeKind::Numeric => prop_oneof![
            8 => "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,30})?".prop_map(|t| {
                let json = t.clone();
                (t, Expect::Json(json))
            }),
            1 => prop::sample::select(vec![
                ("NaN".to_owned(), Expect::Json("\"NaN\"".to_owned())),
                ("Infinity".to_owned(), Expect::Json("\"Infinity\"".to_owned())),
                ("-Infinity".to_owned(), Expect::Json("\"-Infinity\"".to_owned())),
            ]),
        ]
        .boxed(),
        TypeKind::Text | TypeKind::Enum | TypeKind::Other | TypeKind::ExtText { .. } => {
            let kind = ty.kind.clone();
            any::<String>()
                .prop_map(move |s| {
                    let t = PgText::from(s.clone());
                    let v = match kind {
                        TypeKind::Text => Value::Text(t),
                        TypeKind::Enum => Value::Enum(t),
                        _ => Value::Other {
                            type_oid: oid,
                            text: t,
                        },
                    };
                    (s, Expect::Value(v))
                })
                .boxed()
        }
        TypeKind::Bytea => (vec(any::<u8>(), 0..24), 0u8..3)
            .prop_map(|(b, style)| {
                let text = match style {
                    0 => format!("\\x{}", hex_text(&b, false)),
                    1 => format!("\\x{}", hex_text(&b, true)),
                    _ => bytea_escape_text(&b),
                };
                (text, Expect::Value(Value::Bytea(Bytes::from(b))))
            })
            .boxed(),
        TypeKind::Uuid => (any::<[u8; 16]>(), any::<bool>(), any::<bool>())
            .prop_map(|(u, hyphens, upper)| {
                let h = hex_text(&u, upper);
                let text = if hyphens {
                    format!(
                        "{}-{}-{}-{}-{}",
                        &h[0..8],
                        &h[8..12],
                        &h[12..16],
                        &h[16..20],
                        &h[20..]
                    )
                } else {
                    h
                };
                (text, Expect::Value(Value::Uuid(u)))
            })
            .boxed(),
        TypeKind::Json | TypeKind::Jsonb => json_text()
            .prop_map(|t| {
                let json = t.trim_matches([' ', '\t', '\n', '\r']).to_owned();
                (t, Expect::Json(json))
            })
            .boxed(),
        TypeKind::Date => prop_oneof![
            20 => date_parts(5_874_897).prop_map(|p| {
                let text = format!("{}{}", date_text(p), bc_suffix(p.1));
                let json = format!("\"{text}\"");
                (text, Expect::Json(json))
            }),
            1 => prop::sample::select(vec![
                ("infinity".to_owned(), Expect::Value(Value::Date(DATE_POS_INFINITY))),
                ("-infinity".to_owned(), Expect::Value(Value::Date(DATE_NEG_INFINITY))),
                ("5874898-01-01".to_owned(), Expect::Rejected),
                ("4714-11-23 BC".to_owned(), Expect::Rejected),
            ]),
        ]
        .boxed(),
        TypeKind::Time => time_of_day()
            .prop_map(|t| {
                let json = format!("\"{t}\"");
                (t, Expect::Json(json))
            })
            .boxed(),
        TypeKind::TimeTz => (time_of_day(), offset())
            .prop_map(|(t, off)| {
                let text = format!("{t}{}", offset_text(off));
                let json = format!("\"{text}\"");
                (text, Expect::Json(json))
            })
            .boxed(),
        TypeKind::Timestamp | TypeKind::TimestampTz => {
            let tz = ty.kind == TypeKind::TimestampTz;
            prop_oneof![
                20 => (date_parts(294_276), time_parts(), offset()).prop_map(move |(d, t, off)| {
                    let date = date_text(d);
                    let time = time_text(t.0, t.1, t.2, t.3);
                    let bc = bc_suffix(d.1);
                    if !tz {
                        let json = format!("\"{date}T{time}{bc}\"");
                        (format!("{date} {time}{bc}"), Expect::Json(json))
                    } else if off == 0 {
                        let json = format!("\"{date}T{time}+00:00{bc}\"");
                        (format!("{date} {time}+00{bc}"), Expect::Json(json))
                    } else {
                        // Another offset may move the first or last day out of range.
                        let text = format!("{date} {time}{}{bc}", offset_text(off));
                        let edge = (d.1 && d.0 == 4714) || (!d.1 && d.0 == 294_276);
                        (text, if edge { Expect::Either } else { Expect::Parses })
                    }
                }),
                1 => prop::sample::select(vec![
                    ("infinity".to_owned(), Expect::Json("\"infinity\"".to_owned())),
                    ("-infinity".to_owned(), Expect::Json("\"-infinity\"".to_owned())),
                ]),
            ]
            .boxed()
        }
        TypeKind::Interval => prop_oneof![
            20 => interval_text().prop_map(|(t, v)| {
                let expect = match v {
                    Some((months, days, micros)) => Expect::Value(Value::Interval { months, days, micros }),
                    None => Expect::Rejected,
                };
                (t, expect)
            }),
            1 => prop::sample::select(vec![
                ("infinity".to_owned(), Expect::Json("\"infinity\"".to_owned())),
                ("-infinity".to_owned(), Expect::Json("\"-infinity\"".to_owned())),
            ]),
        ]
        .boxed(),
        // Arrays have their own target; composites and hstore their unit tests
        // (value::text::record) and the every-type integration test.
        TypeKind::Array(_) | TypeKind::Composite(_) | TypeKind::Hstore => {
            Just((String::new(), Expect::Either)).boxed()
        }
    }
}

/// A scalar type and a valid text of it.
pub(super) fn valid_case() -> impl Strategy<Value = (TypeInfo, String, Expect)> {
    prop::sample::select(scalar_types()).prop_flat_map(|ty| {
        valid_text(&ty).prop_map(move |(text, expect)| (ty.clone(), text, expect))
    })
}

/// Checks a valid text against what it must parse to.
fn check_valid(ty: &TypeInfo, text: &str, expect: &Expect) -> Result<(), TestCaseError> {
    let got = check_value(ty, text.as_bytes())?;
    match (expect, got) {
        (Expect::Either, _) | (Expect::Rejected, None) => {}
        (Expect::Rejected, Some(v)) => prop_assert!(false, "accepted {:?} as {:?}", text, v),
        (_, None) => prop_assert!(false, "type {} rejected {:?}", ty.oid, text),
        (Expect::Value(want), Some(v)) => {
            prop_assert!(
                same(&v, want),
                "{:?} parsed to {:?}, not {:?}",
                text,
                v,
                want
            )
        }
        (Expect::Json(want), Some(v)) => {
            let out = json_of(&v);
            prop_assert_eq!(
                String::from_utf8_lossy(&out),
                want.as_str(),
                "text {:?}",
                text
            );
        }
        (Expect::Parses, Some(_)) => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Mutations and arbitrary bytes

#[derive(Debug, Clone)]
enum TextMutation {
    Insert(Index, u8),
    Replace(Index, u8),
    Remove(Index, usize),
    Truncate(Index),
    /// Repeats a slice of the text right after itself (`{1,2}` → `{1,2},2}`).
    Repeat(Index, Index),
}

fn text_mutation() -> impl Strategy<Value = TextMutation> {
    let byte = prop_oneof![
        3 => prop::sample::select(
            b"0123456789-+:.eE {}[]=,;\"\\xXNTBCnul \t\n\x0b\x00\x7f\xc3\xa9\xff".to_vec()
        ),
        1 => any::<u8>(),
    ];
    prop_oneof![
        (any::<Index>(), byte.clone()).prop_map(|(i, b)| TextMutation::Insert(i, b)),
        (any::<Index>(), byte).prop_map(|(i, b)| TextMutation::Replace(i, b)),
        (any::<Index>(), 1usize..4).prop_map(|(i, n)| TextMutation::Remove(i, n)),
        any::<Index>().prop_map(TextMutation::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| TextMutation::Repeat(a, b)),
    ]
}

fn mutate_text(text: &[u8], muts: &[TextMutation]) -> Vec<u8> {
    let mut b = text.to_vec();
    for m in muts {
        let len = b.len();
        match m {
            TextMutation::Insert(i, c) => b.insert(i.index(len + 1), *c),
            TextMutation::Replace(i, c) if len > 0 => b[i.index(len)] = *c,
            TextMutation::Remove(i, n) if len > 0 => {
                let at = i.index(len);
                b.drain(at..(at + n).min(len));
            }
            TextMutation::Truncate(i) => b.truncate(i.index(len + 1)),
            TextMutation::Repeat(i, j) if len > 0 => {
                let (x, y) = (i.index(len), j.index(len));
                let piece = b[x.min(y)..=x.max(y)].to_vec();
                b.splice(x.max(y) + 1..x.max(y) + 1, piece);
            }
            _ => {}
        }
    }
    b
}

/// Arbitrary bytes, or arbitrary sequences of the tokens the parsers look for.
fn raw_text() -> impl Strategy<Value = Vec<u8>> {
    const PIECES: &[&str] = &[
        "0", "1", "9", "-", "+", ":", ".", " ", "e", "E", "{", "}", "[", "]", "=", ",", ";", "\"",
        "\\", "\\x", "NULL", "NaN", "Infinity", "infinity", " BC", "T", "t", "f", "year", "years",
        "mons", "day", "days", "00", "99", "24", "59", "60", "12-31", "2024-", "294276", "5874897",
        "4714", "é", "😀", "\u{0}", "\n", "true", "null", "\\u", "d800", "a0eebc99",
    ];
    prop_oneof![
        vec(any::<u8>(), 0..48),
        vec(prop::sample::select(PIECES), 0..24).prop_map(|p| p.concat().into_bytes()),
    ]
}

// ---------------------------------------------------------------------------
// Arrays

#[derive(Debug, Clone, Copy)]
enum Style {
    Quoted,
    /// Bare, only for elements that need no quoting.
    Plain,
    /// Bare with every special character backslash-escaped.
    Escaped,
}

fn is_array_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// `s` as one element of an array literal with delimiter `delim`.
fn render_element(s: &str, style: Style, delim: char) -> String {
    let special = |c: char| c == delim || matches!(c, '{' | '}' | '"' | '\\');
    let plain_ok = !s.is_empty()
        && !s.eq_ignore_ascii_case("NULL")
        && !s.starts_with(is_array_space)
        && !s.ends_with(is_array_space)
        && !s.contains(special);
    match style {
        Style::Plain if plain_ok => s.to_owned(),
        Style::Escaped if !s.is_empty() => s
            .chars()
            .flat_map(|c| {
                let esc = special(c) || is_array_space(c) || c == 'N' || c == 'n';
                esc.then_some('\\').into_iter().chain([c])
            })
            .collect(),
        _ => {
            let mut q = String::from("\"");
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    q.push('\\');
                }
                q.push(c);
            }
            q.push('"');
            q
        }
    }
}

/// An array literal: its type, text, dimensions and element texts (`None` for NULL).
fn array_case() -> impl Strategy<Value = (TypeInfo, String, Vec<u32>, Vec<Option<String>>)> {
    let elem_types = scalar_types();
    let dims = vec(1usize..4, 1..=6).prop_map(|mut d| {
        while d.iter().product::<usize>() > 24 {
            d.pop();
        }
        d
    });
    (prop::sample::select(elem_types), dims).prop_flat_map(|(elem, dims)| {
        let n: usize = dims.iter().product();
        let element = (
            proptest::option::of(valid_text(&elem).prop_filter("valid", |(_, e)| {
                !matches!(e, Expect::Rejected | Expect::Either)
            })),
            prop::sample::select(vec![Style::Quoted, Style::Plain, Style::Escaped]),
            "[ \\t\\n]{0,2}",
            "[ \\t\\n]{0,2}",
            prop::sample::select(vec!["NULL", "null", "Null"]),
        );
        let bounds = proptest::option::of(vec((-5i32..5, 0i32..9), dims.len()..=dims.len()));
        (vec(element, n..=n), bounds, Just(dims), Just(elem)).prop_map(
            |(elements, bounds, dims, elem)| {
                let delim = char::from(elem.array_delimiter());
                let rendered: Vec<String> = elements
                    .iter()
                    .map(|(e, style, pre, post, null)| match e {
                        Some((text, _)) => {
                            format!("{pre}{}{post}", render_element(text, *style, delim))
                        }
                        None => format!("{pre}{null}{post}"),
                    })
                    .collect();
                let text = nest(&dims, &rendered, delim);
                let text = match bounds {
                    Some(b) => {
                        let b: String = b
                            .iter()
                            .map(|(lo, len)| format!("[{lo}:{}]", lo + len))
                            .collect();
                        format!("{b}={text}")
                    }
                    None => text,
                };
                let texts = elements.into_iter().map(|(e, ..)| e.map(|e| e.0)).collect();
                let ty = TypeInfo::array(90_000 + elem.oid, elem);
                let dims = dims.iter().map(|&d| d as u32).collect();
                (ty, text, dims, texts)
            },
        )
    })
}

/// `{..}` nesting of `items` (row-major) per `dims`.
fn nest(dims: &[usize], items: &[String], delim: char) -> String {
    if dims.len() == 1 {
        return format!("{{{}}}", items.join(&delim.to_string()));
    }
    let step = items.len() / dims[0];
    let inner: Vec<String> = items
        .chunks(step)
        .map(|c| nest(&dims[1..], c, delim))
        .collect();
    format!("{{{}}}", inner.join(&delim.to_string()))
}

// ---------------------------------------------------------------------------
// Targets

#[test]
fn fuzz_parse_text_arbitrary_bytes() {
    fuzz(
        "parse_text_arbitrary_bytes",
        file!(),
        (prop::sample::select(all_types()), raw_text()),
        |(ty, raw)| check_value(&ty, &raw).map(drop),
    );
}

/// Valid texts of every scalar type parse to the value they spell, print as Postgres does,
/// and read back.
#[test]
fn fuzz_parse_text_valid() {
    fuzz(
        "parse_text_valid",
        file!(),
        valid_case(),
        |(ty, text, expect)| check_valid(&ty, &text, &expect),
    );
}

#[test]
fn fuzz_parse_text_mutated() {
    fuzz(
        "parse_text_mutated",
        file!(),
        (valid_case(), vec(text_mutation(), 1..4)),
        |((ty, text, _), muts)| check_value(&ty, &mutate_text(text.as_bytes(), &muts)).map(drop),
    );
}

/// Nested array literals with every quoting style, NULLs, whitespace and bounds parse to
/// their elements, and stay panic-free when mutated.
#[test]
fn fuzz_array_literals() {
    fuzz(
        "array_literals",
        file!(),
        (array_case(), vec(text_mutation(), 0..3)),
        |((ty, text, dims, texts), muts)| {
            let elem = ty.element().expect("an array type");
            let mut elements = Vec::new();
            for t in &texts {
                elements.push(match t {
                    Some(t) => match parse_text(elem, Bytes::from(t.clone())) {
                        Ok(v) => v,
                        Err(e) => {
                            prop_assert!(false, "element {:?}: {}", t, e);
                            unreachable!()
                        }
                    },
                    None => Value::Null,
                });
            }
            let want = Value::Array(Array {
                elem_oid: elem.oid,
                dims,
                elements,
            });
            let got = check_value(&ty, text.as_bytes())?;
            match got {
                Some(v) => prop_assert!(same(&v, &want), "{:?}: {:?}, not {:?}", text, v, want),
                None => prop_assert!(false, "rejected {:?}", text),
            }
            // Arrays of every builtin array type, including the vectors, get the
            // mutated text too.
            let damaged = mutate_text(text.as_bytes(), &muts);
            check_value(&ty, &damaged)?;
            for oid in [1007, 1009, 1022, 1185, 1006, 1013, 1020, 22, 30] {
                check_value(&builtin_type(oid).unwrap(), &damaged)?;
            }
            Ok(())
        },
    );
}

/// Our JSON validator (which decides whether a `json`/`jsonb` text is embedded in the
/// output) agrees with serde_json on valid and damaged JSON texts.
#[test]
fn fuzz_json_validator_agrees_with_serde() {
    let json = builtin_type(oid::JSON).unwrap();
    fuzz(
        "json_validator_agrees_with_serde",
        file!(),
        (json_text(), vec(text_mutation(), 0..3)),
        |(text, muts)| {
            let raw = mutate_text(text.as_bytes(), &muts);
            let ours = check_value(&json, &raw)?.is_some();
            // (`serde_reads` reads lone surrogate escapes as U+FFFD, see there.)
            match serde_reads(&raw) {
                Ok(Some(_)) => prop_assert!(ours, "we reject {:?}", String::from_utf8_lossy(&raw)),
                // Deeper than serde_json goes: no verdict.
                Ok(None) => {}
                Err(e) => prop_assert!(
                    !ours,
                    "we accept {:?}; serde_json: {}",
                    String::from_utf8_lossy(&raw),
                    e
                ),
            }
            Ok(())
        },
    );
}

/// Postgres' `json` type accepts any four hex digits after `\u`, lone surrogate halves
/// included, and we embed `json` verbatim: such a value is kept as sent (RFC 8259's
/// grammar allows it), not rejected, since rejecting would stop replication on a value the
/// server stores legally. The fuzz oracle reads these escapes as U+FFFD; this pins both.
#[test]
fn lone_surrogate_escapes_in_json_are_kept_verbatim() {
    let json = builtin_type(oid::JSON).unwrap();
    let text = r#" {"a": "\ud800 x \uDFFF", "b": "\ud83d\ude00"} "#;
    let v = parse_text(&json, Bytes::from_static(text.as_bytes())).unwrap();
    assert_eq!(json_of(&v), text.trim().as_bytes());
    let read = lone_surrogates_replaced(text.as_bytes());
    assert_eq!(
        std::str::from_utf8(&read).unwrap(),
        r#" {"a": "\ufffd x \ufffd", "b": "\ud83d\ude00"} "#
    );
    // An escaped backslash followed by `u` is not an escape.
    assert_eq!(lone_surrogates_replaced(br#""\\ud800""#), br#""\\ud800""#);
    assert!(serde_reads(&json_of(&v)).unwrap().is_some());
}
