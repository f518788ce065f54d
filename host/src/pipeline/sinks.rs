//! The configured sinks of a process, built (and connected) once and kept across
//! Postgres reconnects: a replication hiccup must not tear down healthy NATS or HTTP
//! connections.

use std::collections::BTreeMap;
use std::sync::Arc;

use cdc_sinks::{Sink, SinkError};

use crate::config::{Format, Loaded};
use crate::health::{observed, HealthHandle};
use cdc_sinks::{Policy, RouteFilter, SinkConfig};

/// A regular sink with the format it wants and its policies.
pub struct SinkSlot {
    pub sink: Box<dyn Sink>,
    pub format: Format,
    pub on_reject: Policy,
    /// Where rejected batches go with `Policy::DeadLetter`.
    pub dead_letter: Option<SharedSink>,
    /// `routes`: only changes whose transform-set route matches go to this sink.
    pub routes: Option<RouteFilter>,
}

/// A sink used by several tasks (a dead-letter target).
pub type SharedSink = Arc<tokio::sync::Mutex<Box<dyn Sink>>>;

impl std::fmt::Debug for SinkSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSlot")
            .field("sink", &self.sink.name())
            .field("format", &self.format)
            .finish()
    }
}

/// Regular sinks, plus the dead-letter targets (which receive no regular batches).
pub struct SinkSet {
    pub slots: Vec<SinkSlot>,
    /// By name: the shared sink and the format it wants.
    pub dead_letters: BTreeMap<String, (SharedSink, Format)>,
}

impl std::fmt::Debug for SinkSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSet")
            .field("slots", &self.slots)
            .field(
                "dead_letters",
                &self.dead_letters.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Builds (and for NATS, connects) the configured sinks, each wrapped for readiness and
/// metrics. Dead-letter targets (of sinks or of transforms) are built once, shared by
/// everything that uses them, and receive no regular batches.
pub async fn build_sinks(loaded: &Loaded, health: &HealthHandle) -> Result<SinkSet, SinkError> {
    let configs: Vec<&SinkConfig> = loaded.config.sinks.iter().map(|s| s.get_ref()).collect();
    let targets = loaded.config.dead_letter_targets();
    let mut shared: BTreeMap<String, SharedSink> = BTreeMap::new();
    for c in configs
        .iter()
        .filter(|c| targets.contains(c.display_name().as_str()))
    {
        shared.insert(
            c.display_name(),
            Arc::new(tokio::sync::Mutex::new(build_sink(c, health).await?)),
        );
    }
    let mut out = Vec::with_capacity(configs.len());
    for c in configs
        .iter()
        .filter(|c| !targets.contains(c.display_name().as_str()))
    {
        out.push(SinkSlot {
            sink: build_sink(c, health).await?,
            format: c.format,
            on_reject: c.reject_policy(),
            dead_letter: c
                .dead_letter_sink
                .as_ref()
                .and_then(|d| shared.get(d.get_ref()).cloned()),
            routes: c.route_filter(),
        });
    }
    let dead_letters = shared
        .into_iter()
        .map(|(name, sink)| {
            let format = configs
                .iter()
                .find(|c| c.display_name() == name)
                .map_or(Format::Json, |c| c.format);
            (name, (sink, format))
        })
        .collect();
    Ok(SinkSet {
        slots: out,
        dead_letters,
    })
}

async fn build_sink(c: &SinkConfig, health: &HealthHandle) -> Result<Box<dyn Sink>, SinkError> {
    Ok(observed(c.build().await?, health))
}
