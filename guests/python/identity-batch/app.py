"""identity-batch: passes every batch on unchanged, in the batch world
(wit/batch.wit): the changes stay in the host, so a batch costs one call (for
tests and for measuring what crossing the component boundary costs)."""
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.batch import Changes

ready = False


class BatchTransformer(exports.BatchTransformer):
    def init(self, config: list[tuple[str, str]]) -> None:
        global ready
        ready = True

    def transform(self, changes: Changes) -> None:
        if not ready:
            raise Err("transform called before a successful init")
