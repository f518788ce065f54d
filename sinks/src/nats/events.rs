//! What the connection's event callback saw: health for the host's observer, and the
//! failures (authentication, permissions) that make retrying pointless.

use std::sync::{Arc, Mutex};

use async_nats::{ClientError, Event, ServerError};
use tokio::time::Instant;

use crate::SinkObserver;

/// What the connection's event callback saw that retrying cannot cure.
#[derive(Debug, Default)]
pub(super) struct ConnEvents {
    inner: Mutex<EventState>,
    /// The host's health hook, once attached.
    pub(super) observer: Mutex<Option<Arc<dyn SinkObserver>>>,
}

#[derive(Debug, Default)]
struct EventState {
    last_connected: Option<Instant>,
    /// An authentication failure while reconnecting, and when.
    auth_failure: Option<(Instant, String)>,
    /// A permissions violation reported by the server.
    permission_violation: Option<String>,
}

impl ConnEvents {
    pub(super) fn observer(&self) -> Option<Arc<dyn SinkObserver>> {
        self.observer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn record(&self, event: &Event) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Connected => state.last_connected = Some(Instant::now()),
            Event::ServerError(ServerError::AuthorizationViolation) => {
                state.auth_failure = Some((Instant::now(), "authorization violation".into()));
            }
            Event::ServerError(ServerError::Other(text))
                if text.to_ascii_lowercase().contains("permissions violation") =>
            {
                state.permission_violation = Some(text.clone());
            }
            Event::ClientError(ClientError::Other(text))
                if text.contains("authorization violation")
                    || text.contains("failed signing nonce") =>
            {
                state.auth_failure = Some((Instant::now(), text.clone()));
            }
            _ => {}
        }
    }

    /// A failure seen since the last (re)connection that makes retrying pointless: a
    /// permissions violation for `subject` (or for the ack subscription), or, while
    /// disconnected, an authentication failure after the last successful connection.
    pub(super) fn take_fatal(&self, connected: bool, subject: Option<&str>) -> Option<String> {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(text) = state.permission_violation.take() {
            let lower = text.to_ascii_lowercase();
            let ours = subject.is_some_and(|s| text.contains(&format!("\"{s}\"")));
            if ours || lower.contains("subscription") {
                return Some(format!("the NATS server refused: {text}"));
            }
        }
        if connected {
            return None;
        }
        match (&state.auth_failure, state.last_connected) {
            (Some((at, text)), last) if last.is_none_or(|c| *at > c) => {
                let text = text.clone();
                state.auth_failure = None;
                Some(format!("authentication failed while reconnecting: {text}"))
            }
            _ => None,
        }
    }
}
