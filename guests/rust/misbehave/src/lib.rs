//! A test-only transform that misbehaves on request, so the host's limits
//! and error handling can be tested. See README.md.

use std::hint::black_box;

use cdc_guest::{Change, Config, Transform};

#[derive(PartialEq)]
enum Mode {
    Ok,
    Loop,
    Alloc,
    Panic,
    Error,
    Headers,
}

struct Misbehave {
    mode: Mode,
    /// Misbehave only on batches with a text value equal to this.
    trigger: Option<String>,
    print: bool,
    config: Config,
}

impl Transform for Misbehave {
    fn init(config: Config) -> Result<Self, String> {
        let mode = match config.get_or("mode", "ok") {
            "ok" => Mode::Ok,
            "loop" => Mode::Loop,
            "alloc" => Mode::Alloc,
            "panic" => Mode::Panic,
            "error" => Mode::Error,
            "headers" => Mode::Headers,
            "reject-init" => return Err("misbehave: config rejected".into()),
            other => return Err(format!("misbehave: unknown mode `{other}`")),
        };
        let trigger = config.get("trigger").map(str::to_string);
        let print = config.get("print") == Some("yes");
        Ok(Misbehave {
            mode,
            trigger,
            print,
            config,
        })
    }

    fn transform(&mut self, mut changes: Vec<Change>) -> Result<Vec<Change>, String> {
        if self.print {
            println!("misbehave: batch of {}", changes.len());
            cdc_guest::info!("misbehave: batch of {}", changes.len());
        }
        if self.mode == Mode::Headers {
            for c in &mut changes {
                for (k, v) in self.config.iter() {
                    c.add_header(format!("x-config-{k}"), v);
                }
                if let Some(route) = self.config.get("route") {
                    c.set_route(route);
                }
            }
        }
        if !self.triggered(&changes) {
            return Ok(changes);
        }
        match self.mode {
            Mode::Ok | Mode::Headers => Ok(changes),
            Mode::Error => Err("misbehave: asked to fail".into()),
            Mode::Panic => panic!("misbehave: asked to panic"),
            Mode::Loop => {
                let mut i = 0u64;
                loop {
                    i = black_box(i.wrapping_add(1));
                }
            }
            Mode::Alloc => {
                // Touch every page so the memory is really used, and keep it.
                let mut kept = Vec::new();
                loop {
                    let mut chunk = vec![0u8; 1 << 20];
                    chunk.iter_mut().step_by(4096).for_each(|b| *b = 1);
                    kept.push(black_box(chunk));
                }
            }
        }
    }
}

impl Misbehave {
    fn triggered(&self, changes: &[Change]) -> bool {
        let Some(trigger) = &self.trigger else {
            return true;
        };
        let mut values = changes.iter().flat_map(|c| c.after.iter().flatten());
        values.any(|col| col.value.as_text() == Some(trigger))
    }
}

cdc_guest::export!(Misbehave);

#[cfg(test)]
mod tests;
