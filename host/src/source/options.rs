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
    /// `two_phase 'on'`: prepared transactions arrive at PREPARE (protocol 3+).
    pub two_phase: bool,
    pub origin: Option<OriginFilter>,
}

/// An option combination the server cannot honour.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("proto_version {0} is not a pgoutput protocol version (1 to 4)")]
    BadVersion(u32),
    /// One line naming the setting and the version it needs.
    #[error("{setting} needs Postgres {needs} or newer; the server is Postgres {server}")]
    TooOld {
        setting: String,
        needs: u32,
        server: u32,
    },
    #[error("source.streaming = {0:?} needs proto_version {1} or newer")]
    StreamingProto(Streaming, u32),
    #[error("source.two_phase = true needs proto_version 3 or newer")]
    TwoPhaseProto,
    #[error("at least one publication is required")]
    NoPublication,
}

impl StartOptions {
    /// The options `[source]` asks for. Messages are always on: snapshot watermarks and
    /// backfill signals travel as messages; those the user did not ask for are consumed,
    /// not delivered (`StreamSettings::deliver_messages`).
    pub fn from_config(src: &crate::config::SourceConfig, publication: &str) -> StartOptions {
        StartOptions {
            proto_version: *src.proto_version.get_ref(),
            publications: vec![publication.to_owned()],
            messages: true,
            binary: *src.binary.get_ref(),
            streaming: *src.streaming.get_ref(),
            two_phase: *src.two_phase.get_ref(),
            origin: src.origin,
        }
    }

    /// One line for `cdc-host check`: the oldest Postgres these options work with and
    /// the settings that decide it.
    pub fn requirements_line(&self) -> String {
        let reqs = self.server_requirements();
        let needs = reqs.iter().map(|(_, v)| *v).max().unwrap_or(10);
        let why: Vec<&str> = reqs
            .iter()
            .filter(|(_, v)| *v == needs)
            .map(|(s, _)| s.as_str())
            .collect();
        format!(
            "needs Postgres {needs} or newer ({}); checked against the server when `run` connects",
            why.join(", ")
        )
    }

    /// What each chosen setting needs from the server: `(setting as the config spells
    /// it, oldest Postgres major version)`, in config order. `cdc-host check` prints them
    /// without connecting; [`StartOptions::validate`] holds them against the server.
    pub fn server_requirements(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        let proto_needs = match self.proto_version {
            2 => 14,
            3 => 15,
            4 => 16,
            _ => 10,
        };
        out.push((
            format!("source.proto_version = {}", self.proto_version),
            proto_needs,
        ));
        if self.binary {
            out.push(("source.binary = true".into(), 14));
        }
        match self.streaming {
            Streaming::Off => {}
            Streaming::On => out.push(("source.streaming = \"on\"".into(), 14)),
            Streaming::Parallel => out.push(("source.streaming = \"parallel\"".into(), 16)),
        }
        if self.two_phase {
            // pgoutput's two_phase option (protocol 3) is Postgres 15's.
            out.push(("source.two_phase = true".into(), 15));
        }
        if let Some(o) = self.origin {
            let v = if o == OriginFilter::Any {
                "any"
            } else {
                "none"
            };
            out.push((format!("source.origin = \"{v}\""), 16));
        }
        out
    }

    /// Checks the options against the server major version (e.g. 15): the first setting
    /// the server is too old for is the error.
    pub fn validate(&self, server_major: u32) -> Result<(), OptionsError> {
        if !(1..=4).contains(&self.proto_version) {
            return Err(OptionsError::BadVersion(self.proto_version));
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
        if self.two_phase && self.proto_version < 3 {
            return Err(OptionsError::TwoPhaseProto);
        }
        if let Some((setting, needs)) = self
            .server_requirements()
            .into_iter()
            .find(|(_, needs)| server_major < *needs)
        {
            return Err(OptionsError::TooOld {
                setting,
                needs,
                server: server_major,
            });
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
        if self.two_phase {
            opts.push("two_phase 'on'".into());
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
            two_phase: false,
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
        let e = o.validate(14).unwrap_err();
        assert_eq!(
            e.to_string(),
            "source.proto_version = 3 needs Postgres 15 or newer; the server is Postgres 14"
        );
        o.proto_version = 1;
        o.streaming = Streaming::On;
        assert!(o.validate(16).is_err());
        o.proto_version = 2;
        o.validate(14).unwrap();
        o.streaming = Streaming::Off;
        o.origin = Some(OriginFilter::Any);
        o.proto_version = 4;
        assert_eq!(
            o.validate(15).unwrap_err().to_string(),
            "source.proto_version = 4 needs Postgres 16 or newer; the server is Postgres 15"
        );
        o.proto_version = 2;
        assert_eq!(
            o.validate(15).unwrap_err().to_string(),
            "source.origin = \"any\" needs Postgres 16 or newer; the server is Postgres 15"
        );
        o.origin = None;
        o.proto_version = 1;
        o.binary = true;
        assert_eq!(
            o.validate(13).unwrap_err().to_string(),
            "source.binary = true needs Postgres 14 or newer; the server is Postgres 13"
        );
        o.validate(14).unwrap();
        o.proto_version = 9;
        assert!(matches!(o.validate(17), Err(OptionsError::BadVersion(9))));
    }

    #[test]
    fn lists_what_each_setting_needs() {
        let mut o = opts();
        o.proto_version = 2;
        o.streaming = Streaming::On;
        assert_eq!(
            o.server_requirements(),
            vec![
                ("source.proto_version = 2".to_owned(), 14),
                ("source.streaming = \"on\"".to_owned(), 14)
            ]
        );
    }
}
