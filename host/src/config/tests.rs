use super::*;

fn parse(src: &str) -> Result<Loaded, ConfigError> {
    PipelineConfig::parse(Path::new("p.toml"), src)
}

const GOOD: &str = r#"
[source]
dsn = "postgres://cdc@127.0.0.1:5432/app?sslmode=prefer"
slot = "cdc_host"
publication = "cdc_pub"
[[sinks]]
type = "stdout"
format = "json"
"#;

#[test]
fn minimal_contract_parses() {
    let l = parse(GOOD).unwrap();
    assert_eq!(l.config.source.slot.get_ref(), "cdc_host");
    assert_eq!(l.publication.name, "cdc_pub");
    assert!(!l.publication.create);
    assert!(l.config.source.create_slot);
    assert_eq!(l.conn.dbname, "app");
    assert_eq!(l.config.sinks.len(), 1);
}

#[test]
fn the_memory_budget_sets_the_byte_limits() {
    let b = parse(GOOD).unwrap().config.pipeline;
    assert_eq!(b.memory_budget_mb, 256);
    assert_eq!(b.max_inflight_bytes(), 56 << 20);
    assert_eq!(b.max_batch_bytes(), (56 << 20) / 11);
    let b = parse(&format!(
        "{GOOD}[pipeline]\nmemory_budget_mb = 96\nmax_inflight = 1\n"
    ))
    .unwrap()
    .config
    .pipeline;
    assert_eq!(b.max_inflight_bytes(), 16 << 20);
    assert_eq!(b.max_batch_bytes(), (16 << 20) / 4);
    let b = parse(&format!(
        "{GOOD}[pipeline]\nmax_inflight_bytes = 1000\nmax_batch_bytes = 100\n"
    ))
    .unwrap()
    .config
    .pipeline;
    assert_eq!((b.max_inflight_bytes(), b.max_batch_bytes()), (1000, 100));
    let e = err(&format!("{GOOD}[pipeline]\nmemory_budget_mb = 48\n"));
    assert!(
        e.contains("p.toml:10:20: pipeline.memory_budget_mb:") && e.contains("at least 64"),
        "{e}"
    );
    let e = err(&format!("{GOOD}[pipeline]\nmax_batch_bytes = 0\n"));
    assert!(
        e.contains("p.toml:10:19:") && e.contains("at least 1"),
        "{e}"
    );
}

#[test]
fn publication_table_form() {
    let src = GOOD.replace(
        "publication = \"cdc_pub\"",
        "[source.publication]\nname = \"p\"\ncreate = true\ntables = [\"public.orders\"]",
    );
    let l = parse(&src).unwrap();
    assert!(l.publication.create);
    assert_eq!(
        l.publication.tables.as_deref(),
        Some(&["public.orders".to_owned()][..])
    );
}

fn err(src: &str) -> String {
    parse(src).unwrap_err().to_string()
}

#[test]
fn unknown_key_names_file_line_column_and_key() {
    let e = err(&GOOD.replace("slot = \"cdc_host\"", "slot = \"cdc_host\"\nslott = 1"));
    assert!(
        e.starts_with("p.toml:5:1: source.slott: unknown field `slott`"),
        "{e}"
    );
    let e = err(&GOOD.replace("format = \"json\"", "format = \"json\"\ncolour = 1"));
    assert!(
        e.contains("p.toml:9:1: sinks.colour: unknown field `colour`"),
        "{e}"
    );
}

#[test]
fn wrong_types_and_values() {
    let e = err(&GOOD.replace("format = \"json\"", "format = \"xml\""));
    assert!(
        e.contains("p.toml:8:10: sinks.format:") && e.contains("unknown variant `xml`"),
        "{e}"
    );
    let e = err(&GOOD.replace("slot = \"cdc_host\"", "slot = \"Bad-Slot\""));
    assert!(
        e.starts_with("p.toml:4:8: source.slot: invalid slot name"),
        "{e}"
    );
    let e = err(&GOOD.replace("?sslmode=prefer", "?sslmode=sometimes"));
    assert!(
        e.starts_with("p.toml:3:7: source.dsn: invalid sslmode"),
        "{e}"
    );
    let e = err(&GOOD.replace("slot = \"cdc_host\"\n", ""));
    assert!(
        e.starts_with("p.toml:2:1: source: missing field `slot`"),
        "{e}"
    );
    let e = err(&format!("{GOOD}\n[[sinks]]\ntype = \"stdout\"\n"));
    assert!(e.contains("duplicate sink name \"stdout\""), "{e}");
}

#[test]
fn env_interpolation() {
    // No set_var: tests run in parallel threads sharing one environment.
    let vars = |name: &str| (name == "CDC_TEST_PW_1").then(|| "s3cret".to_owned());
    assert_eq!(
        cdc_sinks::config::interpolate_with("a:${CDC_TEST_PW_1}@b $$ $x", vars).unwrap(),
        "a:s3cret@b $ $x"
    );
    assert_eq!(
        cdc_sinks::config::interpolate_with("${CDC_TEST_PW_2}", vars).unwrap_err(),
        "environment variable CDC_TEST_PW_2 is not set"
    );
    let e = err(&GOOD.replace("cdc@", "cdc:${CDC_TEST_MISSING_VAR}@"));
    assert!(
        e.contains("source.dsn: environment variable CDC_TEST_MISSING_VAR is not set"),
        "{e}"
    );
}

#[test]
fn a_pipeline_whose_every_sink_is_a_dead_letter_sink_is_refused() {
    // Two sinks dead-lettering into each other: nothing would receive the stream.
    let src = GOOD.replace(
        "[[sinks]]\ntype = \"stdout\"\n",
        "[[sinks]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://127.0.0.1:1/\"\non_reject = \"dead-letter\"\ndead_letter_sink = \"b\"\n\
         [[sinks]]\nname = \"b\"\ntype = \"http\"\nurl = \"http://127.0.0.1:2/\"\non_reject = \"dead-letter\"\ndead_letter_sink = \"a\"\n",
    );
    assert_ne!(src, GOOD, "the test's config must change");
    let e = err(&src);
    assert!(e.contains("sinks: every sink is a dead-letter sink"), "{e}");
    // One of them receiving the stream is fine.
    let ok = src.replace(
        "on_reject = \"dead-letter\"\ndead_letter_sink = \"a\"\n",
        "",
    );
    PipelineConfig::parse(Path::new("p.toml"), &ok).unwrap();
}

#[test]
fn max_inflight_is_bounded() {
    let e = err(&format!("{GOOD}[pipeline]\nmax_inflight = 1000000000000\n"));
    assert!(
        e.contains("pipeline.max_inflight: at most 65536 batches can be in flight"),
        "{e}"
    );
    parse(&format!("{GOOD}[pipeline]\nmax_inflight = 65536\n")).unwrap();
}

#[test]
fn a_dead_letter_sink_takes_no_routes_or_policy_of_its_own() {
    let base = GOOD.replace(
        "[[sinks]]\ntype = \"stdout\"\n",
        "[[sinks]]\nname = \"hook\"\ntype = \"http\"\nurl = \"http://127.0.0.1:1/\"\non_reject = \"dead-letter\"\ndead_letter_sink = \"dlq\"\n\
         [[sinks]]\nname = \"dlq\"\ntype = \"stdout\"\n",
    );
    PipelineConfig::parse(Path::new("p.toml"), &base).unwrap();
    let e = err(&base.replace(
        "name = \"dlq\"\ntype = \"stdout\"\n",
        "name = \"dlq\"\ntype = \"stdout\"\nroutes = [\"audit.>\"]\n",
    ));
    assert!(
        e.contains("sinks.routes: does not apply to \"dlq\": it is a dead-letter sink"),
        "{e}"
    );
}
