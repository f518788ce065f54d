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
    Sandbox,
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
            "sandbox" => Mode::Sandbox,
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
        if self.mode == Mode::Sandbox {
            let probes = sandbox_probes(&self.config);
            for c in &mut changes {
                for (k, v) in &probes {
                    c.add_header(format!("x-probe-{k}"), v);
                }
            }
        }
        if !self.triggered(&changes) {
            return Ok(changes);
        }
        match self.mode {
            Mode::Ok | Mode::Headers | Mode::Sandbox => Ok(changes),
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

/// What the guest can reach outside its batch: each probe's outcome, `ok…` or `err:<kind>`.
fn sandbox_probes(config: &Config) -> Vec<(&'static str, String)> {
    fn outcome<T>(r: std::io::Result<T>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(e) => format!("err:{:?}", e.kind()),
        }
    }
    let file = config.get_or("file", "/etc/passwd");
    let connect = config.get_or("connect", "127.0.0.1:1");
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    vec![
        ("fs-root", outcome(std::fs::read_dir("/"))),
        ("fs-cwd", outcome(std::fs::read_dir("."))),
        ("fs-read", outcome(std::fs::read(file))),
        ("fs-write", outcome(std::fs::write("misbehave-probe", b"x"))),
        ("env", std::env::vars().count().to_string()),
        ("args", std::env::args().count().to_string()),
        ("tcp", outcome(std::net::TcpStream::connect(connect))),
        ("udp", outcome(std::net::UdpSocket::bind("127.0.0.1:0"))),
        (
            "dns",
            outcome(std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 80))),
        ),
        ("clock", clock.to_string()),
    ]
}

cdc_guest::export!(Misbehave);

#[cfg(test)]
mod tests;
