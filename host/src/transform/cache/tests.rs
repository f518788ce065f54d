//! The cache never loads code it cannot vouch for, and never fails silently.
//! (Tests run as root in CI; "another uid" is 65534, set with chown.)

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use super::*;
use crate::transform::testlog::{logged, warnings};

/// The smallest component: a header and nothing else.
const EMPTY: &[u8] = b"\0asm\x0d\x00\x01\x00";
/// Another component (it defines an empty core module), so other compiled code.
const WITH_CORE: &[u8] = &[
    0, b'a', b's', b'm', 0x0d, 0, 1, 0, 0x01, 0x08, 0, b'a', b's', b'm', 1, 0, 0, 0,
];

fn runtime() -> Arc<Runtime> {
    Runtime::new(false).unwrap()
}

fn at(path: &Path, origin: CacheOrigin) -> CacheDir {
    CacheDir {
        path: path.to_owned(),
        origin,
    }
}

fn open(dir: &CacheDir) -> ModuleCache {
    ModuleCache::open(dir).unwrap().expect("a usable cache")
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Gives `path` to uid 65534; false when this process may not (not root).
fn give_away(path: &Path) -> bool {
    match std::os::unix::fs::chown(path, Some(65534), None) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipping: cannot chown ({e}); run as root to test ownership");
            false
        }
    }
}

fn files(rt: &Runtime, component: &[u8], dir: &Path) -> (PathBuf, PathBuf) {
    let key = Key::new(&rt.engine, component);
    (dir.join(key.code_file()), dir.join(key.sum_file()))
}

fn source(result: Result<(Component, CodeSource), String>) -> CodeSource {
    result.unwrap().1
}

#[test]
fn directory_and_files_are_private_and_the_second_load_hits() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cache").join("modules");
    let rt = runtime();
    let cache = open(&at(&path, CacheOrigin::Config));
    assert_eq!(mode(&path), 0o700);
    assert_eq!(mode(&tmp.path().join("cache")), 0o700);
    assert_eq!(
        source(compile_cached(&rt, EMPTY, Some(&cache))),
        CodeSource::Compiled
    );
    let (code, sum) = files(&rt, EMPTY, &path);
    assert_eq!(mode(&code), 0o600);
    assert_eq!(mode(&sum), 0o600);
    let names: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    let (second, log) = logged(|| compile_cached(&rt, EMPTY, Some(&cache)));
    assert_eq!(source(second), CodeSource::Cache);
    assert_eq!(warnings(&log), 0, "{log}");
}

#[test]
fn a_world_writable_default_directory_is_not_used_with_one_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("modules");
    std::fs::create_dir(&path).unwrap();
    chmod(&path, 0o777);
    let (opened, log) = logged(|| ModuleCache::open(&at(&path, CacheOrigin::Default)));
    assert!(opened.unwrap().is_none());
    assert_eq!(warnings(&log), 1, "{log}");
    for needle in [
        &*path.display().to_string(),
        "is mode 0777 and owned by uid",
        "not writable by group or others",
        &format!("`chmod 700 {}`", path.display()),
        "compiling modules in memory",
    ] {
        assert!(log.contains(needle), "{needle:?} missing from {log}");
    }
    // Without a cache the module compiles in memory and nothing is written there.
    let rt = runtime();
    assert_eq!(
        source(compile_cached(&rt, EMPTY, None)),
        CodeSource::Compiled
    );
    assert_eq!(std::fs::read_dir(&path).unwrap().count(), 0);
}

#[test]
fn a_world_writable_named_directory_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("modules");
    std::fs::create_dir(&path).unwrap();
    chmod(&path, 0o777);
    for (origin, named) in [
        (CacheOrigin::Env, "point CDC_HOST_MODULE_CACHE elsewhere"),
        (
            CacheOrigin::Config,
            "point [pipeline] module_cache elsewhere",
        ),
    ] {
        let err = ModuleCache::open(&at(&path, origin)).unwrap_err();
        assert!(matches!(err, TransformError::Cache { .. }), "{err:?}");
        let text = err.to_string();
        for needle in [
            &*format!("module cache {} is mode 0777", path.display()),
            named,
            &format!("`chmod 700 {}`", path.display()),
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text}");
        }
    }
}

#[test]
fn a_directory_owned_by_another_uid_is_refused_or_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("modules");
    std::fs::create_dir(&path).unwrap();
    chmod(&path, 0o700);
    if !give_away(&path) {
        return;
    }
    let uid = rustix::process::getuid().as_raw();
    let fix = format!("`chown {uid} {p} && chmod 700 {p}`", p = path.display());

    let err = ModuleCache::open(&at(&path, CacheOrigin::Config))
        .unwrap_err()
        .to_string();
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(err.contains(&fix), "{err}");

    let (opened, log) = logged(|| ModuleCache::open(&at(&path, CacheOrigin::Default)));
    assert!(opened.unwrap().is_none());
    assert_eq!(warnings(&log), 1, "{log}");
    assert!(log.contains("owned by uid 65534"), "{log}");
    assert!(log.contains(&fix), "{log}");
}

/// Replaces `target` with a copy of `from` (or `bytes`), as an attacker or an accident
/// would: the name stays, the content changes.
fn overwrite(target: &Path, bytes: &[u8]) {
    std::fs::remove_file(target).unwrap();
    std::fs::write(target, bytes).unwrap();
    chmod(target, 0o600);
}

#[test]
fn a_replaced_cache_file_is_never_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("modules");
    let rt = runtime();
    let cache = open(&at(&path, CacheOrigin::Config));
    let (code_a, sum_a) = files(&rt, EMPTY, &path);
    let (code_b, sum_b) = files(&rt, WITH_CORE, &path);
    let compile_both = || {
        for m in [EMPTY, WITH_CORE] {
            compile_cached(&rt, m, Some(&cache)).unwrap();
        }
    };
    compile_both();
    let original = std::fs::read(&code_a).unwrap();
    let other = std::fs::read(&code_b).unwrap();
    assert_ne!(original, other);

    let mut garbage_same_length = original.clone();
    let mid = garbage_same_length.len() / 2;
    garbage_same_length[mid] ^= 0xff;
    type Tamper<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Tamper<'_>, &str)> = vec![
        (
            "another module's code",
            Box::new(|| overwrite(&code_a, &other)),
            "ignoring a cached module",
        ),
        (
            "another module's code and checksum file",
            Box::new(|| {
                overwrite(&code_a, &other);
                overwrite(&sum_a, &std::fs::read(&sum_b).unwrap());
            }),
            "was compiled from another module",
        ),
        (
            "garbage",
            Box::new(|| overwrite(&code_a, b"\x7fELF and then some garbage")),
            "ignoring a cached module",
        ),
        (
            "one flipped byte",
            Box::new(|| overwrite(&code_a, &garbage_same_length)),
            "does not match its checksum",
        ),
        (
            "a garbage checksum file",
            Box::new(|| overwrite(&sum_a, b"hello")),
            "malformed checksum file",
        ),
    ];
    for (what, tamper, needle) in cases {
        compile_both();
        tamper();
        let (result, log) = logged(|| compile_cached(&rt, EMPTY, Some(&cache)));
        assert_eq!(source(result), CodeSource::Compiled, "{what}: loaded");
        assert_eq!(warnings(&log), 1, "{what}: {log}");
        assert!(
            log.contains(needle),
            "{what}: {needle:?} missing from {log}"
        );
        // Recompiled and replaced: the next start hits again.
        assert_eq!(
            source(compile_cached(&rt, EMPTY, Some(&cache))),
            CodeSource::Cache,
            "{what}"
        );
    }
    // The other module's files were never touched.
    assert_eq!(std::fs::read(&code_b).unwrap(), other);
}

#[test]
fn a_symlinked_cache_file_is_never_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("modules");
    let rt = runtime();
    for origin in [CacheOrigin::Default, CacheOrigin::Config] {
        let cache = open(&at(&path, origin));
        for m in [EMPTY, WITH_CORE] {
            compile_cached(&rt, m, Some(&cache)).unwrap();
        }
        let (code_a, _) = files(&rt, EMPTY, &path);
        let (code_b, _) = files(&rt, WITH_CORE, &path);
        std::fs::remove_file(&code_a).unwrap();
        std::os::unix::fs::symlink(&code_b, &code_a).unwrap();
        let (result, log) = logged(|| compile_cached(&rt, EMPTY, Some(&cache)));
        match origin {
            CacheOrigin::Default => {
                assert_eq!(source(result), CodeSource::Compiled);
                assert_eq!(warnings(&log), 1, "{log}");
                assert!(log.contains("is a symbolic link"), "{log}");
                assert!(log.contains(&format!("`rm {}`", code_a.display())), "{log}");
                // Left for the operator to look at.
                assert!(std::fs::symlink_metadata(&code_a)
                    .unwrap()
                    .file_type()
                    .is_symlink());
            }
            _ => {
                let err = result.map(|(_, s)| s).unwrap_err();
                assert!(err.contains(&code_a.display().to_string()), "{err}");
                assert!(err.contains("is a symbolic link"), "{err}");
                assert!(err.contains("must be a regular file"), "{err}");
                assert!(err.contains("[pipeline] module_cache"), "{err}");
            }
        }
        std::fs::remove_file(&code_a).unwrap();
    }
}

#[test]
fn a_cache_file_others_can_write_or_own_is_never_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("modules");
    let rt = runtime();
    let cache = open(&at(&path, CacheOrigin::Config));
    compile_cached(&rt, EMPTY, Some(&cache)).unwrap();
    let (code, _) = files(&rt, EMPTY, &path);
    chmod(&code, 0o666);
    let err = compile_cached(&rt, EMPTY, Some(&cache))
        .map(|(_, s)| s)
        .unwrap_err();
    assert!(err.contains("is mode 0666"), "{err}");
    assert!(
        err.contains(&format!("`chmod 600 {}`", code.display())),
        "{err}"
    );

    let default = open(&at(&path, CacheOrigin::Default));
    let (result, log) = logged(|| compile_cached(&rt, EMPTY, Some(&default)));
    assert_eq!(source(result), CodeSource::Compiled);
    assert!(log.contains("is mode 0666"), "{log}");

    chmod(&code, 0o600);
    if give_away(&code) {
        let err = compile_cached(&rt, EMPTY, Some(&cache))
            .map(|(_, s)| s)
            .unwrap_err();
        assert!(err.contains("owned by uid 65534"), "{err}");
    }
}

#[test]
fn sums_round_trip_and_reject_anything_else() {
    let sum = Sum {
        source: [1; 32],
        code: [0xab; 32],
        len: 42,
    };
    let text = sum.render();
    assert_eq!(Sum::parse(&text), Some(sum));
    assert_eq!(Sum::parse(""), None);
    assert_eq!(Sum::parse(&text.replace("42", "x")), None);
    assert_eq!(Sum::parse(&text.replace("abab", "zzzz")), None);
    assert_eq!(Sum::parse(&format!("{text}extra\n")), None);
    assert_eq!(
        Sum::parse(&text.replace(SUM_MAGIC, "cdc-host module cache 0")),
        None
    );
}
