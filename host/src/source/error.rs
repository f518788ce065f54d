//! Source errors, and turning Postgres's error codes into instructions a user can act on.

use std::fmt;

use crate::lsn::Lsn;
use crate::pgoutput::DecodeError;

/// An `ErrorResponse` from the server, with the fields users need.
#[derive(Debug, Clone, Default)]
pub struct PgError {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl PgError {
    /// Parses the fields of an `ErrorResponse`/`NoticeResponse` body.
    pub fn parse(body: &[u8]) -> PgError {
        let mut err = PgError::default();
        let mut rest = body;
        while let Some((&kind, tail)) = rest.split_first() {
            if kind == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            let value = String::from_utf8_lossy(&tail[..end]).into_owned();
            match kind {
                b'V' => err.severity = value,
                b'S' if err.severity.is_empty() => err.severity = value,
                b'C' => err.code = value,
                b'M' => err.message = value,
                b'D' => err.detail = Some(value),
                b'H' => err.hint = Some(value),
                _ => {}
            }
            rest = tail.get(end + 1..).unwrap_or_default();
        }
        err
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)?;
        if let Some(d) = &self.detail {
            write!(f, "; detail: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; hint: {h}")?;
        }
        Ok(())
    }
}

/// Everything that can stop the replication source. Causes are part of each message (`cause`
/// fields, not `source`): printed as a chain, a `source` would appear twice.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot connect to {target}: {cause}")]
    Connect {
        target: String,
        cause: std::io::Error,
    },
    #[error("connection to {target} lost: {cause}")]
    Io {
        target: String,
        cause: std::io::Error,
    },
    #[error("connection to {target} timed out after {secs}s")]
    ConnectTimeout { target: String, secs: u64 },
    #[error("{0}")]
    Server(Box<Actionable>),
    #[error("server at {0} does not support TLS, but sslmode requires it (use sslmode=prefer to allow plain connections)")]
    TlsUnsupported(String),
    #[error("TLS handshake with {target} failed: {cause}")]
    TlsHandshake {
        target: String,
        cause: std::io::Error,
    },
    #[error(transparent)]
    TlsConfig(#[from] super::tls::TlsError),
    #[error("server asked for authentication method {0}, which cdc-host does not support (use scram-sha-256, md5 or password)")]
    UnsupportedAuth(String),
    #[error("server asked for a password but source.dsn has none for user {0:?}")]
    NoPassword(String),
    #[error("SCRAM authentication failed: {0}")]
    Scram(std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("malformed pgoutput {kind} message at {lsn}: {cause}")]
    Decode {
        lsn: Lsn,
        kind: &'static str,
        cause: DecodeError,
    },
    #[error("malformed value in {table}.{column} at {lsn}: {message}")]
    Value {
        lsn: Lsn,
        table: String,
        column: String,
        message: String,
    },
    #[error("pgoutput sent a change for relation {relation_id} before describing it (at {lsn})")]
    UnknownRelation { relation_id: u32, lsn: Lsn },
    #[error("control connection: {0}")]
    Control(String),
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Spool(#[from] super::spool::SpoolError),
}

impl SourceError {
    /// Wraps a server error, adding what to do about it where we know.
    pub fn server(err: PgError, ctx: &Context<'_>) -> SourceError {
        SourceError::Server(Box::new(Actionable::new(err, ctx)))
    }

    /// Transient failures (network, server restart) that a reconnect may cure.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Connect { .. }
            | SourceError::Io { .. }
            | SourceError::ConnectTimeout { .. } => true,
            // 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now, 55006 slot in use.
            SourceError::Server(a) => matches!(
                a.error.code.as_str(),
                "57P01" | "57P02" | "57P03" | "55006" | "53300"
            ),
            _ => false,
        }
    }
}

/// Names used to make error messages specific.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub user: &'a str,
    pub slot: &'a str,
    pub publication: &'a str,
}

/// A server error plus the instruction that fixes it.
#[derive(Debug)]
pub struct Actionable {
    pub error: PgError,
    pub advice: Option<String>,
}

impl Actionable {
    fn new(error: PgError, ctx: &Context<'_>) -> Actionable {
        let msg = error.message.as_str();
        let advice = match error.code.as_str() {
            "28P01" => Some(format!(
                "wrong password for role {:?}: check the password in source.dsn (or the ${{ENV}} it comes from)",
                ctx.user
            )),
            "28000" if msg.contains("pg_hba.conf") => Some(format!(
                "the server's pg_hba.conf does not allow role {:?} to connect for replication from this host: add a `host <db> {} <addr> scram-sha-256` line and reload",
                ctx.user, ctx.user
            )),
            // PG ≤ 15: "must be superuser or replication role to start walsender";
            // PG ≥ 16: "permission denied to start WAL sender".
            "42501" if ["replication", "walsender", "wal sender"].iter().any(|w| msg.to_lowercase().contains(w)) => Some(format!(
                "role {:?} lacks the REPLICATION attribute: run `ALTER ROLE {} REPLICATION;` as a superuser",
                ctx.user, ctx.user
            )),
            "55006" => Some(format!(
                "replication slot {:?} is in use by another process (another cdc-host, or a previous pod still running): stop it, or wait — cdc-host retries",
                ctx.slot
            )),
            "55000" if msg.contains("wal_level") => Some(
                "logical decoding needs wal_level = logical: set it in postgresql.conf (ALTER SYSTEM SET wal_level = logical) and restart Postgres".into(),
            ),
            "42704" if msg.contains("publication") => Some(format!(
                "publication {:?} does not exist: run `CREATE PUBLICATION {} FOR ALL TABLES;` (or FOR TABLE …), or set [source.publication] create = true",
                ctx.publication, ctx.publication
            )),
            "42704" if msg.contains("replication slot") => Some(format!(
                "replication slot {:?} does not exist: set source.create_slot = true, or create it with pg_create_logical_replication_slot('{}', 'pgoutput')",
                ctx.slot, ctx.slot
            )),
            "53400" => Some("max_replication_slots or max_wal_senders is exhausted: raise it in postgresql.conf, or drop unused slots".into()),
            "3D000" => Some("the database in source.dsn does not exist".into()),
            _ => None,
        };
        Actionable { error, advice }
    }
}

impl fmt::Display for Actionable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.advice {
            Some(a) => write!(f, "{a} (server said: {})", self.error),
            None => write!(f, "server error: {}", self.error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_error_fields() {
        let body = b"SERROR\0VERROR\0C55006\0Mreplication slot \"s\" is active for PID 42\0\0";
        let e = PgError::parse(body);
        assert_eq!((e.severity.as_str(), e.code.as_str()), ("ERROR", "55006"));
        assert!(e.message.contains("PID 42"));
        let ctx = Context {
            user: "u",
            slot: "s",
            publication: "p",
        };
        let text = SourceError::server(e, &ctx).to_string();
        assert!(text.contains("in use by another process"), "{text}");
    }

    #[test]
    fn survives_truncated_bodies() {
        for body in [&b""[..], b"C", b"C123", b"\0", b"Mx\0C"] {
            let _ = PgError::parse(body);
        }
    }
}
