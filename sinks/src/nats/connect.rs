//! Connecting: client options (auth, TLS, events), the connect loop, the stream check.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{ConnectErrorKind, Event, ServerAddr};
use tokio::time::Instant;

use super::acks::AckInbox;
use super::events::ConnEvents;
use super::options::{
    JetStreamOptions, NatsAuth, NatsOptions, CONNECT_DEADLINE, DEFAULT_ACK_TIMEOUT,
};
use super::prepare::{check_subject, Subjects};
use super::state::{Js, RETRY};
use super::stream::ensure_stream_until;
use super::NatsSink;
use crate::SinkError;

impl NatsSink {
    /// Connects (and checks or creates the stream). Gives up after about 10 s when the
    /// server cannot be reached; authentication and TLS errors fail at once. After this,
    /// outages are ridden out: the client reconnects by itself and `deliver` retries.
    pub async fn connect(opts: NatsOptions) -> Result<NatsSink, SinkError> {
        let name = opts.name.clone();
        let url = mask_url(&opts.url);
        let connect_err = |message: String| SinkError::Connect {
            sink: name.clone(),
            message,
        };
        let servers = opts
            .url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                ServerAddr::from_str(s)
                    .map_err(|e| connect_err(format!("invalid NATS URL {:?}: {e}", mask_url(s))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(connect_err("no NATS URL configured".into()));
        }
        // The template must at least render to a valid subject with ordinary names.
        let sample = opts
            .subject
            .replace("{schema}", "s")
            .replace("{table}", "t")
            .replace("{op}", "insert");
        if let Err(why) = check_subject(&sample) {
            return Err(SinkError::Other {
                sink: name.clone(),
                message: format!("subject template {:?} is invalid: {why}", opts.subject),
            });
        }
        let max_in_flight = opts.max_in_flight.max(1);
        let ack_timeout = if opts.ack_timeout.is_zero() {
            DEFAULT_ACK_TIMEOUT
        } else {
            opts.ack_timeout
        };

        let deadline = Instant::now() + CONNECT_DEADLINE;
        let events = Arc::new(ConnEvents::default());
        let mut attempt = 0u32;
        let client = loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let options = connect_options(&opts, &events, max_in_flight, ack_timeout)
                .await
                .map_err(&connect_err)?
                .connection_timeout(
                    remaining.clamp(Duration::from_millis(500), Duration::from_secs(5)),
                );
            match options.connect(servers.clone()).await {
                Ok(client) => break client,
                Err(e) => {
                    let permanent = is_tls_failure(&e)
                        || matches!(
                            e.kind(),
                            ConnectErrorKind::Authentication
                                | ConnectErrorKind::AuthorizationViolation
                                | ConnectErrorKind::Tls
                                | ConnectErrorKind::ServerParse
                        );
                    let wait = RETRY.delay(attempt);
                    if permanent || Instant::now() + wait >= deadline {
                        return Err(connect_err(format!("cannot connect to {url}: {e}")));
                    }
                    tracing::warn!(sink = %name, attempt, error = %e, "cannot connect to {url} yet; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        };

        let js = match opts.jetstream.clone() {
            None => {
                if first_time_core(&name) {
                    tracing::warn!(
                        sink = %name,
                    "core NATS (no JetStream): a batch counts as delivered once flushed to the \
                     server; nothing is stored, so changes published while no subscriber \
                     listens, or lost in an outage, are gone (configure a JetStream stream for \
                     durability)"
                    );
                }
                None
            }
            Some(js_opts) => {
                let context = jetstream::context::ContextBuilder::new()
                    // Stream management only: publishes and their acks bypass it (see
                    // `AckInbox`).
                    .timeout(ack_timeout)
                    .build(client.clone());
                let subjects = if js_opts.subjects.is_empty() {
                    JetStreamOptions::default_subjects(&opts.subject)
                } else {
                    js_opts.subjects.clone()
                };
                let inbox = client.new_inbox();
                // `>`: plain PubAcks come to `<inbox>.<token>`, an ordered batch's answers to
                // `<inbox>.<batch id>.<flow>.fail.<seq>.<op>.$FI`.
                let sub = client
                    .subscribe(format!("{inbox}.>"))
                    .await
                    .map_err(|e| connect_err(format!("cannot subscribe to {inbox}.>: {e}")))?;
                // Off when the stream has other publishers by design (several sidecars).
                let fence = Mutex::new(super::state::Fence {
                    disabled: !js_opts.ordering_check,
                    ..Default::default()
                });
                let js = Js {
                    context,
                    default_stream: Arc::from(js_opts.stream.as_str()),
                    opts: js_opts,
                    subjects,
                    fence,
                    acks: tokio::sync::Mutex::new(AckInbox {
                        prefix: format!("{inbox}."),
                        sub,
                        next_token: 0,
                    }),
                };
                ensure_stream_until(&name, &url, &js, deadline).await?;
                Some(js)
            }
        };

        Ok(NatsSink {
            name,
            url,
            client,
            js,
            ack_timeout,
            max_in_flight,
            events,
            subjects: Subjects::new(opts.subject),
            prepared: Vec::new(),
            chunks: Vec::new(),
            open_txn: None,
        })
    }
}

/// Whether core NATS has not been warned about for sink `name` yet in this process: the
/// warning is about the configuration, not about a connection, so reconnects (or an
/// embedder building the sink again) do not repeat it.
fn first_time_core(name: &str) -> bool {
    static WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    warned
        .get_or_insert_with(HashSet::new)
        .insert(name.to_owned())
}

/// The client options for one connection attempt.
async fn connect_options(
    opts: &NatsOptions,
    events: &Arc<ConnEvents>,
    max_in_flight: usize,
    ack_timeout: Duration,
) -> Result<async_nats::ConnectOptions, String> {
    let mut options = match &opts.auth {
        NatsAuth::None => async_nats::ConnectOptions::new(),
        NatsAuth::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        NatsAuth::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
        NatsAuth::NkeySeed(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
        NatsAuth::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| format!("cannot read credentials file {}: {e}", path.display()))?,
    };
    if let Some(tls) = &opts.tls {
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
            (None, None) => {}
            _ => return Err("TLS client_cert and client_key must be set together".into()),
        }
        options = options.require_tls(tls.required);
    }
    let name = opts.name.clone();
    let events = events.clone();
    Ok(options
        .name(format!("cdc-host:{}", opts.name))
        .max_reconnects(None)
        .ping_interval(Duration::from_secs(10))
        .request_timeout(Some(ack_timeout))
        .client_capacity(max_in_flight.saturating_mul(2).max(2048))
        .event_callback(move |event| {
            let events = events.clone();
            let name = name.clone();
            async move {
                events.record(&event);
                if let (Some(o), Event::Connected | Event::Disconnected) =
                    (events.observer(), &event)
                {
                    o.connection(&name, matches!(event, Event::Connected));
                }
                match &event {
                    Event::Disconnected => {
                        tracing::warn!(sink = %name, "disconnected from NATS; reconnecting")
                    }
                    Event::Connected => tracing::info!(sink = %name, "connected to NATS"),
                    // Each failed reconnection attempt; `deliver` reports the stall itself.
                    Event::ClientError(_) | Event::Closed => {
                        tracing::debug!(sink = %name, event = %event, "NATS connection event")
                    }
                    other => tracing::warn!(sink = %name, event = %other, "NATS connection event"),
                }
            }
        }))
}

/// A TLS handshake failure (untrusted or refused certificate, …): the client reports those
/// as I/O errors, but retrying will not cure them.
fn is_tls_failure(e: &async_nats::ConnectError) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if err.is::<async_nats::rustls::Error>() {
            return true;
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if inner.is::<async_nats::rustls::Error>() {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// The URL list with passwords and tokens in `user:pass@` replaced by `***`.
pub(super) fn mask_url(url: &str) -> String {
    url.split(',')
        .map(|u| {
            let u = u.trim();
            let rest_at = u.find("://").map(|i| i + 3).unwrap_or(0);
            // The last '@' before the path ends the userinfo, as URL parsers read it (a
            // password may itself hold an '@').
            let authority_end = u[rest_at..].find('/').map_or(u.len(), |i| rest_at + i);
            match u[rest_at..authority_end].rfind('@') {
                Some(at) => format!("{}***@{}", &u[..rest_at], &u[rest_at + at + 1..]),
                None => u.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_masked() {
        assert_eq!(
            mask_url("nats://u:p@h:4222, nats://h2"),
            "nats://***@h:4222,nats://h2"
        );
        assert_eq!(mask_url("h:4222"), "h:4222");
        // A password holding '@': everything up to the last '@' of the authority is masked.
        assert_eq!(mask_url("nats://u:p@ss@h:4222"), "nats://***@h:4222");
        assert_eq!(mask_url("nats://h:4222/x@y"), "nats://h:4222/x@y");
    }
}
