//! Connection strings: libpq URL (`postgres://…`) and `key=value` forms.
//!
//! `tokio_postgres::Config` parses both forms, but knows only three of libpq's six
//! `sslmode`s and rejects `sslrootcert`. We lift the TLS keys out ourselves, let
//! tokio-postgres parse the rest (hosts, ports, user, percent-decoding …), and keep one
//! [`ConnParams`] that both the replication transport and the control plane use.
//!
//! A leaf: `config` parses `source.dsn` with it and `source` connects with the result, so
//! neither has to import the other for it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// libpq's `sslmode`, all six of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS without certificate checks, plain TCP if the server has no TLS (libpq `allow`).
    Allow,
    /// TLS without certificate checks if the server offers it, else plain TCP (libpq's default).
    #[default]
    Prefer,
    /// TLS required; the certificate is not checked (as libpq without a root cert).
    Require,
    /// TLS required; the certificate chain must verify against `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = DsnError;
    fn from_str(s: &str) -> Result<Self, DsnError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(DsnError::SslMode(other.to_owned())),
        })
    }
}

impl SslMode {
    /// TLS is mandatory: a server without it is an error, not a fallback.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

/// What is wrong with a connection string. Never contains the password.
#[derive(Debug, thiserror::Error)]
pub enum DsnError {
    #[error(
        "invalid sslmode {0:?}: expected disable, allow, prefer, require, verify-ca or verify-full"
    )]
    SslMode(String),
    #[error("invalid connection string: {0}")]
    Parse(String),
    #[error("connection string names no host: add a host, e.g. postgres://user@127.0.0.1:5432/db")]
    NoHost,
    #[error("only TCP hosts are supported, not unix socket paths ({0})")]
    UnixSocket(String),
    #[error("connection string names no user")]
    NoUser,
}

/// Everything needed to open a connection, parsed once.
#[derive(Clone)]
pub struct ConnParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Vec<u8>>,
    pub dbname: String,
    pub ssl_mode: SslMode,
    /// CA bundle (PEM) for verify-ca / verify-full; `None` or `system` = the system store.
    pub ssl_root_cert: Option<PathBuf>,
    pub application_name: String,
    pub connect_timeout: Option<std::time::Duration>,
    /// The rest, parsed by tokio-postgres, for the control-plane connection.
    pub pg_config: tokio_postgres::Config,
}

impl fmt::Debug for ConnParams {
    /// Redacts the password: connection parameters end up in logs and errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .finish()
    }
}

impl fmt::Display for ConnParams {
    /// `user@host:port/db`: safe to log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.dbname
        )
    }
}

impl FromStr for ConnParams {
    type Err = DsnError;

    fn from_str(dsn: &str) -> Result<Self, DsnError> {
        let (rest, tls) = split_tls_params(dsn)?;
        let mut ssl_mode = SslMode::Prefer;
        let mut ssl_root_cert = None;
        for (k, v) in tls {
            match k.as_str() {
                "sslmode" => ssl_mode = v.parse()?,
                "sslrootcert" => ssl_root_cert = Some(PathBuf::from(v)),
                _ => {}
            }
        }
        let pg_config = tokio_postgres::Config::from_str(&rest).map_err(|e| parse_error(&e))?;
        let host = match pg_config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => {
                return Err(DsnError::UnixSocket(p.display().to_string()))
            }
            None => return Err(DsnError::NoHost),
        };
        let port = pg_config.get_ports().first().copied().unwrap_or(5432);
        if pg_config.get_ports().contains(&0) {
            return Err(DsnError::Parse(PORT_RANGE.into()));
        }
        let user = pg_config.get_user().ok_or(DsnError::NoUser)?.to_owned();
        let dbname = pg_config.get_dbname().unwrap_or(&user).to_owned();
        Ok(ConnParams {
            host,
            port,
            password: pg_config.get_password().map(<[u8]>::to_vec),
            dbname,
            ssl_mode,
            ssl_root_cert,
            application_name: pg_config
                .get_application_name()
                .unwrap_or("cdc-host")
                .to_owned(),
            connect_timeout: pg_config.get_connect_timeout().copied(),
            user,
            pg_config,
        })
    }
}

const PORT_RANGE: &str = "invalid port: use a number from 1 to 65535";

/// What tokio-postgres found wrong, from its error's cause: its `Display` says only
/// "invalid connection string". The causes name options (`unknown option `x``, `invalid
/// value for option `port``) and at most one offending character, never a value, so no
/// password can leak through them.
fn parse_error(e: &tokio_postgres::Error) -> DsnError {
    let cause = std::error::Error::source(e).map(ToString::to_string);
    DsnError::Parse(match cause.as_deref() {
        Some("invalid value for option `port`") => PORT_RANGE.to_owned(),
        Some(c) if c.starts_with("invalid value for option") => {
            format!("{c}; see the libpq connection parameters")
        }
        Some(c) if c.starts_with("unknown option") => {
            format!("{c}: not a connection parameter cdc-host supports")
        }
        Some(c) => c.to_owned(),
        None => {
            "cannot parse it (expected postgres://user@host:port/db or key=value pairs)".to_owned()
        }
    })
}

type TlsParams = Vec<(String, String)>;

/// Removes `sslmode` and `sslrootcert` from either DSN form, returning them separately.
fn split_tls_params(dsn: &str) -> Result<(String, TlsParams), DsnError> {
    let dsn = dsn.trim();
    let is_tls_key = |k: &str| matches!(k, "sslmode" | "sslrootcert");
    let mut tls = Vec::new();
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        let Some((base, query)) = dsn.split_once('?') else {
            return Ok((dsn.to_owned(), tls));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if is_tls_key(k) {
                tls.push((k.to_owned(), percent_decode(v)?));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, tls));
    }
    let mut kept = String::new();
    for (k, v) in parse_key_values(dsn)? {
        if is_tls_key(&k) {
            tls.push((k, v));
        } else {
            let escaped = v.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push_str(&format!("{k}='{escaped}' "));
        }
    }
    Ok((kept, tls))
}

/// libpq `key=value` syntax: values may be single-quoted with `\'` and `\\` escapes.
fn parse_key_values(s: &str) -> Result<Vec<(String, String)>, DsnError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            // Quote the token only when it looks like a keyword: anything else may be part
            // of a secret (e.g. a URL with a misspelt scheme and a password in it).
            return Err(DsnError::Parse(if key.contains("://") {
                "unsupported URL scheme: use postgres:// or postgresql:// (or key=value pairs)"
                    .to_owned()
            } else if !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                format!("expected '=' after {key:?} (key=value pairs, or a postgres:// URL)")
            } else {
                "expected key=value pairs or a postgres:// URL".to_owned()
            }));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(DsnError::Parse(format!("unterminated quote in {key:?}"))),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

fn percent_decode(s: &str) -> Result<String, DsnError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| DsnError::Parse("bad percent-encoding".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| DsnError::Parse("percent-encoding is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_form_with_tls_keys() {
        let p: ConnParams =
            "postgres://cdc:s%40cret@db.local:6543/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x"
                .parse()
                .unwrap();
        assert_eq!(p.host, "db.local");
        assert_eq!(p.port, 6543);
        assert_eq!(p.user, "cdc");
        assert_eq!(p.password.as_deref(), Some(&b"s@cret"[..]));
        assert_eq!(p.dbname, "app");
        assert_eq!(p.ssl_mode, SslMode::VerifyFull);
        assert_eq!(p.ssl_root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(p.application_name, "x");
    }

    #[test]
    fn key_value_form() {
        let p: ConnParams =
            "host=127.0.0.1 port=5433 user=cdc password='it''s' dbname=app sslmode=disable"
                .replace("''", "\\'")
                .parse()
                .unwrap();
        assert_eq!(p.port, 5433);
        assert_eq!(p.password.as_deref(), Some(&b"it's"[..]));
        assert_eq!(p.ssl_mode, SslMode::Disable);
        assert_eq!(p.dbname, "app");
    }

    #[test]
    fn defaults_and_errors() {
        let p: ConnParams = "postgres://cdc@h/app".parse().unwrap();
        assert_eq!((p.port, p.ssl_mode), (5432, SslMode::Prefer));
        assert!(matches!(
            "postgres://cdc@h/app?sslmode=maybe".parse::<ConnParams>(),
            Err(DsnError::SslMode(_))
        ));
        assert!("postgres:///app".parse::<ConnParams>().is_err());
        let msg = |dsn: &str| dsn.parse::<ConnParams>().unwrap_err().to_string();
        assert!(msg("postgres://cdc@h:70000/app").contains("use a number from 1 to 65535"));
        assert!(msg("postgres://cdc@h:0/app").contains("use a number from 1 to 65535"));
        assert!(msg("postgres://cdc@h/app?colour=red").contains("unknown option `colour`"));
        assert!(msg("host=h user=u colour=red").contains("unknown option `colour`"));
        let e = msg("postgress://cdc:hunter2@h/app");
        assert!(
            e.contains("unsupported URL scheme") && !e.contains("hunter2"),
            "{e}"
        );
        assert!(!msg("host=h hunter2").contains("hunter2"));
    }

    #[test]
    fn debug_and_display_hide_the_password() {
        let p: ConnParams = "postgres://cdc:hunter2@h/app".parse().unwrap();
        assert!(!format!("{p:?} {p}").contains("hunter2"));
    }
}
