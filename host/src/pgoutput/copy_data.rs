//! The streaming-replication envelope around pgoutput: what arrives in each CopyData
//! message during `START_REPLICATION`, and the standby status update we send back.
//!
//! Kept apart from [`super::decode()`] because this layer is the same for physical
//! replication and any output plugin; only `XLogData::data` is pgoutput-specific.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use super::{DecodeError, Reader};
use crate::lsn::Lsn;

/// One server→client CopyData message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// 'w': a chunk of the plugin's output; `data` is a view into the received buffer.
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        send_time: i64,
        data: Bytes,
    },
    /// 'k': heartbeat. `reply_requested` means the server will drop us (after
    /// `wal_sender_timeout`) unless we send a status update promptly.
    PrimaryKeepalive {
        wal_end: Lsn,
        send_time: i64,
        reply_requested: bool,
    },
}

/// Splits a CopyData body into its header and (for 'w') the pgoutput payload.
pub fn parse_copy_data(buf: Bytes) -> Result<ReplicationMessage, DecodeError> {
    match buf.first() {
        None => Err(DecodeError::Empty),
        Some(b'w') => {
            let mut r = Reader::after_tag(buf, "XLogData");
            Ok(ReplicationMessage::XLogData {
                wal_start: r.lsn("wal_start")?,
                wal_end: r.lsn("wal_end")?,
                send_time: r.i64("send_time")?,
                data: r.take_rest(),
            })
        }
        Some(b'k') => {
            let mut r = Reader::after_tag(buf, "PrimaryKeepalive");
            let msg = ReplicationMessage::PrimaryKeepalive {
                wal_end: r.lsn("wal_end")?,
                send_time: r.i64("send_time")?,
                reply_requested: r.u8("reply_requested")? != 0,
            };
            r.finish()?;
            Ok(msg)
        }
        Some(&other) => Err(DecodeError::UnknownCopyData(other)),
    }
}

/// Length of a standby status update: tag, three LSNs, clock, reply flag.
const STATUS_UPDATE_LEN: usize = 1 + 8 * 3 + 8 + 1;

/// The 'r' CopyData body that acknowledges progress. `flush` is what lets the server
/// recycle WAL and advance the slot, so it must only cover changes durable downstream.
pub fn standby_status_update(
    write: Lsn,
    flush: Lsn,
    apply: Lsn,
    now_pg_micros: i64,
    reply_requested: bool,
) -> Bytes {
    let mut b = BytesMut::with_capacity(STATUS_UPDATE_LEN);
    b.put_u8(b'r');
    b.put_u64(write.0);
    b.put_u64(flush.0);
    b.put_u64(apply.0);
    b.put_i64(now_pg_micros);
    b.put_u8(u8::from(reply_requested));
    b.freeze()
}

/// Microseconds from the Unix epoch to the Postgres epoch (2000-01-01 00:00:00 UTC).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800 * 1_000_000;

/// Current time on the Postgres clock, for the status update's timestamp. Saturates
/// rather than panicking if the system clock is absurd.
pub fn pg_epoch_micros_now() -> i64 {
    let unix_micros = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |m| -m),
    };
    unix_micros.saturating_sub(PG_EPOCH_OFFSET_MICROS)
}

#[cfg(test)]
mod tests {
    use super::super::Wire;
    use super::*;

    #[test]
    fn xlog_data_payload_is_a_view() {
        let b = Wire::tag(b'w')
            .u64(0x1_0000_0000)
            .u64(0x1_0000_0100)
            .i64(777)
            .raw(b"Bpayload")
            .bytes();
        let m = parse_copy_data(b.clone()).unwrap();
        let ReplicationMessage::XLogData {
            wal_start,
            wal_end,
            send_time,
            data,
        } = m
        else {
            panic!("{m:?}")
        };
        assert_eq!(wal_start.to_string(), "1/0");
        assert_eq!(wal_end, Lsn(0x1_0000_0100));
        assert_eq!(send_time, 777);
        assert_eq!(&data[..], b"Bpayload");
        assert_eq!(data.as_ptr(), b[25..].as_ptr());
    }

    #[test]
    fn xlog_data_may_be_empty_but_not_short() {
        let b = Wire::tag(b'w').u64(1).u64(2).i64(3).bytes();
        assert!(matches!(
            parse_copy_data(b.clone()),
            Ok(ReplicationMessage::XLogData { data, .. }) if data.is_empty()
        ));
        assert_eq!(
            parse_copy_data(b.slice(..20)),
            Err(DecodeError::Truncated {
                kind: "XLogData",
                field: "send_time",
                needed: 8,
                remaining: 3
            })
        );
    }

    #[test]
    fn keepalive() {
        let b = Wire::tag(b'k').u64(42).i64(-9).u8(1).bytes();
        assert_eq!(
            parse_copy_data(b.clone()).unwrap(),
            ReplicationMessage::PrimaryKeepalive {
                wal_end: Lsn(42),
                send_time: -9,
                reply_requested: true
            }
        );
        for cut in 0..b.len() {
            assert!(parse_copy_data(b.slice(..cut)).is_err());
        }
        let long = Wire::tag(b'k').u64(42).i64(0).u8(0).u8(0).bytes();
        assert_eq!(
            parse_copy_data(long),
            Err(DecodeError::UnexpectedTrailing {
                kind: "PrimaryKeepalive",
                remaining: 1
            })
        );
    }

    #[test]
    fn empty_and_unknown() {
        assert_eq!(parse_copy_data(Bytes::new()), Err(DecodeError::Empty));
        assert_eq!(
            parse_copy_data(Bytes::from_static(b"x")),
            Err(DecodeError::UnknownCopyData(b'x'))
        );
    }

    #[test]
    fn status_update_exact_bytes() {
        let b = standby_status_update(Lsn(0x0102_0304_0506_0708), Lsn(0x10), Lsn(0), -2, true);
        let want: &[u8] = &[
            b'r', //
            1, 2, 3, 4, 5, 6, 7, 8, // write
            0, 0, 0, 0, 0, 0, 0, 0x10, // flush
            0, 0, 0, 0, 0, 0, 0, 0, // apply
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, // clock
            1,    // reply requested
        ];
        assert_eq!(&b[..], want);
        assert_eq!(b.len(), 34);
        let no_reply = standby_status_update(Lsn(0), Lsn(0), Lsn(0), 0, false);
        assert_eq!(no_reply[33], 0);
    }

    #[test]
    fn pg_clock_is_after_2020_and_before_2200() {
        let now = pg_epoch_micros_now();
        let year = 365 * 24 * 3600 * 1_000_000_i64;
        assert!(now > 20 * year && now < 200 * year, "{now}");
    }
}
