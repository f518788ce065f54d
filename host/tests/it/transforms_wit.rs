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

fn replay(module: &Path, input: &Path, args: &[&str]) -> Output {
    std::process::Command::new(BIN)
        .arg("transform")
        .arg(module)
        .arg("--input")
        .arg(input)
        .args(args)
        .env("CDC_HOST_MODULE_CACHE", "off")
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
