//! Every invalid pipeline file gives one clear error — `file:line:col: key: message` where
//! the problem has a place in the file — and never a panic: a table of cases run through
//! `cdc-host check` (which connects to nothing). Then the server-side misconfigurations
//! whose actionable advice no other test asserts in full.
//!
//! Run with `--nocapture` to print the table (case, position, message).

use std::path::Path;

use crate::common::*;
use cdc_test_harness as harness;

/// Lines 1–4 of most cases.
const HEAD: &str = "[source]
dsn = \"postgres://cdc@127.0.0.1:5432/app\"
slot = \"s\"
publication = \"p\"
";
/// Two lines.
const STDOUT: &str = "[[sinks]]
type = \"stdout\"
";
/// Never set: `${CDC_TEST_CONFIG_ERRORS_UNSET}` must be reported as unset.
const UNSET: &str = "CDC_TEST_CONFIG_ERRORS_UNSET";
/// A password in some cases: it must never reach an error message.
const SECRET: &str = "hunter2";

enum Input {
    Text(String),
    Bytes(Vec<u8>),
    /// No file at that path.
    Missing,
    /// A directory where the file should be.
    Dir,
}

struct Case {
    name: &'static str,
    input: Input,
    /// `Some((line, column))`: the error must carry `file:line:col: `; `None`: the error
    /// has no place in the file and must name the file without one.
    at: Option<(usize, usize)>,
    /// A substring of the message (after the position).
    want: &'static str,
}

fn case(
    name: &'static str,
    text: impl Into<String>,
    at: (usize, usize),
    want: &'static str,
) -> Case {
    Case {
        name,
        input: Input::Text(text.into()),
        at: Some(at),
        want,
    }
}

/// `[source]` with this DSN (line 2, value at column 7) and a stdout sink.
fn dsn(name: &'static str, dsn: &str, want: &'static str) -> Case {
    case(
        name,
        format!("[source]\ndsn = \"{dsn}\"\nslot = \"s\"\npublication = \"p\"\n{STDOUT}"),
        (2, 7),
        want,
    )
}

/// HEAD, then a NATS sink (lines 5–7, the subject on line 8 at column 11) with JetStream.
fn subject(name: &'static str, subject: &str, want: &'static str) -> Case {
    case(
        name,
        format!("{HEAD}[[sinks]]\ntype = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"{subject}\"\n[sinks.jetstream]\nstream = \"CDC\"\n"),
        (8, 11),
        want,
    )
}

/// HEAD, then an HTTP sink whose url (line 7, value at column 7) is this.
fn http_url(name: &'static str, url: &str, want: &'static str) -> Case {
    case(
        name,
        format!("{HEAD}[[sinks]]\ntype = \"http\"\nurl = \"{url}\"\n"),
        (7, 7),
        want,
    )
}

/// HEAD, then a JetStream sink whose url (line 7, value at column 7) is this.
fn nats_url(name: &'static str, url: &str, want: &'static str) -> Case {
    case(
        name,
        format!("{HEAD}[[sinks]]\ntype = \"nats\"\nurl = \"{url}\"\n[sinks.jetstream]\nstream = \"CDC\"\n"),
        (7, 7),
        want,
    )
}

fn cases() -> Vec<Case> {
    let long = "a".repeat(64);
    let nats = "[[sinks]]\ntype = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\n"; // lines 5–7
    let transform = "[[transforms]]\nname = \"t\"\nmodule = \"m.wasm\"\n"; // lines 7–9 after HEAD+STDOUT
    let mut non_utf8 = HEAD
        .replace("slot = \"s\"", "slot = \"s\u{1}\"")
        .into_bytes();
    let i = non_utf8.iter().position(|b| *b == 1).unwrap();
    non_utf8[i] = 0xff;
    vec![
        // --- unknown keys, in every table ---
        case("unknown key at top level", format!("colour = \"red\"\n{HEAD}{STDOUT}"), (1, 1),
            "colour: unknown field `colour`, expected one of `source`, `pipeline`, `sinks`"),
        case("unknown table at top level", format!("{HEAD}{STDOUT}[sink]\ntype = \"stdout\"\n"), (7, 2),
            "sink: unknown field `sink`"),
        case("unknown key in [source]", format!("{HEAD}create_slots = false\n{STDOUT}"), (5, 1),
            "source.create_slots: unknown field `create_slots`, expected one of `dsn`"),
        case("unknown snapshot mode", format!("{HEAD}[source.snapshot]\nmode = \"always\"\n{STDOUT}"), (6, 8),
            "source.snapshot.mode: unknown variant `always`, expected `initial` or `never`"),
        case("snapshot workers out of range", format!("{HEAD}[source.snapshot]\nworkers = 0\n{STDOUT}"), (6, 11),
            "source.snapshot.workers: must be between 1 and 16"),
        case("snapshot table without schema", format!("{HEAD}[source.snapshot]\ntables = [\"orders\"]\n{STDOUT}"), (6, 10),
            "source.snapshot.tables: \"orders\": write tables as schema.table (e.g. \"public.orders\")"),
        case("unknown key in [source.snapshot]", format!("{HEAD}[source.snapshot]\nchunk_size = 10\n{STDOUT}"), (6, 1),
            "source.snapshot.chunk_size: unknown field `chunk_size`"),
        case("unknown key in [source.publication]",
            format!("[source]\ndsn = \"postgres://cdc@127.0.0.1/app\"\nslot = \"s\"\n[source.publication]\nname = \"p\"\ncreate_it = true\n{STDOUT}"),
            (6, 1), "source.publication.create_it: unknown field `create_it`, expected one of `name`, `create`, `tables`"),
        case("unknown key in [pipeline]", format!("{HEAD}[pipeline]\nmax_batch = 10\n{STDOUT}"), (6, 1),
            "pipeline.max_batch: unknown field `max_batch`, expected one of `max_changes`"),
        case("unknown key in [[sinks]]", format!("{HEAD}{STDOUT}formats = \"json\"\n"), (7, 1),
            "sinks.formats: unknown field `formats`"),
        case("unknown key in [sinks.jetstream]", format!("{HEAD}{nats}[sinks.jetstream]\nstream = \"CDC\"\nduplicate_window = 120\n"), (10, 1),
            "sinks.jetstream.duplicate_window: unknown field `duplicate_window`, expected one of `stream`, `create_stream`, `subjects`, `duplicate_window_secs`, `replicas`, `ordering_check`, `atomic`, `atomic_max_batch`"),
        case("unknown atomic mode", format!("{HEAD}{nats}[sinks.jetstream]\nstream = \"CDC\"\natomic = \"txn\"\n"), (10, 10),
            "sinks.jetstream.atomic: unknown variant `txn`, expected `none` or `transaction`"),
        case("atomic batch limit zero", format!("{HEAD}{nats}[sinks.jetstream]\nstream = \"CDC\"\natomic = \"transaction\"\natomic_max_batch = 0\n"), (11, 20),
            "sinks.jetstream.atomic_max_batch: must be at least 1 (nats-server's own limit is 1000 messages per atomic batch)"),
        case("unknown key in [sinks.tls]", format!("{HEAD}{nats}[sinks.tls]\nca = \"ca.pem\"\n"), (9, 1),
            "sinks.tls.ca: unknown field `ca`, expected one of `ca_file`"),
        case("unknown key in [[transforms]]", format!("{HEAD}{STDOUT}{transform}timeout = 5\n"), (10, 1),
            "transforms.timeout: unknown field `timeout`"),
        case("unknown key in [admin]", format!("{HEAD}{STDOUT}[admin]\nlisten = \"127.0.0.1:9187\"\nport = 9187\n"), (9, 1),
            "admin.port: unknown field `port`, expected `listen`"),
        case("unknown key in [log]", format!("{HEAD}{STDOUT}[log]\nlevel = \"debug\"\n"), (8, 1),
            "log.level: unknown field `level`, expected `format`"),
        // --- wrong types ---
        case("string for an integer", format!("{HEAD}[pipeline]\nmax_changes = \"100\"\n{STDOUT}"), (6, 15),
            "pipeline.max_changes: invalid type: string \"100\", expected usize"),
        case("integer for a bool", format!("{HEAD}create_slot = 1\n{STDOUT}"), (5, 15),
            "source.create_slot: invalid type: integer `1`, expected a boolean"),
        case("table for a string",
            format!("[source]\ndsn = {{ host = \"127.0.0.1\" }}\nslot = \"s\"\npublication = \"p\"\n{STDOUT}"),
            (2, 7), "source.dsn: invalid type: map, expected a string"),
        case("array for a string", format!("{HEAD}{STDOUT}name = [\"out\"]\n"), (7, 8),
            "sinks.name: invalid type: sequence, expected a string"),
        case("string for a table", format!("{HEAD}{nats}jetstream = \"CDC\"\n"), (8, 13),
            "sinks.jetstream: invalid type: string \"CDC\", expected a [sinks.jetstream] table"),
        case("integer for [admin]", format!("admin = 9187\n{HEAD}{STDOUT}"), (1, 9),
            "admin: invalid type: integer `9187`, expected a table"),
        case("[sinks] with one bracket", format!("{HEAD}[sinks]\ntype = \"stdout\"\n"), (5, 1),
            "sinks: invalid type: map, expected an array of tables: write [[sinks]] (double brackets)"),
        case("negative count", format!("{HEAD}[pipeline]\nmax_inflight = -1\n{STDOUT}"), (6, 16),
            "pipeline.max_inflight: invalid value: integer `-1`, expected usize"),
        case("zero count", format!("{HEAD}[pipeline]\nmax_changes = 0\n{STDOUT}"), (6, 15),
            "pipeline.max_changes: invalid value: integer `0`, expected at least 1"),
        case("unknown origin", format!("{HEAD}origin = \"remote\"\n{STDOUT}"), (5, 10),
            "source.origin: unknown variant `remote`, expected `any` or `none`"),
        // --- bad DSN (always at the value: 2:7) ---
        dsn("DSN: unparsable", "not a dsn", "source.dsn: invalid connection string: expected '=' after \"not\""),
        dsn("DSN: misspelt scheme, password kept out", &format!("postgress://cdc:{SECRET}@127.0.0.1/app"),
            "source.dsn: invalid connection string: unsupported URL scheme: use postgres:// or postgresql://"),
        dsn("DSN: unknown URL parameter", "postgres://cdc@127.0.0.1/app?sslmod=require",
            "source.dsn: invalid connection string: unknown option `sslmod`"),
        dsn("DSN: unknown key=value parameter", "host=127.0.0.1 user=cdc dbnam=app",
            "source.dsn: invalid connection string: unknown option `dbnam`"),
        dsn("DSN: bad sslmode", "postgres://cdc@127.0.0.1/app?sslmode=on",
            "source.dsn: invalid sslmode \"on\": expected disable, allow, prefer, require, verify-ca or verify-full"),
        dsn("DSN: port out of range", &format!("postgres://cdc:{SECRET}@127.0.0.1:70000/app"),
            "source.dsn: invalid connection string: invalid port: use a number from 1 to 65535"),
        dsn("DSN: port 0", "host=127.0.0.1 port=0 user=cdc",
            "source.dsn: invalid connection string: invalid port: use a number from 1 to 65535"),
        dsn("DSN: port not a number", "postgres://cdc@127.0.0.1:54x2/app",
            "invalid port: use a number from 1 to 65535"),
        dsn("DSN: no host", "postgres:///app", "source.dsn: connection string names no host"),
        dsn("DSN: unix socket", "host=/var/run/postgresql user=cdc",
            "source.dsn: only TCP hosts are supported, not unix socket paths"),
        dsn("DSN: no user", "postgres://127.0.0.1/app", "source.dsn: connection string names no user"),
        dsn("DSN: unterminated quote", "host='127.0.0.1 user=cdc", "unterminated quote in \"host\""),
        // --- slot and publication names ---
        case("slot: bad characters", HEAD.replace("slot = \"s\"", "slot = \"cdc-slot\"") + STDOUT, (3, 8),
            "source.slot: invalid slot name \"cdc-slot\": use 1 to 63 lower-case letters, digits and underscores"),
        case("slot: upper case", HEAD.replace("slot = \"s\"", "slot = \"Cdc\"") + STDOUT, (3, 8),
            "source.slot: invalid slot name \"Cdc\""),
        case("slot: 64 bytes", HEAD.replace("slot = \"s\"", &format!("slot = \"{long}\"")) + STDOUT, (3, 8),
            "source.slot: invalid slot name"),
        case("slot: missing", HEAD.replace("slot = \"s\"\n", "") + STDOUT, (1, 1),
            "source: missing field `slot`"),
        case("publication: missing", HEAD.replace("publication = \"p\"\n", "") + STDOUT, (1, 1),
            "source: missing field `publication`"),
        case("publication: empty", HEAD.replace("publication = \"p\"", "publication = \"\"") + STDOUT, (4, 15),
            "source.publication: must not be empty"),
        case("publication: 64 bytes", HEAD.replace("publication = \"p\"", &format!("publication = \"{long}\"")) + STDOUT, (4, 15),
            "source.publication: publication name is 64 bytes long: Postgres names are at most 63 bytes"),
        case("publication: control character", HEAD.replace("publication = \"p\"", "publication = \"p\\u0007\"") + STDOUT, (4, 15),
            "source.publication: invalid publication name \"p\\u{7}\": control characters are not allowed"),
        case("publication: table without name",
            format!("[source]\ndsn = \"postgres://cdc@127.0.0.1/app\"\nslot = \"s\"\n[source.publication]\ncreate = true\n{STDOUT}"),
            (4, 1), "source.publication: missing field `name`"),
        // --- transforms ---
        case("transform: missing module file", format!("{HEAD}{STDOUT}[[transforms]]\nname = \"t\"\nmodule = \"missing.wasm\"\n"), (9, 10),
            "transforms.module: no such file: "),
        case("transform: duplicate names", format!("{HEAD}{STDOUT}{transform}{transform}"), (11, 8),
            "transforms.name: duplicate transform name \"t\": give each transform a unique name"),
        case("transform: bad name", format!("{HEAD}{STDOUT}[[transforms]]\nname = \"mask pii\"\nmodule = \"m.wasm\"\n"), (8, 8),
            "transforms.name: invalid name \"mask pii\""),
        case("transform: dead-letter without a sink", format!("{HEAD}{STDOUT}{transform}on_error = \"dead-letter\"\n"), (8, 8),
            "transforms.dead_letter_sink: on_error = \"dead-letter\" needs dead_letter_sink"),
        case("transform: nested config table", format!("{HEAD}{STDOUT}{transform}[transforms.config.x]\ny = 1\n"), (10, 1),
            "transforms.config.x: nested tables are not supported"),
        // --- sinks ---
        subject("subject: unknown placeholder", "cdc.{schema}.{tbl}",
            "sinks.subject: unknown placeholder {tbl} in \"cdc.{schema}.{tbl}\": use {schema}, {table} or {op}"),
        subject("subject: unclosed brace", "cdc.{table", "sinks.subject: unclosed '{' in \"cdc.{table\""),
        subject("subject: stray closing brace", "cdc.table}", "sinks.subject: unmatched '}' in \"cdc.table}\""),
        subject("subject: wildcard", "cdc.*.{table}", "sinks.subject: invalid subject \"cdc.*.{table}\": wildcards ('*', '>') cannot be published to"),
        subject("subject: empty token", "cdc..{table}", "sinks.subject: invalid subject \"cdc..{table}\": no spaces and no empty tokens"),
        http_url("HTTP url: not a URL", "not a url", "sinks.url: not a URL: expected http://host[:port]/path"),
        http_url("HTTP url: other scheme", "ftp://127.0.0.1/cdc", "sinks.url: unsupported scheme \"ftp\": use http:// or https://"),
        http_url("HTTP url: no host", "http:///cdc", "sinks.url: invalid URL: it names no host"),
        http_url("HTTP url: port out of range", "http://127.0.0.1:99999/cdc", "sinks.url: invalid URL: the port must be a number from 1 to 65535"),
        http_url("HTTP url: space, password kept out", &format!("https://u:{SECRET}@hooks example.com/"),
            "sinks.url: invalid URL: it contains spaces or control characters"),
        http_url("HTTP url: placeholders need batch = none", "http://127.0.0.1/{table}",
            "sinks.url: {schema}, {table} and {op} in the url need batch = \"none\""),
        nats_url("NATS url: http scheme", "http://127.0.0.1:4222",
            "sinks.url: unsupported scheme \"http\" for a NATS server: use nats://, tls://, ws:// or wss://"),
        nats_url("NATS url: empty", "", "sinks.url: is empty: name a NATS server"),
        nats_url("NATS url: bad port in a list", "nats://127.0.0.1:4222, nats://127.0.0.1:x",
            "sinks.url: invalid URL: the port must be a number from 1 to 65535"),
        case("unknown format", format!("{HEAD}[[sinks]]\nformat = \"avro\"\ntype = \"stdout\"\n"), (6, 10),
            "sinks.format: unknown variant `avro`, expected one of `json`, `debezium`, `json-typed`"),
        case("unknown batch", format!("{HEAD}[[sinks]]\ntype = \"http\"\nurl = \"http://127.0.0.1/cdc\"\nbatch = \"lines\"\n"), (8, 9),
            "sinks.batch: unknown variant `lines`, expected one of `ndjson`, `array`, `none`"),
        case("unknown sink type", format!("{HEAD}[[sinks]]\ntype = \"kafka\"\n"), (6, 8),
            "sinks.type: unknown variant `kafka`, expected one of `stdout`, `nats`, `http`"),
        case("sink without type", format!("{HEAD}[[sinks]]\nformat = \"json\"\n"), (5, 1),
            "sinks: missing field `type`"),
        case("unknown on_reject", format!("{HEAD}[[sinks]]\ntype = \"http\"\nurl = \"http://127.0.0.1/cdc\"\non_reject = \"retry\"\n"), (8, 13),
            "sinks.on_reject: unknown variant `retry`, expected one of `fail`, `skip`, `dead-letter`"),
        case("duplicate sink names",
            format!("{HEAD}[[sinks]]\nname = \"out\"\ntype = \"stdout\"\n[[sinks]]\nname = \"out\"\ntype = \"http\"\nurl = \"http://127.0.0.1/cdc\"\n"),
            (8, 1), "sinks.name: duplicate sink name \"out\": give each sink a unique name"),
        case("duplicate default sink names", format!("{HEAD}{STDOUT}{STDOUT}"), (7, 1),
            "sinks.name: duplicate sink name \"stdout\" (a sink without a name is named after its type): give each sink a unique name"),
        case("no sinks", HEAD, (1, 1), "sinks: at least one [[sinks]] entry is required"),
        // --- ${ENV} ---
        dsn("${ENV} unset in the DSN", &format!("postgres://cdc:${{{UNSET}}}@127.0.0.1/app"),
            "source.dsn: environment variable CDC_TEST_CONFIG_ERRORS_UNSET is not set"),
        case("${ENV} unset in a sink password",
            format!("{HEAD}{nats}user = \"cdc\"\npassword = \"${{{UNSET}}}\"\n[sinks.jetstream]\nstream = \"CDC\"\n"),
            (9, 12), "sinks.password: environment variable CDC_TEST_CONFIG_ERRORS_UNSET is not set"),
        http_url("${ENV} unterminated", "http://${HOOK_HOST/cdc", "sinks.url: unterminated ${ in value"),
        http_url("${ENV} bad name", "http://${HOOK-HOST}/cdc", "sinks.url: invalid environment variable name \"HOOK-HOST\""),
        // --- TOML syntax ---
        case("TOML: unquoted string", format!("{HEAD}[[sinks]]\ntype = stdout\n"), (6, 8),
            "sinks.type: string values must be quoted"),
        case("TOML: unclosed table header", format!("{HEAD}[[sinks]\ntype = \"stdout\"\n"), (5, 9),
            "unclosed array table, expected `]`"),
        case("TOML: duplicate key", format!("{HEAD}slot = \"t\"\n{STDOUT}"), (5, 1),
            "source.slot: duplicate key"),
        case("TOML: duplicate table", format!("{HEAD}[source]\n{STDOUT}"), (5, 2), "source: duplicate key"),
        case("TOML: unterminated string", format!("[source]\ndsn = \"postgres://cdc@127.0.0.1/app\nslot = \"s\"\n{STDOUT}"), (2, 36),
            "invalid basic string"),
        // --- the file itself ---
        case("empty file", "", (1, 1), "no [source] table: a pipeline needs [source] (dsn, slot, publication) and at least one [[sinks]]"),
        case("comments only", "# nothing yet\n\n", (1, 1), "no [source] table"),
        Case { name: "non-UTF-8 file", input: Input::Bytes(non_utf8), at: Some((3, 10)),
            want: "not valid UTF-8: a pipeline file must be UTF-8 text" },
        Case { name: "missing file", input: Input::Missing, at: None,
            want: "cannot read: No such file or directory" },
        Case { name: "a directory", input: Input::Dir, at: None, want: "cannot read: Is a directory" },
    ]
}

/// Runs `cdc-host check` on one case; returns the problems found (empty = as expected) and
/// the message.
fn run_case(dir: &Path, n: usize, case: &Case) -> (Vec<String>, String) {
    let path = dir.join(format!("case{n:02}.toml"));
    match &case.input {
        Input::Text(t) => std::fs::write(&path, t).unwrap(),
        Input::Bytes(b) => std::fs::write(&path, b).unwrap(),
        Input::Missing => {}
        Input::Dir => std::fs::create_dir(&path).unwrap(),
    }
    let out = cdc_test_harness::host_command(BIN)
        .arg("check")
        .arg(&path)
        .current_dir(dir)
        .env_remove(UNSET)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut problems = Vec::new();
    if out.status.code() != Some(1) {
        problems.push(format!("exit status {} (want 1)", out.status));
    }
    if !stdout.is_empty() {
        problems.push(format!("stdout is not empty: {stdout}"));
    }
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() != 1 || !lines[0].starts_with("error: ") {
        problems.push(format!(
            "want exactly one `error: ` line on stderr, got {}",
            lines.len()
        ));
    }
    for bad in [
        "panicked",
        "backtrace",
        "RUST_BACKTRACE",
        "struct ",
        "Error {",
        "Some(",
        "Kind",
        SECRET,
    ] {
        if stderr.contains(bad) {
            problems.push(format!("stderr contains {bad:?}"));
        }
    }
    let file = path.display().to_string();
    let message = lines
        .first()
        .and_then(|l| l.strip_prefix("error: "))
        .unwrap_or_default();
    let rest = match case.at {
        Some((line, col)) => message.strip_prefix(&format!("{file}:{line}:{col}: ")),
        None => message
            .strip_prefix(&format!("{file}: "))
            .filter(|r| !r.starts_with(|c: char| c.is_ascii_digit())),
    };
    match rest {
        Some(rest) if rest.contains(case.want) => {}
        Some(rest) => problems.push(format!("message lacks {:?}: {rest}", case.want)),
        None => problems.push(format!(
            "want the position {}",
            match case.at {
                Some((l, c)) => format!("{file}:{l}:{c}: "),
                None => format!("{file}: (no line:col)"),
            }
        )),
    }
    let shown = rest.unwrap_or(message).to_owned();
    if !problems.is_empty() {
        problems.push(format!("stderr was:\n{stderr}"));
    }
    (problems, shown)
}

#[test]
fn every_invalid_file_gives_one_clear_positioned_error() {
    assert!(std::env::var_os(UNSET).is_none(), "{UNSET} must not be set");
    let dir = tempfile::tempdir().unwrap();
    // The module the transform cases point at: only its existence is checked before the
    // error each case is about.
    std::fs::write(dir.path().join("m.wasm"), b"").unwrap();
    let cases = cases();
    let mut failures = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (n, c) in cases.iter().enumerate() {
        assert!(names.insert(c.name), "case name {:?} twice", c.name);
        let (problems, message) = run_case(dir.path(), n, c);
        let at = c.at.map_or("-".to_owned(), |(l, col)| format!("{l}:{col}"));
        eprintln!("{:<45} {at:>6}  {message}", c.name);
        if !problems.is_empty() {
            failures.push(format!("case {:?}:\n  {}", c.name, problems.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Server-side misconfiguration → an actionable message. Covered elsewhere, with the advice
/// asserted: wal_level not logical (`replication.rs` wal_level_not_logical_is_explained),
/// max_replication_slots exhausted (exhausted_replication_slots_are_explained), publication
/// missing, no REPLICATION privilege (actionable_errors), slot invalidated
/// (an_invalidated_slot_stops_with_instructions). Those tests assert only the first half of
/// two messages; here the advice itself, for an md5 role (actionable_errors uses SCRAM) and
/// for sslmode=require against a server without TLS (`tls.rs` checks "does not support TLS").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_missing_tls_say_what_to_do() {
    let db = db_with(
        "srverrs",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    .await;

    let (_d, cfg) = config(&db.dsn_for(harness::MD5_USER, SECRET), "s_srverr", "p", "");
    let err = failing_run(&cfg).await;
    assert!(
        err.contains("wrong password for role \"cdc_md5\": check the password in source.dsn (or the ${ENV} it comes from)"),
        "{err}"
    );

    let dsn = format!(
        "postgres://postgres@127.0.0.1:{}/{}?sslmode=require",
        db.port(),
        db.name
    );
    let (_d, cfg) = config(&dsn, "s_srverr", "p", "");
    let err = failing_run(&cfg).await;
    assert!(
        err.contains("does not support TLS, but sslmode requires it (use sslmode=prefer to allow plain connections)"),
        "{err}"
    );
}

/// Runs the host expecting it to stop at start; returns its one `error:` line, after checking
/// there is exactly one, no panic and no secret.
async fn failing_run(cfg: &Path) -> String {
    let mut host = harness::HostProcess::spawn(BIN, cfg).unwrap();
    let st = host.wait_exit(WAIT).await.unwrap();
    assert!(!st.success(), "expected failure, got {st}");
    let stderr = host.stderr();
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(SECRET),
        "the password is never logged: {stderr}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    errors[0].to_owned()
}
