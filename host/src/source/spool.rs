//! Streamed in-progress transactions (pgoutput protocol ≥ 2, `streaming = "on"`), held
//! until their Stream Commit.
//!
//! Postgres streams a transaction larger than `logical_decoding_work_mem` while it runs, in
//! blocks between Stream Start and Stream Stop, interleaved with other transactions; only
//! Stream Commit says it happened (Stream Abort: forget it, or one of its subtransactions).
//! Delivering at Stream Commit — as one transaction, numbered from 0 like protocol 1 does —
//! keeps ids and the checkpoint rule identical to protocol 1; so the chunks are kept here
//! until then.
//!
//! What is kept is each message's raw pgoutput bytes (already a compact serialization, and
//! the decoder is the tested way back), its WAL position and its (sub)transaction id.
//! Memory holds at most `mem_limit` bytes of them over all open transactions; past that
//! the largest transaction's records go to its own file under `<spool_dir>/<slot>/`
//! (directory 0700, files 0600, removed when the transaction ends, the directory emptied on
//! start). A file always holds a transaction's oldest records and memory the newest, so
//! reading the file and then memory gives them back in order.
//!
//! Sync file I/O: spills are sequential appends of at most `mem_limit` bytes to the page
//! cache, and replays read a buffered file one record at a time.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::lsn::Lsn;

/// Estimated memory of a record beyond its bytes (the struct, the allocation's header).
const RECORD_OVERHEAD: usize = 64;
/// Write buffer of a spill file.
const WRITE_BUFFER: usize = 256 << 10;
/// Largest record accepted back from a file: a message is at most 1 GiB (a varlena), and
/// a longer length means the file is not ours or is damaged.
const MAX_RECORD: usize = 1 << 30;

/// Why the spool failed. Every variant ends the stream: nothing past the last delivered
/// transaction was confirmed, so a restart replays the transaction from the server.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool_dir {path}: the disk is full ({cause}) while spilling a streamed transaction; free space or point [pipeline] spool_dir at a larger volume (nothing past the last delivered transaction was confirmed)")]
    Full {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("spool_dir {path}: {what}: {cause}")]
    Io {
        path: PathBuf,
        what: &'static str,
        cause: std::io::Error,
    },
    #[error("spool_dir {path}: {why}")]
    Unsafe { path: PathBuf, why: String },
    #[error("spool file {path} is damaged: {what}")]
    Damaged { path: PathBuf, what: String },
}

fn io_err<'a>(
    path: &'a Path,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
    move |cause| match cause.raw_os_error() {
        Some(code)
            if code == rustix::io::Errno::NOSPC.raw_os_error()
                || code == rustix::io::Errno::DQUOT.raw_os_error() =>
        {
            SpoolError::Full {
                path: path.to_owned(),
                cause,
            }
        }
        _ => SpoolError::Io {
            path: path.to_owned(),
            what,
            cause,
        },
    }
}

/// One spooled pgoutput message.
#[derive(Debug, Clone)]
pub(super) struct Record {
    /// `wal_start` of its XLogData (a change's `lsn`).
    pub lsn: Lsn,
    /// The (sub)transaction the message names (its leading xid).
    pub subxid: u32,
    /// The message as received (decode with `in_stream = true`).
    pub data: Bytes,
}

impl Record {
    fn mem(&self) -> usize {
        self.data.len() + RECORD_OVERHEAD
    }

    /// Whether a subtransaction's abort removes it: row changes, truncates and messages.
    /// Relation and Type messages stay: pgoutput sends a relation once per streamed
    /// transaction, tagged with the subtransaction that first touched it, and later
    /// changes of the others rely on it.
    fn is_data(&self) -> bool {
        matches!(self.data.first(), Some(b'I' | b'U' | b'D' | b'T' | b'M'))
    }
}

/// The leading xid of a message inside a stream block (every message there but Stream
/// Stop has one right after its tag). `None`: too short.
pub(super) fn stream_xid(data: &[u8]) -> Option<u32> {
    data.get(1..5)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// A transaction's spill file; removed when dropped (committed, aborted, or the connection
/// ended).
#[derive(Debug)]
struct SpillFile {
    path: PathBuf,
    writer: BufWriter<File>,
    records: u64,
}

impl SpillFile {
    fn create(path: PathBuf) -> Result<SpillFile, SpoolError> {
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(io_err(&path, "creating a spill file"))?;
        Ok(SpillFile {
            path,
            writer: BufWriter::with_capacity(WRITE_BUFFER, file),
            records: 0,
        })
    }

    fn write(&mut self, r: &Record) -> Result<(), SpoolError> {
        let mut head = [0u8; 16];
        head[..8].copy_from_slice(&r.lsn.0.to_be_bytes());
        head[8..12].copy_from_slice(&r.subxid.to_be_bytes());
        head[12..].copy_from_slice(&(r.data.len() as u32).to_be_bytes());
        let path = &self.path;
        self.writer
            .write_all(&head)
            .and_then(|()| self.writer.write_all(&r.data))
            .map_err(io_err(path, "writing a spill file"))?;
        self.records += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SpoolError> {
        let path = &self.path;
        self.writer
            .flush()
            .map_err(io_err(path, "writing a spill file"))
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a spill file");
        }
    }
}

/// One open streamed transaction.
#[derive(Debug, Default)]
struct StreamTxn {
    /// The newest records (after those in `file`).
    records: Vec<Record>,
    mem: usize,
    file: Option<SpillFile>,
    /// Aborted subtransactions whose records may still be in `file`.
    aborted: HashSet<u32>,
}

/// Every open streamed transaction of one connection.
#[derive(Debug)]
pub(super) struct Spool {
    dir: PathBuf,
    mem_limit: usize,
    mem: usize,
    txns: HashMap<u32, StreamTxn>,
    next_file: u64,
    /// Bytes written to spill files in this connection (metrics, tests).
    spilled: u64,
}

impl Spool {
    /// The spool of slot `slot` under `spool_dir`: creates `<spool_dir>/<slot>` (0700) and
    /// empties it (files of an earlier run are of transactions the server streams again).
    pub(super) fn open(
        spool_dir: &Path,
        slot: &str,
        mem_limit: usize,
    ) -> Result<Spool, SpoolError> {
        // The base may be a shared volume or /tmp: only created when missing. The slot's
        // own directory is what must be private.
        if !spool_dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(spool_dir)
                .map_err(io_err(spool_dir, "creating the directory"))?;
        }
        let dir = spool_dir.join(slot);
        private_dir(&dir)?;
        let entries = fs::read_dir(&dir).map_err(io_err(&dir, "listing"))?;
        for e in entries {
            let e = e.map_err(io_err(&dir, "listing"))?;
            let path = e.path();
            if path.extension().is_some_and(|x| x == "spool") {
                fs::remove_file(&path).map_err(io_err(&path, "removing an old spill file"))?;
            }
        }
        Ok(Spool {
            dir,
            mem_limit: mem_limit.max(1),
            mem: 0,
            txns: HashMap::new(),
            next_file: 0,
            spilled: 0,
        })
    }

    /// No streamed transaction is open.
    pub(super) fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    /// Bytes written to spill files so far.
    #[cfg(test)]
    pub(super) fn spilled_bytes(&self) -> u64 {
        self.spilled
    }

    /// Stream Start with `first_segment`: a transaction begins (anything held under that
    /// xid is stale).
    pub(super) fn begin(&mut self, xid: u32) {
        if let Some(old) = self.txns.remove(&xid) {
            self.mem -= old.mem;
        }
        self.txns.insert(xid, StreamTxn::default());
    }

    /// A message of transaction `xid`'s current stream block. The data is copied: the
    /// received frame shares its allocation with the whole read buffer.
    pub(super) fn append(&mut self, xid: u32, record: Record) -> Result<(), SpoolError> {
        let record = Record {
            data: Bytes::copy_from_slice(&record.data),
            ..record
        };
        let m = record.mem();
        let txn = self.txns.entry(xid).or_default();
        txn.records.push(record);
        txn.mem += m;
        self.mem += m;
        while self.mem > self.mem_limit {
            // The largest transaction goes to disk; its file keeps growing from there.
            let Some((&big, _)) = self.txns.iter().max_by_key(|(_, t)| t.mem) else {
                break;
            };
            self.spill(big)?;
        }
        Ok(())
    }

    fn spill(&mut self, xid: u32) -> Result<(), SpoolError> {
        let Some(txn) = self.txns.get_mut(&xid) else {
            return Ok(());
        };
        if txn.records.is_empty() {
            return Ok(());
        }
        if txn.file.is_none() {
            self.next_file += 1;
            let path = self.dir.join(format!("{xid}-{}.spool", self.next_file));
            tracing::info!(
                xid,
                memory_share_mb = self.mem_limit >> 20,
                path = %path.display(),
                "streamed transaction larger than its memory share: spilling to disk"
            );
            txn.file = Some(SpillFile::create(path)?);
        }
        let file = txn.file.as_mut().expect("just created");
        let mut bytes = 0u64;
        for r in &txn.records {
            file.write(r)?;
            bytes += 16 + r.data.len() as u64;
        }
        file.flush()?;
        tracing::debug!(xid, records = txn.records.len(), bytes, path = %file.path.display(), "streamed transaction spilled to disk");
        self.spilled += bytes;
        self.mem -= txn.mem;
        txn.mem = 0;
        txn.records = Vec::new();
        Ok(())
    }

    /// Stream Abort: `subxid == xid` forgets the transaction, otherwise that
    /// subtransaction's changes (its nested ones get aborts of their own).
    pub(super) fn abort(&mut self, xid: u32, subxid: u32) {
        if subxid == xid {
            if let Some(t) = self.txns.remove(&xid) {
                self.mem -= t.mem;
            }
            return;
        }
        let Some(txn) = self.txns.get_mut(&xid) else {
            return;
        };
        let before = txn.mem;
        txn.records.retain(|r| !(r.subxid == subxid && r.is_data()));
        txn.mem = txn.records.iter().map(Record::mem).sum();
        self.mem -= before - txn.mem;
        if txn.file.is_some() {
            txn.aborted.insert(subxid);
        }
    }

    /// Stream Commit: the transaction's records, oldest first (empty when nothing of it
    /// was streamed in this connection).
    pub(super) fn take(&mut self, xid: u32) -> Result<Replay, SpoolError> {
        let Some(mut txn) = self.txns.remove(&xid) else {
            return Ok(Replay::default());
        };
        self.mem -= txn.mem;
        let file = match txn.file.take() {
            Some(mut f) => {
                f.flush()?;
                let mut file = f
                    .writer
                    .get_ref()
                    .try_clone()
                    .map_err(io_err(&f.path, "reading a spill file"))?;
                file.seek(SeekFrom::Start(0))
                    .map_err(io_err(&f.path, "reading a spill file"))?;
                Some(FileRecords {
                    reader: BufReader::with_capacity(WRITE_BUFFER, file),
                    left: f.records,
                    _file: f,
                })
            }
            None => None,
        };
        Ok(Replay {
            file,
            mem: txn.records.into_iter(),
            aborted: txn.aborted,
        })
    }
}

#[derive(Debug)]
struct FileRecords {
    reader: BufReader<File>,
    left: u64,
    /// Kept so the file is removed once read.
    _file: SpillFile,
}

/// A committed streamed transaction's records, oldest first.
#[derive(Debug, Default)]
pub(super) struct Replay {
    file: Option<FileRecords>,
    mem: std::vec::IntoIter<Record>,
    aborted: HashSet<u32>,
}

impl Replay {
    /// The next record, skipping those of aborted subtransactions.
    pub(super) fn next_record(&mut self) -> Result<Option<Record>, SpoolError> {
        while let Some(f) = &mut self.file {
            if f.left == 0 {
                self.file = None;
                break;
            }
            f.left -= 1;
            let path = &f._file.path;
            let mut head = [0u8; 16];
            f.reader
                .read_exact(&mut head)
                .map_err(io_err(path, "reading a spill file"))?;
            let lsn = Lsn(u64::from_be_bytes(head[..8].try_into().expect("8 bytes")));
            let subxid = u32::from_be_bytes(head[8..12].try_into().expect("4 bytes"));
            let len = u32::from_be_bytes(head[12..].try_into().expect("4 bytes")) as usize;
            if len > MAX_RECORD {
                return Err(SpoolError::Damaged {
                    path: path.clone(),
                    what: format!("record of {len} bytes"),
                });
            }
            let mut data = vec![0; len];
            f.reader
                .read_exact(&mut data)
                .map_err(io_err(path, "reading a spill file"))?;
            let r = Record {
                lsn,
                subxid,
                data: Bytes::from(data),
            };
            if r.is_data() && self.aborted.contains(&r.subxid) {
                continue;
            }
            return Ok(Some(r));
        }
        Ok(self.mem.next())
    }
}

/// Creates `dir` (0700) or checks that an existing one is a directory of ours that only we
/// can read; one that others can read is narrowed to 0700.
fn private_dir(dir: &Path) -> Result<(), SpoolError> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(dir, "creating the directory")(e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(io_err(dir, "reading its metadata"))?;
    if !meta.is_dir() {
        return Err(SpoolError::Unsafe {
            path: dir.to_owned(),
            why: "not a directory (a symbolic link or a file is not accepted)".into(),
        });
    }
    let uid = rustix::process::getuid().as_raw();
    if meta.uid() != uid {
        return Err(SpoolError::Unsafe {
            path: dir.to_owned(),
            why: format!(
                "owned by uid {}, not by this process's uid {uid}: streamed transactions hold row data",
                meta.uid()
            ),
        });
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err(dir, "making it private (0700)"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
