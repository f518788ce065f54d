use cdc_guest::testing::{col, insert};
use cdc_guest::{Change, Config, Transform, Value};

use crate::Misbehave;

fn init(pairs: &[(&str, &str)]) -> Result<Misbehave, String> {
    Misbehave::init(Config::from_pairs(pairs))
}

fn batch(text: &str) -> Vec<Change> {
    vec![insert(
        "public",
        "t",
        vec![col("v", Value::Text(text.into()))],
    )]
}

#[test]
fn ok_and_error() {
    let b = batch("x");
    assert_eq!(init(&[]).unwrap().transform(b.clone()), Ok(b.clone()));
    assert_eq!(
        init(&[("mode", "ok")]).unwrap().transform(b.clone()),
        Ok(b.clone())
    );
    let mut e = init(&[("mode", "error")]).unwrap();
    assert_eq!(e.transform(b), Err("misbehave: asked to fail".to_string()));
}

#[test]
fn trigger_limits_misbehaviour() {
    let mut e = init(&[("mode", "error"), ("trigger", "boom")]).unwrap();
    assert!(e.transform(batch("fine")).is_ok());
    assert!(e.transform(batch("boom")).is_err());
    // Panic, loop and alloc pass untriggered batches too.
    for mode in ["panic", "loop", "alloc"] {
        let mut m = init(&[("mode", mode), ("trigger", "boom"), ("print", "yes")]).unwrap();
        assert_eq!(m.transform(batch("fine")), Ok(batch("fine")));
    }
}

#[test]
#[should_panic(expected = "misbehave: asked to panic")]
fn panics() {
    let _ = init(&[("mode", "panic")]).unwrap().transform(batch("x"));
}

#[test]
fn headers_and_route() {
    let mut h = init(&[("mode", "headers"), ("route", "r.1"), ("team", "a")]).unwrap();
    let out = h.transform(batch("x")).unwrap();
    let want = [
        ("x-config-mode", "headers"),
        ("x-config-route", "r.1"),
        ("x-config-team", "a"),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(out[0].headers, want);
    assert_eq!(out[0].route.as_deref(), Some("r.1"));
}

#[test]
fn init_errors() {
    assert_eq!(
        init(&[("mode", "reject-init")]).err().unwrap(),
        "misbehave: config rejected"
    );
    assert_eq!(
        init(&[("mode", "nope")]).err().unwrap(),
        "misbehave: unknown mode `nope`"
    );
}

#[test]
fn readme_shows_this_source() {
    assert!(include_str!("../README.md").contains(include_str!("lib.rs")));
}
