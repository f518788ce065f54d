"""identity: returns every batch unchanged (for tests and for measuring what
crossing the component boundary costs)."""
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import Change

ready = False


class Transformer(exports.Transformer):
    def init(self, config: list[tuple[str, str]]) -> None:
        global ready
        ready = True

    def transform(self, changes: list[Change]) -> list[Change]:
        if not ready:
            raise Err("transform called before a successful init")
        return changes
