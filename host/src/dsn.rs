//! Connection strings: libpq URL (`postgres://…`) and `key=value` forms.
//!
//! `tokio_postgres::Config` parses both forms, but knows only three of libpq's six
//! `sslmode`s, rejects `sslrootcert` and knows only two `target_session_attrs`. We lift
//! those keys out ourselves, let tokio-postgres parse the rest (hosts, ports, user,
//! percent-decoding …), and keep one [`ConnParams`] that both the replication transport and
//! the control plane use.
//!
//! Several hosts (`host=a,b port=5432,5433`, `postgres://u@a:5432,b:5433/db`) are tried in
//! order, as libpq does, until one fits `target_session_attrs`: after a failover the
//! promoted standby is found again without a config change ([`ConnParams::for_host`] gives
//! one host's parameters; the source picks the host).
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

/// libpq's `target_session_attrs`, the values that make sense for a replication source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TargetSessionAttrs {
    /// The first host that accepts the connection (libpq's default).
    #[default]
    Any,
    /// A host whose sessions are read-write (`transaction_read_only` off).
    ReadWrite,
    /// A host that is not in recovery (not a standby).
    Primary,
}

impl FromStr for TargetSessionAttrs {
    type Err = DsnError;
    fn from_str(s: &str) -> Result<Self, DsnError> {
        Ok(match s {
            "any" => TargetSessionAttrs::Any,
            "read-write" => TargetSessionAttrs::ReadWrite,
            "primary" => TargetSessionAttrs::Primary,
            other => return Err(DsnError::TargetSessionAttrs(other.to_owned())),
        })
    }
}

impl fmt::Display for TargetSessionAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::Primary => "primary",
        })
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
    #[error("invalid target_session_attrs {0:?}: expected any, read-write or primary (a standby cannot be a logical replication source that survives a failover)")]
    TargetSessionAttrs(String),
    #[error("connection string names {hosts} hosts but {ports} ports: give one port for all, or one per host")]
    PortCount { hosts: usize, ports: usize },
}

/// Everything needed to open a connection, parsed once.
#[derive(Clone)]
pub struct ConnParams {
    /// The first host (the one [`ConnParams::for_host`] picked, once the source chose).
    pub host: String,
    pub port: u16,
    /// Every host with its port, in the order given (libpq tries them in order).
    pub hosts: Vec<(String, u16)>,
    pub target_session_attrs: TargetSessionAttrs,
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
            .field("hosts", &self.hosts)
            .field("target_session_attrs", &self.target_session_attrs)
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
        let mut target_session_attrs = TargetSessionAttrs::Any;
        for (k, v) in tls {
            match k.as_str() {
                "sslmode" => ssl_mode = v.parse()?,
                "sslrootcert" => ssl_root_cert = Some(PathBuf::from(v)),
                "target_session_attrs" => target_session_attrs = v.parse()?,
                _ => {}
            }
        }
        let pg_config = tokio_postgres::Config::from_str(&rest).map_err(|e| parse_error(&e))?;
        let mut names = Vec::new();
        for h in pg_config.get_hosts() {
            match h {
                tokio_postgres::config::Host::Tcp(h) => names.push(h.clone()),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => {
                    return Err(DsnError::UnixSocket(p.display().to_string()))
                }
            }
        }
        if names.is_empty() {
            return Err(DsnError::NoHost);
        }
        let ports = pg_config.get_ports();
        if ports.contains(&0) {
            return Err(DsnError::Parse(PORT_RANGE.into()));
        }
        // libpq: no port = 5432 everywhere, one port for every host, else one per host.
        let hosts: Vec<(String, u16)> = match ports.len() {
            0 => names.into_iter().map(|h| (h, 5432)).collect(),
            1 => names.into_iter().map(|h| (h, ports[0])).collect(),
            n if n == names.len() => names.into_iter().zip(ports.iter().copied()).collect(),
            n => {
                return Err(DsnError::PortCount {
                    hosts: names.len(),
                    ports: n,
                })
            }
        };
        let (host, port) = hosts[0].clone();
        let user = pg_config.get_user().ok_or(DsnError::NoUser)?.to_owned();
        let dbname = pg_config.get_dbname().unwrap_or(&user).to_owned();
        Ok(ConnParams {
            host,
            port,
            hosts,
            target_session_attrs,
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

impl ConnParams {
    /// The same parameters with only host `i` of [`ConnParams::hosts`] (the control
    /// connection's tokio-postgres config too), so every connection of one session reaches
    /// the same server.
    pub fn for_host(&self, i: usize) -> ConnParams {
        let (host, port) = self.hosts[i].clone();
        let old = &self.pg_config;
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&host)
            .port(port)
            .user(&self.user)
            .dbname(&self.dbname);
        if let Some(p) = old.get_password() {
            cfg.password(p);
        }
        if let Some(o) = old.get_options() {
            cfg.options(o);
        }
        if let Some(a) = old.get_application_name() {
            cfg.application_name(a);
        }
        if let Some(t) = old.get_connect_timeout() {
            cfg.connect_timeout(*t);
        }
        cfg.keepalives(old.get_keepalives())
            .keepalives_idle(old.get_keepalives_idle())
            .channel_binding(old.get_channel_binding());
        ConnParams {
            host: host.clone(),
            port,
            hosts: vec![(host, port)],
            pg_config: cfg,
            ..self.clone()
        }
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

/// Removes `sslmode`, `sslrootcert` and `target_session_attrs` from either DSN form,
/// returning them separately.
fn split_tls_params(dsn: &str) -> Result<(String, TlsParams), DsnError> {
    let dsn = dsn.trim();
    let is_tls_key = |k: &str| matches!(k, "sslmode" | "sslrootcert" | "target_session_attrs");
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
    fn several_hosts_and_target_session_attrs() {
        let p: ConnParams =
            "host=a,b port=5432,5433 user=cdc password=pw dbname=app target_session_attrs=primary"
                .parse()
                .unwrap();
        assert_eq!(p.hosts, [("a".into(), 5432), ("b".into(), 5433)]);
        assert_eq!(p.target_session_attrs, TargetSessionAttrs::Primary);
        let b = p.for_host(1);
        assert_eq!((b.host.as_str(), b.port), ("b", 5433));
        assert_eq!(b.pg_config.get_hosts().len(), 1);
        assert_eq!(b.pg_config.get_ports(), [5433]);
        assert_eq!(b.pg_config.get_password(), Some(&b"pw"[..]));
        assert_eq!(b.pg_config.get_dbname(), Some("app"));
        let u: ConnParams = "postgres://cdc@a:1,b:2/app?target_session_attrs=read-write"
            .parse()
            .unwrap();
        assert_eq!(u.hosts, [("a".into(), 1), ("b".into(), 2)]);
        assert_eq!(u.target_session_attrs, TargetSessionAttrs::ReadWrite);
        let one_port: ConnParams = "host=a,b port=7 user=u".parse().unwrap();
        assert_eq!(one_port.hosts, [("a".into(), 7), ("b".into(), 7)]);
        let msg = |dsn: &str| dsn.parse::<ConnParams>().unwrap_err().to_string();
        assert!(msg("host=a,b,c port=1,2 user=u").contains("3 hosts but 2 ports"));
        assert!(msg("host=a user=u target_session_attrs=standby").contains("expected any"));
    }

    #[test]
    fn debug_and_display_hide_the_password() {
        let p: ConnParams = "postgres://cdc:hunter2@h/app".parse().unwrap();
        assert!(!format!("{p:?} {p}").contains("hunter2"));
    }
}
