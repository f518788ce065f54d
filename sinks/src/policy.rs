//! What to do with a batch that cannot go where it should: shared by transforms
//! (`on_error`) and sinks (`on_reject`), so both keys take the same words.

use serde::Deserialize;

/// The failure policy of a transform (`on_error`: a trap, deadline, memory cap or returned
/// error) or of a sink (`on_reject`: a change its destination rejects for good, such as an
/// HTTP 4xx or a subject NATS refuses). Transient sink failures are always retried,
/// whatever this says.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Stop the pipeline; nothing past the last acknowledged batch is confirmed (default).
    #[default]
    Fail,
    /// Log and count the batch's changes, and go on as if they were delivered.
    Skip,
    /// Send the batch to `dead_letter_sink`, then go on: a transform sends the batch's
    /// original changes, a sink the batch as it encoded it.
    DeadLetter,
}
