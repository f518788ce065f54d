"""mask-columns: replaces the values of the named columns with the text "***".

[transforms.config] (every value is a string):
  columns = "email, phone"         required: column names, comma-separated
  tables  = "public.users, crm.*"  optional: `schema.table` or a bare `table` (any
                                   schema); `*` matches any run of characters;
                                   default: every table
  mode    = "redact"               optional: the only mode

In `after` and in `before`, every value of a named column that is not null and not
unchanged-toast becomes the text "***" with type oid 25 (text).
"""
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import Change, Column, Value_Null, Value_Text, Value_UnchangedToast

KNOWN_KEYS = ("columns", "tables", "mode")
TEXT_OID = 25
KEEP = (Value_Null, Value_UnchangedToast)


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
        # `result` errors are raised as Err(message).
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
        self.matched: dict[tuple[str, str], bool] = {}

    def table_matches(self, change: Change) -> bool:
        if self.patterns is None:
            return True
        key = (change.schema, change.table)
        hit = self.matched.get(key)
        if hit is None:
            hit = change.table != "" and any(
                (s is None or s.fullmatch(change.schema)) and t.fullmatch(change.table)
                for s, t in self.patterns
            )
            self.matched[key] = hit
        return hit

    def mask(self, row: list[Column] | None) -> None:
        if row is None:
            return
        for column in row:
            if column.name in self.columns and not isinstance(column.value, KEEP):
                column.value = Value_Text("***")
                column.type_oid = TEXT_OID


state: MaskColumns | None = None  # set by a successful init


class Transformer(exports.Transformer):
    def init(self, config: list[tuple[str, str]]) -> None:
        global state
        state = None  # a failed re-init must not leave the old configuration running
        state = MaskColumns(config)

    def transform(self, changes: list[Change]) -> list[Change]:
        if state is None:
            raise Err("transform called before a successful init")
        for change in changes:
            if (change.after is not None or change.before is not None) and state.table_matches(change):
                state.mask(change.after)
                state.mask(change.before)
        return changes
