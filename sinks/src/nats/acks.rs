//! The PubAck inbox: one wildcard subscription for the acks of every publish.

use async_nats::jetstream;

/// The PubAcks of our publishes, on one wildcard subscription `<inbox>.*`: each publish
/// replies to `<inbox>.<token>`, tokens counting up for the sink's lifetime.
///
/// Why not `jetstream::Context::send_publish`: per message it makes an inbox name, a
/// oneshot channel, a SipHash map entry in the client's request multiplexer, a boxed
/// future with its own timer, and parses the PubAck through an untagged enum; together
/// the largest share of the sink's CPU in profiles. Here a publish is a plain publish with
/// a reply subject, an ack is matched by its token, and one timer watches for the lack of
/// progress. The subscription is renewed by the client after a reconnect; acks of an
/// earlier attempt carry tokens below the current attempt's and are ignored.
#[derive(Debug)]
pub(super) struct AckInbox {
    /// `<inbox>.`
    pub(super) prefix: String,
    pub(super) sub: async_nats::Subscriber,
    pub(super) next_token: u64,
}

impl AckInbox {
    /// Takes `n` tokens and names a batch after the first: `<tag><inbox nuid><sep><token>`,
    /// unique for the sink's lifetime (tokens only grow) and across processes (the inbox's
    /// nuid), at most 64 characters, one subject token. Returns the first token and the id.
    pub(super) fn batch_id(&mut self, n: u64, tag: &str, sep: &str) -> (u64, String) {
        let base = self.next_token;
        self.next_token += n;
        let nuid = self
            .prefix
            .trim_end_matches('.')
            .rsplit('.')
            .next()
            .unwrap_or("");
        (base, format!("{tag}{nuid}{sep}{base}"))
    }
}

/// The part of a PubAck (or of a JetStream API error) the sink uses.
#[derive(serde::Deserialize)]
struct PubAckBody<'a> {
    #[serde(borrow, default)]
    stream: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    duplicate: bool,
    #[serde(default)]
    error: Option<jetstream::Error>,
}

/// Where one message of an attempt stands.
pub(super) enum AckSlot {
    Pending,
    Done,
    Failed(jetstream::context::PublishError),
}

/// The error a status answer stands for (no responders: no stream listens on the
/// subject, or it has no leader right now); `None` for an answer with a body.
pub(super) fn status_error(m: &async_nats::Message) -> Option<jetstream::context::PublishError> {
    use jetstream::context::{PublishError, PublishErrorKind as K};
    let status = m.status?;
    if status == async_nats::StatusCode::NO_RESPONDERS {
        return Some(PublishError::new(K::StreamNotFound));
    }
    (!status.is_success()).then(|| {
        let why = m.description.clone().unwrap_or_default();
        PublishError::with_source(K::Other, format!("status {status} {why}"))
    })
}

/// A JetStream API error in an answer, as the publish error the failure paths classify.
pub(super) fn api_error(error: jetstream::Error) -> jetstream::context::PublishError {
    use jetstream::context::{PublishError, PublishErrorKind as K};
    use jetstream::ErrorCode;
    let kind = match error.error_code() {
        ErrorCode::STREAM_WRONG_LAST_MESSAGE_ID => K::WrongLastMessageId,
        ErrorCode::STREAM_WRONG_LAST_SEQUENCE => K::WrongLastSequence,
        _ => K::Other,
    };
    PublishError::with_source(kind, error)
}

/// The stream and duplicate flag of a PubAck, or the error it carries.
pub(super) fn parse_pub_ack(
    m: &async_nats::Message,
) -> Result<(std::borrow::Cow<'_, str>, bool), jetstream::context::PublishError> {
    use jetstream::context::{PublishError, PublishErrorKind as K};
    if let Some(e) = status_error(m) {
        return Err(e);
    }
    let body: PubAckBody<'_> =
        serde_json::from_slice(&m.payload).map_err(|e| PublishError::with_source(K::Other, e))?;
    if let Some(error) = body.error {
        return Err(api_error(error));
    }
    match body.stream {
        Some(stream) => Ok((stream, body.duplicate)),
        None => Err(PublishError::with_source(
            K::Other,
            "PubAck without a stream name",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(payload: &str, status: Option<async_nats::StatusCode>) -> async_nats::Message {
        async_nats::Message {
            subject: "_INBOX.x.1".into(),
            reply: None,
            payload: bytes::Bytes::from(payload.to_owned()),
            headers: None,
            status,
            description: None,
            length: payload.len(),
        }
    }

    #[test]
    fn pub_acks_are_parsed() {
        use jetstream::context::PublishErrorKind as K;
        let ok = reply(r#"{"stream":"CDC","seq":7}"#, None);
        assert_eq!(parse_pub_ack(&ok).unwrap(), ("CDC".into(), false));
        let dup = reply(r#"{"stream":"CDC","seq":7,"duplicate":true}"#, None);
        assert_eq!(parse_pub_ack(&dup).unwrap(), ("CDC".into(), true));
        let wrong_last = reply(
            r#"{"error":{"code":400,"err_code":10070,"description":"wrong last msg ID: a"}}"#,
            None,
        );
        let e = parse_pub_ack(&wrong_last).unwrap_err();
        assert_eq!(e.kind(), K::WrongLastMessageId);
        assert!(
            std::error::Error::source(&e)
                .unwrap()
                .to_string()
                .contains("wrong last msg ID: a"),
            "{e}"
        );
        let other = reply(
            r#"{"error":{"code":503,"err_code":10077,"description":"resource limits"}}"#,
            None,
        );
        assert_eq!(parse_pub_ack(&other).unwrap_err().kind(), K::Other);
        let none = reply("", Some(async_nats::StatusCode::NO_RESPONDERS));
        assert_eq!(parse_pub_ack(&none).unwrap_err().kind(), K::StreamNotFound);
        assert_eq!(
            parse_pub_ack(&reply("{", None)).unwrap_err().kind(),
            K::Other
        );
        assert_eq!(
            parse_pub_ack(&reply("{}", None)).unwrap_err().kind(),
            K::Other
        );
    }
}
