//! Transforms and the WIT contract's versions, offline through `cdc-host transform`:
//! `cdc:pipeline@0.2.0` (op `read`), modules built against 0.1.0, other versions.

use std::path::Path;
use std::process::Output;

use serde_json::Value as Json;

use crate::common::BIN;
use crate::transforms::guest;

/// A snapshot read and a streamed insert, as the stdout sink's json format writes them.
const READ_AND_INSERT: &str = concat!(
    r#"{"id":"r00000007-0123456789abcdef0123456789abcdef","op":"read","schema":"public","table":"users","before":null,"after":{"id":1,"email":"a@x"},"lsn":"0/FFFF00","commit_lsn":"0/1000000","xid":7,"commit_ts":"2024-05-06T07:08:09.123456+00:00","snapshot":{"id":7,"last":false}}"#,
    "\n",
    r#"{"id":"0000000001000000-00000001","op":"insert","schema":"public","table":"users","before":null,"after":{"id":2,"email":"b@x"},"lsn":"0/FFFF10","commit_lsn":"0/1000000","xid":7,"commit_ts":"2024-05-06T07:08:09.123456+00:00"}"#,
    "\n"
);

/// One module cache for this file's tests (each replay would otherwise compile the
/// JavaScript and Python runtimes again, a few seconds each).
fn cache() -> &'static Path {
    static CACHE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn replay(module: &Path, input: &Path, args: &[&str]) -> Output {
    std::process::Command::new(BIN)
        .arg("transform")
        .arg(module)
        .arg("--input")
        .arg(input)
        .args(args)
        .env("CDC_HOST_MODULE_CACHE", cache())
        .output()
        .unwrap()
}

fn lines(out: &Output) -> Vec<Json> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A 0.2.0 module of every language sees op `read` and hands it back a read.
#[test]
fn wit_0_2_modules_of_every_language_keep_a_read_a_read() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, READ_AND_INSERT).unwrap();
    for lang in ["rust", "c", "js", "python"] {
        let out = lines(&replay(&guest(lang, "identity"), &input, &[]));
        assert_eq!(out.len(), 2, "{lang}");
        assert_eq!(out[0]["op"], "read", "{lang}: {}", out[0]);
        assert_eq!(out[0]["snapshot"]["id"], 7, "{lang}");
        assert_eq!(out[1]["op"], "insert", "{lang}");
    }
}

/// A module built against 0.1.0 still loads; a read reaches it as an insert (it tags
/// what it saw in a header) and comes back a read. The log says which version it has.
#[test]
fn wit_0_1_modules_still_load_and_see_reads_as_inserts() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, READ_AND_INSERT).unwrap();
    let result = replay(&guest("rust", "identity-v01"), &input, &[]);
    let out = lines(&result);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["op"], "read", "{}", out[0]);
    assert_eq!(out[0]["headers"]["x-seen-op"], "insert");
    assert_eq!(out[1]["op"], "insert");
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(err.contains("built against cdc:pipeline@0.1.0"), "{err}");
}

/// A module of a version this host does not implement: one line naming its version and
/// how to rebuild it.
#[test]
fn other_wit_versions_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(guest("rust", "identity-v01")).unwrap();
    // Same length, so every length prefix stays right: a module "built against 0.9.0".
    let (from, to) = (b"cdc:pipeline/".as_slice(), b"@0.1.0".as_slice());
    let mut i = 0;
    while let Some(p) = bytes[i..].windows(from.len()).position(|w| w == from) {
        let start = i + p;
        if let Some(q) = bytes[start..].windows(to.len()).position(|w| w == to) {
            if q < 40 {
                bytes[start + q + 3] = b'9';
            }
        }
        i = start + 1;
    }
    let module = dir.path().join("v09.wasm");
    std::fs::write(&module, &bytes).unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, READ_AND_INSERT).unwrap();
    let out = replay(&module, &input, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("does not implement the transform world"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("built against cdc:pipeline/transformer@0.9.0"),
        "{line}"
    );
    assert!(line.contains("rebuild it against wit/"), "{line}");
}

/// `n` one-column inserts as json lines, written to `cdc-host transform` on stdin by a
/// thread (no file of a million lines); returns the exit status, the number of lines
/// out and stderr.
fn replay_generated(module: &Path, n: usize, args: &[&str]) -> (bool, usize, String) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::Stdio;
    let mut child = std::process::Command::new(BIN)
        .arg("transform")
        .arg(module)
        .args(["--input", "-"])
        .args(args)
        .env("CDC_HOST_MODULE_CACHE", cache())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut buf = std::io::BufWriter::with_capacity(1 << 16, &mut stdin);
        for i in 0..n {
            let line = format!(
                "{{\"id\":\"{:016X}-00000000\",\"op\":\"insert\",\"schema\":\"public\",\"table\":\"t\",\"after\":{{\"id\":{i},\"email\":\"u{i}@example.com\"}},\"commit_ts\":\"2024-05-06T07:08:09+00:00\"}}\n",
                0x100_0000 + i * 256
            );
            if buf.write_all(line.as_bytes()).is_err() {
                break; // the module failed; stderr says why
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).ok();
        s
    });
    let lines = BufReader::new(child.stdout.take().unwrap()).lines().count();
    writer.join().unwrap();
    let ok = child.wait().unwrap().success();
    (ok, lines, errors.join().unwrap())
}

/// The JavaScript identity module over a million changes at batch 1000 with its
/// default memory cap (64 MiB) and deadline: it used to run out of memory after ~33,000
/// (SpiderMonkey collects lazily and linear memory never shrinks; the host now replaces
/// an instance whose memory passed 3/4 of its cap between calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_identity_runs_a_million_changes_at_its_default_cap() {
    let _heavy = cdc_test_harness::heavy().await;
    let (ok, lines, err) = tokio::task::spawn_blocking(|| {
        replay_generated(&guest("js", "identity"), 1_000_000, &["--batch", "1000"])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert_eq!(lines, 1_000_000);
    assert!(
        err.contains("transform instance replaced by a fresh one"),
        "{err}"
    );
}

/// A batch too large for a module's cap is split (and later batches are handed over in
/// smaller calls), so a large `max_changes` does not fail a module that handles each
/// change in little memory; the log says what to raise.
#[test]
fn a_batch_too_large_for_the_cap_is_split() {
    let (ok, lines, err) = replay_generated(
        &guest("js", "identity"),
        30_000,
        &[
            "--batch",
            "30000",
            "--memory-mb",
            "32",
            "--timeout-ms",
            "60000",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(lines, 30_000);
    assert!(
        err.contains("handing this transform smaller batches from now on"),
        "{err}"
    );
    assert!(err.contains("memory cap of 32 MiB exceeded on a batch of 30000 changes: raise `memory_mb` in its [[transforms]] entry, or send smaller batches with `[pipeline] max_changes`"), "{err}");
}

/// `guests/new-transform` starts a transform outside the repository that builds and
/// passes its offline test: JavaScript (async, crypto.subtle) and Python (hashlib) hash
/// `email` the same way, drop the delete and route by table, in world `transform-batch`
/// (the fast path).
#[test]
fn new_transform_templates_build_outside_the_repo() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let venv = std::env::var("CDC_GUEST_CACHE")
        .unwrap_or_else(|_| "/var/tmp/cdc-host-guests".into())
        + "/py-venv/bin";
    let path = format!("{venv}:{}", std::env::var("PATH").unwrap_or_default());
    let mut outputs = Vec::new();
    for (lang, build) in [("js", "node build.mjs"), ("python", "./build.sh")] {
        let project = dir.path().join(format!("h-{lang}"));
        let run = |cmd: &str, cwd: &Path| {
            let out = std::process::Command::new("bash")
                .args(["-c", cmd])
                .current_dir(cwd)
                .env("PATH", &path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{cmd}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(
            &format!(
                "{}/guests/new-transform --lang {lang} h-{lang}",
                root.display()
            ),
            dir.path(),
        );
        if lang == "js" {
            // The toolchain this repository installed (npm install would fetch the same).
            std::os::unix::fs::symlink(
                root.join("guests/js/node_modules"),
                project.join("node_modules"),
            )
            .unwrap();
            assert!(project
                .join("types/interfaces/cdc-pipeline-types.d.ts")
                .is_file());
        } else {
            assert!(project.join("wit_world/imports/types.py").is_file());
        }
        run(build, &project);
        let module = project.join(format!("h_{lang}.wasm"));
        let result = replay(&module, &project.join("changes.jsonl"), &[]);
        let log = String::from_utf8_lossy(&result.stderr);
        assert!(
            log.contains("wit=\"0.2.0 (batch)\""),
            "{lang}: the template is in the batch world: {log}"
        );
        let out = lines(&result);
        assert_eq!(out.len(), 1, "{lang}: the delete is dropped");
        assert_eq!(out[0]["route"], "cdc.public.users", "{lang}");
        outputs.push(out[0]["after"]["email"].clone());
    }
    // sha256("a@example.com")
    let want = "08168cd80dfd534ab0f10af10f1303fe00af2d43ab5c1432360d137f8197e17a";
    assert!(outputs.iter().all(|e| e == want), "{outputs:?}");
}

/// A typed recording (`--typed` output) replays with the exact types in every language:
/// a JS module sees int4/timestamptz/numeric/uuid, not int8/text; two replays of one
/// recording are byte-identical, and an identity module gives the recording back.
#[test]
fn typed_recordings_replay_exact_types_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rec.jsonl");
    let line = r#"{"id":"0000000001000000-00000002","op":"insert","schema":"public","table":"orders","before":null,"after":{"id":7,"created_at":"2024-05-06T07:08:09.123456+00:00","total":0,"ref":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","tags":[1, 2, null],"note":"0"},"lsn":"0/FFFFF0","commit_lsn":"0/1000000","xid":77,"commit_ts":"2024-05-06T07:08:09.123456+00:00","types":{"id":23,"created_at":1184,"total":1700,"ref":2950,"tags":1007,"note":25},"key":["id"]}"#;
    std::fs::write(&input, format!("{line}\n")).unwrap();
    for lang in ["rust", "c", "js", "python"] {
        let module = guest(lang, "identity");
        let a = replay(&module, &input, &["--typed"]);
        let b = replay(&module, &input, &["--typed"]);
        assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
        assert_eq!(a.stdout, b.stdout, "{lang}: two replays differ");
        assert_eq!(
            String::from_utf8_lossy(&a.stdout).trim_end(),
            line,
            "{lang}"
        );
    }
    // mask-columns (JS) sees the typed values and masks them to text: the types say so.
    let out = lines(&replay(
        &guest("js", "mask-columns"),
        &input,
        &["--typed", "--config", "columns=created_at,total"],
    ));
    assert_eq!(out[0]["after"]["created_at"], "***");
    assert_eq!(out[0]["types"]["created_at"], 25);
    assert_eq!(out[0]["types"]["id"], 23);
}
