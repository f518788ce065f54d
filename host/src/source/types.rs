//! Resolving column type oids to value types.
//!
//! pgoutput names a column's type by oid only (and sends `Type` messages with just a name
//! for non-builtin ones), so domains, enums, composites (their fields' names and types),
//! `hstore` and arrays of them need one catalog look-up, made once per oid when a
//! `Relation` message first mentions it.

use std::collections::HashMap;

use super::control::Control;
use super::error::SourceError;
use crate::value::{builtin_type, Field, TypeInfo, TypeKind};

/// Domains over domains over arrays … deeper than this is a catalog cycle or absurd.
const MAX_DEPTH: usize = 16;

/// Cache of resolved types.
#[derive(Debug, Default)]
pub struct TypeRegistry {
    resolved: HashMap<u32, TypeInfo>,
}

impl TypeRegistry {
    /// The value type for `oid`, asking the catalog when it is not a builtin.
    pub async fn resolve(&mut self, oid: u32, control: &Control) -> Result<TypeInfo, SourceError> {
        self.resolve_depth(oid, control, 0).await
    }

    async fn resolve_depth(
        &mut self,
        oid: u32,
        control: &Control,
        depth: usize,
    ) -> Result<TypeInfo, SourceError> {
        if let Some(t) = builtin_type(oid).or_else(|| self.resolved.get(&oid).cloned()) {
            return Ok(t);
        }
        let other = TypeInfo {
            oid,
            kind: TypeKind::Other,
        };
        if depth >= MAX_DEPTH {
            return Ok(other);
        }
        let Some(row) = control.type_row(oid).await? else {
            return Ok(other);
        };
        let info = match (row.typtype, row.category) {
            // A domain is rendered as its base type.
            (b'd', _) => Box::pin(self.resolve_depth(row.base_type, control, depth + 1)).await?,
            (b'e', _) => TypeInfo {
                oid,
                kind: TypeKind::Enum,
            },
            (b'c', _) if row.relation != 0 => {
                let mut fields = Vec::new();
                for (name, field_oid) in control.composite_fields(row.relation).await? {
                    let ty = Box::pin(self.resolve_depth(field_oid, control, depth + 1)).await?;
                    fields.push(Field {
                        name: name.into(),
                        ty,
                    });
                }
                TypeInfo::composite(oid, fields)
            }
            (b'b', _) if row.input == "hstore_in" => TypeInfo::hstore(oid),
            (b'b', _) if row.input == "citextin" => TypeInfo::ext_text(oid, false),
            (b'b', _) if matches!(row.input.as_str(), "ltree_in" | "lquery_in") => {
                TypeInfo::ext_text(oid, true)
            }
            (_, b'A') if row.element != 0 => {
                let elem = Box::pin(self.resolve_depth(row.element, control, depth + 1)).await?;
                TypeInfo {
                    oid,
                    kind: TypeKind::Array(std::sync::Arc::new(elem)),
                }
            }
            _ => other,
        };
        tracing::debug!(oid, name = %row.name, ?info, "resolved column type");
        self.resolved.insert(oid, info.clone());
        Ok(info)
    }

    /// Forgets a type (pgoutput sent a `Type` message: it may have changed), and every
    /// composite, since one may hold it (or have gained or lost fields itself).
    pub fn invalidate(&mut self, oid: u32) {
        self.resolved.remove(&oid);
        self.resolved.retain(|_, t| !holds_composite(t));
    }
}

impl TypeRegistry {
    /// Forgets every composite (and array of them): the next look-up reads its fields from
    /// the catalog again.
    pub fn forget_composites(&mut self) {
        self.resolved.retain(|_, t| !holds_composite(t));
    }
}

/// Whether `t` is a composite, or an array of them.
pub fn holds_composite(t: &TypeInfo) -> bool {
    match &t.kind {
        TypeKind::Composite(_) => true,
        TypeKind::Array(e) => holds_composite(e),
        _ => false,
    }
}
