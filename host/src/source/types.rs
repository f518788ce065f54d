//! Resolving column type oids to value types.
//!
//! pgoutput names a column's type by oid only (and sends `Type` messages with just a name
//! for non-builtin ones), so domains, enums and arrays of them need one catalog look-up,
//! made once per oid when a `Relation` message first mentions it.

use std::collections::HashMap;

use super::control::Control;
use super::error::SourceError;
use crate::value::{builtin_type, TypeInfo, TypeKind};

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

    /// Forgets a type (pgoutput sent a `Type` message: it may have changed).
    pub fn invalidate(&mut self, oid: u32) {
        self.resolved.remove(&oid);
    }
}
