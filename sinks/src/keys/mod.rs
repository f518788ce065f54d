//! The leaf every sink type's `config.rs` builds on: what reading and checking keys needs,
//! and nothing that knows a sink type. The `config` module (the `[[sinks]]` entry and the
//! dispatch by `type`) sits above the types' `config` modules, which sit above this one:
//! the types never see the whole entry, only an [`Entry`] holding their own keys.

mod macros;
mod values;

use std::ops::Range;

use serde_spanned::Spanned;

pub(crate) use macros::{element, same_keys, sink_keys};
pub(crate) use values::{check_authority, safe_scheme};
pub use values::{interpolate, interpolate_with};

use crate::SinkError;

/// A problem with one key of a sink entry: its span (`None`: the whole entry), dotted key
/// and message.
pub type KeyError = (Option<Range<usize>>, &'static str, String);

/// What a sink type's `config` reads of a `[[sinks]]` entry: its name, its type, the shared
/// keys it may use, and its own keys `K` (`StdoutKeys`, `NatsKeys`, `HttpKeys`: each
/// declared by `sink_keys!`).
#[derive(Debug)]
pub struct Entry<'a, K> {
    /// The sink's name, defaulting to its type.
    pub name: String,
    /// `type`, as written (for messages).
    pub kind: &'static str,
    /// `url`.
    pub url: Option<&'a Spanned<String>>,
    /// The type's own keys.
    pub keys: &'a K,
}

impl<K> Entry<'_, K> {
    /// A [`KeyError`] found while building, as the sink's error.
    pub(crate) fn build_error(&self, (_, key, message): KeyError) -> SinkError {
        SinkError::Other {
            sink: self.name.clone(),
            message: format!("{key}: {message}"),
        }
    }

    /// `url`, `${ENV}` filled in, checked by the type's `check` (whose message must not
    /// quote the URL: it may hold a secret).
    pub(crate) fn resolved_url(
        &self,
        check: fn(&str) -> Result<(), String>,
    ) -> Result<String, KeyError> {
        let Some(u) = self.url else {
            return Ok(String::new());
        };
        let url = env(u, "url")?;
        check(&url).map_err(|m| (Some(u.span()), "url", m))?;
        Ok(url)
    }

    /// "a {type} sink needs a url" when `url` is missing.
    pub(crate) fn require_url(&self) -> Result<(), KeyError> {
        match self.url {
            Some(_) => Ok(()),
            None => Err((None, "url", format!("a {} sink needs a url", self.kind))),
        }
    }
}

/// A string value with `${ENV}` filled in; errors point at the value.
pub(crate) fn env(v: &Spanned<String>, key: &'static str) -> Result<String, KeyError> {
    interpolate(v.get_ref()).map_err(|m| (Some(v.span()), key, m))
}

/// The span of an optional spanned value.
pub(crate) fn at<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
    v.as_ref().map(Spanned::span)
}
