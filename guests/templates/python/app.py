"""__NAME__: hashes `email` (SHA-256, hex), drops deletes, routes by table."""
import hashlib

from wit_world import exports
from wit_world.imports.types import Change, Op, Value_Text


class Transformer(exports.Transformer):
    def init(self, config: list[tuple[str, str]]) -> None:
        pass

    def transform(self, changes: list[Change]) -> list[Change]:
        out = []
        for c in changes:
            if c.op == Op.DELETE:
                continue
            for col in c.after or []:
                if col.name == "email" and isinstance(col.value, Value_Text):
                    col.value = Value_Text(hashlib.sha256(col.value.value.encode()).hexdigest())
            c.route = f"cdc.{c.schema}.{c.table}"
            out.append(c)
        return out
