//! Reading answers: body excerpts, `Retry-After`, error chains without URLs.

use std::time::{Duration, SystemTime};

/// How much of a rejecting response's body goes into the error.
const REJECT_BODY_SHOWN: usize = 200;

/// Up to `max` bytes of the body; errors end the read quietly.
pub(super) async fn read_some(resp: &mut reqwest::Response, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < max {
        match resp.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out
}

/// The first [`REJECT_BODY_SHOWN`] bytes of a body, as text, trimmed.
pub(super) fn body_excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(REJECT_BODY_SHOWN)];
    let text = String::from_utf8_lossy(cut);
    let text = text.trim();
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.len() > REJECT_BODY_SHOWN {
        s.push('…');
    }
    s
}

/// An error and its causes, without the request URL (it may hold a secret).
pub(super) fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = src {
        let part = s.to_string();
        // hyper and friends often repeat their cause in their own message.
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        src = s.source();
    }
    text
}

/// `Retry-After` as a delay: delta-seconds or an HTTP-date (a past date means now).
pub(super) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(7)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn excerpt_is_bounded() {
        let long = vec![b'x'; 1000];
        let e = body_excerpt(&long);
        assert_eq!(e.chars().count(), REJECT_BODY_SHOWN + 1);
        assert_eq!(body_excerpt(b" bad\nfield "), "bad field");
    }
}
