//! Changes to and from the WIT record (`cdc:pipeline/types.change`).
//!
//! The host keeps Postgres's conventions (epoch 2000-01-01, text sharing the network
//! buffer); the WIT record uses what a guest author expects (Unix epoch, plain
//! strings). Values coming back from a guest are checked before anything encodes
//! them — a numeric that is not a number or a json that is not JSON would otherwise
//! become invalid output downstream.
//!
//! - `to_wit` — host change → WIT record (infallible).
//! - `from_wit` — WIT record → host change, with validation ([`FromGuest`]).
//! - [`json_batch`] — a batch as one JSON document and back (the `transform-json` world).

pub(crate) mod compat;
mod from_wit;
pub mod json_batch;
mod to_wit;

pub use from_wit::FromGuest;
pub(crate) use from_wit::{check_routing, oid_of, value_from_wit};
pub use to_wit::to_wit;
pub(crate) use to_wit::{to_wit_meta, value_to_wit};

use crate::value::{DATE_NEG_INFINITY, DATE_POS_INFINITY, TS_NEG_INFINITY, TS_POS_INFINITY};

/// Days from 1970-01-01 to 2000-01-01.
const EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A change a guest returned that cannot be turned back into a host change.
#[derive(Debug, thiserror::Error)]
#[error("change {index} ({id}): {message}")]
pub struct ConvertError {
    pub index: usize,
    pub id: String,
    pub message: String,
}

fn date_to_unix(d: i32) -> i32 {
    match d {
        DATE_NEG_INFINITY | DATE_POS_INFINITY => d,
        d => d.saturating_add(EPOCH_DAYS),
    }
}

fn date_from_unix(d: i32) -> i32 {
    match d {
        DATE_NEG_INFINITY | DATE_POS_INFINITY => d,
        d => d.saturating_sub(EPOCH_DAYS),
    }
}

fn ts_to_unix(t: i64) -> i64 {
    match t {
        TS_NEG_INFINITY | TS_POS_INFINITY => t,
        t => t.saturating_add(EPOCH_MICROS),
    }
}

fn ts_from_unix(t: i64) -> i64 {
    match t {
        TS_NEG_INFINITY | TS_POS_INFINITY => t,
        t => t.saturating_sub(EPOCH_MICROS),
    }
}

#[cfg(test)]
mod tests;
