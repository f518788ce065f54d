"""filter-route: drops the changes of the denied tables and routes the others by
the value of one column, in the batch world (wit/batch.wit): the batch stays in
the host. Per batch one `relations()` and one `relation_ids()`; a denied change
is one `discard`; the route column of a table's changes is read in one
`get_many` (and one `get_many_before` for the deletes), not one call per change.

[transforms.config] (every value is a string):
  deny     = "audit, public.logs"  optional: `schema.table` or a bare `table`
                                   (any schema); their changes are dropped
  column   = "region"              optional: route each change by this column
                                   (new row; the old row for a delete)
  template = "users.{value}"       optional: the route; `{table}` and `{value}`
                                   are replaced; default "{table}.{value}"
  required = "true"                optional: a change of a table that has
                                   `column` but holds no value there (null)
                                   fails the batch; default "false": its route
                                   is left to the sinks
At least one of deny and column. Messages (no table) pass unrouted.
"""
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types
from wit_world.imports.batch import Changes, Relation

KNOWN_KEYS = ("deny", "column", "template", "required")
ROUTABLE = (
    types.Value_Text,
    types.Value_EnumLabel,
    types.Value_Int2,
    types.Value_Int4,
    types.Value_Int8,
    types.Value_Uuid,
    types.Value_Numeric,
)


def split_list(s: str) -> list[str]:
    """"a, b,," -> ["a", "b"]"""
    return [x.strip() for x in s.split(",") if x.strip()]


class FilterRoute:
    def __init__(self, config: list[tuple[str, str]]) -> None:
        # `result` errors are raised as Err(message).
        for key, _ in config:
            if key not in KNOWN_KEYS:
                raise Err(f"filter-route: unknown config key `{key}` (known keys: {', '.join(KNOWN_KEYS)})")
        cfg = dict(config)  # the last value wins when a key repeats
        self.deny = frozenset(split_list(cfg.get("deny", "")))
        self.column = cfg.get("column", "").strip()
        if not self.deny and not self.column:
            raise Err("filter-route: set deny or column")
        required = cfg.get("required", "false")
        if required not in ("true", "false"):
            raise Err(f"filter-route: required is `{required}`: use true or false")
        self.required = required == "true"
        self.template = cfg.get("template", "{table}.{value}")

    def run(self, changes: Changes) -> None:
        rels = changes.relations()
        denied = [r.table in self.deny or f"{r.schema}.{r.table}" in self.deny for r in rels]
        route_col = [self.column_index(r) for r in rels]
        routed: list[list[int]] = [[] for _ in rels]  # per table, the changes to route
        for i, r in enumerate(changes.relation_ids()):
            if r < 0:
                continue  # a message: no table
            if denied[r]:
                changes.discard(i)
            elif route_col[r] >= 0:
                routed[r].append(i)
        for rel, col, indexes in zip(rels, route_col, routed):
            if not indexes:
                continue
            after = changes.get_many(indexes, col)
            deletes = [i for i, v in zip(indexes, after) if v is None]
            before = iter(changes.get_many_before(deletes, col) if deletes else [])
            for i, v in zip(indexes, after):
                route = self.route_of(rel, next(before) if v is None else v, i)
                if route is not None:
                    changes.route(i, route)

    def column_index(self, rel: Relation) -> int:
        for c, col in enumerate(rel.columns):
            if col.name == self.column:
                return c
        return -1

    def route_of(self, rel: Relation, v: types.Value | None, index: int) -> str | None:
        """The route of one change, or None to leave it to the sinks."""
        where = f"{rel.schema}.{rel.table}"
        if v is None or isinstance(v, (types.Value_Null, types.Value_UnchangedToast)):
            if self.required:
                raise Err(f'filter-route: change {index} of {where} has no value in `{self.column}` (required = "true")')
            return None
        if not isinstance(v, ROUTABLE):
            raise Err(
                f"filter-route: `{self.column}` of {where} is {type(v).__name__}: "
                "route by a text, integer, numeric, uuid or enum column"
            )
        return self.template.replace("{table}", rel.table).replace("{value}", str(v.value))


state: FilterRoute | None = None  # set by a successful init


class BatchTransformer(exports.BatchTransformer):
    def init(self, config: list[tuple[str, str]]) -> None:
        global state
        state = None  # a failed re-init must not leave the old configuration running
        state = FilterRoute(config)

    def transform(self, changes: Changes) -> None:
        if state is None:
            raise Err("filter-route: transform called before a successful init")
        try:
            state.run(changes)
        except Err as e:  # a `route` the host refused
            if isinstance(e.value, str) and e.value.startswith("filter-route:"):
                raise
            raise Err(f"filter-route: {e.value}") from None
