//! Every language's example modules on a real slot, behaviour by behaviour: filtering and
//! routing, a module's error (fail and skip) and its config rejected, the memory cap at a
//! large batch, modules built against WIT 0.1.0 (JavaScript, Python) and a module built
//! against a WIT version this host does not implement.
//! (Masking in every language: `transforms::mask_columns_in_every_language`; record →
//! replay: `transforms::a_live_typed_recording_replays_with_the_exact_types`.)
//!
//! Each test runs one host per language side by side on one database (a slot each), all
//! sharing one module cache, so the JavaScript and Python runtimes are compiled once.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::common::*;
use crate::transforms::{guest, transform};
use cdc_test_harness as harness;
use cdc_test_harness::{HostProcess, TestDb};

const LANGS: [&str; 4] = ["rust", "js", "python", "c"];

/// `dir/<name>/pipeline.toml` streaming slot `slot` of `db` through `body` to stdout, with
/// the module cache `dir/cache` every host of the test shares.
fn pipeline_in(dir: &Path, name: &str, db: &TestDb, slot: &str, body: &str) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let path = d.join("pipeline.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\ndsn = \"{}\"\nslot = \"{slot}\"\npublication = \"p\"\n[source.snapshot]\nmode = \"never\"\n\n[pipeline]\nmodule_cache = \"{}\"\n{body}\n[[sinks]]\ntype = \"stdout\"\nformat = \"json\"\n",
            db.dsn(),
            dir.join("cache").display()
        ),
    )
    .unwrap();
    path
}

/// One host per entry of `bodies` (a name and its `[pipeline]` keys and transforms),
/// each on slot `s_<hint>_<name>`.
async fn start_each(
    db: &TestDb,
    dir: &Path,
    hint: &str,
    bodies: Vec<(String, String)>,
) -> Vec<(String, String, HostProcess)> {
    let mut hosts = Vec::new();
    for (name, body) in bodies {
        let slot = format!("s_{hint}_{name}");
        let cfg = pipeline_in(dir, &name, db, &slot, &body);
        let host = start_host(db, &cfg, &slot).await;
        hosts.push((name, slot, host));
    }
    hosts
}

async fn wait_confirmed(db: &TestDb, slot: &str) {
    let client = db.client().await;
    harness::wait_confirmed_to_now(&client, slot, WAIT)
        .await
        .unwrap();
}

/// Filtering and routing on a real slot in every language: the JavaScript, Python and C
/// `filter-route` examples, and Rust's `filter-tables` chained with `route-by-column`
/// (the same configuration), print the same changes with the same routes; the dropped
/// changes are confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_and_route_in_every_language() {
    let db = db_with(
        "txl_route",
        "CREATE TABLE users (id int8 PRIMARY KEY, email text, region text);
         CREATE TABLE audit (id int PRIMARY KEY);
         CREATE TABLE other (id int PRIMARY KEY, v text);
         ALTER TABLE users REPLICA IDENTITY FULL;",
        "CREATE PUBLICATION p FOR TABLE users, audit, other",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let limits = "timeout_ms = 5000\nmemory_mb = 256";
    let route = [("column", "region"), ("template", "users.{value}")];
    let bodies = LANGS
        .iter()
        .map(|&lang| {
            let body = if lang == "rust" {
                transform(
                    "filter",
                    &guest(lang, "filter-tables"),
                    limits,
                    &[("deny", "public.audit")],
                ) + &transform("route", &guest(lang, "route-by-column"), limits, &route)
            } else {
                let mut config = vec![("deny", "public.audit")];
                config.extend(route);
                transform(
                    "filter-route",
                    &guest(lang, "filter-route"),
                    limits,
                    &config,
                )
            };
            (lang.to_string(), body)
        })
        .collect();
    let mut hosts = start_each(&db, dir.path(), "txl_route", bodies).await;
    db.exec(
        "INSERT INTO audit VALUES (1);
         INSERT INTO users VALUES (1, 'a@x', 'eu'), (2, 'b@x', NULL);
         UPDATE users SET region = 'us' WHERE id = 1;
         DELETE FROM users WHERE id = 1;
         INSERT INTO audit VALUES (2);
         INSERT INTO other VALUES (1, 'x');",
    )
    .await;
    let mut outputs = Vec::new();
    for (lang, slot, host) in &mut hosts {
        let lines = host
            .wait_for_lines(5, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{lang}: {e:#}\n{}", host.stderr_tail(30)));
        // The audit changes were dropped, not held: the slot moves past them.
        wait_confirmed(&db, slot).await;
        stop_clean(host).await;
        assert_eq!(host.stdout_lines().len(), 5, "{lang}: only five changes");
        outputs.push((lang.clone(), lines));
    }
    let rust = parse_lines(&outputs[0].1);
    let got: Vec<(&str, &str, Option<&str>)> = rust
        .iter()
        .map(|c| {
            (
                c["table"].as_str().unwrap(),
                c["op"].as_str().unwrap(),
                c.get("route").and_then(Json::as_str),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("users", "insert", Some("users.eu")),
            ("users", "insert", None),
            ("users", "update", Some("users.us")),
            ("users", "delete", Some("users.us")),
            ("other", "insert", None),
        ],
        "{rust:?}"
    );
    for (lang, lines) in &outputs[1..] {
        assert_eq!(lines, &outputs[0].1, "{lang} differs from rust");
    }
}

/// A module that returns an error, in every language (Rust: `misbehave`; the others:
/// `filter-route` with `required = "true"` and a null in the route column). With
/// `on_error = "fail"` the host stops with one error naming the module and its message
/// and prints nothing of the batch; with `on_error = "skip"` it drops that batch, logs
/// why, and the next batch passes through a fresh instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_error_fails_or_skips_in_every_language() {
    let db = db_with(
        "txl_err",
        "CREATE TABLE users (id int8 PRIMARY KEY, email text, region text)",
        "CREATE PUBLICATION p FOR TABLE users",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let module = |lang: &str, on_error: &str| {
        let extra = format!("on_error = \"{on_error}\"\ntimeout_ms = 5000\nmemory_mb = 256");
        let name = format!("bad-{lang}");
        if lang == "rust" {
            transform(
                &name,
                &guest(lang, "misbehave"),
                &extra,
                &[("mode", "error"), ("trigger", "boom")],
            )
        } else {
            transform(
                &name,
                &guest(lang, "filter-route"),
                &extra,
                &[("column", "region"), ("required", "true")],
            )
        }
    };
    let said = |lang: &str| {
        if lang == "rust" {
            "misbehave: asked to fail"
        } else {
            "filter-route: change 0 of public.users has no value in `region` (required = \"true\")"
        }
    };
    let message = |lang: &str| format!("transform bad-{lang}: returned an error: {}", said(lang));
    let mut bodies = Vec::new();
    for lang in LANGS {
        bodies.push((format!("fail_{lang}"), module(lang, "fail")));
        bodies.push((format!("skip_{lang}"), module(lang, "skip")));
    }
    let mut hosts = start_each(&db, dir.path(), "txl_err", bodies).await;
    // One transaction per batch: the poisoned one, then a good one.
    db.exec("INSERT INTO users VALUES (1, 'boom', NULL)").await;
    for (name, slot, host) in &mut hosts {
        let lang = &name[5..];
        if name.starts_with("fail_") {
            let st = host.wait_exit(WAIT).await.unwrap();
            let err = host.stderr();
            assert!(!st.success(), "{name} should have failed:\n{err}");
            assert!(err.contains(&message(lang)), "{name}: {err}");
            assert!(host.stdout_lines().is_empty(), "{name}");
        } else {
            host.wait_for_stderr("batch skipped", WAIT)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e:#}\n{}", host.stderr_tail(30)));
            wait_confirmed(&db, slot).await;
        }
    }
    db.exec("INSERT INTO users VALUES (2, 'fine', 'eu')").await;
    for (name, _, host) in hosts.iter_mut().filter(|(n, ..)| n.starts_with("skip_")) {
        let out = wait_json(host, 1).await;
        stop_clean(host).await;
        assert_eq!(out[0]["after"]["id"], 2, "{name}: {out:?}");
        let log = host.stderr();
        let lang = &name[5..];
        assert!(log.contains(said(lang)), "{name}: {log}");
    }
}

/// Every language's mask module, in both worlds, rejecting a config without `columns`:
/// `check` and `run` stop with one line naming the module and saying what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_config_stops_check_and_run_in_every_language() {
    let db = db_with(
        "txl_init",
        "CREATE TABLE users (id int8 PRIMARY KEY, email text)",
        "CREATE PUBLICATION p FOR TABLE users",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    for lang in LANGS {
        for world in ["", "-batch"] {
            let name = format!("{lang}{world}");
            let body = transform(
                &format!("mask-{name}"),
                &guest(lang, &format!("mask-columns{world}")),
                "",
                &[("tables", "users")],
            );
            let slot = format!("s_txl_init_{}", name.replace('-', "_"));
            let cfg = pipeline_in(dir.path(), &name, &db, &slot, &body);
            let out = harness::host_command(BIN)
                .arg("check")
                .arg(&cfg)
                .output()
                .unwrap();
            assert!(!out.status.success(), "{name}");
            let err = String::from_utf8_lossy(&out.stderr);
            let line = format!("transform mask-{name}: init rejected the config: ");
            assert!(err.contains(&line), "{name}: {err}");
            assert!(err.contains("columns"), "{name}: {err}");
            let mut host = HostProcess::spawn(BIN, &cfg).unwrap();
            let st = host.wait_exit(WAIT).await.unwrap();
            assert!(!st.success(), "{name}");
            assert!(host.stderr().contains(&line), "{name}: {}", host.stderr());
        }
    }
}

/// The memory cap at a large batch, in every language: a transaction of 20,000 rows, one
/// batch (`max_changes` and `max_batch_bytes` above it; by default the byte limit derived
/// from the memory budget would cut it at ~8,500 changes), through each language's identity module (records
/// world: the whole batch is copied into the guest) under a cap too small for it. The
/// host halves the batch until it fits, says so naming the cap, the batch size and the
/// setting, and every change comes out, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_too_large_for_the_cap_is_split_in_every_language() {
    let _heavy = harness::heavy().await;
    let db = db_with(
        "txl_cap",
        "CREATE TABLE users (id int8 PRIMARY KEY, email text, phone text, note text)",
        "CREATE PUBLICATION p FOR TABLE users",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    // Caps under what a 20,000-change batch needs and above each runtime's own footprint
    // (measured offline: Rust 16 MiB and C 8 MiB still split 20,000, Python 8 MiB does not
    // start; JavaScript: `transforms::large_batch_under_a_small_cap_…`).
    let caps = [("rust", 8), ("js", 16), ("python", 24), ("c", 8)];
    let bodies = caps
        .iter()
        .map(|&(lang, mb)| {
            let body = String::from("max_changes = 20000\nmax_batch_bytes = 67108864\n")
                + &transform(
                    &format!("id-{lang}"),
                    &guest(lang, "identity"),
                    &format!("memory_mb = {mb}\ntimeout_ms = 30000"),
                    &[],
                );
            (lang.to_string(), body)
        })
        .collect();
    let mut hosts = start_each(&db, dir.path(), "txl_cap", bodies).await;
    db.exec(
        "INSERT INTO users SELECT g, 'u' || g || '@x', NULL, NULL FROM generate_series(1, 20000) g",
    )
    .await;
    for ((lang, slot, host), (_, mb)) in hosts.iter_mut().zip(caps) {
        let lines = host
            .wait_for_lines(20000, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{lang}: {e:#}\n{}", host.stderr_tail(30)));
        let ids: Vec<i64> = parse_lines(&lines)
            .iter()
            .map(|c| c["after"]["id"].as_i64().unwrap())
            .collect();
        assert!(
            ids.iter().copied().eq(1..=20000),
            "{lang}: not every change in order"
        );
        wait_confirmed(&db, slot).await;
        stop_clean(host).await;
        let err = host.stderr();
        assert!(
            err.contains("handing this transform smaller batches from now on"),
            "{lang}: {err}"
        );
        assert!(
            err.contains(&format!("transform id-{lang}: memory cap of {mb} MiB exceeded on a batch of 20000 changes: raise `memory_mb` in its [[transforms]] entry, or send smaller batches with `[pipeline] max_changes`")),
            "{lang}: {err}"
        );
    }
}

/// A module of every language claiming a WIT version this host does not implement
/// (`cdc:pipeline@0.9.0`, patched into its bytes): `check` refuses it in one line naming
/// the version it was built for and how to rebuild it. (Modules really built against
/// 0.1.0 load: [`wit_0_1_modules_in_javascript_python_and_c_still_run`], and Rust's
/// `identity-v01` in `transforms_wit` and `transforms`.)
#[test]
fn other_wit_versions_are_refused_in_every_language() {
    let dir = tempfile::tempdir().unwrap();
    for lang in LANGS {
        let mut bytes = std::fs::read(guest(lang, "identity")).unwrap();
        // Same length, so every length prefix stays right.
        let (from, to) = (b"cdc:pipeline/".as_slice(), b"@0.2.0".as_slice());
        let mut i = 0;
        let mut patched = 0;
        while let Some(p) = bytes[i..].windows(from.len()).position(|w| w == from) {
            let start = i + p;
            if let Some(q) = bytes[start..].windows(to.len()).position(|w| w == to) {
                if q < 40 {
                    bytes[start + q + 3] = b'9';
                    patched += 1;
                }
            }
            i = start + 1;
        }
        assert!(patched > 0, "{lang}: no cdc:pipeline/…@0.2.0 in the module");
        let module = dir.path().join(format!("{lang}-v09.wasm"));
        std::fs::write(&module, &bytes).unwrap();
        let cfg = dir.path().join(format!("{lang}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[source]\ndsn = \"host=127.0.0.1 user=u dbname=x\"\nslot = \"s\"\npublication = \"p\"\n[pipeline]\nmodule_cache = \"off\"\n[[transforms]]\nname = \"m\"\nmodule = \"{}\"\n[[sinks]]\ntype = \"stdout\"\n",
                module.display()
            ),
        )
        .unwrap();
        let out = harness::host_command(BIN)
            .arg("check")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{lang}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{lang}: one line: {err}");
        assert!(
            err.contains("built against cdc:pipeline/transformer@0.9.0"),
            "{lang}: {err}"
        );
        assert!(err.contains("rebuild it against wit/"), "{lang}: {err}");
    }
}

/// Modules built against WIT 0.1.0 in JavaScript, Python and C — the identity examples'
/// sources, built here with the templates' build scripts against
/// `host/src/transform/wit-0.1.0` (the toolchains `scripts/build-guests` installed) — still
/// load and run on a real slot, and the log says which version they have. (Rust:
/// `guests/rust/identity-v01`, `transforms::large_batch_under_a_small_cap_and_a_wit_0_1_module_on_a_real_slot`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wit_0_1_modules_in_javascript_python_and_c_still_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let venv = std::env::var("CDC_GUEST_CACHE")
        .unwrap_or_else(|_| "/var/tmp/cdc-host-guests".into())
        + "/py-venv/bin";
    let path = format!("{venv}:{}", std::env::var("PATH").unwrap_or_default());
    let mut modules = Vec::new();
    for (lang, source, to, build_file, build) in [
        (
            "js",
            "identity/identity.js",
            "transform.js",
            "build.mjs",
            "node build.mjs",
        ),
        (
            "python",
            "identity/app.py",
            "app.py",
            "build.sh",
            "bash build.sh",
        ),
        (
            "c",
            "identity/identity.c",
            "transform.c",
            "build.sh",
            "bash build.sh",
        ),
    ] {
        let project = dir.path().join(format!("v01-{lang}"));
        let wit = project.join("wit");
        std::fs::create_dir_all(&wit).unwrap();
        for f in ["types.wit", "world.wit"] {
            std::fs::copy(
                root.join("host/src/transform/wit-0.1.0").join(f),
                wit.join(f),
            )
            .unwrap();
        }
        std::fs::copy(
            root.join("guests").join(lang).join(source),
            project.join(to),
        )
        .unwrap();
        // The template's build script, for world `transform` of the 0.1.0 WIT.
        let script =
            std::fs::read_to_string(root.join("guests/templates").join(lang).join(build_file))
                .unwrap()
                .replace("transform-batch", "transform")
                .replace("__NAME_", "identity_v01");
        std::fs::write(project.join(build_file), script).unwrap();
        if lang == "js" {
            std::os::unix::fs::symlink(
                root.join("guests/js/node_modules"),
                project.join("node_modules"),
            )
            .unwrap();
        }
        let out = std::process::Command::new("bash")
            .args(["-c", build])
            .current_dir(&project)
            .env("PATH", &path)
            .env("CDC_HOST_REPO", &root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{lang}: {build}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        modules.push((lang, project.join("identity_v01.wasm")));
    }
    let db = db_with(
        "txl_v01",
        "CREATE TABLE users (id int8 PRIMARY KEY, email text)",
        "CREATE PUBLICATION p FOR TABLE users",
    )
    .await;
    let bodies = modules
        .iter()
        .map(|(lang, module)| {
            let body = transform(&format!("old-{lang}"), module, "timeout_ms = 5000", &[]);
            (lang.to_string(), body)
        })
        .collect();
    let mut hosts = start_each(&db, dir.path(), "txl_v01", bodies).await;
    db.exec("INSERT INTO users VALUES (1, 'a@x'); UPDATE users SET email = 'b@x'")
        .await;
    for (lang, slot, host) in &mut hosts {
        let out = wait_json(host, 2).await;
        wait_confirmed(&db, slot).await;
        stop_clean(host).await;
        assert_eq!(out[0]["op"], "insert", "{lang}: {out:?}");
        assert_eq!(out[0]["after"]["email"], "a@x", "{lang}");
        assert_eq!(out[1]["op"], "update", "{lang}");
        assert_eq!(out[1]["after"]["email"], "b@x", "{lang}");
        let log = host.stderr();
        assert!(
            log.contains("built against cdc:pipeline@0.1.0"),
            "{lang}: {log}"
        );
    }
}
