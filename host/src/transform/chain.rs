//! The configured modules in order, each with its `on_error` policy.
//!
//! One call per module per batch. A failing module decides the fate of the whole
//! batch: `fail` stops the pipeline (the batch is never acknowledged, so nothing past
//! it is confirmed), `skip` drops the batch (acknowledged as delivered: the user chose
//! to lose it, and it is counted and logged), `dead-letter` sends the batch's original
//! changes to a named sink instead.

use std::sync::Arc;
use std::time::Instant;

use super::batch::{Changes, Shapes};
use super::config::OnFailure;
use super::convert::{json_batch, to_wit, FromGuest};
use super::module::{Instance, Module};
use super::origins::Origins;
use super::TransformError;
use crate::change::Change;

/// What the chain made of a batch.
#[derive(Debug)]
pub enum Outcome {
    /// The changes to deliver (possibly none: everything was filtered out).
    Changes(Vec<Change>),
    /// A module failed with `on_error = "skip"`: deliver nothing, count `dropped`.
    Skipped {
        error: TransformError,
        dropped: usize,
    },
    /// A module failed with `on_error = "dead-letter"`: deliver the original changes to
    /// `sink` only.
    DeadLetter {
        error: TransformError,
        sink: Arc<str>,
        changes: Vec<Change>,
    },
}

struct Stage {
    module: Arc<Module>,
    instance: Option<Instance>,
    from_guest: FromGuest,
    /// Tables retyped by a batch-world module's edits.
    shapes: Shapes,
    /// The most changes handed to the module in one call, learned when a call ran out
    /// of memory or time; `None`: whole batches.
    max_batch: Option<usize>,
    /// Instances replaced because their memory passed [`RECYCLE_SHARE`] of the cap.
    recycled: u64,
    /// The origins of the batch being run (`host.origin`).
    origins: Origins,
}

/// A batch that exhausts a module's memory or time is halved and retried at most this
/// many times (4096 changes → 64) before the error applies the module's policy.
const MAX_SPLITS: u32 = 6;

/// After a call, an instance whose linear memory passed this share of its cap is replaced
/// by a fresh one before the next call. Linear memory never shrinks, and garbage-collected
/// guest runtimes (SpiderMonkey in componentize-js, CPython in componentize-py) collect
/// lazily and fragment it, so a module that needs a few MiB per batch would otherwise
/// creep up to its cap over thousands of calls.
const RECYCLE_SHARE: (usize, usize) = (3, 4);

/// The transform chain of one pipeline run.
pub struct Chain {
    stages: Vec<Stage>,
    /// Index of the last stage whose policy is dead-letter: until it has run, the
    /// batch as it came in is kept (moved aside, not copied) for a dead letter.
    last_dead_letter: Option<usize>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.stages.iter().map(|s| &s.module.name))
            .finish()
    }
}

impl Chain {
    /// Instantiates every module and calls its `init`. Any failure here stops the
    /// pipeline whatever the policy: a module that cannot start would otherwise skip
    /// or dead-letter every batch.
    pub fn start(modules: &[Arc<Module>]) -> Result<Self, TransformError> {
        let mut stages = Vec::with_capacity(modules.len());
        for module in modules {
            stages.push(Stage {
                module: Arc::clone(module),
                instance: Some(module.instantiate()?),
                from_guest: FromGuest::default(),
                shapes: Shapes::default(),
                max_batch: None,
                recycled: 0,
                origins: Origins::default(),
            });
        }
        let last_dead_letter = stages
            .iter()
            .rposition(|s| matches!(s.module.policy, OnFailure::DeadLetter(_)));
        Ok(Chain {
            stages,
            last_dead_letter,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Runs one batch through every module. `Err` only for `on_error = "fail"`.
    pub fn run(&mut self, changes: Vec<Change>) -> Result<Outcome, TransformError> {
        // Drops are counted from per (table, op) counts, not from a copy of the batch.
        let counts_in = crate::metrics::enabled().then(|| counts(&changes));
        let total = changes.len();
        // The batch as it came in, for a dead letter from a stage after the first (the
        // first stage's input is `current` itself). Never copied: the first stage only
        // borrows it, and it is set aside rather than dropped while a later stage may
        // still dead-letter it.
        let mut original: Option<Vec<Change>> = None;
        let origins = Origins::of(&changes);
        let mut current = changes;
        for (i, stage) in self.stages.iter_mut().enumerate() {
            if current.is_empty() {
                break;
            }
            stage.origins = origins.clone();
            let started = Instant::now();
            let n = current.len();
            let result = if stage.module.is_batch() {
                // The batch world edits its input: it is handed over, and handed back
                // unedited when the call fails. Kept aside (one copy) only when a
                // later stage may still dead-letter the batch as it came in.
                if self.last_dead_letter.is_some_and(|last| last > i) && original.is_none() {
                    original = Some(current.clone());
                }
                match stage.call_owned(std::mem::take(&mut current)) {
                    Ok(out) => Ok(out),
                    Err((error, back)) => {
                        current = back;
                        Err(error)
                    }
                }
            } else {
                stage.call(&current)
            };
            let elapsed = started.elapsed();
            tracing::debug!(module = %stage.module.name, changes_in = n, micros = elapsed.as_micros() as u64, ok = result.is_ok(), "transform call");
            crate::metrics::transform_call(&stage.module.name, elapsed, result.is_ok());
            match result {
                Ok(mut out) => {
                    // The WIT record carries no origin: each transaction's comes back.
                    origins.restore(&mut out);
                    let input = std::mem::replace(&mut current, out);
                    if self.last_dead_letter.is_some_and(|last| last > i) {
                        original.get_or_insert(input);
                    } else {
                        original = None;
                    }
                }
                Err(error) => {
                    if error.poisons_instance() {
                        stage.instance = None;
                    }
                    match &stage.module.policy {
                        OnFailure::Fail => return Err(error),
                        OnFailure::Skip => {
                            for (t, op, n) in counts_in.unwrap_or_default() {
                                crate::metrics::changes_dropped(&t, op, n);
                            }
                            tracing::error!(module = %stage.module.name, dropped = total, error = %error, "transform failed; batch skipped (on_error = \"skip\")");
                            return Ok(Outcome::Skipped {
                                error,
                                dropped: total,
                            });
                        }
                        OnFailure::DeadLetter(sink) => {
                            let sink = Arc::clone(sink);
                            tracing::error!(module = %stage.module.name, dead_letter_sink = %sink, changes = total, error = %error, "transform failed; batch sent to the dead-letter sink");
                            return Ok(Outcome::DeadLetter {
                                error,
                                sink,
                                changes: original.unwrap_or(current),
                            });
                        }
                    }
                }
            }
        }
        if let Some(counts_in) = counts_in {
            count_dropped(counts_in, &current, total);
        }
        Ok(Outcome::Changes(current))
    }
}

/// `(table, op, n)` of a batch.
fn counts(changes: &[Change]) -> Vec<(String, &'static str, u64)> {
    let mut out = Vec::new();
    crate::metrics::count_by_table_op(changes, |t, op, n| out.push((t.to_owned(), op, n)));
    out
}

/// Counts, by table and op, the changes of the input (`ins`, `total` in all) missing from
/// `after` (filtered out).
fn count_dropped(mut ins: Vec<(String, &'static str, u64)>, after: &[Change], total: usize) {
    // Splits can hide drops; counting the net loss per (table, op) is good enough.
    if after.len() >= total {
        return;
    }
    crate::metrics::count_by_table_op(after, |t, op, n| {
        if let Some(e) = ins.iter_mut().find(|(t2, o, _)| t2 == t && *o == op) {
            e.2 = e.2.saturating_sub(n);
        }
    });
    for (t, op, n) in ins {
        if n > 0 {
            crate::metrics::changes_dropped(&t, op, n);
        }
    }
}

impl Stage {
    /// The batch through this module, in calls of at most `max_batch` changes.
    fn call(&mut self, changes: &[Change]) -> Result<Vec<Change>, TransformError> {
        match self.max_batch {
            Some(max) if changes.len() > max => {
                let mut out = Vec::with_capacity(changes.len());
                for chunk in changes.chunks(max.max(1)) {
                    out.extend(self.call_split(chunk, 0)?);
                }
                Ok(out)
            }
            _ => self.call_split(changes, 0),
        }
    }

    /// One call; when it runs out of memory or time, the two halves of the batch on a
    /// fresh instance (and at most half as many changes per call from then on).
    fn call_split(
        &mut self,
        changes: &[Change],
        depth: u32,
    ) -> Result<Vec<Change>, TransformError> {
        match self.call_once(changes) {
            Err(error) if error.is_exhaustion() && changes.len() > 1 && depth < MAX_SPLITS => {
                self.instance = None;
                let half = changes.len().div_ceil(2);
                self.shrink_batch(half, &error.to_string());
                let (a, b) = changes.split_at(half);
                let mut out = self.call_split(a, depth + 1)?;
                out.extend(self.call_split(b, depth + 1)?);
                Ok(out)
            }
            other => other,
        }
    }

    fn shrink_batch(&mut self, to: usize, why: &str) {
        if self.max_batch.is_none_or(|m| m > to) {
            self.max_batch = Some(to);
            tracing::warn!(module = %self.module.name, max_changes_per_call = to, reason = why, "handing this transform smaller batches from now on (raise its memory_mb or timeout_ms to avoid it)");
        }
    }

    /// [`Stage::call`] for a batch-world module, which takes the batch and gives it back
    /// unedited with the error.
    fn call_owned(
        &mut self,
        changes: Vec<Change>,
    ) -> Result<Vec<Change>, (TransformError, Vec<Change>)> {
        match self.max_batch {
            Some(max) if changes.len() > max => {
                // Rare (the module ran out of memory or time before): a copy lets a
                // failure hand back the batch as it came in.
                let backup = changes.clone();
                let mut out = Vec::with_capacity(changes.len());
                let mut rest = changes;
                while !rest.is_empty() {
                    let tail = rest.split_off(max.max(1).min(rest.len()));
                    match self.call_split_owned(rest, 0) {
                        Ok(o) => out.extend(o),
                        Err((e, _)) => return Err((e, backup)),
                    }
                    rest = tail;
                }
                Ok(out)
            }
            _ => self.call_split_owned(changes, 0),
        }
    }

    /// [`Stage::call_split`] for a batch-world module.
    fn call_split_owned(
        &mut self,
        changes: Vec<Change>,
        depth: u32,
    ) -> Result<Vec<Change>, (TransformError, Vec<Change>)> {
        match self.call_once_owned(changes) {
            Err((error, changes))
                if error.is_exhaustion() && changes.len() > 1 && depth < MAX_SPLITS =>
            {
                self.instance = None;
                let half = changes.len().div_ceil(2);
                self.shrink_batch(half, &error.to_string());
                let backup = changes.clone();
                let mut a = changes;
                let b = a.split_off(half);
                let mut out = match self.call_split_owned(a, depth + 1) {
                    Ok(o) => o,
                    Err((e, _)) => return Err((e, backup)),
                };
                match self.call_split_owned(b, depth + 1) {
                    Ok(o) => out.extend(o),
                    Err((e, _)) => return Err((e, backup)),
                }
                Ok(out)
            }
            other => other,
        }
    }

    fn call_once_owned(
        &mut self,
        changes: Vec<Change>,
    ) -> Result<Vec<Change>, (TransformError, Vec<Change>)> {
        let instance = match &mut self.instance {
            Some(i) => i,
            None => match self.module.instantiate() {
                Ok(i) => self.instance.insert(i),
                Err(e) => return Err((e, changes)),
            },
        };
        instance.set_origins(self.origins.clone());
        let (batch, result) = instance.transform_batch(Changes::new(changes));
        self.recycle_if_large();
        match result {
            Ok(()) => Ok(batch.into_edited(&mut self.shapes)),
            Err(e) => Err((e, batch.into_unedited())),
        }
    }

    /// Replaces the instance before the next call when its memory passed
    /// [`RECYCLE_SHARE`] of its cap (its last output is already out of its memory).
    fn recycle_if_large(&mut self) {
        let Some(instance) = &self.instance else {
            return;
        };
        let memory = instance.memory_bytes();
        let cap = self.module.memory_cap();
        if memory > cap / RECYCLE_SHARE.1 * RECYCLE_SHARE.0 {
            self.instance = None;
            self.recycled += 1;
            let (module, mib, cap_mib) = (&self.module.name, memory >> 20, cap >> 20);
            if self.recycled == 1 {
                tracing::info!(module = %module, memory_mib = mib, cap_mib, "transform instance replaced by a fresh one (init runs again): its memory passed 3/4 of its cap");
            } else {
                tracing::debug!(module = %module, memory_mib = mib, cap_mib, recycled = self.recycled, "transform instance replaced");
            }
        }
    }

    fn call_once(&mut self, changes: &[Change]) -> Result<Vec<Change>, TransformError> {
        let instance = match &mut self.instance {
            Some(i) => i,
            None => self.instance.insert(self.module.instantiate()?),
        };
        instance.set_origins(self.origins.clone());
        let output = if self.module.is_json() {
            let encoded = json_batch::encode(changes);
            let json = instance.transform_json(encoded.json.as_bytes(), changes.len())?;
            Output::Json(encoded.relations, json)
        } else {
            let input: Vec<_> = changes.iter().map(to_wit).collect();
            Output::Wit(instance.transform(input)?)
        };
        self.recycle_if_large();
        match output {
            Output::Wit(output) => self.from_guest.convert(changes, output),
            Output::Json(relations, json) => json_batch::decode(changes, &relations, &json),
        }
        .map_err(|source| TransformError::BadOutput {
            module: self.module.name.to_string(),
            source,
        })
    }
}

/// What a module returned, in its world's form.
enum Output {
    Wit(Vec<super::runtime::wit::Change>),
    Json(Vec<Arc<crate::change::Table>>, Vec<u8>),
}
