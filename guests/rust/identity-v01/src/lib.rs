//! Test-only: the identity transform built against the previous WIT version,
//! `cdc:pipeline@0.1.0` (kept in `host/src/transform/wit-0.1.0/`), so the host's tests
//! check that such modules still load and see a snapshot read as an insert.

wit_bindgen::generate!({
    path: "../../../host/src/transform/wit-0.1.0",
    world: "transform",
});

use exports::cdc::pipeline::transformer::{Change, Guest};

struct Identity;

impl Guest for Identity {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn transform(changes: Vec<Change>) -> Result<Vec<Change>, String> {
        // Marks what it saw, so a test can tell a read came in as an insert.
        Ok(changes
            .into_iter()
            .map(|mut c| {
                let op = match c.op {
                    cdc::pipeline::types::Op::Insert => "insert",
                    cdc::pipeline::types::Op::Update => "update",
                    cdc::pipeline::types::Op::Delete => "delete",
                    cdc::pipeline::types::Op::Truncate => "truncate",
                    cdc::pipeline::types::Op::Message => "message",
                };
                c.headers.push(("x-seen-op".into(), op.into()));
                c
            })
            .collect())
    }
}

export!(Identity);
