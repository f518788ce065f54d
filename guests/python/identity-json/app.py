"""identity-json: returns every batch unchanged, in the JSON world (wit/json.wit):
the batch arrives as one JSON document (UTF-8 bytes) and goes back as it came."""
from componentize_py_types import Err
from wit_world import exports

ready = False


class JsonTransformer(exports.JsonTransformer):
    def init(self, config: list[tuple[str, str]]) -> None:
        global ready
        ready = True

    def transform(self, batch: bytes) -> bytes:
        if not ready:
            raise Err("transform called before a successful init")
        return batch
