//! `[admin]` and `[log]`: where the admin endpoint listens, and how logs look.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[admin]`: the HTTP endpoint for probes and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to listen on, e.g. `127.0.0.1:9187` (`0.0.0.0:9187` in a pod, so the
    /// kubelet can probe it).
    pub listen: SocketAddr,
}

/// `[log]`: how logs are written on stderr (levels: `RUST_LOG`, default `info`).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`; `--log-format` overrides. Default: text (with colours on a TTY).
    pub format: Option<LogFormat>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::SocketAddr;

    fn parse(extra: &str) -> Result<crate::config::Loaded, String> {
        let src = format!(
            "[source]\ndsn = \"postgres://cdc@127.0.0.1/app\"\nslot = \"s\"\npublication = \"p\"\n[[sinks]]\ntype = \"stdout\"\n{extra}"
        );
        crate::config::PipelineConfig::parse(std::path::Path::new("p.toml"), &src)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn admin_and_log_config() {
        let l = parse("").unwrap();
        assert!(l.config.admin.is_none(), "off by default");
        assert_eq!(l.config.log.format, None);
        let l = parse("[admin]\nlisten = \"127.0.0.1:9187\"\n[log]\nformat = \"json\"\n").unwrap();
        assert_eq!(
            l.config.admin.unwrap().listen,
            "127.0.0.1:9187".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(l.config.log.format, Some(LogFormat::Json));
        let e = parse("[admin]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(
            e.starts_with("p.toml:8:10: admin.listen: invalid socket address"),
            "{e}"
        );
        let e = parse("[admin]\nlisten = \"127.0.0.1:1\"\nport = 2\n").unwrap_err();
        assert!(
            e.starts_with("p.toml:9:1: admin.port: unknown field `port`"),
            "{e}"
        );
        let e = parse("[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(
            e.starts_with("p.toml:8:10: log.format: unknown variant `xml`"),
            "{e}"
        );
    }
}
