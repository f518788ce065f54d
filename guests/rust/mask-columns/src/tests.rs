use cdc_guest::testing::{change, col, insert, message};
use cdc_guest::{Config, Op, Transform, Value};

use crate::MaskColumns;

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn init(pairs: &[(&str, &str)]) -> Result<MaskColumns, String> {
    MaskColumns::init(Config::from_pairs(pairs))
}

#[test]
fn redacts_after_and_before() {
    let mut m = init(&[("columns", "email, phone")]).unwrap();
    let mut up = change(Op::Update, "public", "users");
    up.after = Some(vec![
        col("id", Value::Int4(1)),
        col("email", text("new@x")),
        col("phone", Value::Null),
    ]);
    up.before = Some(vec![col("id", Value::Int4(1)), col("email", text("old@x"))]);
    let out = m.transform(vec![up]).unwrap();
    let c = &out[0];
    assert_eq!(c.after_column("email"), Some(&text("***")));
    assert_eq!(c.before_column("email"), Some(&text("***")));
    assert_eq!(c.after_column("phone"), Some(&Value::Null));
    assert_eq!(c.after_column("id"), Some(&Value::Int4(1)));
    let email = c
        .after
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.name == "email")
        .unwrap();
    assert_eq!(email.type_oid, 25);
}

#[test]
fn hashes_the_canonical_text() {
    let mut m = init(&[("columns", "email,n,bio"), ("mode", "hash")]).unwrap();
    let row = vec![
        col("email", text("a@b.c")),
        col("n", Value::Int8(42)),
        col("bio", Value::UnchangedToast),
    ];
    let out = m.transform(vec![insert("public", "users", row)]).unwrap();
    // printf 'a@b.c' | sha256sum; printf '42' | sha256sum
    assert_eq!(
        out[0].after_column("email"),
        Some(&text(
            "d648b243a3e817eaa3309e00e183483f2867baadf522099f0c2121770536b25a"
        ))
    );
    assert_eq!(
        out[0].after_column("n"),
        Some(&text(
            "73475cb40a568e8da8a045ced110137e159f890ac4da883b6b17dc651b3a8049"
        ))
    );
    assert_eq!(out[0].after_column("bio"), Some(&Value::UnchangedToast));
}

#[test]
fn only_listed_tables() {
    let mut m = init(&[("columns", "email"), ("tables", "public.users")]).unwrap();
    let batch = vec![
        insert("public", "users", vec![col("email", text("a"))]),
        insert("crm", "users", vec![col("email", text("b"))]),
        message("p", b"email"),
    ];
    let out = m.transform(batch).unwrap();
    assert_eq!(out[0].after_column("email"), Some(&text("***")));
    assert_eq!(out[1].after_column("email"), Some(&text("b")));
    assert_eq!(out.len(), 3);
}

#[test]
fn config_errors() {
    let err = |pairs: &[(&str, &str)]| init(pairs).err().unwrap();
    assert_eq!(err(&[]), "config key `columns` is required");
    assert_eq!(err(&[("columns", " ")]), "config key `columns` is empty");
    assert_eq!(
        err(&[("columns", "a"), ("mode", "scramble")]),
        "unknown mode `scramble`: use redact or hash"
    );
}

#[test]
fn readme_shows_this_source() {
    assert!(include_str!("../README.md").contains(include_str!("lib.rs")));
}
