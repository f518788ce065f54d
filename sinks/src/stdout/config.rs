//! `type = "stdout"`: no keys of its own.

use crate::keys::{sink_keys, Entry, KeyError};
use crate::{Sink, SinkError, StdoutSink};

/// The keys every sink may have that a stdout sink accepts: none of the optional ones
/// (not even `on_reject`: stdout rejects nothing).
pub(crate) const SHARED_KEYS: &[&str] = &[];

sink_keys! {
    /// A stdout sink has no keys of its own: declared all the same, so that every sink
    /// type is dispatched to alike.
    pub struct StdoutKeys {}
}

pub(crate) fn check(_: &Entry<'_, StdoutKeys>) -> Result<(), KeyError> {
    Ok(())
}

/// Nothing to resolve.
pub(crate) fn check_resolved(_: &Entry<'_, StdoutKeys>) -> Result<(), KeyError> {
    Ok(())
}

/// Synchronous work, `async` like every sink type's `build`.
pub(crate) async fn build(c: Entry<'_, StdoutKeys>) -> Result<Box<dyn Sink>, SinkError> {
    Ok(Box::new(StdoutSink::new(c.name)))
}
