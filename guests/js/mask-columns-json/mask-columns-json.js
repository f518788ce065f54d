// mask-columns-json: replaces the values of the named columns with the text "***",
// in the JSON world (wit/json.wit): one JSON.parse and one JSON.stringify per batch.
//
// [transforms.config] (every value is a string):
//   columns = "email, phone"        required: column names, comma-separated
//   tables  = "public.users, crm.*" optional: `schema.table` or a bare `table` (any
//                                   schema); `*` matches any run of characters;
//                                   default: every table
//   mode    = "redact"              optional: the only mode
//
// In `after` and in `before`, every value of a named column that is not null (and
// not unchanged-toast: such a column is absent from the row) becomes the text "***",
// and the change's `types` says the column is now text (oid 25).

const KNOWN_KEYS = ['columns', 'tables', 'mode'];
const TEXT_OID = 25;

let state = null; // set by a successful init
const decoder = new TextDecoder();
const encoder = new TextEncoder();

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

export const jsonTransformer = {
  init(config) {
    state = null; // a failed re-init must not leave the old configuration running
    for (const [key] of config) {
      if (!KNOWN_KEYS.includes(key)) throw `unknown config key \`${key}\` (known keys: ${KNOWN_KEYS.join(', ')})`;
    }
    const cfg = new Map(config); // the last value wins when a key repeats
    const columns = list(cfg.get('columns') ?? '');
    if (columns.length === 0) throw 'mask-columns: set columns';
    const patterns = cfg.has('tables') ? tablePatterns(cfg.get('tables')) : null;
    const mode = cfg.get('mode') ?? 'redact';
    if (mode !== 'redact') throw `unknown mode \`${mode}\`: use redact`;
    state = { columns: new Set(columns), patterns };
  },

  transform(batch) {
    if (state === null) throw 'transform called before a successful init';
    // `batch` is the document's UTF-8 bytes (a Uint8Array): decoded and parsed natively.
    const { relations, changes } = JSON.parse(decoder.decode(batch));
    // Per table of the batch, once: the names of its columns to mask.
    const masked = relations.map((r) =>
      tableMatches(r) ? r.columns.filter((c) => state.columns.has(c.name)).map((c) => c.name) : []);
    for (const change of changes) {
      const names = change.rel === undefined ? undefined : masked[change.rel];
      if (names === undefined || names.length === 0) continue;
      mask(change, change.after, names);
      mask(change, change.before, names);
    }
    return encoder.encode(JSON.stringify(changes));
  },
};

function tableMatches({ schema, table }) {
  return state.patterns === null ||
    state.patterns.some((p) => (p.schema === null || p.schema.test(schema)) && p.table.test(table));
}

function mask(change, row, names) {
  if (row === null || row === undefined) return;
  for (const name of names) {
    const value = row[name];
    if (value === null || value === undefined) continue;
    row[name] = '***';
    (change.types ??= {})[name] = TEXT_OID;
  }
}
