//! The requests of a batch: grouping, bodies, `Idempotency-Key` and the other headers.

use bytes::{BufMut, Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::Url;

use super::options::redact_url;
use super::{HttpBatching, HttpSink};
use crate::{EncodedBatch, Message, SinkError};

/// `Cdc-Change-Ids` is sent only while it stays under this many bytes.
const CHANGE_IDS_HEADER_MAX: usize = 8 * 1024;

const NDJSON: &str = "application/x-ndjson";
const JSON: &str = "application/json";

impl HttpSink {
    /// The requests for `batch`, in order. Deterministic: the same batch and options give
    /// the same requests (bodies, URLs, keys).
    pub(super) fn plan(&self, batch: &EncodedBatch) -> Result<Vec<Request>, SinkError> {
        let msgs = &batch.messages;
        match self.opts.batching {
            HttpBatching::None => msgs.iter().map(|m| self.single(m)).collect(),
            HttpBatching::Ndjson | HttpBatching::Array => {
                let array = self.opts.batching == HttpBatching::Array;
                let url = self.batch_url.clone().expect("checked in new");
                let mut out = Vec::new();
                let mut start = 0;
                while start < msgs.len() {
                    // Greedily take changes while the body stays under the limit (always at
                    // least one).
                    let mut size = if array { 2 } else { 0 };
                    let mut end = start;
                    while end < msgs.len() {
                        let add = msgs[end].payload.len() + usize::from(!array || end > start);
                        if end > start && size + add > self.opts.max_batch_bytes {
                            break;
                        }
                        size += add;
                        end += 1;
                    }
                    out.push(self.group(&msgs[start..end], url.clone(), array, size)?);
                    start = end;
                }
                Ok(out)
            }
        }
    }

    fn group(
        &self,
        msgs: &[Message],
        url: Url,
        array: bool,
        size: usize,
    ) -> Result<Request, SinkError> {
        let mut body = BytesMut::with_capacity(size);
        if array {
            body.put_u8(b'[');
        }
        for (i, m) in msgs.iter().enumerate() {
            if array && i > 0 {
                body.put_u8(b',');
            }
            body.put_slice(&m.payload);
            if !array {
                body.put_u8(b'\n');
            }
        }
        if array {
            body.put_u8(b']');
        }
        let first = &msgs[0].id;
        let last = &msgs[msgs.len() - 1].id;
        let key = if msgs.len() == 1 {
            first.to_string()
        } else {
            format!("{first}..{last}")
        };
        let mut headers = self.base_headers.clone();
        let ctype = if array { JSON } else { NDJSON };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
        let bad = |what: &str| SinkError::Rejected {
            sink: self.opts.name.clone(),
            id: key.clone(),
            message: format!("{what} is not valid in an HTTP header"),
        };
        put(&mut headers, "idempotency-key", &key).map_err(|_| bad("a change id"))?;
        let ids_len: usize = msgs.iter().map(|m| m.id.len() + 1).sum();
        if ids_len <= CHANGE_IDS_HEADER_MAX {
            let ids = msgs.iter().map(|m| m.id.as_str()).collect::<Vec<_>>();
            put(&mut headers, "cdc-change-ids", &ids.join(",")).map_err(|_| bad("a change id"))?;
        }
        put(&mut headers, "cdc-first-id", first).map_err(|_| bad("a change id"))?;
        put(&mut headers, "cdc-last-id", last).map_err(|_| bad("a change id"))?;
        put(&mut headers, "cdc-count", &msgs.len().to_string()).expect("digits");
        Ok(Request {
            url,
            body: body.freeze(),
            headers,
            key,
        })
    }

    fn single(&self, m: &Message) -> Result<Request, SinkError> {
        let rejected = |message: String| SinkError::Rejected {
            sink: self.opts.name.clone(),
            id: m.id.to_string(),
            message,
        };
        let url = m.route_or(&self.opts.url);
        let url = check_url(&url).map_err(|e| {
            rejected(format!(
                "the change's URL {} is not usable: {e}",
                redact_url(&url)
            ))
        })?;
        let mut headers = self.base_headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
        // Transform headers replace the configured ones and Content-Type (repeats of a name
        // are all sent); they come before the Cdc-* ones, which they cannot replace.
        let mut seen: Vec<HeaderName> = Vec::new();
        for (k, v) in &m.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| rejected(format!("header {k:?}: not a valid header name")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| rejected(format!("header {k}: value is not valid in a header")))?;
            if seen.contains(&name) {
                headers.append(name, value);
            } else {
                seen.push(name.clone());
                headers.insert(name, value);
            }
        }
        let bad = |what: &str| rejected(format!("{what} is not valid in an HTTP header"));
        put(&mut headers, "idempotency-key", &m.id).map_err(|_| bad("the change id"))?;
        put(&mut headers, "cdc-change-ids", &m.id).map_err(|_| bad("the change id"))?;
        put(&mut headers, "cdc-first-id", &m.id).map_err(|_| bad("the change id"))?;
        put(&mut headers, "cdc-last-id", &m.id).map_err(|_| bad("the change id"))?;
        put(&mut headers, "cdc-count", "1").expect("digits");
        put(&mut headers, "cdc-op", m.op).map_err(|_| bad("the op"))?;
        let table = match (&m.schema, &m.table) {
            (Some(s), Some(t)) => Some(format!("{s}.{t}")),
            (None, Some(t)) => Some(t.to_string()),
            _ => None,
        };
        if let Some(table) = table {
            put(&mut headers, "cdc-table", &table).map_err(|_| bad("the table name"))?;
        }
        put(&mut headers, "cdc-lsn", &m.lsn).map_err(|_| bad("the LSN"))?;
        Ok(Request {
            url,
            body: m.payload.clone(),
            headers,
            key: m.id.to_string(),
        })
    }
}

/// One HTTP request of a batch.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) url: Url,
    pub(super) body: Bytes,
    pub(super) headers: HeaderMap,
    /// The `Idempotency-Key`, also the id named in a rejection.
    pub(super) key: String,
}

fn put(headers: &mut HeaderMap, name: &'static str, value: &str) -> Result<(), ()> {
    let value = HeaderValue::from_str(value).map_err(|_| ())?;
    headers.insert(HeaderName::from_static(name), value);
    Ok(())
}

pub(super) fn check_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| e.to_string())?;
    match parsed.scheme() {
        "http" | "https" => {}
        s => return Err(format!("scheme {s:?} is not http or https")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("no host".to_owned());
    }
    Ok(parsed)
}
