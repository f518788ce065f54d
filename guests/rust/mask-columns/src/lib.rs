//! Redacts or hashes the values of named columns. See README.md.

use cdc_guest::{Change, Column, Config, TableSet, Transform, Value, TEXT_OID};
use sha2::{Digest, Sha256};

struct MaskColumns {
    columns: Vec<String>,
    /// `None`: every table.
    tables: Option<TableSet>,
    hash: bool,
}

impl Transform for MaskColumns {
    fn init(config: Config) -> Result<Self, String> {
        config.check_keys(&["columns", "tables", "mode"])?;
        let columns = config.require_list("columns")?;
        let tables = config.get("tables").map(TableSet::parse).transpose()?;
        let hash = match config.get_or("mode", "redact") {
            "redact" => false,
            "hash" => true,
            other => return Err(format!("unknown mode `{other}`: use redact or hash")),
        };
        Ok(MaskColumns {
            columns,
            tables,
            hash,
        })
    }

    fn transform(&mut self, mut changes: Vec<Change>) -> Result<Vec<Change>, String> {
        for c in &mut changes {
            if self.tables.as_ref().is_none_or(|t| t.matches_change(c)) {
                let rows = [c.after.as_mut(), c.before.as_mut()];
                rows.into_iter()
                    .flatten()
                    .flatten()
                    .for_each(|col| self.mask(col));
            }
        }
        Ok(changes)
    }
}

impl MaskColumns {
    /// Null and unchanged-TOAST values have no text and stay as they are.
    fn mask(&self, col: &mut Column) {
        if !self.columns.contains(&col.name) {
            return;
        }
        let Some(text) = col.value.to_text() else {
            return;
        };
        let masked = match self.hash {
            true => format!("{:x}", Sha256::digest(text)),
            false => "***".to_string(),
        };
        col.value = Value::Text(masked);
        col.type_oid = TEXT_OID;
    }
}

cdc_guest::export!(MaskColumns);

#[cfg(test)]
mod tests;
