"""mask-columns-batch: replaces the values of the named columns with the text "***",
in the batch world (wit/batch.wit): the batch stays in the host and no value
crosses the boundary. Per table and masked column, one `value_kinds` says which
changes hold a value there (not null, not unchanged-toast) and one `set_many` masks
them all.

[transforms.config] (every value is a string):
  columns = "email, phone"         required: column names, comma-separated
  tables  = "public.users, crm.*"  optional: `schema.table` or a bare `table` (any
                                   schema); `*` matches any run of characters;
                                   default: every table
  mode    = "redact"               optional: the only mode

In the new row and in the old row, every value of a named column that is not null
and not unchanged-toast becomes the text "***" (the host then reports the column as
text, oid 25, unless it already was of a text type).
"""
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.batch import Changes, Relation
from wit_world.imports.types import Value_Text

KNOWN_KEYS = ("columns", "tables", "mode")
VALUE = 3  # `value_kinds`: 0 no such row, 1 null, 2 unchanged-toast, 3 a value
MASK = [Value_Text("***")]  # `set_many` with a single value sets it in every change listed


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

    def table_matches(self, rel: Relation) -> bool:
        if self.patterns is None:
            return True
        key = (rel.schema, rel.table)
        hit = self.matched.get(key)
        if hit is None:
            hit = rel.table != "" and any(
                (s is None or s.fullmatch(rel.schema)) and t.fullmatch(rel.table)
                for s, t in self.patterns
            )
            self.matched[key] = hit
        return hit

    def masked_columns(self, rel: Relation) -> tuple[int, ...]:
        """The indexes of the relation's columns to mask."""
        if not self.table_matches(rel):
            return ()
        return tuple(c for c, col in enumerate(rel.columns) if col.name in self.columns)

    def mask(self, changes: Changes) -> None:
        # Per table of the batch, once: the indexes of its columns to mask. The
        # columns are looked up in every batch (a table can change between batches);
        # whether a table matches `tables` is kept across batches.
        masked = [self.masked_columns(rel) for rel in changes.relations()]
        if not any(masked):
            return
        # The changes of each table to mask (-1, a message, has none).
        rel_ids = changes.relation_ids()
        if len(masked) == 1 and -1 not in rel_ids:
            of = [list(range(len(rel_ids)))]  # one table, no message: every change (the usual batch)
        else:
            of = [[] for _ in masked]
            for i, rel in enumerate(rel_ids):
                if rel >= 0 and masked[rel]:
                    of[rel].append(i)
        for cols, changes_of in zip(masked, of):
            if not changes_of:
                continue
            for c in cols:
                # A change without such a row (insert: no old row, delete: no new one,
                # truncate: neither) is not a VALUE either, so no need to look at the ops.
                after = with_value(changes.value_kinds(changes_of, c), changes_of)
                if after:
                    changes.set_many(after, c, MASK)
                before = with_value(changes.value_kinds_before(changes_of, c), changes_of)
                if before:
                    changes.set_many_before(before, c, MASK)


def with_value(kinds: bytes, changes_of: list[int]) -> list[int]:
    """The indexes (from `changes_of`) of the changes whose value is to be masked."""
    if kinds.count(VALUE) == len(kinds):  # the usual case: every change has a value
        return changes_of
    return [i for i, k in zip(changes_of, kinds) if k == VALUE]


state: MaskColumns | None = None  # set by a successful init


class BatchTransformer(exports.BatchTransformer):
    def init(self, config: list[tuple[str, str]]) -> None:
        global state
        state = None  # a failed re-init must not leave the old configuration running
        state = MaskColumns(config)

    def transform(self, changes: Changes) -> None:
        if state is None:
            raise Err("transform called before a successful init")
        try:
            state.mask(changes)
        except Err as e:  # a `set_many` the host refused
            raise Err(f"mask-columns: {e.value}") from None
