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
//!
//! Module layout (imports only go downwards, so there are no cycles):
//! `model` (the types) and `types` (oids) are leaves; `calendar` holds the
//! date arithmetic both directions need; `array` parses array literals with
//! an element parser it is handed; `text` parses (and hands itself to
//! `array`); `json` writes, with `json::validate` checking `json` input for
//! `text`.

mod array;
mod binary;
mod calendar;
mod json;
mod model;
mod text;
mod types;

pub use binary::{has_binary_decoder, parse_binary, parse_binary_at};
pub use json::{write_json, write_json_exact, write_json_str};
pub use model::{
    Array, Numeric, PgText, Value, ValueError, DATE_NEG_INFINITY, DATE_POS_INFINITY,
    TS_NEG_INFINITY, TS_POS_INFINITY,
};
pub use text::parse_text;
pub use types::{builtin_type, oid, Composite, Field, TypeInfo, TypeKind};

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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
