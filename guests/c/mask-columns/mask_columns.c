// mask-columns: replaces the values of the configured columns with the text "***".
//
// Config ([transforms.config] in pipeline.toml, all values are strings):
//   columns = "email,phone"          required: column names, comma-separated
//   tables  = "public.users,orders"  optional: `schema.table`, or a bare `table`
//                                    for any schema; default: every table
//   mode    = "redact"               optional: the only mode
//
// A value that is `null` or `unchanged-toast` is kept as it is; any other
// value of a listed column, in `after` and in `before`, becomes text "***"
// with type oid 25.
//
// Ownership (see ../README.md): `transform` owns the batch it receives. It
// masks in place and hands the same list back as its result; the generated
// post-return function frees the whole list once the host has copied it out.
// So every string in the returned list must be heap memory of its own: the
// old value is freed with its generated `*_free` helper and "***" is a fresh
// copy, never a pointer to a literal.
#include <stdlib.h>
#include <string.h>

#include "transform.h"

typedef transform_string_t string_t;
typedef cdc_pipeline_types_change_t change_t;
typedef cdc_pipeline_types_column_t column_t;
typedef cdc_pipeline_types_option_row_t option_row_t;

#define TEXT_OID 25

// A list of names the module owns (copied out of the config).
typedef struct {
  string_t *items;
  size_t len;
} names_t;

static names_t columns;    // column names to mask
static names_t qualified;  // "schema.table"
static names_t bare;       // "table", in any schema
static bool every_table = true;

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
  for (size_t i = 0; i < names->len; i++) transform_string_free(&names->items[i]);
  free(names->items);
  names->items = NULL;
  names->len = 0;
}

static void names_push(names_t *names, const uint8_t *s, size_t len) {
  names->items = realloc(names->items, (names->len + 1) * sizeof(string_t));
  if (!names->items) abort();
  transform_string_dup_n(&names->items[names->len++], (const char *)s, len);
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
static const string_t *config_get(const transform_list_tuple2_string_string_t *config,
                                  const char *key) {
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
static bool configure(const transform_list_tuple2_string_string_t *config, string_t *err) {
  names_free(&columns);
  names_free(&qualified);
  names_free(&bare);
  every_table = true;

  const string_t *mode = config_get(config, "mode");
  if (mode && !str_eq(mode, "redact", 6)) {
    buf_t b = {0};
    buf_str(&b, "mask-columns: unknown mode \"");
    buf_add(&b, mode->ptr, mode->len);
    buf_str(&b, "\" (the only mode is \"redact\")");
    *err = b.s;  // heap memory: the post-return function frees it
    return false;
  }
  const string_t *cols = config_get(config, "columns");
  if (cols) split_list(cols, &columns);
  if (columns.len == 0) {
    transform_string_dup(err, "mask-columns: set columns");  // a copy, as above
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

bool exports_cdc_pipeline_transformer_init(transform_list_tuple2_string_string_t *config,
                                           string_t *err) {
  bool ok = configure(config, err);
  transform_list_tuple2_string_string_free(config);  // init owns its argument
  return ok;
}

// Whether `schema.table` is one of the `qualified` names or `table` one of the
// `bare` ones.
static bool table_matches(const change_t *c) {
  if (every_table) return true;
  if (names_has(&bare, &c->table)) return true;
  size_t slen = c->schema.len, tlen = c->table.len;
  for (size_t i = 0; i < qualified.len; i++) {
    const string_t *q = &qualified.items[i];
    if (q->len == slen + 1 + tlen && memcmp(q->ptr, c->schema.ptr, slen) == 0 &&
        q->ptr[slen] == '.' && memcmp(q->ptr + slen + 1, c->table.ptr, tlen) == 0)
      return true;
  }
  return false;
}

static void mask_row(option_row_t *row) {
  if (!row->is_some) return;
  for (size_t i = 0; i < row->val.len; i++) {
    column_t *col = &row->val.ptr[i];
    uint8_t tag = col->value.tag;
    if (tag == CDC_PIPELINE_TYPES_VALUE_NULL || tag == CDC_PIPELINE_TYPES_VALUE_UNCHANGED_TOAST)
      continue;
    if (!names_has(&columns, &col->name)) continue;
    cdc_pipeline_types_value_free(&col->value);  // whatever it held: string, bytes, array...
    col->value.tag = CDC_PIPELINE_TYPES_VALUE_TEXT;
    transform_string_dup_n(&col->value.val.text, "***", 3);  // a copy: it will be freed
    col->type_oid = TEXT_OID;
  }
}

bool exports_cdc_pipeline_transformer_transform(
    exports_cdc_pipeline_transformer_list_change_t *changes,
    exports_cdc_pipeline_transformer_list_change_t *ret, string_t *err) {
  (void)err;
  for (size_t i = 0; i < changes->len; i++) {
    change_t *c = &changes->ptr[i];
    if (!c->after.is_some && !c->before.is_some) continue;
    if (!table_matches(c)) continue;
    mask_row(&c->after);
    mask_row(&c->before);
  }
  *ret = *changes;  // hand the (modified) batch back: ownership moves to the result
  return true;
}
