//! Keeps or drops changes by table. See README.md.

use cdc_guest::{Change, Config, TableSet, Transform};

struct FilterTables {
    /// `None`: every table not denied passes.
    allow: Option<TableSet>,
    deny: TableSet,
}

impl Transform for FilterTables {
    fn init(config: Config) -> Result<Self, String> {
        config.check_keys(&["allow", "deny"])?;
        let (allow, deny) = (config.get("allow"), config.get("deny"));
        if allow.is_none() && deny.is_none() {
            return Err("set allow or deny".into());
        }
        let allow = allow.map(TableSet::parse).transpose()?;
        if allow.as_ref().is_some_and(TableSet::is_empty) {
            return Err("allow is empty: it would drop every change".into());
        }
        let deny = TableSet::parse(deny.unwrap_or(""))?;
        Ok(FilterTables { allow, deny })
    }

    fn transform(&mut self, mut changes: Vec<Change>) -> Result<Vec<Change>, String> {
        changes.retain(|c| self.keeps(c));
        Ok(changes)
    }
}

impl FilterTables {
    /// Logical messages have no table and always pass; deny wins over allow.
    fn keeps(&self, c: &Change) -> bool {
        c.is_message()
            || (!self.deny.matches_change(c)
                && self.allow.as_ref().is_none_or(|a| a.matches_change(c)))
    }
}

cdc_guest::export!(FilterTables);

#[cfg(test)]
mod tests;
