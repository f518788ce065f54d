//! Redacts named columns in world `transform-batch` (`wit/batch.wit`): every value of a
//! named column that is not null and not unchanged-TOAST becomes the text `***`, in the
//! new row and in the old row. Same config as `mask-columns` (`columns`, `tables`,
//! `mode = "redact"`; the hash mode is `mask-columns`'s only).
//!
//! Per batch it reads the relations and each change's relation index once, then per
//! masked column of a matching table one `value-kinds` (which changes hold a value there)
//! and one `set-many` (and the same for the old rows): the other values never leave the host, and the number of calls does
//! not grow with the batch.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "transform-batch",
});

use std::cell::RefCell;

use cdc::pipeline::batch::{Changes, Relation};
use cdc::pipeline::types::Value;
use exports::cdc::pipeline::batch_transformer::Guest;

const KNOWN_KEYS: [&str; 3] = ["columns", "tables", "mode"];

struct Config {
    columns: Vec<String>,
    /// `(schema pattern or any, table pattern)`; `None`: every table.
    tables: Option<Vec<(Option<String>, String)>>,
}

thread_local! {
    static CONFIG: RefCell<Option<Config>> = const { RefCell::new(None) };
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `*`-only glob.
fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

impl Config {
    fn parse(config: Vec<(String, String)>) -> Result<Self, String> {
        let mut columns = None;
        let mut tables = None;
        for (key, value) in config {
            match key.as_str() {
                "columns" => columns = Some(list(&value)),
                "tables" => {
                    let mut patterns = Vec::new();
                    for p in list(&value) {
                        let (schema, table) = match p.split_once('.') {
                            Some((s, t)) => (Some(s.to_owned()), t.to_owned()),
                            None => (None, p.clone()),
                        };
                        if table.is_empty() || schema.as_deref() == Some("") {
                            return Err(format!(
                                "bad table pattern `{p}`: want schema.table or table"
                            ));
                        }
                        patterns.push((schema, table));
                    }
                    tables = Some(patterns);
                }
                "mode" if value == "redact" => {}
                "mode" => return Err(format!("unknown mode `{value}`: use redact")),
                other => {
                    return Err(format!(
                        "unknown config key `{other}` (known keys: {})",
                        KNOWN_KEYS.join(", ")
                    ))
                }
            }
        }
        let columns = columns.unwrap_or_default();
        if columns.is_empty() {
            return Err("mask-columns: set columns".into());
        }
        Ok(Config { columns, tables })
    }

    /// The indexes of the masked columns of `r`; empty when its table does not match.
    fn masked(&self, r: &Relation) -> Vec<u32> {
        let table_ok = self.tables.as_ref().is_none_or(|ps| {
            ps.iter()
                .any(|(s, t)| s.as_deref().is_none_or(|s| glob(s, &r.schema)) && glob(t, &r.table))
        });
        if !table_ok {
            return Vec::new();
        }
        r.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| self.columns.contains(&c.name))
            .map(|(i, _)| i as u32)
            .collect()
    }
}

struct MaskColumns;

/// `value-kinds`: the column holds a value (not null, not unchanged-TOAST).
const VALUE: u8 = 3;

impl Guest for MaskColumns {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        // A failed re-init must not leave the old configuration running.
        let (config, result) = match Config::parse(config) {
            Ok(c) => (Some(c), Ok(())),
            Err(e) => (None, Err(e)),
        };
        CONFIG.with(|c| *c.borrow_mut() = config);
        result
    }

    fn transform(changes: &Changes) -> Result<(), String> {
        CONFIG.with(|c| {
            let c = c.borrow();
            let config = c
                .as_ref()
                .ok_or("transform called before a successful init")?;
            let masked: Vec<Vec<u32>> = changes
                .relations()
                .iter()
                .map(|r| config.masked(r))
                .collect();
            if masked.iter().all(Vec::is_empty) {
                return Ok(());
            }
            // The changes of each relation to mask, then per masked column one call to
            // read it in all of them and one to set `***` where it is not null.
            let mut members: Vec<Vec<u32>> = vec![Vec::new(); masked.len()];
            for (i, rel) in changes.relation_ids().into_iter().enumerate() {
                if let Some(m) = usize::try_from(rel).ok().and_then(|r| members.get_mut(r)) {
                    m.push(i as u32);
                }
            }
            let stars = [Value::Text("***".into())];
            for (cols, idx) in masked.iter().zip(&members) {
                if idx.is_empty() {
                    continue;
                }
                for &col in cols {
                    // The changes holding a value there (not null, not unchanged-TOAST).
                    let pick = |kinds: Vec<u8>| -> Vec<u32> {
                        idx.iter()
                            .zip(kinds)
                            .filter(|&(_, k)| k == VALUE)
                            .map(|(&i, _)| i)
                            .collect()
                    };
                    let now = pick(changes.value_kinds(idx, col));
                    if !now.is_empty() {
                        changes.set_many(&now, col, &stars)?;
                    }
                    let old = pick(changes.value_kinds_before(idx, col));
                    if !old.is_empty() {
                        changes.set_many_before(&old, col, &stars)?;
                    }
                }
            }
            Ok(())
        })
    }
}

export!(MaskColumns);
