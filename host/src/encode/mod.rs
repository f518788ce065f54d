//! Encoders: typed changes → sink messages, once per format per batch.

pub mod json;

use std::sync::Arc;

use bytes::Bytes;
use cdc_sinks::{EncodedBatch, Message};

use crate::change::Change;
use crate::config::Format;

/// Encodes every change into one contiguous buffer; each message's payload is a slice of
/// it, so a batch costs one large allocation rather than one per change.
pub fn encode_batch(seq: u64, changes: &[Change], format: Format) -> EncodedBatch {
    let mut buf = Vec::with_capacity(changes.len() * 256);
    let mut ends = Vec::with_capacity(changes.len());
    for change in changes {
        match format {
            Format::Json => json::write_change(change, &mut buf),
        }
        ends.push(buf.len());
    }
    let buf = Bytes::from(buf);
    let mut start = 0;
    let messages = changes
        .iter()
        .zip(ends)
        .map(|(c, end)| {
            let payload = buf.slice(start..end);
            start = end;
            Message {
                id: c.id().to_string(),
                schema: c.table.as_ref().map(|t| Arc::clone(&t.schema)),
                table: c.table.as_ref().map(|t| Arc::clone(&t.name)),
                op: c.op.as_str(),
                lsn: c.lsn.to_string(),
                commit_lsn: c.commit_lsn.to_string(),
                route: None,
                headers: Vec::new(),
                payload,
            }
        })
        .collect();
    EncodedBatch { seq, messages }
}
