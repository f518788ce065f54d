//! __NAME__: hashes `email` (SHA-256, hex), drops deletes, routes by table.
use cdc_guest::{Change, Config, Op, Transform, Value};
use sha2::{Digest, Sha256};

struct T;

impl Transform for T {
    fn init(_config: Config) -> Result<Self, String> {
        Ok(T)
    }

    fn transform(&mut self, changes: Vec<Change>) -> Result<Vec<Change>, String> {
        let mut out = Vec::with_capacity(changes.len());
        for mut c in changes.into_iter().filter(|c| c.op != Op::Delete) {
            for col in c.after.iter_mut().flatten() {
                if let (true, Value::Text(v)) = (col.name == "email", &col.value) {
                    let hex = Sha256::digest(v.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
                    col.value = Value::Text(hex);
                }
            }
            c.route = Some(format!("cdc.{}.{}", c.schema, c.table));
            out.push(c);
        }
        Ok(out)
    }
}

cdc_guest::export!(T);
