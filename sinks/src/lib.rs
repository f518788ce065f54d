//! Sink contract (in progress).
