//! `type = "stdout"`: no keys of its own.

use crate::keys::{Entry, KeyError};
use crate::{Sink, SinkError, StdoutSink};

/// The keys every sink may have that a stdout sink accepts: none of the optional ones
/// (not even `on_reject`: stdout rejects nothing).
pub(crate) const SHARED_KEYS: &[&str] = &[];

pub(crate) fn check(_: &Entry<'_, ()>) -> Result<(), KeyError> {
    Ok(())
}

pub(crate) fn build(c: Entry<'_, ()>) -> Result<Box<dyn Sink>, SinkError> {
    Ok(Box::new(StdoutSink::new(c.name)))
}
