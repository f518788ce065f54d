// mask-columns-batch: replaces the values of the named columns with the text "***",
// in the batch world (wit/batch.wit): the batch stays in the host and no value
// crosses the boundary. Per table and masked column, one `valueKinds` says which
// changes hold a value there (not null, not unchanged-toast) and one `setMany`
// masks them all (a call into the host, and every value lifted into an object,
// costs the JavaScript engine microseconds).
//
// [transforms.config] (every value is a string):
//   columns = "email, phone"        required: column names, comma-separated
//   tables  = "public.users, crm.*" optional: `schema.table` or a bare `table` (any
//                                   schema); `*` matches any run of characters;
//                                   default: every table
//   mode    = "redact"              optional: the only mode
//
// In the new row and in the old row, every value of a named column that is not
// null and not unchanged-toast becomes the text "***" (the host then reports the
// column as text, oid 25, unless it already was of a text type).

const KNOWN_KEYS = ['columns', 'tables', 'mode'];
// `setMany` with a single value sets it in every change listed.
const MASK = [{ tag: 'text', val: '***' }];
const NONE = []; // no column to mask
const VALUE = 3; // `valueKinds`: 0 no such row, 1 null, 2 unchanged-toast, 3 a value
const NO_CHANGES = new Uint32Array(0);

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

export const batchTransformer = {
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
    // Per table of the batch, once: the indexes of its columns to mask. The
    // columns are looked up in every batch (a table can change between batches);
    // whether a table matches `tables` is kept across batches.
    const masked = changes.relations().map((r) => (tableMatches(r) ? maskedColumns(r) : NONE));
    if (!masked.some((cols) => cols.length > 0)) return;
    // The changes of each table to mask (-1, a message, has none). Index lists are
    // Uint32Arrays: the bindings copy a typed array into the call in one go, but
    // check an Array's numbers one by one.
    const rels = changes.relationIds();
    const of = masked.length === 1 && rels.indexOf(-1) < 0
      ? [firstIndexes(rels.length)] // one table, no message: every change (the usual batch)
      : changesPerTable(rels, masked);
    try {
      for (let r = 0; r < masked.length; r++) {
        const changesOf = of[r];
        if (changesOf === null) continue;
        for (const col of masked[r]) {
          // A change without such a row (insert: no old row, delete: no new one,
          // truncate: neither) is not a VALUE either, so no need to look at the ops.
          const after = withValue(changes.valueKinds(changesOf, col), changesOf);
          if (after.length > 0) changes.setMany(after, col, MASK);
          const before = withValue(changes.valueKindsBefore(changesOf, col), changesOf);
          if (before.length > 0) changes.setManyBefore(before, col, MASK);
        }
      }
    } catch (e) {
      // A refused `setMany` throws (a ComponentError whose `payload` is the host's message).
      throw `mask-columns: ${e?.payload ?? e}`;
    }
  },
};

function tableMatches({ schema, table }) {
  if (state.patterns === null) return true;
  const key = `${schema}\0${table}`;
  let hit = state.matched.get(key);
  if (hit === undefined) {
    hit = table !== '' && state.patterns.some((p) => (p.schema === null || p.schema.test(schema)) && p.table.test(table));
    state.matched.set(key, hit);
  }
  return hit;
}

function maskedColumns({ columns }) {
  const cols = [];
  for (let c = 0; c < columns.length; c++) if (state.columns.has(columns[c].name)) cols.push(c);
  return cols.length === 0 ? NONE : cols;
}

// Per table, the indexes of its changes (null for a table with nothing to mask).
function changesPerTable(rels, masked) {
  const counts = new Uint32Array(masked.length);
  for (let i = 0; i < rels.length; i++) if (rels[i] >= 0) counts[rels[i]]++;
  const of = masked.map((cols, r) => (cols.length > 0 && counts[r] > 0 ? new Uint32Array(counts[r]) : null));
  counts.fill(0);
  for (let i = 0; i < rels.length; i++) {
    const r = rels[i];
    if (r >= 0 && of[r] !== null) of[r][counts[r]++] = i;
  }
  return of;
}

// 0, 1, ..., n - 1, kept across batches (every loop the engine interprets costs).
let indexes = new Uint32Array(0);
function firstIndexes(n) {
  if (indexes.length < n) {
    indexes = new Uint32Array(Math.max(n, 2 * indexes.length));
    for (let i = 0; i < indexes.length; i++) indexes[i] = i;
  }
  return indexes.subarray(0, n);
}

// The indexes (from `changesOf`) of the changes whose value is to be masked. The
// usual answers, all of them or none, come from native scans.
function withValue(kinds, changesOf) {
  if (kinds.indexOf(VALUE) < 0) return NO_CHANGES;
  if (kinds.indexOf(0) < 0 && kinds.indexOf(1) < 0 && kinds.indexOf(2) < 0) return changesOf;
  const out = new Uint32Array(kinds.length);
  let k = 0;
  for (let j = 0; j < kinds.length; j++) if (kinds[j] === VALUE) out[k++] = changesOf[j];
  return out.subarray(0, k);
}
