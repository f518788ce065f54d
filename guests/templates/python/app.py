"""__NAME__: hashes `email` (SHA-256, hex), drops deletes, routes by table. World
transform-batch: the batch stays in the host; read and edit it by index."""
import hashlib

from wit_world import exports
from wit_world.imports.batch import Changes
from wit_world.imports.types import Op, Value_Text


class BatchTransformer(exports.BatchTransformer):
    def init(self, config: list[tuple[str, str]]) -> None:
        pass

    def transform(self, changes: Changes) -> None:
        rels, ops = changes.relations(), changes.ops()
        for i, r in enumerate(changes.relation_ids()):
            if ops[i] == Op.DELETE:
                changes.discard(i)
                continue
            if r < 0:
                continue  # a message: no table
            rel = rels[r]
            email = next((c for c, col in enumerate(rel.columns) if col.name == "email"), None)
            v = None if email is None else changes.get(i, email)
            if isinstance(v, Value_Text):
                changes.set(i, email, Value_Text(hashlib.sha256(v.value.encode()).hexdigest()))
            changes.route(i, f"cdc.{rel.schema}.{rel.table}")
