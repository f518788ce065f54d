//! Turns transactional-outbox rows and logical messages into events.
//! See README.md.

use cdc_guest::{Change, Config, LogicalMessage, Op, TableSet, Transform, Value};

struct Outbox {
    table: TableSet,
    aggregate_type: String,
    aggregate_id: String,
    event_type: String,
    payload: String,
    prefix: String,
    passthrough: bool,
}

impl Transform for Outbox {
    fn init(config: Config) -> Result<Self, String> {
        config.check_keys(&[
            "table",
            "aggregate_type_column",
            "aggregate_id_column",
            "type_column",
            "payload_column",
            "message_prefix",
            "passthrough",
        ])?;
        let get = |key, default| config.get_or(key, default).trim().to_string();
        Ok(Outbox {
            table: TableSet::parse(config.get_or("table", "outbox"))?,
            aggregate_type: get("aggregate_type_column", "aggregatetype"),
            aggregate_id: get("aggregate_id_column", "aggregateid"),
            event_type: get("type_column", "type"),
            payload: get("payload_column", "payload"),
            prefix: get("message_prefix", "outbox"),
            passthrough: config.get_bool("passthrough", false)?,
        })
    }

    fn transform(&mut self, changes: Vec<Change>) -> Result<Vec<Change>, String> {
        let mut out = Vec::with_capacity(changes.len());
        for c in changes {
            if self.table.matches_change(&c) {
                // Updates and deletes of outbox rows are housekeeping.
                if c.op == Op::Insert {
                    out.push(self.event(c)?);
                }
            } else if let Some(route) = self.message_route(&c) {
                out.push(Change {
                    route: Some(route),
                    ..c
                });
            } else if self.passthrough {
                out.push(c);
            }
        }
        Ok(out)
    }
}

impl Outbox {
    /// An outbox row as a message event routed `<prefix>.<aggregate type>.<type>`.
    fn event(&self, row: Change) -> Result<Change, String> {
        let text = |column: &str| {
            row.column_text(column).ok_or(format!(
                "outbox row {}: column `{column}` is missing or null",
                row.id
            ))
        };
        let (agg_type, agg_id, kind) = (
            text(&self.aggregate_type)?,
            text(&self.aggregate_id)?,
            text(&self.event_type)?,
        );
        let content = match row.after_column(&self.payload) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Bytea(bytes)) => bytes.clone(),
            Some(v) => v.to_text().unwrap_or_default().into_bytes(),
        };
        let message = LogicalMessage {
            prefix: self.prefix.clone(),
            content,
            transactional: true,
        };
        Ok(Change {
            op: Op::Message,
            schema: String::new(),
            table: String::new(),
            before: None,
            before_is_full: false,
            after: None,
            message: Some(message),
            route: Some(format!("{}.{agg_type}.{kind}", self.prefix)),
            headers: vec![("aggregate-id".into(), agg_id), ("event-type".into(), kind)],
            ..row
        })
    }

    /// `<prefix>.billing` for a message with prefix `<prefix>.billing`,
    /// `<prefix>.<p>` for one whose prefix `p` merely starts with `<prefix>`;
    /// `None` for other changes.
    fn message_route(&self, c: &Change) -> Option<String> {
        let p = &c.message.as_ref().filter(|_| c.is_message())?.prefix;
        let rest = p.strip_prefix(self.prefix.as_str())?;
        Some(match rest.strip_prefix('.') {
            _ if rest.is_empty() => self.prefix.clone(),
            Some(sub) => format!("{}.{sub}", self.prefix),
            None => format!("{}.{p}", self.prefix),
        })
    }
}

cdc_guest::export!(Outbox);

#[cfg(test)]
mod tests;
