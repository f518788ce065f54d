// mask-columns: replaces the values of the named columns with the text "***".
//
// [transforms.config] (every value is a string):
//   columns = "email, phone"        required: column names, comma-separated
//   tables  = "public.users, crm.*" optional: `schema.table` or a bare `table` (any
//                                   schema); `*` matches any run of characters;
//                                   default: every table
//   mode    = "redact"              optional: the only mode
//
// In `after` and in `before`, every value of a named column that is not null and
// not unchanged-toast becomes the text "***" with type oid 25 (text).

const KNOWN_KEYS = ['columns', 'tables', 'mode'];
const TEXT_OID = 25;

let state = null; // set by a successful init

// "a, b,," -> ["a", "b"]
const list = (s) => s.split(',').map((x) => x.trim()).filter((x) => x !== '');

// `*`-only glob as an anchored regular expression.
const glob = (p) => new RegExp(`^${p.split('*').map((s) => s.replace(/[\\^$.|?+()[\]{}]/g, '\\$&')).join('.*')}$`, 's');

// Table patterns: split at the first dot; a bare name matches in any schema.
function tablePatterns(value) {
  return list(value).map((p) => {
    const dot = p.indexOf('.');
    const [schema, table] = dot < 0 ? [null, p] : [p.slice(0, dot), p.slice(dot + 1)];
    if (table === '' || schema === '') throw `bad table pattern \`${p}\`: want schema.table or table`;
    return { schema: schema === null ? null : glob(schema), table: glob(table) };
  });
}

export const transformer = {
  init(config) {
    state = null; // a failed re-init must not leave the old configuration running
    // `result` errors are thrown strings: the host receives the string as the error.
    for (const [key] of config) {
      if (!KNOWN_KEYS.includes(key)) throw `unknown config key \`${key}\` (known keys: ${KNOWN_KEYS.join(', ')})`;
    }
    const cfg = new Map(config); // the last value wins when a key repeats
    const columns = list(cfg.get('columns') ?? '');
    if (columns.length === 0) throw 'mask-columns: set columns';
    const patterns = cfg.has('tables') ? tablePatterns(cfg.get('tables')) : null;
    const mode = cfg.get('mode') ?? 'redact';
    if (mode !== 'redact') throw `unknown mode \`${mode}\`: use redact`;
    state = { columns: new Set(columns), patterns, matched: new Map() };
  },

  transform(changes) {
    if (state === null) throw 'transform called before a successful init';
    for (const change of changes) {
      if (change.after === undefined && change.before === undefined) continue;
      if (state.patterns !== null && !tableMatches(change)) continue;
      maskRow(change.after);
      maskRow(change.before);
    }
    return changes;
  },
};

function tableMatches({ schema, table }) {
  if (table === '') return false;
  const key = `${schema}\0${table}`;
  let hit = state.matched.get(key);
  if (hit === undefined) {
    hit = state.patterns.some((p) => (p.schema === null || p.schema.test(schema)) && p.table.test(table));
    state.matched.set(key, hit);
  }
  return hit;
}

function maskRow(row) {
  if (row === undefined) return;
  for (const column of row) {
    const tag = column.value.tag;
    if (tag !== 'null' && tag !== 'unchanged-toast' && state.columns.has(column.name)) {
      column.value = { tag: 'text', val: '***' };
      column.typeOid = TEXT_OID;
    }
  }
}
