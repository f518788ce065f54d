//! Turning a [`Message`] into a publish: its subject (checked, cached) and headers.

use std::str::FromStr;
use std::sync::Arc;

use async_nats::{HeaderMap, HeaderName, HeaderValue, Subject};

use crate::{Message, SinkError};

// Header names built once: `from_static` needs no allocation or validation per message.
pub(super) const EXPECTED_LAST_MSG_ID: HeaderName =
    HeaderName::from_static("Nats-Expected-Last-Msg-Id");
const MSG_ID: HeaderName = HeaderName::from_static("Nats-Msg-Id");
const CDC_OP: HeaderName = HeaderName::from_static("Cdc-Op");
const CDC_TABLE: HeaderName = HeaderName::from_static("Cdc-Table");
const CDC_LSN: HeaderName = HeaderName::from_static("Cdc-Lsn");
const CDC_COMMIT_LSN: HeaderName = HeaderName::from_static("Cdc-Commit-Lsn");
/// Rendered subject templates remembered per (schema, table, op); cleared when full.
const SUBJECT_CACHE: usize = 256;

#[derive(Debug)]
pub(super) struct CachedSubject {
    schema: Option<Arc<str>>,
    table: Option<Arc<str>>,
    op: &'static str,
    subject: Subject,
}

/// A message ready to publish: subject checked, a transform's headers validated. The
/// headers themselves are built at each publish (see [`headers`]): building
/// them once and cloning per attempt cost twice the allocations.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) subject: Subject,
    /// Headers a transform set, validated; added after (and over) ours.
    pub(super) extra: Vec<(HeaderName, HeaderValue)>,
    /// A transform set a `Nats-Expected-*` header: no ordering check of ours, and a refusal
    /// is final.
    pub(super) user_expectation: bool,
    /// A `Nats-Msg-Id` set by a transform, replacing the change id.
    pub(super) msg_id: Option<String>,
}

/// A sink's subject template, and its recent renderings (see [`Subjects::render`]).
#[derive(Debug)]
pub(super) struct Subjects {
    template: String,
    cache: Vec<CachedSubject>,
}

/// Prepares `m` for a publish by sink `sink`, whose subjects are `subjects`; a message
/// that cannot be published (bad subject or header) is rejected.
pub(super) fn prepare(
    sink: &str,
    subjects: &mut Subjects,
    m: &Message,
) -> Result<Prepared, SinkError> {
    let subject = match &m.route {
        Some(route) => check_subject(route)
            .map(|()| Subject::from(route.as_str()))
            .map_err(|why| (route.clone(), why)),
        None => subjects.render(m),
    };
    let rejected = |message: String| SinkError::Rejected {
        sink: sink.to_owned(),
        id: m.id.to_string(),
        message,
    };
    let subject = subject
        .map_err(|(subject, why)| rejected(format!("invalid NATS subject {subject:?}: {why}")))?;
    // Quoted Postgres identifiers may hold line breaks, which a header value cannot.
    let ours = [m.id.as_str(), &m.lsn, &m.commit_lsn]
        .into_iter()
        .chain(m.schema.as_deref())
        .chain(m.table.as_deref());
    for value in ours {
        if value.contains(['\r', '\n']) {
            return Err(rejected(format!(
                "{value:?} cannot be a header value (line break)"
            )));
        }
    }
    let mut extra = Vec::new();
    for (key, value) in &m.headers {
        let name = HeaderName::from_str(key)
            .map_err(|e| rejected(format!("invalid header name {key:?}: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| rejected(format!("invalid value of header {key}: {e}")))?;
        extra.push((name, value));
    }
    let user_expectation = m.headers.iter().any(|(k, _)| {
        k.get(..13)
            .is_some_and(|p| p.eq_ignore_ascii_case("nats-expected"))
    });
    // A transform may set its own dedup id; the ordering check must name that one.
    let msg_id = m
        .headers
        .iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case("nats-msg-id"))
        .map(|(_, v)| v.clone());
    Ok(Prepared {
        subject,
        extra,
        user_expectation,
        msg_id,
    })
}

impl Subjects {
    pub(super) fn new(template: String) -> Self {
        Subjects {
            template,
            cache: Vec::new(),
        }
    }

    /// The subject template filled in for `m`, from a small cache: rendering and checking
    /// it for every message was a visible share of the sink's CPU.
    fn render(&mut self, m: &Message) -> Result<Subject, (String, &'static str)> {
        let same = |a: &Option<Arc<str>>, b: &Option<Arc<str>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            (None, None) => true,
            _ => false,
        };
        if let Some(hit) = self
            .cache
            .iter()
            .rev()
            .find(|e| e.op == m.op && same(&e.table, &m.table) && same(&e.schema, &m.schema))
        {
            return Ok(hit.subject.clone());
        }
        let rendered = m.render_template(&self.template);
        if let Err(why) = check_subject(&rendered) {
            return Err((rendered, why));
        }
        let subject = Subject::from(rendered);
        if self.cache.len() >= SUBJECT_CACHE {
            self.cache.clear();
        }
        self.cache.push(CachedSubject {
            schema: m.schema.clone(),
            table: m.table.clone(),
            op: m.op,
            subject: subject.clone(),
        });
        Ok(subject)
    }
}

/// The headers of one publish of `m`: the change id, op, table and LSNs, then those a
/// transform set.
pub(super) fn headers(m: &Message, p: &Prepared) -> HeaderMap {
    let mut table = String::with_capacity(
        m.schema.as_deref().map_or(1, str::len) + m.table.as_deref().map_or(1, str::len) + 1,
    );
    table.push_str(m.schema.as_deref().unwrap_or("_"));
    table.push('.');
    table.push_str(m.table.as_deref().unwrap_or("_"));
    let mut headers = HeaderMap::new();
    // `prepare` rejected values with line breaks: `HeaderValue::from` cannot panic.
    headers.insert(MSG_ID, m.id.as_str());
    headers.insert(CDC_OP, m.op);
    headers.insert(CDC_TABLE, table);
    headers.insert(CDC_LSN, &*m.lsn);
    headers.insert(CDC_COMMIT_LSN, &*m.commit_lsn);
    for (name, value) in &p.extra {
        headers.insert(name.clone(), value.clone());
    }
    headers
}

/// A subject one can publish to: non-empty tokens, no whitespace or control characters,
/// no wildcards.
pub(super) fn check_subject(subject: &str) -> Result<(), &'static str> {
    if subject.is_empty() {
        return Err("empty subject");
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters");
    }
    for token in subject.split('.') {
        match token {
            "" => return Err("empty token (leading, trailing or doubled '.')"),
            "*" | ">" => return Err("wildcards cannot be published to"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_checked() {
        assert!(check_subject("cdc.public.users").is_ok());
        assert!(check_subject("").is_err());
        assert!(check_subject("cdc..users").is_err());
        assert!(check_subject("cdc.users.").is_err());
        assert!(check_subject("cdc.my table").is_err());
        assert!(check_subject("cdc.*").is_err());
        assert!(check_subject("cdc.>").is_err());
    }
}
