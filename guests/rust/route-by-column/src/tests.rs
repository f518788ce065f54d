use cdc_guest::testing::{change, col, insert, message};
use cdc_guest::{Config, Op, Transform, Value};

use crate::RouteByColumn;

fn init(pairs: &[(&str, &str)]) -> Result<RouteByColumn, String> {
    RouteByColumn::init(Config::from_pairs(pairs))
}

fn routes(pairs: &[(&str, &str)]) -> Vec<Option<String>> {
    let mut r = init(pairs).unwrap();
    let mut del = change(Op::Delete, "sales", "orders");
    del.before = Some(vec![col("tenant", Value::Int4(7))]);
    let batch = vec![
        insert(
            "public",
            "orders",
            vec![col("tenant", Value::Text("acme".into()))],
        ),
        insert("public", "orders", vec![col("tenant", Value::Null)]),
        insert("public", "items", vec![col("sku", Value::Text("x".into()))]),
        del,
        message("p", b""),
    ];
    r.transform(batch)
        .unwrap()
        .into_iter()
        .map(|c| c.route)
        .collect()
}

#[test]
fn default_template() {
    let got = routes(&[("column", "tenant")]);
    let want = [
        Some("public.orders.acme"),
        None,
        None,
        Some("sales.orders.7"),
        None,
    ];
    assert_eq!(got, want.map(|s| s.map(String::from)));
}

#[test]
fn custom_template_and_default() {
    let got = routes(&[
        ("column", "tenant"),
        ("template", "cdc.{value}.{op}.{table}"),
        ("default", "cdc.unrouted"),
    ]);
    let want = [
        "cdc.acme.insert.orders",
        "cdc.unrouted",
        "cdc.unrouted",
        "cdc.7.delete.orders",
        "cdc.unrouted",
    ];
    assert_eq!(got, want.map(|s| Some(s.to_string())));
}

#[test]
fn keeps_an_earlier_route_without_default() {
    let mut r = init(&[("column", "tenant")]).unwrap();
    let mut c = insert("public", "items", vec![]);
    c.set_route("set.before");
    let out = r.transform(vec![c]).unwrap();
    assert_eq!(out[0].route.as_deref(), Some("set.before"));
}

#[test]
fn config_errors() {
    let err = |pairs: &[(&str, &str)]| init(pairs).err().unwrap();
    assert_eq!(err(&[]), "config key `column` is required");
    assert_eq!(
        err(&[("column", "a"), ("template", "{schema}.{tenant}")]),
        "unknown placeholder `{tenant}` in template: use {schema} {table} {op} {value} {origin}"
    );
    assert_eq!(
        err(&[("column", "a"), ("template", "x.{value")]),
        "unclosed `{` in template `x.{value`"
    );
}

#[test]
fn readme_shows_this_source() {
    assert!(include_str!("../README.md").contains(include_str!("lib.rs")));
}

/// `{origin}` asks the host; outside wasm there is none, so every change is `local` (the
/// integration test `two_servers_replicating_to_each_other_name_the_origin` covers a real
/// origin).
#[test]
fn origin_placeholder_without_a_host_is_local() {
    let got = routes(&[
        ("column", "tenant"),
        ("template", "{origin}.{table}.{value}"),
    ]);
    assert_eq!(got[0].as_deref(), Some("local.orders.acme"));
    assert_eq!(got[3].as_deref(), Some("local.orders.7"));
}
