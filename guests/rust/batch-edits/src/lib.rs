//! Exercises every edit of world `transform-batch` (`wit/batch.wit`), for the tests:
//! drops deletes, routes each change to `cdc.<table>.<op>`, adds headers `x-id` (the
//! change's id from `info`) and `x-table`, and upper-cases the text of the column named
//! by `upper` (in both rows). `fail` makes the call go wrong after those edits, to show
//! that none of them applies then: `index` reads past the end of the batch (a trap),
//! `numeric` sets an invalid numeric and returns the host's error, `error` returns an
//! error of its own.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "transform-batch",
    additional_derives: [PartialEq],
});

use std::cell::RefCell;

use cdc::pipeline::batch::Changes;
use cdc::pipeline::types::{Op, Value};
use exports::cdc::pipeline::batch_transformer::Guest;

#[derive(Default)]
struct Config {
    upper: Option<String>,
    fail: Option<String>,
}

thread_local! {
    static CONFIG: RefCell<Config> = RefCell::new(Config::default());
}

struct BatchEdits;

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Insert => "insert",
        Op::Update => "update",
        Op::Delete => "delete",
        Op::Truncate => "truncate",
        Op::Message => "message",
        Op::Read => "read",
    }
}

fn upper(v: Option<Value>) -> Option<Value> {
    match v {
        Some(Value::Text(t)) => Some(Value::Text(t.to_uppercase())),
        _ => None,
    }
}

impl Guest for BatchEdits {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        let mut c = Config::default();
        for (k, v) in config {
            match k.as_str() {
                "upper" => c.upper = Some(v),
                "fail" if matches!(v.as_str(), "index" | "numeric" | "error") => c.fail = Some(v),
                _ => {
                    return Err(format!(
                        "unknown config `{k} = {v}` (upper, fail = index|numeric|error)"
                    ))
                }
            }
        }
        CONFIG.with(|cell| *cell.borrow_mut() = c);
        Ok(())
    }

    fn transform(changes: &Changes) -> Result<(), String> {
        let (upper_col, fail) = CONFIG.with(|c| {
            let c = c.borrow();
            (c.upper.clone(), c.fail.clone())
        });
        let relations = changes.relations();
        let ops = changes.ops();
        let rel_ids = changes.relation_ids();
        assert_eq!(ops.len() as u32, changes.len());
        for (i, (op, rel)) in ops.into_iter().zip(rel_ids).enumerate() {
            let i = i as u32;
            assert_eq!(changes.op(i), op);
            if op == Op::Delete {
                changes.discard(i);
                continue;
            }
            let info = changes.info(i);
            let table = usize::try_from(rel)
                .ok()
                .map(|r| relations[r].table.clone())
                .unwrap_or_default();
            changes.route(i, &format!("cdc.{table}.{}", op_name(op)))?;
            changes.add_header(i, "x-id", &info.id)?;
            changes.add_header(i, "x-table", &table)?;
            if let (Some(name), Ok(r)) = (&upper_col, usize::try_from(rel)) {
                if let Some(col) = relations[r].columns.iter().position(|c| &c.name == name) {
                    let col = col as u32;
                    if let Some(v) = upper(changes.get(i, col)) {
                        changes.set(i, col, &v)?;
                        // An edit is seen by the next read.
                        assert_eq!(changes.get(i, col), Some(v.clone()));
                        assert_eq!(
                            changes.after(i).map(|row| row[col as usize].clone()),
                            Some(v)
                        );
                    }
                    if let Some(v) = upper(changes.get_before(i, col)) {
                        changes.set_before(i, col, &v)?;
                    }
                }
            }
        }
        match fail.as_deref() {
            Some("index") => {
                let _ = changes.get(changes.len(), 0);
                Ok(())
            }
            Some("numeric") => changes.set(0, 0, &Value::Numeric("12abc".into())),
            Some("error") => Err("batch-edits: failing on purpose".into()),
            _ => Ok(()),
        }
    }
}

export!(BatchEdits);
