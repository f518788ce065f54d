//! World `transform-batch` (`wit/batch.wit`): the batch stays in the host as a resource
//! that the guest reads and edits through calls, so a guest pays only for what it
//! touches.
//!
//! Why: lifting every change into guest objects is what made JavaScript and Python
//! transforms crawl (issue 17: 3–30k changes/s), and lowering ~12 strings per change into
//! the guest capped even Rust and C near 200k/s. Here an identity costs one call per
//! batch, a filter reads ops and relation ids in one call each, a mask sets one value per
//! row.
//!
//! The changes are never modified during the call: edits go to an overlay
//! ([`Edit`]), applied only when the guest returns `ok`. After an error or a trap the
//! host gets the batch back exactly as it came in, to retry it in halves on a fresh
//! instance or hand it to a dead-letter sink.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::convert::{check_routing, oid_of, value_from_wit, value_to_wit};
use super::runtime::batch02::cdc::pipeline::batch as api;
use super::runtime::{wit, HostState};
use crate::change::{Change, Column, Op, Routing, Row, Table};
use crate::value::{builtin_type, TypeInfo, TypeKind, Value};

/// The resource behind `cdc:pipeline/batch.changes`: one batch, for one call.
#[derive(Debug)]
pub struct Changes {
    changes: Vec<Change>,
    /// Each change's index into `relations`; [`NO_RELATION`] for a message.
    rel_of: Vec<i32>,
    relations: Vec<Arc<Table>>,
    /// Per change, what the guest changed; `None` for most.
    edits: Vec<Option<Box<Edit>>>,
}

const NO_RELATION: i32 = -1;

/// A guest's edits of one change.
#[derive(Debug, Default)]
struct Edit {
    /// `(column, value, the value's builtin type oid)`.
    after: Vec<(u32, Value, u32)>,
    before: Vec<(u32, Value, u32)>,
    discard: bool,
    routing: Option<Routing>,
}

impl Changes {
    /// Wraps a batch; each table gets its index the first time it appears.
    pub fn new(changes: Vec<Change>) -> Self {
        let mut relations: Vec<Arc<Table>> = Vec::new();
        let mut last: Option<(*const Table, i32)> = None;
        let rel_of = changes
            .iter()
            .map(|c| match &c.table {
                None => NO_RELATION,
                Some(t) => match last {
                    Some((p, i)) if std::ptr::eq(p, Arc::as_ptr(t)) => i,
                    _ => {
                        let i = match relations.iter().position(|r| Arc::ptr_eq(r, t)) {
                            Some(i) => i as i32,
                            None => {
                                relations.push(Arc::clone(t));
                                relations.len() as i32 - 1
                            }
                        };
                        last = Some((Arc::as_ptr(t), i));
                        i
                    }
                },
            })
            .collect();
        let edits = std::iter::repeat_with(|| None)
            .take(changes.len())
            .collect();
        Changes {
            changes,
            rel_of,
            relations,
            edits,
        }
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The batch as it came in (after an error: nothing the guest did applies).
    pub fn into_unedited(self) -> Vec<Change> {
        self.changes
    }

    /// The batch with the guest's edits applied: discarded changes left out, set values
    /// in place, a column whose new value is of another type retyped (through `shapes`,
    /// so every change of a table masked alike shares one table).
    /// Infallible: every value and route was checked when the guest set it.
    pub fn into_edited(self, shapes: &mut Shapes) -> Vec<Change> {
        if self.edits.iter().all(Option::is_none) {
            return self.changes;
        }
        let mut out = Vec::with_capacity(self.changes.len());
        for (mut c, edit) in self.changes.into_iter().zip(self.edits) {
            let Some(edit) = edit else {
                out.push(c);
                continue;
            };
            if edit.discard {
                continue;
            }
            if let Some(table) = &c.table {
                let mut table = Arc::clone(table);
                for (col, _, oid) in edit.after.iter().chain(&edit.before) {
                    table = shapes.fitting(&table, *col as usize, *oid);
                }
                for (col, v, _) in edit.after {
                    if let Some(row) = &mut c.after {
                        row.0[col as usize] = v;
                    }
                }
                for (col, v, _) in edit.before {
                    if let Some((_, row)) = &mut c.before {
                        row.0[col as usize] = v;
                    }
                }
                c.table = Some(table);
            }
            if let Some(r) = edit.routing {
                c.routing = Some(Box::new(r));
            }
            out.push(c);
        }
        out
    }

    fn change(&self, index: u32) -> wasmtime::Result<&Change> {
        self.changes.get(index as usize).ok_or_else(|| {
            wasmtime::format_err!(
                "change index {index} is out of range (the batch holds {})",
                self.changes.len()
            )
        })
    }

    fn edit(&mut self, index: u32) -> wasmtime::Result<&mut Edit> {
        self.change(index)?;
        Ok(self.edits[index as usize].get_or_insert_with(Default::default))
    }

    /// The change's routing as edited so far (starting from what it came in with).
    fn routing(&mut self, index: u32) -> wasmtime::Result<&mut Routing> {
        let current = self.change(index)?.routing.as_deref().cloned();
        let edit = self.edit(index)?;
        Ok(edit.routing.get_or_insert_with(|| {
            current.unwrap_or(Routing {
                route: None,
                headers: Vec::new(),
            })
        }))
    }

    fn table(&self, index: u32) -> wasmtime::Result<Option<&Arc<Table>>> {
        Ok(self.change(index)?.table.as_ref())
    }

    fn column(&self, index: u32, column: u32) -> wasmtime::Result<Option<&Column>> {
        let Some(t) = self.table(index)? else {
            return Ok(None);
        };
        t.columns.get(column as usize).map(Some).ok_or_else(|| {
            wasmtime::format_err!(
                "column index {column} is out of range ({}.{} has {} columns)",
                t.schema,
                t.name,
                t.columns.len()
            )
        })
    }

    /// One value of a row image, edits seen; `None` when the change has no such row
    /// (or no table).
    fn current(&self, index: u32, column: u32, after: bool) -> wasmtime::Result<Option<&Value>> {
        if self.column(index, column)?.is_none() {
            return Ok(None);
        }
        let Some(row) = image(&self.changes[index as usize], after) else {
            return Ok(None);
        };
        let edited = self.edits[index as usize].as_ref().and_then(|e| {
            let edits = if after { &e.after } else { &e.before };
            edits.iter().rev().find(|(c, _, _)| *c == column)
        });
        Ok(edited.map(|(_, v, _)| v).or(row.0.get(column as usize)))
    }

    /// [`Changes::current`] as the guest gets it.
    fn value(&self, index: u32, column: u32, after: bool) -> wasmtime::Result<Option<wit::Value>> {
        Ok(self.current(index, column, after)?.map(value_to_wit))
    }

    /// A whole row image, edits seen.
    fn row(&self, index: u32, after: bool) -> wasmtime::Result<Option<Vec<wit::Value>>> {
        let Some(row) = image(self.change(index)?, after) else {
            return Ok(None);
        };
        let mut values: Vec<wit::Value> = row.0.iter().map(value_to_wit).collect();
        if let Some(edit) = &self.edits[index as usize] {
            for (col, v, _) in if after { &edit.after } else { &edit.before } {
                values[*col as usize] = value_to_wit(v);
            }
        }
        Ok(Some(values))
    }

    /// Whether `index` may have `column` of its new (`after`) or old row set; the
    /// column's type when it may.
    fn settable(
        &self,
        index: u32,
        column: u32,
        after: bool,
    ) -> wasmtime::Result<Result<&Column, String>> {
        let Some(col) = self.column(index, column)? else {
            return Ok(Err(format!(
                "change {index} is a {} without a table: it has no columns to set",
                self.changes[index as usize].op.as_str()
            )));
        };
        let c = &self.changes[index as usize];
        if image(c, after).is_none() {
            return Ok(Err(format!(
                "change {index} (a {}) has no {} row",
                c.op.as_str(),
                if after { "new" } else { "old" }
            )));
        }
        Ok(Ok(col))
    }

    /// A guest's value for column `col`: checked, converted, with the builtin type it
    /// stands for (the column's own for an array into an array column).
    fn prepare(col: &Column, value: wit::Value) -> Result<(Value, u32), String> {
        let oid = match (&value, &col.type_info.kind) {
            (wit::Value::Array(_), TypeKind::Array(_)) => col.type_oid,
            (wit::Value::Array(_), _) => {
                return Err(format!(
                    "column {:?} is not an array: an array value cannot be set in it",
                    col.name
                ))
            }
            (v, _) => oid_of(v),
        };
        let value = value_from_wit(value).map_err(|e| format!("column {}: {e}", col.name))?;
        Ok((value, oid))
    }

    fn put(&mut self, index: u32, column: u32, value: Value, oid: u32, after: bool) {
        let edit = self.edits[index as usize].get_or_insert_with(Default::default);
        let edits = if after {
            &mut edit.after
        } else {
            &mut edit.before
        };
        match edits.iter_mut().find(|(c, _, _)| *c == column) {
            Some(e) => *e = (column, value, oid),
            None => edits.push((column, value, oid)),
        }
    }

    fn set(
        &mut self,
        index: u32,
        column: u32,
        value: wit::Value,
        after: bool,
    ) -> wasmtime::Result<Result<(), String>> {
        let col = match self.settable(index, column, after)? {
            Ok(col) => col,
            Err(e) => return Ok(Err(e)),
        };
        let (value, oid) = match Self::prepare(col, value) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        self.put(index, column, value, oid, after);
        Ok(Ok(()))
    }

    fn get_many(
        &self,
        indexes: &[u32],
        column: u32,
        after: bool,
    ) -> wasmtime::Result<Vec<Option<wit::Value>>> {
        indexes
            .iter()
            .map(|&i| self.value(i, column, after))
            .collect()
    }

    /// `value-kinds`: 0 no such row, 1 null, 2 unchanged-toast, 3 a value.
    fn kinds(&self, indexes: &[u32], column: u32, after: bool) -> wasmtime::Result<Vec<u8>> {
        indexes
            .iter()
            .map(|&index| {
                let Some(value) = self.current(index, column, after)? else {
                    return Ok(0);
                };
                Ok(match value {
                    Value::Null => 1,
                    Value::UnchangedToast => 2,
                    _ => 3,
                })
            })
            .collect()
    }

    /// `values`: one per index, or one for all. Nothing is set unless all can be.
    fn set_many(
        &mut self,
        indexes: &[u32],
        column: u32,
        values: Vec<wit::Value>,
        after: bool,
    ) -> wasmtime::Result<Result<(), String>> {
        let broadcast = values.len() == 1 && indexes.len() != 1;
        if !broadcast && values.len() != indexes.len() {
            return Ok(Err(format!(
                "{} values for {} changes: give one value per change, or one for all",
                values.len(),
                indexes.len()
            )));
        }
        let Some(&first) = indexes.first() else {
            return Ok(Ok(()));
        };
        // Convert (once for a single value), then check every change's column.
        let mut converted = Vec::with_capacity(values.len());
        let targets: &[u32] = if broadcast {
            std::slice::from_ref(&first)
        } else {
            indexes
        };
        for (&index, v) in targets.iter().zip(values) {
            let col = match self.settable(index, column, after)? {
                Ok(col) => col,
                Err(e) => return Ok(Err(e)),
            };
            match Self::prepare(col, v) {
                Ok(p) => converted.push(p),
                Err(e) => return Ok(Err(e)),
            }
        }
        let mut oids = Vec::with_capacity(indexes.len());
        for (k, &index) in indexes.iter().enumerate() {
            let col = match self.settable(index, column, after)? {
                Ok(col) => col,
                Err(e) => return Ok(Err(e)),
            };
            let (value, oid) = &converted[if broadcast { 0 } else { k }];
            oids.push(match (value, &col.type_info.kind) {
                (Value::Array(_), TypeKind::Array(_)) => col.type_oid,
                (Value::Array(_), _) => {
                    return Ok(Err(format!(
                        "change {index}: column {:?} is not an array: an array value cannot be set in it",
                        col.name
                    )))
                }
                _ => *oid,
            });
        }
        if broadcast {
            let value = converted.pop().map_or(Value::Null, |(v, _)| v);
            for (&index, oid) in indexes.iter().zip(oids) {
                self.put(index, column, value.clone(), oid, after);
            }
        } else {
            for ((&index, (value, _)), oid) in indexes.iter().zip(converted).zip(oids) {
                self.put(index, column, value, oid, after);
            }
        }
        Ok(Ok(()))
    }

    fn info(&self, index: u32) -> wasmtime::Result<api::ChangeInfo> {
        let c = self.change(index)?;
        let rel = self.rel_of[index as usize];
        let mut w = super::convert::to_wit_meta(c);
        Ok(api::ChangeInfo {
            id: std::mem::take(&mut w.id),
            op: w.op,
            relation: (rel != NO_RELATION).then_some(rel as u32),
            lsn: w.lsn,
            commit_lsn: w.commit_lsn,
            xid: w.xid,
            commit_ts: w.commit_ts,
            has_before: c.before.is_some(),
            before_is_full: w.before_is_full,
            has_after: c.after.is_some(),
            truncate: w.truncate,
            message: w.message.take(),
            snapshot: w.snapshot,
        })
    }
}

/// Tables reshaped by edits (a column set to a value of another type), remembered across
/// batches so that every change masked alike shares one `Arc<Table>` — the encoders cache
/// per table.
#[derive(Debug, Default)]
pub struct Shapes {
    /// `(table as it came in, column, new type oid)` → the retyped table. The input
    /// table is kept alive here, so its address stays a valid key.
    known: Vec<(Arc<Table>, usize, u32, Arc<Table>)>,
}

/// Bound on remembered shapes (a guest inventing types per change must not grow memory
/// without end).
const MAX_SHAPES: usize = 256;

impl Shapes {
    /// `table`, or the table with column `col` of type `oid` when its own type does
    /// not take that value (`oid` 0: an array into an array column, always fits).
    fn fitting(&mut self, table: &Arc<Table>, col: usize, oid: u32) -> Arc<Table> {
        let Some(column) = table.columns.get(col) else {
            return Arc::clone(table);
        };
        if oid == 0 || takes(&column.type_info, oid) {
            return Arc::clone(table);
        }
        if let Some((_, _, _, t)) = self
            .known
            .iter()
            .find(|(t, c, o, _)| Arc::ptr_eq(t, table) && *c == col && *o == oid)
        {
            return Arc::clone(t);
        }
        let columns = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| Column {
                name: Arc::clone(&c.name),
                type_oid: if i == col { oid } else { c.type_oid },
                type_info: if i == col {
                    builtin_type(oid).unwrap_or_else(|| TypeInfo::other(oid))
                } else {
                    c.type_info.clone()
                },
                is_key: c.is_key,
            })
            .collect();
        let t = Arc::new(Table {
            columns,
            schema: Arc::clone(&table.schema),
            name: Arc::clone(&table.name),
            ..**table
        });
        if self.known.len() >= MAX_SHAPES {
            self.known.clear();
        }
        self.known
            .push((Arc::clone(table), col, oid, Arc::clone(&t)));
        t
    }
}

/// Whether a column of type `ty` holds values of the builtin type `oid` (a value's
/// [`oid_of`]): `text` in a `varchar` column stays a `varchar`, a `text` in an `int4`
/// column makes it `text`.
fn takes(ty: &TypeInfo, oid: u32) -> bool {
    use crate::value::oid as o;
    let kind_oid = match &ty.kind {
        TypeKind::Bool => o::BOOL,
        TypeKind::Int2 => o::INT2,
        TypeKind::Int4 => o::INT4,
        TypeKind::Int8 => o::INT8,
        TypeKind::Float4 => o::FLOAT4,
        TypeKind::Float8 => o::FLOAT8,
        TypeKind::Numeric => o::NUMERIC,
        TypeKind::Text => o::TEXT,
        TypeKind::Bytea => o::BYTEA,
        TypeKind::Json => o::JSON,
        TypeKind::Jsonb => o::JSONB,
        TypeKind::Uuid => o::UUID,
        TypeKind::Date => o::DATE,
        TypeKind::Time => o::TIME,
        TypeKind::TimeTz => o::TIMETZ,
        TypeKind::Timestamp => o::TIMESTAMP,
        TypeKind::TimestampTz => o::TIMESTAMPTZ,
        TypeKind::Interval => o::INTERVAL,
        // An enum label is set as `enum-label`, whose builtin oid is text's.
        TypeKind::Enum => return oid == o::TEXT || oid == ty.oid,
        TypeKind::Array(_) => return oid == ty.oid,
        TypeKind::Composite(_) | TypeKind::Hstore | TypeKind::ExtText { .. } | TypeKind::Other => {
            ty.oid
        }
    };
    kind_oid == oid || ty.oid == oid
}

fn changes<'a>(
    host: &'a mut HostState,
    r: &Resource<Changes>,
) -> wasmtime::Result<&'a mut Changes> {
    Ok(host.table.get_mut(r)?)
}

impl api::HostChanges for HostState {
    fn len(&mut self, r: Resource<Changes>) -> wasmtime::Result<u32> {
        Ok(changes(self, &r)?.changes.len() as u32)
    }

    fn relations(&mut self, r: Resource<Changes>) -> wasmtime::Result<Vec<api::Relation>> {
        Ok(changes(self, &r)?
            .relations
            .iter()
            .map(|t| api::Relation {
                schema: t.schema.to_string(),
                table: t.name.to_string(),
                columns: t
                    .columns
                    .iter()
                    .map(|c| api::ColumnInfo {
                        name: c.name.to_string(),
                        type_oid: c.type_oid,
                        is_key: c.is_key,
                    })
                    .collect(),
            })
            .collect())
    }

    fn relation_ids(&mut self, r: Resource<Changes>) -> wasmtime::Result<Vec<i32>> {
        Ok(changes(self, &r)?.rel_of.clone())
    }

    fn ops(&mut self, r: Resource<Changes>) -> wasmtime::Result<Vec<wit::Op>> {
        Ok(changes(self, &r)?
            .changes
            .iter()
            .map(|c| wit_op(c.op))
            .collect())
    }

    fn op(&mut self, r: Resource<Changes>, index: u32) -> wasmtime::Result<wit::Op> {
        Ok(wit_op(changes(self, &r)?.change(index)?.op))
    }

    fn info(&mut self, r: Resource<Changes>, index: u32) -> wasmtime::Result<api::ChangeInfo> {
        changes(self, &r)?.info(index)
    }

    fn get(
        &mut self,
        r: Resource<Changes>,
        index: u32,
        column: u32,
    ) -> wasmtime::Result<Option<wit::Value>> {
        changes(self, &r)?.value(index, column, true)
    }

    fn get_before(
        &mut self,
        r: Resource<Changes>,
        index: u32,
        column: u32,
    ) -> wasmtime::Result<Option<wit::Value>> {
        changes(self, &r)?.value(index, column, false)
    }

    fn after(
        &mut self,
        r: Resource<Changes>,
        index: u32,
    ) -> wasmtime::Result<Option<Vec<wit::Value>>> {
        changes(self, &r)?.row(index, true)
    }

    fn before(
        &mut self,
        r: Resource<Changes>,
        index: u32,
    ) -> wasmtime::Result<Option<Vec<wit::Value>>> {
        changes(self, &r)?.row(index, false)
    }

    fn set(
        &mut self,
        r: Resource<Changes>,
        index: u32,
        column: u32,
        value: wit::Value,
    ) -> wasmtime::Result<Result<(), String>> {
        changes(self, &r)?.set(index, column, value, true)
    }

    fn set_before(
        &mut self,
        r: Resource<Changes>,
        index: u32,
        column: u32,
        value: wit::Value,
    ) -> wasmtime::Result<Result<(), String>> {
        changes(self, &r)?.set(index, column, value, false)
    }

    fn get_many(
        &mut self,
        r: Resource<Changes>,
        indexes: Vec<u32>,
        column: u32,
    ) -> wasmtime::Result<Vec<Option<wit::Value>>> {
        changes(self, &r)?.get_many(&indexes, column, true)
    }

    fn get_many_before(
        &mut self,
        r: Resource<Changes>,
        indexes: Vec<u32>,
        column: u32,
    ) -> wasmtime::Result<Vec<Option<wit::Value>>> {
        changes(self, &r)?.get_many(&indexes, column, false)
    }

    fn value_kinds(
        &mut self,
        r: Resource<Changes>,
        indexes: Vec<u32>,
        column: u32,
    ) -> wasmtime::Result<Vec<u8>> {
        changes(self, &r)?.kinds(&indexes, column, true)
    }

    fn value_kinds_before(
        &mut self,
        r: Resource<Changes>,
        indexes: Vec<u32>,
        column: u32,
    ) -> wasmtime::Result<Vec<u8>> {
        changes(self, &r)?.kinds(&indexes, column, false)
    }

    fn set_many(
        &mut self,
        r: Resource<Changes>,
        indexes: Vec<u32>,
        column: u32,
        values: Vec<wit::Value>,
    ) -> wasmtime::Result<Result<(), String>> {
        changes(self, &r)?.set_many(&indexes, column, values, true)
    }

    fn set_many_before(
        &mut self,
        r: Resource<Changes>,
        indexes: Vec<u32>,
        column: u32,
        values: Vec<wit::Value>,
    ) -> wasmtime::Result<Result<(), String>> {
        changes(self, &r)?.set_many(&indexes, column, values, false)
    }

    fn discard(&mut self, r: Resource<Changes>, index: u32) -> wasmtime::Result<()> {
        changes(self, &r)?.edit(index)?.discard = true;
        Ok(())
    }

    fn route(
        &mut self,
        r: Resource<Changes>,
        index: u32,
        subject: String,
    ) -> wasmtime::Result<Result<(), String>> {
        let candidate = Routing {
            route: Some(subject),
            headers: Vec::new(),
        };
        if let Err(e) = check_routing(&candidate) {
            return Ok(Err(e));
        }
        changes(self, &r)?.routing(index)?.route = candidate.route;
        Ok(Ok(()))
    }

    fn add_header(
        &mut self,
        r: Resource<Changes>,
        index: u32,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), String>> {
        let candidate = Routing {
            route: None,
            headers: vec![(name, value)],
        };
        if let Err(e) = check_routing(&candidate) {
            return Ok(Err(e));
        }
        changes(self, &r)?
            .routing(index)?
            .headers
            .extend(candidate.headers);
        Ok(Ok(()))
    }

    fn drop(&mut self, _r: Resource<Changes>) -> wasmtime::Result<()> {
        // Only ever lent to the guest (`borrow<changes>`): the host removes it from the
        // table after the call.
        Ok(())
    }
}

impl api::Host for HostState {}

/// The new (`after`) or old row image of a change.
fn image(c: &Change, after: bool) -> Option<&Row> {
    if after {
        c.after.as_ref()
    } else {
        c.before.as_ref().map(|(_, r)| r)
    }
}

fn wit_op(op: Op) -> wit::Op {
    match op {
        Op::Insert => wit::Op::Insert,
        Op::Update => wit::Op::Update,
        Op::Delete => wit::Op::Delete,
        Op::Truncate => wit::Op::Truncate,
        Op::Message => wit::Op::Message,
        Op::Read => wit::Op::Read,
    }
}

#[cfg(test)]
mod tests;
