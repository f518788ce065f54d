//! `type = "stdout"`: no keys of its own.

use crate::config::{KeyError, SinkConfig};
use crate::{Sink, SinkError, StdoutSink};

/// Optional keys a stdout sink accepts: none (not even `on_reject`: stdout rejects
/// nothing).
pub(crate) const KEYS: &[&str] = &[];

pub(crate) fn check(_: &SinkConfig) -> Result<(), KeyError> {
    Ok(())
}

pub(crate) fn build(c: &SinkConfig) -> Result<Box<dyn Sink>, SinkError> {
    Ok(Box::new(StdoutSink::new(c.display_name())))
}
