use cdc_guest::testing::{change, message};
use cdc_guest::{Config, Op, Transform};

use crate::FilterTables;

fn run(pairs: &[(&str, &str)]) -> Vec<String> {
    let mut f = FilterTables::init(Config::from_pairs(pairs)).unwrap();
    let batch = vec![
        change(Op::Insert, "public", "orders"),
        change(Op::Update, "public", "users"),
        change(Op::Delete, "sales", "orders"),
        change(Op::Truncate, "audit", "log"),
        message("anything", b"x"),
    ];
    let out = f.transform(batch).unwrap();
    out.iter()
        .map(|c| match c.is_message() {
            true => "message".to_string(),
            false => c.qualified_table(),
        })
        .collect()
}

#[test]
fn allow_only() {
    assert_eq!(
        run(&[("allow", "public.*")]),
        ["public.orders", "public.users", "message"]
    );
    assert_eq!(
        run(&[("allow", "orders")]),
        ["public.orders", "sales.orders", "message"]
    );
}

#[test]
fn deny_only() {
    assert_eq!(
        run(&[("deny", "audit.*, users")]),
        ["public.orders", "sales.orders", "message"]
    );
}

#[test]
fn deny_wins_over_allow() {
    assert_eq!(
        run(&[("allow", "orders, public.users"), ("deny", "sales.*")]),
        ["public.orders", "public.users", "message"]
    );
}

#[test]
fn config_errors() {
    let err = |pairs: &[(&str, &str)]| FilterTables::init(Config::from_pairs(pairs)).err().unwrap();
    assert_eq!(err(&[]), "set allow or deny");
    assert_eq!(
        err(&[("allow", " , ")]),
        "allow is empty: it would drop every change"
    );
    assert!(err(&[("alow", "x")]).starts_with("unknown config key `alow`"));
    assert!(err(&[("deny", "public.")]).contains("bad table pattern"));
}

#[test]
fn readme_shows_this_source() {
    assert!(include_str!("../README.md").contains(include_str!("lib.rs")));
}
