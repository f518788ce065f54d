//! `START_REPLICATION … LOGICAL` options for pgoutput, checked against the server version.

use super::wire::{quote_ident, quote_literal};
/// The option values as the config spells them; re-exported for users of `StartOptions`.
pub use crate::config::{OriginFilter, Streaming};
use crate::lsn::Lsn;

/// The plugin options of one `START_REPLICATION`.
#[derive(Clone, Debug)]
pub struct StartOptions {
    pub proto_version: u32,
    pub publications: Vec<String>,
    pub messages: bool,
    pub binary: bool,
    pub streaming: Streaming,
    pub origin: Option<OriginFilter>,
}

/// An option combination the server cannot honour.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("proto_version {0} is not a pgoutput protocol version (1 to 4)")]
    BadVersion(u32),
    #[error("proto_version {proto} needs Postgres {needs} or newer; the server is {server}")]
    TooOld { proto: u32, needs: u32, server: u32 },
    #[error("streaming = {0:?} needs proto_version {1} or newer")]
    StreamingProto(Streaming, u32),
    #[error("origin needs Postgres 16 or newer; the server is {0}")]
    OriginTooOld(u32),
    #[error("binary needs Postgres 14 or newer; the server is {0}")]
    BinaryTooOld(u32),
    #[error("at least one publication is required")]
    NoPublication,
}

impl StartOptions {
    /// Checks the options against the server major version (e.g. 15).
    pub fn validate(&self, server_major: u32) -> Result<(), OptionsError> {
        let needs = match self.proto_version {
            1 => 10,
            2 => 14,
            3 => 15,
            4 => 16,
            v => return Err(OptionsError::BadVersion(v)),
        };
        if server_major < needs {
            return Err(OptionsError::TooOld {
                proto: self.proto_version,
                needs,
                server: server_major,
            });
        }
        match self.streaming {
            Streaming::On if self.proto_version < 2 => {
                return Err(OptionsError::StreamingProto(self.streaming, 2))
            }
            Streaming::Parallel if self.proto_version < 4 => {
                return Err(OptionsError::StreamingProto(self.streaming, 4))
            }
            _ => {}
        }
        if self.origin.is_some() && server_major < 16 {
            return Err(OptionsError::OriginTooOld(server_major));
        }
        if self.binary && server_major < 14 {
            return Err(OptionsError::BinaryTooOld(server_major));
        }
        if self.publications.is_empty() {
            return Err(OptionsError::NoPublication);
        }
        Ok(())
    }

    /// The full `START_REPLICATION` command.
    pub fn command(&self, slot: &str, start: Lsn) -> String {
        let pubs = self
            .publications
            .iter()
            .map(|p| quote_ident(p))
            .collect::<Vec<_>>()
            .join(",");
        let mut opts = vec![
            format!("proto_version '{}'", self.proto_version),
            format!("publication_names {}", quote_literal(&pubs)),
        ];
        if self.messages {
            opts.push("messages 'true'".into());
        }
        if self.binary {
            opts.push("binary 'true'".into());
        }
        match self.streaming {
            Streaming::Off => {}
            Streaming::On => opts.push("streaming 'on'".into()),
            Streaming::Parallel => opts.push("streaming 'parallel'".into()),
        }
        if let Some(o) = self.origin {
            opts.push(format!(
                "origin '{}'",
                if o == OriginFilter::Any {
                    "any"
                } else {
                    "none"
                }
            ));
        }
        format!(
            "START_REPLICATION SLOT {} LOGICAL {} ({})",
            quote_ident(slot),
            start,
            opts.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> StartOptions {
        StartOptions {
            proto_version: 1,
            publications: vec!["cdc_pub".into(), "we'ird\"".into()],
            messages: true,
            binary: false,
            streaming: Streaming::Off,
            origin: None,
        }
    }

    #[test]
    fn builds_the_command() {
        assert_eq!(
            opts().command("cdc_host", Lsn(0x1_0000_00A0)),
            r#"START_REPLICATION SLOT "cdc_host" LOGICAL 1/A0 (proto_version '1', publication_names '"cdc_pub","we''ird"""', messages 'true')"#
        );
        let mut o = opts();
        o.proto_version = 4;
        o.binary = true;
        o.streaming = Streaming::Parallel;
        o.origin = Some(OriginFilter::None);
        let cmd = o.command("s", Lsn::ZERO);
        assert!(
            cmd.ends_with("binary 'true', streaming 'parallel', origin 'none')"),
            "{cmd}"
        );
        o.validate(16).unwrap();
    }

    #[test]
    fn validates_against_the_server() {
        let mut o = opts();
        o.validate(10).unwrap();
        o.proto_version = 3;
        assert!(matches!(o.validate(14), Err(OptionsError::TooOld { .. })));
        o.proto_version = 1;
        o.streaming = Streaming::On;
        assert!(o.validate(16).is_err());
        o.streaming = Streaming::Off;
        o.origin = Some(OriginFilter::Any);
        assert!(o.validate(15).is_err());
        o.proto_version = 9;
        assert!(matches!(o.validate(17), Err(OptionsError::BadVersion(9))));
    }
}
