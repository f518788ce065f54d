//! Typed column values (in progress).
