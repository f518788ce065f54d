//! The HTTP sink's TLS configuration. Reads files: call it off the async workers.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

use super::HttpOptions;
use cdc_tls::AcceptAnyCert;

/// The TLS configuration: ring, system roots plus `ca_file`, HTTP/1.1 ALPN.
pub(super) struct Tls {
    pub(super) config: ClientConfig,
    pub(super) roots_empty: bool,
}

pub(super) fn tls_config(opts: &HttpOptions) -> Result<Tls, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    if let Some(path) = &opts.ca_file {
        let shown = path.display();
        let pem = std::fs::read(path).map_err(|e| format!("cannot read ca_file {shown}: {e}"))?;
        let mut n = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("ca_file {shown}: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {shown}: {e}"))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("ca_file {shown} holds no certificate"));
        }
    }
    let roots_empty = roots.is_empty();
    let mut config = if opts.danger_accept_invalid_certs {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth()
    } else {
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        config,
        roots_empty,
    })
}
