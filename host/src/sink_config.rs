//! `[[sinks]]` entries. Each sink type's keys, checks, defaults and construction live
//! beside the sink in cdc-sinks (`cdc_sinks::config` and each type's `config` module);
//! these are the host's paths to them.

pub use cdc_sinks::config::{KeyError, SinkConfig, SinkType};
pub use cdc_sinks::{Policy, RouteFilter};
