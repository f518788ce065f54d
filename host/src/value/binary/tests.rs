use super::*;
use crate::value::builtin_type;

fn num(ndigits: i16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&ndigits.to_be_bytes());
    v.extend_from_slice(&weight.to_be_bytes());
    v.extend_from_slice(&sign.to_be_bytes());
    v.extend_from_slice(&dscale.to_be_bytes());
    for d in digits {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v
}

fn numeric_text(b: Vec<u8>) -> String {
    numeric(&b).unwrap().as_str().to_owned()
}

#[test]
fn numeric_prints_as_numeric_out() {
    assert_eq!(numeric_text(num(2, 0, 0, 2, &[1, 5000])), "1.50");
    assert_eq!(numeric_text(num(0, 0, 0, 0, &[])), "0");
    assert_eq!(numeric_text(num(0, 0, 0, 3, &[])), "0.000");
    assert_eq!(numeric_text(num(1, -1, 0, 3, &[10])), "0.001");
    assert_eq!(numeric_text(num(1, -2, 0x4000, 8, &[12])), "-0.00000012");
    assert_eq!(
        numeric_text(num(3, 1, 0, 1, &[1234, 5678, 9000])),
        "12345678.9"
    );
    assert_eq!(numeric_text(num(1, 2, 0, 0, &[1])), "100000000");
    assert_eq!(numeric_text(num(1, 0, 0x4000, 0, &[42])), "-42");
    assert_eq!(numeric(&num(0, 0, 0xC000, 0, &[])).unwrap(), Numeric::NaN);
    assert_eq!(
        numeric(&num(0, 0, 0xD000, 0, &[])).unwrap(),
        Numeric::PosInf
    );
    assert_eq!(
        numeric(&num(0, 0, 0xF000, 0, &[])).unwrap(),
        Numeric::NegInf
    );
    assert!(numeric(&num(1, 0, 0, 0, &[10000])).is_err());
    assert!(numeric(&num(2, 0, 0, 0, &[1])).is_err());
    assert!(numeric(&num(0, 0, 0x1234, 0, &[])).is_err());
    assert!(numeric(&[0, 1]).is_err());
}

/// `numeric_out` written the obvious way (with the formatting machinery): what the
/// allocation-free writer must print.
fn numeric_reference(weight: i32, negative: bool, dscale: u16, digits: &[u16]) -> String {
    let digit = |i: i32| {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        out.push_str(&digit(0).to_string());
        for i in 1..=weight {
            out.push_str(&format!("{:04}", digit(i)));
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale as usize {
            frac.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        out.push_str(&frac[..dscale as usize]);
    }
    out
}

#[test]
fn numeric_matches_the_reference_over_many_shapes() {
    // A small deterministic generator: every weight, scale and digit pattern nearby.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20_000 {
        let ndigits = (next() % 6) as usize;
        let weight = (next() % 9) as i32 - 4;
        let dscale = (next() % 14) as u16;
        let negative = next() % 2 == 0;
        let digits: Vec<u16> = (0..ndigits)
            .map(|i| match next() % 4 {
                // Leading digits of every width, and zeros, which pad.
                0 if i == 0 => (next() % 10) as u16,
                1 => 0,
                _ => (next() % 10_000) as u16,
            })
            .collect();
        let raw = num(
            ndigits as i16,
            weight as i16,
            if negative { 0x4000 } else { 0 },
            dscale,
            &digits,
        );
        assert_eq!(
            numeric_text(raw),
            numeric_reference(weight, negative, dscale, &digits),
            "weight {weight} dscale {dscale} digits {digits:?}"
        );
    }
}

#[test]
fn scalars() {
    let t =
        |oid: u32, b: &[u8]| parse_binary(&builtin_type(oid).unwrap(), Bytes::copy_from_slice(b));
    assert_eq!(t(16, &[1]).unwrap(), Value::Bool(true));
    assert!(t(16, &[2]).is_err());
    assert_eq!(t(23, &(-5i32).to_be_bytes()).unwrap(), Value::Int4(-5));
    assert!(t(23, &[0, 0, 1]).is_err());
    assert_eq!(t(701, &1.5f64.to_be_bytes()).unwrap(), Value::Float8(1.5));
    let mut tz = 3_600_000_000i64.to_be_bytes().to_vec();
    tz.extend_from_slice(&(-19800i32).to_be_bytes());
    assert_eq!(
        t(1266, &tz).unwrap(),
        Value::TimeTz {
            micros: 3_600_000_000,
            offset_secs: 19800
        }
    );
    let mut iv = 5i64.to_be_bytes().to_vec();
    iv.extend_from_slice(&3i32.to_be_bytes());
    iv.extend_from_slice(&(-2i32).to_be_bytes());
    assert_eq!(
        t(1186, &iv).unwrap(),
        Value::Interval {
            months: -2,
            days: 3,
            micros: 5
        }
    );
    assert_eq!(
        t(3802, b"\x01{\"a\": 1}").unwrap(),
        Value::Jsonb("{\"a\": 1}".into())
    );
    assert!(t(3802, b"\x02{}").is_err());
    assert_eq!(t(18, &[0xE9]).unwrap(), Value::Text("\\351".into()));
    assert_eq!(t(18, b"a").unwrap(), Value::Text("a".into()));
    assert!(t(25, &[0xff]).is_err());
}

#[test]
fn arrays() {
    let ty = builtin_type(1007).unwrap(); // int4[]
    let mut b = Vec::new();
    for x in [2i32, 1, 23, 2, 1, 1, 1] {
        b.extend_from_slice(&x.to_be_bytes());
    }
    // elements: 7, NULL
    b.extend_from_slice(&4i32.to_be_bytes());
    b.extend_from_slice(&7i32.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    // dims [2, 1]
    let v = parse_binary(&ty, Bytes::from(b.clone())).unwrap();
    let Value::Array(a) = v else { panic!() };
    assert_eq!(a.dims, vec![2, 1]);
    assert_eq!(a.elements, vec![Value::Int4(7), Value::Null]);
    assert_eq!(a.elem_oid, 23);
    // Cut anywhere: an error, never a panic.
    for cut in 0..b.len() {
        assert!(parse_binary(&ty, Bytes::copy_from_slice(&b[..cut])).is_err());
    }
    let mut empty = Vec::new();
    for x in [0i32, 0, 23] {
        empty.extend_from_slice(&x.to_be_bytes());
    }
    let Value::Array(a) = parse_binary(&ty, Bytes::from(empty)).unwrap() else {
        panic!()
    };
    assert!(a.dims.is_empty() && a.elements.is_empty());
}

/// A length-prefixed send-format value (`None`: NULL).
fn field(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(v) => {
            out.extend_from_slice(&(v.len() as i32).to_be_bytes());
            out.extend_from_slice(v);
        }
    }
}

#[test]
fn composites_become_the_to_jsonb_object() {
    use crate::value::Field;
    let f = |name: &str, oid: u32| Field {
        name: name.into(),
        ty: builtin_type(oid).unwrap(),
    };
    let ty = TypeInfo::composite(90000, vec![f("quantity", 1700), f("code", 25)]);
    let mut raw = 2i32.to_be_bytes().to_vec();
    raw.extend_from_slice(&1700u32.to_be_bytes());
    field(&mut raw, Some(&num(2, 0, 0, 2, &[10, 5000])));
    raw.extend_from_slice(&25u32.to_be_bytes());
    field(&mut raw, Some(b"a \"b\""));
    let v = parse_binary(&ty, Bytes::from(raw.clone())).unwrap();
    assert_eq!(
        v,
        Value::Jsonb(PgText::from_static(
            r#"{"code": "a \"b\"", "quantity": 10.50}"#
        ))
    );
    // NULL fields, a wrong field count, trailing bytes, a cut value: errors, no panic.
    let mut nulls = 2i32.to_be_bytes().to_vec();
    for oid in [1700u32, 25] {
        nulls.extend_from_slice(&oid.to_be_bytes());
        field(&mut nulls, None);
    }
    assert_eq!(
        parse_binary(&ty, Bytes::from(nulls)).unwrap(),
        Value::Jsonb(PgText::from_static(r#"{"code": null, "quantity": null}"#))
    );
    let mut three = raw.clone();
    three[..4].copy_from_slice(&3i32.to_be_bytes());
    assert!(parse_binary(&ty, Bytes::from(three)).is_err());
    let mut trailing = raw.clone();
    trailing.push(0);
    assert!(parse_binary(&ty, Bytes::from(trailing)).is_err());
    for cut in 0..raw.len() {
        assert!(parse_binary(&ty, Bytes::copy_from_slice(&raw[..cut])).is_err());
    }
    // A field type without a binary decoder makes the whole composite undecodable.
    let money = TypeInfo::composite(90001, vec![f("m", 790)]);
    assert!(!has_binary_decoder(&money));
    assert!(has_binary_decoder(&ty));
}

#[test]
fn hstore_becomes_the_object_of_its_json_cast() {
    let ty = TypeInfo::hstore(90002);
    let mut raw = 3i32.to_be_bytes().to_vec();
    for (k, v) in [
        (&b"zz"[..], Some(&b"NULL"[..])),
        (b"a\"b", Some(b"c\\d")),
        (b"n", None),
    ] {
        field(&mut raw, Some(k));
        field(&mut raw, v);
    }
    assert_eq!(
        parse_binary(&ty, Bytes::from(raw.clone())).unwrap(),
        Value::Jsonb(PgText::from_static(
            r#"{"n": null, "zz": "NULL", "a\"b": "c\\d"}"#
        ))
    );
    assert_eq!(
        parse_binary(&ty, Bytes::from(0i32.to_be_bytes().to_vec())).unwrap(),
        Value::Jsonb(PgText::from_static("{}"))
    );
    for cut in 0..raw.len() {
        assert!(parse_binary(&ty, Bytes::copy_from_slice(&raw[..cut])).is_err());
    }
    let mut null_key = 1i32.to_be_bytes().to_vec();
    field(&mut null_key, None);
    field(&mut null_key, None);
    assert!(parse_binary(&ty, Bytes::from(null_key)).is_err());
    let mut huge = i32::MAX.to_be_bytes().to_vec();
    huge.extend_from_slice(&[0; 8]);
    assert!(parse_binary(&ty, Bytes::from(huge)).is_err());
}

fn other_text(oid: u32, raw: &[u8]) -> String {
    let ty = builtin_type(oid).unwrap();
    match parse_binary(&ty, Bytes::copy_from_slice(raw)).unwrap() {
        Value::Other { type_oid, text } => {
            assert_eq!(type_oid, oid);
            text.as_str().to_owned()
        }
        other => panic!("{other:?}"),
    }
}

fn inet(family: u8, bits: u8, cidr: bool, addr: &[u8]) -> Vec<u8> {
    let mut v = vec![family, bits, u8::from(cidr), addr.len() as u8];
    v.extend_from_slice(addr);
    v
}

fn v6(words: [u16; 8]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

#[test]
fn inet_and_cidr_print_as_their_output_functions() {
    use crate::value::types::oid::{CIDR, INET};
    let t = |oid, raw: Vec<u8>| other_text(oid, &raw);
    assert_eq!(
        t(INET, inet(2, 24, false, &[192, 168, 0, 1])),
        "192.168.0.1/24"
    );
    assert_eq!(t(INET, inet(2, 32, false, &[10, 0, 0, 1])), "10.0.0.1");
    assert_eq!(t(CIDR, inet(2, 8, true, &[10, 0, 0, 0])), "10.0.0.0/8");
    assert_eq!(t(CIDR, inet(2, 32, true, &[10, 1, 2, 3])), "10.1.2.3/32");
    let cases: &[([u16; 8], &str)] = &[
        ([0, 0, 0, 0, 0, 0, 0, 1], "::1"),
        ([0; 8], "::"),
        ([0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304], "::ffff:1.2.3.4"),
        ([0, 0, 0, 0, 0, 0, 0x0102, 0x0304], "::1.2.3.4"),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], "2001:db8::1"),
        ([1, 0, 0, 1, 0, 0, 0, 1], "1:0:0:1::1"),
        ([1, 0, 0, 1, 1, 0, 0, 1], "1::1:1:0:0:1"),
        ([1, 0, 1, 0, 1, 0, 1, 0], "1:0:1:0:1:0:1:0"),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], "fe80::"),
        ([1, 2, 3, 4, 5, 6, 7, 8], "1:2:3:4:5:6:7:8"),
    ];
    for (words, want) in cases {
        assert_eq!(t(INET, inet(3, 128, false, &v6(*words))), *want);
    }
    assert_eq!(
        t(CIDR, inet(3, 64, true, &v6([0xfe80, 0, 0, 0, 0, 0, 0, 0]))),
        "fe80::/64"
    );
    assert_eq!(
        t(CIDR, inet(3, 128, true, &v6([0, 0, 0, 0, 0, 0, 0, 1]))),
        "::1/128"
    );
    let ty = builtin_type(INET).unwrap();
    let good = inet(2, 24, false, &[192, 168, 0, 1]);
    for cut in 0..good.len() {
        assert!(parse_binary(&ty, Bytes::copy_from_slice(&good[..cut])).is_err());
    }
    for bad in [
        inet(2, 33, false, &[1, 2, 3, 4]),
        inet(9, 8, false, &[1, 2, 3, 4]),
    ] {
        assert!(parse_binary(&ty, Bytes::from(bad)).is_err());
    }
}

#[test]
fn points_bits_and_small_types_print_as_their_output_functions() {
    use crate::value::types::oid::*;
    let point = |x: f64, y: f64| {
        let mut v = x.to_be_bytes().to_vec();
        v.extend_from_slice(&y.to_be_bytes());
        other_text(POINT, &v)
    };
    assert_eq!(point(1.5, 2.0), "(1.5,2)");
    assert_eq!(point(1e20, 1e-5), "(1e+20,1e-05)");
    assert_eq!(point(123456789012345.0, 0.0001), "(123456789012345,0.0001)");
    assert_eq!(point(1e15, -1.25e-100), "(1e+15,-1.25e-100)");
    assert_eq!(point(-0.0, f64::NAN), "(-0,NaN)");
    assert_eq!(
        point(f64::INFINITY, f64::NEG_INFINITY),
        "(Infinity,-Infinity)"
    );
    assert_eq!(point(0.1, 1.0 / 3.0), "(0.1,0.3333333333333333)");
    let bits = |n: i32, b: &[u8]| {
        let mut v = n.to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    };
    assert_eq!(other_text(VARBIT, &bits(4, &[0xb0])), "1011");
    assert_eq!(other_text(BIT, &bits(0, &[])), "");
    assert_eq!(other_text(VARBIT, &bits(10, &[0xff, 0x40])), "1111111101");
    let ty = builtin_type(VARBIT).unwrap();
    assert!(parse_binary(&ty, Bytes::from(bits(9, &[0xff]))).is_err());
    assert!(parse_binary(&ty, Bytes::from(bits(-1, &[]))).is_err());
    assert_eq!(
        other_text(MACADDR, &[8, 0, 0x2b, 1, 2, 3]),
        "08:00:2b:01:02:03"
    );
    assert_eq!(
        other_text(MACADDR8, &[8, 0, 0x2b, 1, 2, 3, 4, 0xff]),
        "08:00:2b:01:02:03:04:ff"
    );
    assert_eq!(
        other_text(OID, &4_000_000_000u32.to_be_bytes()),
        "4000000000"
    );
    assert_eq!(
        other_text(XID8, &u64::MAX.to_be_bytes()),
        "18446744073709551615"
    );
    assert_eq!(other_text(TID, &[0, 0, 1, 0, 0, 7]), "(256,7)");
    assert_eq!(other_text(XML, b"<a>x</a>"), "<a>x</a>");
    assert_eq!(other_text(JSONPATH, b"\x01$.a"), "$.a");
    // Types whose text cannot be rebuilt from the send format stay refused.
    for oid in [MONEY, PG_LSN, INT4RANGE, TSVECTOR, REGCLASS] {
        assert!(!has_binary_decoder(&builtin_type(oid).unwrap()), "{oid}");
    }
    // Extension types: citext is its text, ltree a version byte and its text.
    let ci = TypeInfo::ext_text(70000, false);
    let lt = TypeInfo::ext_text(70001, true);
    assert!(has_binary_decoder(&ci) && has_binary_decoder(&lt));
    let text_of =
        |ty: &TypeInfo, raw: &'static [u8]| match parse_binary(ty, Bytes::from_static(raw)) {
            Ok(Value::Other { text, .. }) => Ok(text.as_str().to_owned()),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
    assert_eq!(text_of(&ci, b"MixedCase").unwrap(), "MixedCase");
    assert_eq!(text_of(&lt, b"\x01Top.Science").unwrap(), "Top.Science");
    assert!(text_of(&lt, b"\x02Top").is_err());
    assert!(text_of(&lt, b"").is_err());
}
