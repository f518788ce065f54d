// filter-route: drops the changes of the denied tables and routes the others by
// the value of one column, in the batch world (wit/batch.wit): the batch stays in
// the host. Per batch one `relations()` and one `relationIds()`; a denied change
// is one `discard`; the route column of a table's changes is read in one
// `getMany` (and one `getManyBefore` for the deletes), not one call per change.
//
// [transforms.config] (every value is a string):
//   deny     = "audit, public.logs"  optional: `schema.table` or a bare `table`
//                                    (any schema); their changes are dropped
//   column   = "region"              optional: route each change by this column
//                                    (new row; the old row for a delete)
//   template = "users.{value}"       optional: the route; `{table}` and `{value}`
//                                    are replaced; default "{table}.{value}"
//   required = "true"                optional: a change of a table that has
//                                    `column` but holds no value there (null)
//                                    fails the batch; default "false": its route
//                                    is left to the sinks
// At least one of deny and column. Messages (no table) pass unrouted.

const KNOWN_KEYS = ['deny', 'column', 'template', 'required'];
const ROUTABLE = new Set(['text', 'enum-label', 'int2', 'int4', 'int8', 'uuid', 'numeric']);

let state = null; // set by a successful init

// "a, b,," -> ["a", "b"]
const list = (s) => s.split(',').map((x) => x.trim()).filter((x) => x !== '');

export const batchTransformer = {
  init(config) {
    state = null; // a failed re-init must not leave the old configuration running
    // `result` errors are thrown strings: the host receives the string as the error.
    for (const [key] of config) {
      if (!KNOWN_KEYS.includes(key)) throw `filter-route: unknown config key \`${key}\` (known keys: ${KNOWN_KEYS.join(', ')})`;
    }
    const cfg = new Map(config); // the last value wins when a key repeats
    const deny = new Set(list(cfg.get('deny') ?? ''));
    const column = (cfg.get('column') ?? '').trim();
    if (deny.size === 0 && column === '') throw 'filter-route: set deny or column';
    const required = cfg.get('required') ?? 'false';
    if (required !== 'true' && required !== 'false') throw `filter-route: required is \`${required}\`: use true or false`;
    state = { deny, column, template: cfg.get('template') ?? '{table}.{value}', required: required === 'true' };
  },

  transform(changes) {
    if (state === null) throw 'filter-route: transform called before a successful init';
    const rels = changes.relations();
    const denied = rels.map((r) => state.deny.has(r.table) || state.deny.has(`${r.schema}.${r.table}`));
    const routeCol = rels.map((r) => (state.column === '' ? -1 : r.columns.findIndex((c) => c.name === state.column)));
    const ids = changes.relationIds();
    const routed = rels.map(() => []); // per table, the changes to route
    for (let i = 0; i < ids.length; i++) {
      const r = ids[i];
      if (r < 0) continue; // a message: no table
      if (denied[r]) changes.discard(i);
      else if (routeCol[r] >= 0) routed[r].push(i);
    }
    try {
      for (let r = 0; r < rels.length; r++) {
        if (routed[r].length === 0) continue;
        const indexes = Uint32Array.from(routed[r]);
        const after = changes.getMany(indexes, routeCol[r]);
        const deletes = indexes.filter((_, k) => after[k] === undefined);
        const before = deletes.length > 0 ? changes.getManyBefore(deletes, routeCol[r]) : [];
        let d = 0;
        for (let k = 0; k < indexes.length; k++) {
          const v = after[k] !== undefined ? after[k] : before[d++];
          const route = routeOf(rels[r], v, indexes[k]);
          if (route !== null) changes.route(indexes[k], route);
        }
      }
    } catch (e) {
      // A refused `route` throws (a ComponentError whose `payload` is the host's message).
      throw `${e?.payload ?? e}`;
    }
  },
};

// The route of one change, or null to leave it to the sinks.
function routeOf(rel, v, index) {
  const where = `${rel.schema}.${rel.table}`;
  if (v === undefined || v.tag === 'null' || v.tag === 'unchanged-toast') {
    if (state.required) throw `filter-route: change ${index} of ${where} has no value in \`${state.column}\` (required = "true")`;
    return null;
  }
  if (!ROUTABLE.has(v.tag)) throw `filter-route: \`${state.column}\` of ${where} is ${v.tag}: route by a text, integer, numeric, uuid or enum column`;
  return state.template.replaceAll('{table}', rel.table).replaceAll('{value}', String(v.val));
}
