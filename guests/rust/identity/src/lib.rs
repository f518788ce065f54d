//! Returns every batch unchanged: the smallest transform, for tests and for
//! measuring what crossing the component boundary costs.

use cdc_guest::{Change, Config, Transform};

struct Identity;

impl Transform for Identity {
    fn init(_config: Config) -> Result<Self, String> {
        Ok(Identity)
    }

    fn transform(&mut self, changes: Vec<Change>) -> Result<Vec<Change>, String> {
        Ok(changes)
    }
}

cdc_guest::export!(Identity);

#[cfg(test)]
mod tests;
