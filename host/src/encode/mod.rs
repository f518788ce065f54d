//! Encoders: typed changes → sink messages, once per format per batch.

pub mod debezium;
pub mod json;

use std::cell::Cell;
use std::sync::Arc;

use bytes::Bytes;
use cdc_sinks::{EncodedBatch, IdText, Message};

use crate::change::Change;
use crate::config::Format;
use crate::lsn::Lsn;

/// What encoders need beyond the change itself.
#[derive(Debug, Clone)]
pub struct EncodeContext {
    /// The database the changes come from.
    pub database: Arc<str>,
    /// Debezium's logical server name (`source.name`): the slot name.
    pub server_name: Arc<str>,
}

thread_local! {
    /// Encoded bytes per change to reserve, per format (see [`encode_batch`]).
    static BYTES_PER_CHANGE: [Cell<usize>; 3] = const { [Cell::new(256), Cell::new(256), Cell::new(256)] };
}

fn slot(format: Format) -> usize {
    match format {
        Format::Json => 0,
        Format::Debezium => 1,
        Format::JsonTyped => 2,
    }
}

/// Encodes every change into one contiguous buffer, each followed by a newline; each
/// message's payload is a slice of it (without the newline), so a batch costs one large
/// allocation rather than one per change, and the whole buffer is the batch's lines.
pub fn encode_batch(
    seq: u64,
    changes: &[Change],
    format: Format,
    ctx: &EncodeContext,
) -> EncodedBatch {
    // Room for the whole batch at the size the last batch of this format took per change
    // (256 B at first): growing a buffer of megabytes by doubling copies it, and touches
    // fresh pages twice.
    let per_change = BYTES_PER_CHANGE.with(|b| b[slot(format)].get());
    let mut buf = Vec::with_capacity(changes.len() * per_change + per_change);
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
        // Not part of the payload: the newline that makes the buffer the batch's lines.
        buf.push(b'\n');
    }
    if let Some(avg) = buf.len().checked_div(changes.len()) {
        // A little over the average: a batch of slightly wider rows still fits.
        BYTES_PER_CHANGE.with(|b| b[slot(format)].set((avg + avg / 8).clamp(64, 1 << 16)));
    }
    let buf = Bytes::from(buf);
    let lines = buf.clone();
    let mut start = 0;
    // Neighbouring changes share their LSNs (a transaction's commit LSN; a snapshot
    // chunk's reads share both): the previous text is shared rather than formatted again.
    let mut lsn_text = LsnText::default();
    let mut commit_lsn_text = LsnText::default();
    // Each id is written here, then kept inline in its message (no allocation per change).
    let mut id = Vec::with_capacity(64);
    let messages = changes
        .iter()
        .zip(ends)
        .map(|(c, end)| {
            let payload = buf.slice(start..end);
            start = end + 1;
            Message {
                id: {
                    id.clear();
                    c.id().write_text(&mut id);
                    IdText::from(std::str::from_utf8(&id).expect("a change id is ASCII"))
                },
                schema: c.table.as_ref().map(|t| Arc::clone(&t.schema)),
                table: c.table.as_ref().map(|t| Arc::clone(&t.name)),
                op: c.op.as_str(),
                lsn: lsn_text.of(c.lsn),
                commit_lsn: commit_lsn_text.of(c.commit_lsn),
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
        lines: Some(lines),
    }
}

/// The last LSN formatted, and its text.
#[derive(Default)]
struct LsnText(Option<(Lsn, Arc<str>)>);

impl LsnText {
    fn of(&mut self, lsn: Lsn) -> Arc<str> {
        match &self.0 {
            Some((last, text)) if *last == lsn => Arc::clone(text),
            _ => {
                let text: Arc<str> = lsn.to_text().into();
                self.0 = Some((lsn, Arc::clone(&text)));
                text
            }
        }
    }
}
