// filter-route: drops the changes of the denied tables and routes the others by
// the value of one column, in the batch world (wit/batch.wit): the batch stays in
// the host. Per batch one `relations()` and one `relation-ids()`; a denied change
// is one `discard`; a routed change one `get` (or `get-before` for a delete) and
// one `route` (calls into the host are cheap from C).
//
// Config ([transforms.config] in pipeline.toml, all values are strings):
//   deny     = "audit,public.logs"  optional: `schema.table`, or a bare `table`
//                                   for any schema; their changes are dropped
//   column   = "region"             optional: route each change by this column
//                                   (new row; the old row for a delete)
//   template = "users.{value}"      optional: the route; `{table}` and `{value}`
//                                   are replaced; default "{table}.{value}"
//   required = "true"               optional: a change of a table that has
//                                   `column` but holds no value there (null)
//                                   fails the batch; default "false": its route
//                                   is left to the sinks
// At least one of deny and column. Messages (no table) pass unrouted.
//
// Ownership (see ../README.md): what the host returns (relations, ids, values) is
// ours to free; what we pass to it (`route`'s subject) is lent, so ours to free
// after the call; an error string we return is given away (the post-return
// function frees it), so it is always heap memory.
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transform_batch.h"

typedef transform_batch_string_t string_t;
typedef cdc_pipeline_batch_borrow_changes_t changes_t;
typedef cdc_pipeline_batch_relation_t relation_t;
typedef cdc_pipeline_batch_value_t value_t;
typedef transform_batch_list_tuple2_string_string_t config_t;

static const char *const known_keys[] = {"deny", "column", "template", "required"};
#define KNOWN_KEYS (sizeof known_keys / sizeof known_keys[0])

typedef struct {
  string_t *items;
  size_t len;
} names_t;

static names_t deny;       // "table" or "schema.table"
static string_t column;    // empty: no routing
static string_t template;  // with {table} and {value}
static bool required = false;
static bool configured = false;  // by a successful init

static bool str_eq(const string_t *a, const char *b, size_t blen) {
  return a->len == blen && memcmp(a->ptr, b, blen) == 0;
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

static bool is_space(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

// Splits a comma-separated list into `out`: items trimmed (ASCII space), empty
// ones dropped.
static void split_list(const string_t *s, names_t *out) {
  size_t i = 0;
  while (i <= s->len) {
    size_t start = i;
    while (i < s->len && s->ptr[i] != ',') i++;
    size_t end = i;
    while (start < end && is_space(s->ptr[start])) start++;
    while (end > start && is_space(s->ptr[end - 1])) end--;
    if (end > start) names_push(out, s->ptr + start, end - start);
    i++;  // past the comma (or past the end)
  }
}

static const string_t *config_get(const config_t *config, const char *key) {
  for (size_t i = config->len; i-- > 0;) {
    if (str_eq(&config->ptr[i].f0, key, strlen(key))) return &config->ptr[i].f1;
  }
  return NULL;
}

// A growing byte buffer for routes and messages.
typedef struct {
  string_t s;
  size_t cap;
} buf_t;

static void buf_add(buf_t *b, const void *p, size_t len) {
  if (b->s.len + len > b->cap) {
    b->cap = (b->s.len + len) * 2 + 16;
    b->s.ptr = realloc(b->s.ptr, b->cap);
    if (!b->s.ptr) abort();
  }
  memcpy(b->s.ptr + b->s.len, p, len);
  b->s.len += len;
}

static void buf_str(buf_t *b, const char *s) { buf_add(b, s, strlen(s)); }
static void buf_s(buf_t *b, const string_t *s) { buf_add(b, s->ptr, s->len); }

static bool fail(string_t *err, const char *msg) {
  transform_batch_string_dup(err, msg);  // a copy: the post-return function frees it
  return false;
}

static bool configure(const config_t *config, string_t *err) {
  names_free(&deny);
  transform_batch_string_free(&column);
  transform_batch_string_free(&template);
  required = false;
  for (size_t i = 0; i < config->len; i++) {
    const string_t *key = &config->ptr[i].f0;
    bool known = false;
    for (size_t k = 0; k < KNOWN_KEYS && !known; k++)
      known = str_eq(key, known_keys[k], strlen(known_keys[k]));
    if (known) continue;
    buf_t b = {0};
    buf_str(&b, "filter-route: unknown config key `");
    buf_s(&b, key);
    buf_str(&b, "` (known keys: deny, column, template, required)");
    *err = b.s;  // heap memory: the post-return function frees it
    return false;
  }
  const string_t *d = config_get(config, "deny");
  if (d) split_list(d, &deny);
  const string_t *c = config_get(config, "column");
  if (c) {
    names_t one = {0};
    split_list(c, &one);  // trimmed
    if (one.len == 1) transform_batch_string_dup_n(&column, (const char *)one.items[0].ptr, one.items[0].len);
    names_free(&one);
  }
  if (deny.len == 0 && column.len == 0) return fail(err, "filter-route: set deny or column");
  const string_t *t = config_get(config, "template");
  if (t) transform_batch_string_dup_n(&template, (const char *)t->ptr, t->len);
  else transform_batch_string_dup(&template, "{table}.{value}");
  const string_t *r = config_get(config, "required");
  if (r && !str_eq(r, "true", 4) && !str_eq(r, "false", 5)) {
    buf_t b = {0};
    buf_str(&b, "filter-route: required is `");
    buf_s(&b, r);
    buf_str(&b, "`: use true or false");
    *err = b.s;
    return false;
  }
  required = r && str_eq(r, "true", 4);
  return true;
}

bool exports_cdc_pipeline_batch_transformer_init(config_t *config, string_t *err) {
  configured = configure(config, err);  // a failed re-init leaves nothing running
  transform_batch_list_tuple2_string_string_free(config);  // init owns its argument
  return configured;
}

static bool denied(const relation_t *r) {
  for (size_t i = 0; i < deny.len; i++) {
    const string_t *q = &deny.items[i];
    if (str_eq(q, (const char *)r->table.ptr, r->table.len)) return true;
    size_t slen = r->schema.len, tlen = r->table.len;
    if (q->len == slen + 1 + tlen && memcmp(q->ptr, r->schema.ptr, slen) == 0 &&
        q->ptr[slen] == '.' && memcmp(q->ptr + slen + 1, r->table.ptr, tlen) == 0)
      return true;
  }
  return false;
}

// The index of `column` in the relation, or -1.
static int64_t route_column(const relation_t *r) {
  if (column.len == 0) return -1;
  for (size_t c = 0; c < r->columns.len; c++)
    if (str_eq(&r->columns.ptr[c].name, (const char *)column.ptr, column.len)) return (int64_t)c;
  return -1;
}

// Appends the value's text; false for a type that does not route.
static bool value_text(buf_t *b, const value_t *v) {
  char num[24];
  switch (v->tag) {
    case CDC_PIPELINE_TYPES_VALUE_TEXT: buf_s(b, &v->val.text); return true;
    case CDC_PIPELINE_TYPES_VALUE_ENUM_LABEL: buf_s(b, &v->val.enum_label); return true;
    case CDC_PIPELINE_TYPES_VALUE_UUID: buf_s(b, &v->val.uuid); return true;
    case CDC_PIPELINE_TYPES_VALUE_NUMERIC: buf_s(b, &v->val.numeric); return true;
    case CDC_PIPELINE_TYPES_VALUE_INT2: snprintf(num, sizeof num, "%d", v->val.int2); break;
    case CDC_PIPELINE_TYPES_VALUE_INT4: snprintf(num, sizeof num, "%" PRId32, v->val.int4); break;
    case CDC_PIPELINE_TYPES_VALUE_INT8: snprintf(num, sizeof num, "%" PRId64, v->val.int8); break;
    default: return false;
  }
  buf_str(b, num);
  return true;
}

// Routes change `i` of relation `r` by the value `v` (`has`: the change has such a
// row); false and `err` when it cannot.
static bool route_one(changes_t changes, uint32_t i, const relation_t *r, bool has, const value_t *v,
                      string_t *err) {
  buf_t where = {0};
  buf_s(&where, &r->schema);
  buf_str(&where, ".");
  buf_s(&where, &r->table);
  buf_t route = {0};
  bool ok = true;
  if (!has || v->tag == CDC_PIPELINE_TYPES_VALUE_NULL || v->tag == CDC_PIPELINE_TYPES_VALUE_UNCHANGED_TOAST) {
    if (required) {
      buf_t b = {0};
      char n[16];
      snprintf(n, sizeof n, "%" PRIu32, i);
      buf_str(&b, "filter-route: change ");
      buf_str(&b, n);
      buf_str(&b, " of ");
      buf_s(&b, &where.s);
      buf_str(&b, " has no value in `");
      buf_s(&b, &column);
      buf_str(&b, "` (required = \"true\")");
      *err = b.s;
      ok = false;
    }
    goto done;
  }
  for (size_t k = 0; k < template.len;) {  // the template, placeholders replaced
    const uint8_t *p = template.ptr + k;
    size_t left = template.len - k;
    if (left >= 7 && memcmp(p, "{table}", 7) == 0) {
      buf_s(&route, &r->table);
      k += 7;
    } else if (left >= 7 && memcmp(p, "{value}", 7) == 0) {
      if (!value_text(&route, v)) {
        buf_t b = {0};
        buf_str(&b, "filter-route: `");
        buf_s(&b, &column);
        buf_str(&b, "` of ");
        buf_s(&b, &where.s);
        buf_str(&b, " is not text: route by a text, integer, numeric, uuid or enum column");
        *err = b.s;
        ok = false;
        goto done;
      }
      k += 7;
    } else {
      buf_add(&route, p, 1);
      k++;
    }
  }
  string_t host_err;
  if (!cdc_pipeline_batch_method_changes_route(changes, i, &route.s, &host_err)) {
    buf_t b = {0};
    buf_str(&b, "filter-route: ");
    buf_s(&b, &host_err);
    transform_batch_string_free(&host_err);
    *err = b.s;
    ok = false;
  }
done:
  free(where.s.ptr);
  free(route.s.ptr);  // lent to `route`: ours to free
  return ok;
}

bool exports_cdc_pipeline_batch_transformer_transform(changes_t changes, string_t *err) {
  if (!configured) return fail(err, "filter-route: transform called before a successful init");
  cdc_pipeline_batch_list_relation_t rels;
  cdc_pipeline_batch_method_changes_relations(changes, &rels);
  transform_batch_list_s32_t ids;
  cdc_pipeline_batch_method_changes_relation_ids(changes, &ids);
  bool *drop = calloc(rels.len + 1, sizeof(bool));
  int64_t *col = calloc(rels.len + 1, sizeof(int64_t));
  if (!drop || !col) abort();
  for (size_t r = 0; r < rels.len; r++) {
    drop[r] = denied(&rels.ptr[r]);
    col[r] = route_column(&rels.ptr[r]);
  }
  bool ok = true;
  for (size_t i = 0; i < ids.len && ok; i++) {
    int32_t r = ids.ptr[i];
    if (r < 0) continue;  // a message: no table
    if (drop[r]) {
      cdc_pipeline_batch_method_changes_discard(changes, (uint32_t)i);
      continue;
    }
    if (col[r] < 0) continue;
    value_t v;
    bool has = cdc_pipeline_batch_method_changes_get(changes, (uint32_t)i, (uint32_t)col[r], &v);
    if (!has) has = cdc_pipeline_batch_method_changes_get_before(changes, (uint32_t)i, (uint32_t)col[r], &v);
    ok = route_one(changes, (uint32_t)i, &rels.ptr[r], has, &v, err);
    if (has) cdc_pipeline_batch_value_free(&v);  // ours: the host copied it into our memory
  }
  free(drop);
  free(col);
  transform_batch_list_s32_free(&ids);
  cdc_pipeline_batch_list_relation_free(&rels);
  return ok;
}
