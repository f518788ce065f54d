use std::os::unix::fs::PermissionsExt;

use super::*;

fn rec(lsn: u64, subxid: u32, tag: u8, body: &[u8]) -> Record {
    let mut data = vec![tag];
    data.extend_from_slice(&subxid.to_be_bytes());
    data.extend_from_slice(body);
    Record {
        lsn: Lsn(lsn),
        subxid,
        data: Bytes::from(data),
    }
}

fn drain(mut r: Replay) -> Vec<(u64, u32, u8)> {
    let mut out = Vec::new();
    while let Some(x) = r.next_record().unwrap() {
        assert_eq!(stream_xid(&x.data), Some(x.subxid));
        out.push((x.lsn.0, x.subxid, x.data[0]));
    }
    out
}

fn files(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().count()
}

#[test]
fn keeps_order_across_memory_and_file_and_cleans_up() {
    let base = tempfile::tempdir().unwrap();
    // Room for about two records: the rest spills.
    let mut s = Spool::open(base.path(), "slot", 2 * (RECORD_OVERHEAD + 105)).unwrap();
    let dir = base.path().join("slot");
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    s.begin(7);
    for i in 0..10 {
        s.append(7, rec(100 + i, 7, b'I', &[0; 100])).unwrap();
    }
    assert!(s.spilled_bytes() > 0, "nothing spilled");
    assert_eq!(files(&dir), 1);
    let f = fs::read_dir(&dir).unwrap().next().unwrap().unwrap();
    assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    let got = drain(s.take(7).unwrap());
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        (100..110).collect::<Vec<_>>()
    );
    assert_eq!(files(&dir), 0, "the spill file outlived its transaction");
    assert!(s.is_empty());
    assert_eq!(s.mem, 0);
}

#[test]
fn interleaved_transactions_stay_apart() {
    let base = tempfile::tempdir().unwrap();
    let mut s = Spool::open(base.path(), "slot", 300).unwrap();
    s.begin(1);
    s.begin(2);
    for i in 0..6 {
        s.append(1, rec(i * 2, 1, b'I', &[1; 50])).unwrap();
        s.append(2, rec(i * 2 + 1, 2, b'U', &[2; 50])).unwrap();
    }
    let two = drain(s.take(2).unwrap());
    assert_eq!(
        two.iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![1, 3, 5, 7, 9, 11]
    );
    s.abort(1, 1);
    assert!(s.is_empty());
    assert_eq!(s.mem, 0);
    assert_eq!(files(&base.path().join("slot")), 0);
}

#[test]
fn subtransaction_abort_drops_its_changes_in_memory_and_on_disk_but_not_relations() {
    for limit in [1 << 20, 200] {
        let base = tempfile::tempdir().unwrap();
        let mut s = Spool::open(base.path(), "slot", limit).unwrap();
        s.begin(10);
        s.append(10, rec(1, 10, b'I', b"top")).unwrap();
        s.append(10, rec(2, 11, b'R', b"relation first sent by the subxact"))
            .unwrap();
        s.append(10, rec(3, 11, b'I', b"sub")).unwrap();
        s.append(10, rec(4, 12, b'M', b"nested")).unwrap();
        s.abort(10, 12);
        s.abort(10, 11);
        s.append(10, rec(5, 10, b'D', b"top again")).unwrap();
        s.abort(10, 99); // never seen: nothing happens
        let got = drain(s.take(10).unwrap());
        assert_eq!(
            got,
            vec![(1, 10, b'I'), (2, 11, b'R'), (5, 10, b'D')],
            "limit {limit}"
        );
    }
}

#[test]
fn commit_of_an_unknown_transaction_is_empty_and_first_segment_resets() {
    let base = tempfile::tempdir().unwrap();
    let mut s = Spool::open(base.path(), "slot", 1000).unwrap();
    assert!(drain(s.take(5).unwrap()).is_empty());
    s.begin(5);
    s.append(5, rec(1, 5, b'I', b"stale")).unwrap();
    s.begin(5);
    s.append(5, rec(2, 5, b'I', b"fresh")).unwrap();
    assert_eq!(drain(s.take(5).unwrap()), vec![(2, 5, b'I')]);
}

#[test]
fn open_removes_old_spill_files_and_narrows_permissions() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("slot");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("1-1.spool"), b"old").unwrap();
    fs::write(dir.join("keep.txt"), b"not ours").unwrap();
    Spool::open(base.path(), "slot", 10).unwrap();
    assert!(!dir.join("1-1.spool").exists());
    assert!(dir.join("keep.txt").exists());
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn a_symlink_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), base.path().join("slot")).unwrap();
    let e = Spool::open(base.path(), "slot", 10).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
}

#[test]
fn a_full_disk_is_named() {
    let p = Path::new("/spool");
    let full = io_err(p, "writing a spill file")(std::io::Error::from_raw_os_error(
        rustix::io::Errno::NOSPC.raw_os_error(),
    ));
    assert!(matches!(full, SpoolError::Full { .. }));
    let msg = full.to_string();
    assert!(
        msg.contains("disk is full") && msg.contains("/spool"),
        "{msg}"
    );
    let other = io_err(p, "writing a spill file")(std::io::Error::from_raw_os_error(
        rustix::io::Errno::IO.raw_os_error(),
    ));
    assert!(matches!(other, SpoolError::Io { .. }));
}

#[test]
fn a_write_to_a_full_device_fails_with_enospc() {
    // What a full volume answers; the mapping above turns it into `SpoolError::Full`.
    let Ok(f) = OpenOptions::new().write(true).open("/dev/full") else {
        return;
    };
    let mut w = BufWriter::new(f);
    w.write_all(&[0; 4096]).unwrap();
    let e = w.flush().unwrap_err();
    assert!(matches!(
        io_err(Path::new("/dev/full"), "x")(e),
        SpoolError::Full { .. }
    ));
}
