//! Passes every batch on unchanged, in world `transform-batch` (`wit/batch.wit`): the
//! batch stays in the host, so this costs one call per batch whatever its size. The
//! floor of what a transform costs.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "transform-batch",
});

use cdc::pipeline::batch::Changes;
use exports::cdc::pipeline::batch_transformer::Guest;

struct Identity;

impl Guest for Identity {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn transform(_changes: &Changes) -> Result<(), String> {
        Ok(())
    }
}

export!(Identity);
