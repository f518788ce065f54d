//! The JetStream stream: making sure it exists (created when asked), and which stream
//! stores a subject.

use std::collections::HashSet;

use async_nats::jetstream::{self, stream};
use tokio::time::Instant;

use super::fence::MAX_LOOKUPS_PER_BATCH;
use super::options::{Atomic, JetStreamOptions};
use super::prepare::Prepared;
use super::state::{sink_error, Js, Verdict, RETRY, SEEN_CAP};
use crate::SinkError;

/// What to do after a failed stream check.
pub(super) enum Step {
    Retry(String),
    Fatal(String),
}

/// Makes sure the stream exists; `Ok(true)` when it was just created.
pub(super) async fn ensure_stream(
    context: &jetstream::Context,
    opts: &JetStreamOptions,
    subjects: &[String],
    sink: &str,
) -> Result<bool, Step> {
    use jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
    use jetstream::ErrorCode;
    let missing = match context.get_stream(&opts.stream).await {
        Ok(mut s) => {
            let info = s.info().await.ok().map(|i| i.config.clone());
            tracing::info!(
                sink,
                stream = %opts.stream,
                subjects = ?info.as_ref().map(|c| &c.subjects),
                duplicate_window = ?info.as_ref().map(|c| c.duplicate_window),
                replicas = ?info.as_ref().map(|c| c.num_replicas),
                "JetStream stream exists; leaving its configuration as is"
            );
            if opts.atomic == Atomic::Transaction
                && info.as_ref().is_some_and(|c| !c.allow_atomic_publish)
            {
                return Err(Step::Fatal(format!(
                    "JetStream stream {stream} does not allow atomic batches, which \
                     [sinks.jetstream] atomic = \"transaction\" needs: allow them with `nats \
                     stream edit {stream} --allow-batch` (allow_atomic = true in the stream's \
                     configuration; nats-server 2.12 or later), or set atomic = \"none\"",
                    stream = opts.stream
                )));
            }
            if let Some(have) = info.as_ref().map(|c| c.num_replicas.max(1)) {
                if have != opts.replicas {
                    tracing::warn!(
                        sink,
                        stream = %opts.stream,
                        replicas = have,
                        configured = opts.replicas,
                        "the JetStream stream exists with other replicas than jetstream.replicas; cdc-host leaves it as it is (change it with `nats stream edit {} --replicas {}`)",
                        opts.stream,
                        opts.replicas
                    );
                }
            }
            return Ok(false);
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(api)
                if api.error_code() == ErrorCode::STREAM_NOT_FOUND || api.code() == 404 =>
            {
                true
            }
            GetStreamErrorKind::JetStream(api) => {
                return Err(Step::Retry(format!("JetStream answered: {api}")))
            }
            GetStreamErrorKind::Request => {
                return Err(Step::Retry(format!(
                    "JetStream does not answer ({e}): is the server running with JetStream \
                     enabled (-js, or a jetstream {{}} block), and is the account JetStream-enabled?"
                )))
            }
            GetStreamErrorKind::EmptyName | GetStreamErrorKind::InvalidStreamName => {
                return Err(Step::Fatal(format!(
                    "invalid JetStream stream name {:?}: {e}",
                    opts.stream
                )))
            }
        },
    };
    debug_assert!(missing);
    if !opts.create_stream {
        return Err(Step::Fatal(format!(
            "JetStream stream {stream} does not exist: create it (for example `nats stream add \
             {stream} --subjects '{subjects}' --storage file --dupe-window 2m`) or set \
             create_stream = true",
            stream = opts.stream,
            subjects = subjects.join(","),
        )));
    }
    let config = stream::Config {
        name: opts.stream.clone(),
        subjects: subjects.to_vec(),
        storage: stream::StorageType::File,
        duplicate_window: opts.duplicate_window,
        num_replicas: opts.replicas,
        allow_atomic_publish: opts.atomic == Atomic::Transaction,
        // Ordered batches (`ordered`): order kept across reconnects and leader changes.
        allow_batch_publish: true,
        ..Default::default()
    };
    match context.create_stream(config).await {
        Ok(_) => {
            tracing::info!(
                sink,
                stream = %opts.stream,
                ?subjects,
                duplicate_window = ?opts.duplicate_window,
                "created JetStream stream"
            );
            Ok(true)
        }
        Err(e) => match e.kind() {
            // Created concurrently by someone else: fine.
            CreateStreamErrorKind::JetStream(api)
                if api.error_code() == ErrorCode::STREAM_NAME_EXIST =>
            {
                Ok(false)
            }
            CreateStreamErrorKind::JetStream(api) if opts.replicas > 1 => Err(Step::Fatal(format!(
                "cannot create JetStream stream {} with subjects {subjects:?} and {} replicas: {api} \
                 (a stream of N replicas needs a JetStream cluster of at least N servers; \
                 lower jetstream.replicas or add servers)",
                opts.stream, opts.replicas
            ))),
            CreateStreamErrorKind::JetStream(api) if opts.atomic == Atomic::Transaction => {
                Err(Step::Fatal(format!(
                    "cannot create JetStream stream {} with subjects {subjects:?} and atomic \
                     batches allowed: {api} (atomic = \"transaction\" needs nats-server 2.12 \
                     or later)",
                    opts.stream
                )))
            }
            CreateStreamErrorKind::JetStream(api) => Err(Step::Fatal(format!(
                "cannot create JetStream stream {} with subjects {subjects:?}: {api}",
                opts.stream
            ))),
            CreateStreamErrorKind::EmptyStreamName
            | CreateStreamErrorKind::InvalidStreamName
            | CreateStreamErrorKind::DomainAndExternalSet => Err(Step::Fatal(format!(
                "cannot create JetStream stream {:?}: {e}",
                opts.stream
            ))),
            _ => Err(Step::Retry(format!(
                "cannot create JetStream stream {}: {e}",
                opts.stream
            ))),
        },
    }
}

/// [`ensure_stream`], retrying transient failures until `deadline`.
pub(super) async fn ensure_stream_until(
    sink: &str,
    url: &str,
    js: &Js,
    deadline: Instant,
) -> Result<(), SinkError> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match ensure_stream(&js.context, &js.opts, &js.subjects, sink).await {
            Ok(_) => return Ok(()),
            Err(Step::Fatal(message)) => {
                return Err(SinkError::Other {
                    sink: sink.to_string(),
                    message,
                })
            }
            Err(Step::Retry(message)) => {
                let wait = RETRY.delay(attempt);
                if Instant::now() + wait >= deadline {
                    return Err(SinkError::Connect {
                        sink: sink.to_string(),
                        message: format!("{url}: {message}"),
                    });
                }
                tracing::warn!(sink, attempt, error = %message, "JetStream not ready; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

impl Js {
    /// Learns the streams of subjects not seen before (a bounded number of lookups).
    pub(super) async fn resolve_streams(&self, prepared: &[Prepared]) {
        let unknown: Vec<&str> = {
            let fence = self.fence();
            if fence.disabled {
                return;
            }
            if fence.seen.len() >= SEEN_CAP {
                return;
            }
            let mut distinct = HashSet::new();
            prepared
                .iter()
                .map(|p| p.subject.as_str())
                .filter(|s| !fence.seen.contains(*s) && distinct.insert(*s))
                .take(MAX_LOOKUPS_PER_BATCH)
                .collect()
        };
        for subject in unknown {
            use jetstream::context::GetStreamByNameErrorKind as K;
            match self.context.stream_by_subject(subject).await {
                Ok(stream) => self.fence().learn(subject, &stream, &self.default_stream),
                Err(e) if e.kind() == K::NotFound => {}
                // JetStream not answering: assume the configured stream for now.
                Err(_) => break,
            }
        }
    }

    /// After "no responders" on a publish of sink `sink`: is there a stream for the
    /// subject at all?
    pub(super) async fn check_subject_bound(
        &self,
        sink: &str,
        subject: &str,
        strikes: &mut u32,
    ) -> Verdict {
        use jetstream::context::GetStreamByNameErrorKind as K;
        match self.context.stream_by_subject(subject).await {
            Ok(_) => {
                *strikes = 0;
                Verdict::Retry
            }
            Err(e) if e.kind() == K::NotFound => {
                *strikes += 1;
                if self.opts.create_stream {
                    // Deleted while we run? Recreate it; if it exists, it does not cover
                    // the subject.
                    match ensure_stream(&self.context, &self.opts, &self.subjects, sink).await {
                        Ok(true) => return Verdict::RetryNow,
                        Ok(false) => {}
                        Err(Step::Retry(_)) => return Verdict::Retry,
                        Err(Step::Fatal(message)) => {
                            return Verdict::Fatal(sink_error(sink, message))
                        }
                    }
                }
                // Ask twice (a backoff apart) before giving up: a restarting cluster may
                // answer before its streams are back.
                if *strikes < 2 {
                    return Verdict::Retry;
                }
                let message = if self.opts.create_stream {
                    format!(
                        "no stream matches subject {subject}: add it to the subjects of stream \
                         {} (it exists, so create_stream leaves it as it is) or change the \
                         subject template or route",
                        self.opts.stream
                    )
                } else {
                    format!(
                        "no stream matches subject {subject}: add it to the stream's subjects \
                         or set create_stream (stream {})",
                        self.opts.stream
                    )
                };
                Verdict::Fatal(sink_error(sink, message))
            }
            Err(_) => Verdict::Retry,
        }
    }
}
