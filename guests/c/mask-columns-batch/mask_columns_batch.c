// mask-columns-batch: replaces the values of the configured columns with the
// text "***", in world `transform-batch` (wit/batch.wit).
//
// Config ([transforms.config] in pipeline.toml, all values are strings), as
// ../mask-columns:
//   columns = "email,phone"          required: column names, comma-separated
//   tables  = "public.users,orders"  optional: `schema.table`, or a bare `table`
//                                    for any schema; default: every table
//   mode    = "redact"               optional: the only mode
// Any other key fails `init`, naming the known ones.
//
// A value that is `null` or `unchanged-toast` is kept as it is; any other
// value of a listed column, in the new row and in the old row, becomes text
// "***" (the host reports the column as text from then on, oid 25, unless it
// already was of a text type).
//
// The batch stays in the host. Per batch the module asks once for its tables
// (`relations`), each change's table (`relation-ids`) and op (`ops`); then, for
// the changes of the matching tables only, it gets each masked column and sets
// the ones to mask. No other value crosses the boundary.
//
// Ownership: everything an import returns (lists, values, error strings) is
// this module's memory, freed here with the generated `*_free` helpers. What
// the module passes to an import (the "***" value) is only lent. The handle
// `changes` is borrowed for the call; the generated export wrapper drops it.
#include <stdlib.h>
#include <string.h>

#include "transform_batch.h"

typedef transform_batch_string_t string_t;
typedef cdc_pipeline_batch_borrow_changes_t changes_t;
typedef cdc_pipeline_batch_relation_t relation_t;
typedef cdc_pipeline_batch_value_t value_t;
typedef transform_batch_list_tuple2_string_string_t config_t;

// The keys `init` accepts, for the message naming them.
static const char *const known_keys[] = {"columns", "tables", "mode"};
#define KNOWN_KEYS (sizeof known_keys / sizeof known_keys[0])

// A list of names the module owns (copied out of the config).
typedef struct {
  string_t *items;
  size_t len;
} names_t;

static names_t columns;    // column names to mask
static names_t qualified;  // "schema.table"
static names_t bare;       // "table", in any schema
static bool every_table = true;
static bool configured = false;  // by a successful init

// What every masked value becomes: lent to `set`, which copies it.
static value_t mask = {.tag = CDC_PIPELINE_TYPES_VALUE_TEXT,
                       .val.text = {.ptr = (uint8_t *)"***", .len = 3}};

static bool str_eq(const string_t *a, const char *b, size_t blen) {
  return a->len == blen && memcmp(a->ptr, b, blen) == 0;
}

static bool names_has(const names_t *names, const string_t *s) {
  for (size_t i = 0; i < names->len; i++) {
    if (str_eq(&names->items[i], (const char *)s->ptr, s->len)) return true;
  }
  return false;
}

static void names_free(names_t *names) {
  for (size_t i = 0; i < names->len; i++) transform_batch_string_free(&names->items[i]);
  free(names->items);
  names->items = NULL;
  names->len = 0;
}

static void names_push(names_t *names, const uint8_t *s, size_t len) {
  names->items = realloc(names->items, (names->len + 1) * sizeof(string_t));
  if (!names->items) abort();
  transform_batch_string_dup_n(&names->items[names->len++], (const char *)s, len);
}

// The length of the Unicode White_Space character (what Rust's `str::trim`
// strips: ASCII space, \t-\r, U+0085, U+00A0, U+1680, U+2000-200A, U+2028,
// U+2029, U+202F, U+205F, U+3000) that is the whole of p[0..n], or 0.
static size_t space_len(const uint8_t *p, size_t n) {
  if (n == 1 && (p[0] == ' ' || (p[0] >= '\t' && p[0] <= '\r'))) return 1;
  if (n == 2 && p[0] == 0xC2 && (p[1] == 0x85 || p[1] == 0xA0)) return 2;
  if (n == 3 && ((p[0] == 0xE1 && p[1] == 0x9A && p[2] == 0x80) ||
                 (p[0] == 0xE2 && p[1] == 0x80 &&
                  (p[2] <= 0x8A || p[2] == 0xA8 || p[2] == 0xA9 || p[2] == 0xAF)) ||
                 (p[0] == 0xE2 && p[1] == 0x81 && p[2] == 0x9F) ||
                 (p[0] == 0xE3 && p[1] == 0x80 && p[2] == 0x80)))
    return 3;
  return 0;
}

// Splits a comma-separated list into `out`: items trimmed, empty ones dropped.
static void split_list(const string_t *s, names_t *out) {
  size_t i = 0;
  while (i <= s->len) {
    size_t start = i;
    while (i < s->len && s->ptr[i] != ',') i++;
    size_t end = i;
    for (bool more = true; more;) {  // trim both ends
      more = false;
      for (size_t n = 1; n <= 3 && n <= end - start; n++) {
        if (space_len(s->ptr + start, n)) { start += n; more = true; break; }
        if (space_len(s->ptr + end - n, n)) { end -= n; more = true; break; }
      }
    }
    if (end > start) names_push(out, s->ptr + start, end - start);
    i++;  // past the comma (or past the end)
  }
}

// The value of `key` in the config, or NULL. The last one wins if a key repeats.
static const string_t *config_get(const config_t *config, const char *key) {
  for (size_t i = config->len; i-- > 0;) {
    if (str_eq(&config->ptr[i].f0, key, strlen(key))) return &config->ptr[i].f1;
  }
  return NULL;
}

// A growing byte buffer for messages. Its memory is what we hand over as an
// error string (the post-return function frees it) or lend to host.log.
typedef struct {
  string_t s;
  size_t cap;
} buf_t;

static void buf_add(buf_t *b, const void *p, size_t len) {
  if (b->s.len + len > b->cap) {
    b->cap = (b->s.len + len) * 2;
    b->s.ptr = realloc(b->s.ptr, b->cap);
    if (!b->s.ptr) abort();
  }
  memcpy(b->s.ptr + b->s.len, p, len);
  b->s.len += len;
}

static void buf_str(buf_t *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_names(buf_t *b, const names_t *names) {
  for (size_t i = 0; i < names->len; i++) {
    if (i > 0) buf_str(b, ", ");
    buf_add(b, names->items[i].ptr, names->items[i].len);
  }
}

// Reads the config into the module's state; false and `err` on a bad one.
static bool configure(const config_t *config, string_t *err) {
  names_free(&columns);
  names_free(&qualified);
  names_free(&bare);
  every_table = true;

  for (size_t i = 0; i < config->len; i++) {
    const string_t *key = &config->ptr[i].f0;
    bool known = false;
    for (size_t k = 0; k < KNOWN_KEYS && !known; k++)
      known = str_eq(key, known_keys[k], strlen(known_keys[k]));
    if (known) continue;
    buf_t b = {0};
    buf_str(&b, "mask-columns: unknown config key \"");
    buf_add(&b, key->ptr, key->len);
    buf_str(&b, "\" (known keys: ");
    for (size_t k = 0; k < KNOWN_KEYS; k++) {
      if (k > 0) buf_str(&b, ", ");
      buf_str(&b, known_keys[k]);
    }
    buf_str(&b, ")");
    *err = b.s;  // heap memory: the post-return function frees it
    return false;
  }
  const string_t *mode = config_get(config, "mode");
  if (mode && !str_eq(mode, "redact", 6)) {
    buf_t b = {0};
    buf_str(&b, "mask-columns: unknown mode \"");
    buf_add(&b, mode->ptr, mode->len);
    buf_str(&b, "\" (the only mode is \"redact\")");
    *err = b.s;
    return false;
  }
  const string_t *cols = config_get(config, "columns");
  if (cols) split_list(cols, &columns);
  if (columns.len == 0) {
    transform_batch_string_dup(err, "mask-columns: set columns");  // a copy, as above
    return false;
  }
  names_t tables = {0};
  const string_t *tables_cfg = config_get(config, "tables");
  if (tables_cfg) {
    every_table = false;
    split_list(tables_cfg, &tables);
    for (size_t i = 0; i < tables.len; i++) {
      string_t *t = &tables.items[i];
      names_push(memchr(t->ptr, '.', t->len) ? &qualified : &bare, t->ptr, t->len);
    }
  }

  buf_t b = {0};
  buf_str(&b, "mask-columns: masking ");
  buf_names(&b, &columns);
  buf_str(&b, " in ");
  if (every_table) buf_str(&b, "every table");
  else buf_names(&b, &tables);
  cdc_pipeline_host_log(CDC_PIPELINE_HOST_LEVEL_INFO, &b.s);  // lent, not given: ours to free
  free(b.s.ptr);
  names_free(&tables);
  return true;
}

bool exports_cdc_pipeline_batch_transformer_init(config_t *config, string_t *err) {
  configured = configure(config, err);  // a failed re-init leaves nothing running
  transform_batch_list_tuple2_string_string_free(config);  // init owns its argument
  return configured;
}

// Whether `schema.table` is one of the `qualified` names or `table` one of the
// `bare` ones.
static bool table_matches(const relation_t *r) {
  if (every_table) return true;
  if (names_has(&bare, &r->table)) return true;
  size_t slen = r->schema.len, tlen = r->table.len;
  for (size_t i = 0; i < qualified.len; i++) {
    const string_t *q = &qualified.items[i];
    if (q->len == slen + 1 + tlen && memcmp(q->ptr, r->schema.ptr, slen) == 0 &&
        q->ptr[slen] == '.' && memcmp(q->ptr + slen + 1, r->table.ptr, tlen) == 0)
      return true;
  }
  return false;
}

// The masked columns of every relation of a batch: relation r's are
// cols[start[r] .. start[r + 1]].
typedef struct {
  uint32_t *cols;
  size_t *start;
} masked_t;

static bool masked_columns(const cdc_pipeline_batch_list_relation_t *rels, masked_t *m) {
  size_t total = 0;
  for (size_t r = 0; r < rels->len; r++)
    if (table_matches(&rels->ptr[r])) total += rels->ptr[r].columns.len;
  m->start = malloc((rels->len + 1) * sizeof(size_t));
  m->cols = malloc((total ? total : 1) * sizeof(uint32_t));
  if (!m->start || !m->cols) abort();
  size_t n = 0;
  for (size_t r = 0; r < rels->len; r++) {
    m->start[r] = n;
    const relation_t *rel = &rels->ptr[r];
    if (!table_matches(rel)) continue;
    for (size_t c = 0; c < rel->columns.len; c++)
      if (names_has(&columns, &rel->columns.ptr[c].name)) m->cols[n++] = (uint32_t)c;
  }
  m->start[rels->len] = n;
  return n > 0;
}

static bool keeps(const value_t *v) {
  return v->tag == CDC_PIPELINE_TYPES_VALUE_NULL || v->tag == CDC_PIPELINE_TYPES_VALUE_UNCHANGED_TOAST;
}

// Masks columns cols[0..n] of change i's new row (`before` false) or old row.
// False and `err` when the host refuses a set.
static bool mask_row(changes_t changes, uint32_t i, const uint32_t *cols, size_t n, bool before,
                     string_t *err) {
  for (size_t k = 0; k < n; k++) {
    value_t v;
    bool some = before ? cdc_pipeline_batch_method_changes_get_before(changes, i, cols[k], &v)
                       : cdc_pipeline_batch_method_changes_get(changes, i, cols[k], &v);
    if (!some) return true;  // no such row: no other column either
    bool keep = keeps(&v);
    cdc_pipeline_batch_value_free(&v);  // ours: the host copied it into our memory
    if (keep) continue;
    string_t host_err;
    bool ok = before ? cdc_pipeline_batch_method_changes_set_before(changes, i, cols[k], &mask, &host_err)
                     : cdc_pipeline_batch_method_changes_set(changes, i, cols[k], &mask, &host_err);
    if (ok) continue;
    buf_t b = {0};
    buf_str(&b, "mask-columns: ");
    buf_add(&b, host_err.ptr, host_err.len);
    transform_batch_string_free(&host_err);
    *err = b.s;  // given away: the post-return function frees it
    return false;
  }
  return true;
}

bool exports_cdc_pipeline_batch_transformer_transform(changes_t changes, string_t *err) {
  if (!configured) {
    transform_batch_string_dup(err, "transform called before a successful init");
    return false;
  }
  cdc_pipeline_batch_list_relation_t rels;
  cdc_pipeline_batch_method_changes_relations(changes, &rels);
  masked_t m;
  bool any = masked_columns(&rels, &m);
  size_t nrels = rels.len;
  cdc_pipeline_batch_list_relation_free(&rels);  // the indexes in `m` are all we keep
  bool ok = true;
  if (any) {
    transform_batch_list_s32_t ids;
    cdc_pipeline_batch_list_op_t ops;
    cdc_pipeline_batch_method_changes_relation_ids(changes, &ids);
    cdc_pipeline_batch_method_changes_ops(changes, &ops);
    for (size_t i = 0; ok && i < ids.len && i < ops.len; i++) {
      int32_t r = ids.ptr[i];
      if (r < 0 || (size_t)r >= nrels) continue;  // a message: no table
      const uint32_t *cols = m.cols + m.start[r];
      size_t n = m.start[r + 1] - m.start[r];
      if (n == 0) continue;
      cdc_pipeline_batch_op_t op = ops.ptr[i];
      // Which rows a change of each op can hold: insert and read a new one,
      // delete an old one, update a new one and maybe an old one (key change,
      // REPLICA IDENTITY FULL); truncate none.
      if (op == CDC_PIPELINE_TYPES_OP_INSERT || op == CDC_PIPELINE_TYPES_OP_READ ||
          op == CDC_PIPELINE_TYPES_OP_UPDATE)
        ok = mask_row(changes, (uint32_t)i, cols, n, false, err);
      if (ok && (op == CDC_PIPELINE_TYPES_OP_UPDATE || op == CDC_PIPELINE_TYPES_OP_DELETE))
        ok = mask_row(changes, (uint32_t)i, cols, n, true, err);
    }
    transform_batch_list_s32_free(&ids);
    cdc_pipeline_batch_list_op_free(&ops);
  }
  free(m.cols);
  free(m.start);
  return ok;  // on error the host drops the edits: the batch is as it came in
}
