"""mask-columns-json: replaces the values of the named columns with the text "***",
in the JSON world (wit/json.wit): one json.loads and one json.dumps per batch.

[transforms.config] (every value is a string):
  columns = "email, phone"         required: column names, comma-separated
  tables  = "public.users, crm.*"  optional: `schema.table` or a bare `table` (any
                                   schema); `*` matches any run of characters;
                                   default: every table
  mode    = "redact"               optional: the only mode

In `after` and in `before`, every value of a named column that is not null (and not
unchanged-toast: such a column is absent from the row) becomes the text "***", and the
change's `types` says the column is now text (oid 25).
"""
import json
import re

from componentize_py_types import Err
from wit_world import exports

KNOWN_KEYS = ("columns", "tables", "mode")
TEXT_OID = 25


def split_list(s: str) -> list[str]:
    """"a, b,," -> ["a", "b"]"""
    return [x.strip() for x in s.split(",") if x.strip()]


def glob(pattern: str) -> re.Pattern[str]:
    """`*`-only glob as a regular expression (use with fullmatch)."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def table_patterns(value: str) -> list[tuple[re.Pattern[str] | None, re.Pattern[str]]]:
    """Split at the first dot; a bare name matches in any schema."""
    patterns = []
    for p in split_list(value):
        schema, dot, table = p.partition(".")
        if not dot:
            schema, table = None, p
        if table == "" or schema == "":
            raise Err(f"bad table pattern `{p}`: want schema.table or table")
        patterns.append((None if schema is None else glob(schema), glob(table)))
    return patterns


class MaskColumns:
    def __init__(self, config: list[tuple[str, str]]) -> None:
        for key, _ in config:
            if key not in KNOWN_KEYS:
                raise Err(f"unknown config key `{key}` (known keys: {', '.join(KNOWN_KEYS)})")
        cfg = dict(config)  # the last value wins when a key repeats
        self.columns = frozenset(split_list(cfg.get("columns", "")))
        if not self.columns:
            raise Err("mask-columns: set columns")
        self.patterns = table_patterns(cfg["tables"]) if "tables" in cfg else None
        mode = cfg.get("mode", "redact")
        if mode != "redact":
            raise Err(f"unknown mode `{mode}`: use redact")

    def table_matches(self, rel: dict) -> bool:
        return self.patterns is None or any(
            (s is None or s.fullmatch(rel["schema"])) and t.fullmatch(rel["table"])
            for s, t in self.patterns
        )

    def transform(self, batch: bytes) -> bytes:
        doc = json.loads(batch)
        # Per table of the batch, once: the names of its columns to mask.
        masked = [
            [c["name"] for c in rel["columns"] if c["name"] in self.columns]
            if self.table_matches(rel) else []
            for rel in doc["relations"]
        ]
        changes = doc["changes"]
        for change in changes:
            rel = change.get("rel")
            names = masked[rel] if rel is not None else None
            if names:
                for row in (change["after"], change["before"]):
                    if row:
                        for name in names:
                            if row.get(name) is not None:
                                row[name] = "***"
                                change.setdefault("types", {})[name] = TEXT_OID
        return json.dumps(changes, separators=(",", ":"), ensure_ascii=False).encode()


state: MaskColumns | None = None  # set by a successful init


class JsonTransformer(exports.JsonTransformer):
    def init(self, config: list[tuple[str, str]]) -> None:
        global state
        state = None  # a failed re-init must not leave the old configuration running
        state = MaskColumns(config)

    def transform(self, batch: bytes) -> bytes:
        if state is None:
            raise Err("transform called before a successful init")
        return state.transform(batch)
