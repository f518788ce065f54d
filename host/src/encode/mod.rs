//! Encoders: typed changes → sink messages, once per format per batch.

pub mod debezium;
pub mod json;

use std::sync::Arc;

use bytes::Bytes;
use cdc_sinks::{EncodedBatch, Message};

use crate::change::Change;
use crate::config::Format;

/// What encoders need beyond the change itself.
#[derive(Debug, Clone)]
pub struct EncodeContext {
    /// The database the changes come from.
    pub database: Arc<str>,
    /// Debezium's logical server name (`source.name`): the slot name.
    pub server_name: Arc<str>,
}

/// Encodes every change into one contiguous buffer; each message's payload is a slice of
/// it, so a batch costs one large allocation rather than one per change.
pub fn encode_batch(
    seq: u64,
    changes: &[Change],
    format: Format,
    ctx: &EncodeContext,
) -> EncodedBatch {
    let mut buf = Vec::with_capacity(changes.len() * 256);
    let mut ends = Vec::with_capacity(changes.len());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for change in changes {
        match format {
            Format::Json => json::write_change(change, &mut buf),
            Format::Debezium => debezium::write_change(change, ctx, now_ms, &mut buf),
            Format::JsonTyped => crate::transform::replay::write_typed(change, &mut buf),
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
                id: c.id().to_text(),
                schema: c.table.as_ref().map(|t| Arc::clone(&t.schema)),
                table: c.table.as_ref().map(|t| Arc::clone(&t.name)),
                op: c.op.as_str(),
                lsn: c.lsn.to_text(),
                commit_lsn: c.commit_lsn.to_text(),
                route: c.routing.as_ref().and_then(|r| r.route.clone()),
                headers: c
                    .routing
                    .as_ref()
                    .map(|r| r.headers.clone())
                    .unwrap_or_default(),
                payload,
            }
        })
        .collect();
    EncodedBatch {
        seq,
        messages,
        continues: false,
    }
}
