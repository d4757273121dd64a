/* doc.c - reading a snapshot document (schemas/twin.schema.json) for
 * display, and the small formatters twinctl's output shares: times,
 * numbers, wheel labels, aligned tables.
 *
 * Readers never fail on a document that lacks a field or holds another
 * type: fields are added to the schema over time, and twinctl must show
 * what it can of documents written by older and newer engines. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"

/* ---- Fields -------------------------------------------------------------------- */

bool ctl_find(const bson_t *doc, const char *path, bson_iter_t *it) {
  bson_iter_t root;
  return bson_iter_init(&root, doc) && bson_iter_find_descendant(&root, path, it);
}

const char *ctl_str(const bson_t *doc, const char *path) {
  bson_iter_t it;
  if (!ctl_find(doc, path, &it) || !BSON_ITER_HOLDS_UTF8(&it)) return NULL;
  return bson_iter_utf8(&it, NULL);
}

bool ctl_iter_num(const bson_iter_t *it, double *out) {
  if (BSON_ITER_HOLDS_DOUBLE(it))
    *out = bson_iter_double(it);
  else if (BSON_ITER_HOLDS_INT64(it))
    *out = (double)bson_iter_int64(it);
  else if (BSON_ITER_HOLDS_INT32(it))
    *out = bson_iter_int32(it);
  else
    return false;
  return true;
}

bool ctl_num(const bson_t *doc, const char *path, double *out) {
  bson_iter_t it;
  return ctl_find(doc, path, &it) && ctl_iter_num(&it, out);
}

bool ctl_iter_ms(const bson_iter_t *it, int64_t *ms) {
  if (BSON_ITER_HOLDS_DATE_TIME(it))
    *ms = bson_iter_date_time(it);
  else if (BSON_ITER_HOLDS_INT64(it))
    *ms = bson_iter_int64(it);
  else if (BSON_ITER_HOLDS_INT32(it))
    *ms = bson_iter_int32(it);
  else
    return false;
  return true;
}

bool ctl_ms(const bson_t *doc, const char *path, int64_t *ms) {
  bson_iter_t it;
  return ctl_find(doc, path, &it) && ctl_iter_ms(&it, ms);
}

uint32_t ctl_array_len(const bson_t *doc, const char *path) {
  bson_iter_t it, in;
  uint32_t n = 0;
  if (!ctl_find(doc, path, &it) || !BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &in)) return 0;
  while (bson_iter_next(&in)) n++;
  return n;
}

void ctl_append_joined(bson_string_t *s, const bson_t *doc, const char *path, const char *sep) {
  bson_iter_t it, in;
  bool first = true;
  if (!ctl_find(doc, path, &it) || !BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &in)) return;
  while (bson_iter_next(&in)) {
    if (!BSON_ITER_HOLDS_UTF8(&in)) continue;
    if (!first) bson_string_append(s, sep);
    bson_string_append(s, bson_iter_utf8(&in, NULL));
    first = false;
  }
}

uint32_t ctl_numbers(const bson_t *doc, const char *path, double *v, uint32_t cap) {
  bson_iter_t it, in;
  uint32_t n = 0;
  if (!ctl_find(doc, path, &it) || !BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &in)) return 0;
  while (n < cap && bson_iter_next(&in))
    if (ctl_iter_num(&in, &v[n])) n++;
  return n;
}

/* ---- Formatting ---------------------------------------------------------------- */

void ctl_fmt_time(char *buf, size_t cap, int64_t ms, bool millis) {
  int64_t s = ms / 1000, r = ms % 1000;
  if (r < 0) {
    r += 1000;
    s--;
  }
  time_t t = (time_t)s;
  struct tm tm;
  if (!gmtime_r(&t, &tm) || !strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm)) {
    snprintf(buf, cap, "%" PRId64 "ms", ms);
    return;
  }
  size_t n = strlen(buf);
  if (millis)
    snprintf(buf + n, cap - n, ".%03dZ", (int)r);
  else
    snprintf(buf + n, cap - n, "Z");
}

void ctl_fmt_double(char *buf, size_t cap, double v) {
  if (v == (double)(int64_t)v && v > -1e15 && v < 1e15) { /* 60, not 6e+01 */
    snprintf(buf, cap, "%.0f", v);
    return;
  }
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, cap, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) return;
  }
}

void ctl_wheel_label(char *buf, size_t cap, uint32_t i) {
  static const char *names[] = {"FL", "FR", "RL", "RR"};
  if (i < 4)
    snprintf(buf, cap, "%s", names[i]);
  else
    snprintf(buf, cap, "W%u", i + 1);
}

const char *ctl_severity(const bson_iter_t *it, char *buf, size_t cap) {
  static const char *names[] = {"UNSPECIFIED", "INFO", "WARNING", "CRITICAL"};
  double n;
  if (BSON_ITER_HOLDS_UTF8(it)) return bson_iter_utf8(it, NULL);
  if (ctl_iter_num(it, &n) && n >= 0 && n < 4) return names[(int)n];
  snprintf(buf, cap, "?");
  return buf;
}

/* ---- Tables -------------------------------------------------------------------- */

/* Display width: code points, so "°C" and "Grünheide" line up. */
static size_t width(const char *s) {
  size_t w = 0;
  for (; *s; s++)
    if (((unsigned char)*s & 0xC0) != 0x80) w++;
  return w;
}

void ctl_table_init(ctl_table_t *t, uint32_t ncols, const char *const *heads, uint32_t right_mask) {
  memset(t, 0, sizeof *t);
  t->ncols = ncols;
  t->heads = heads;
  t->right_mask = right_mask;
  t->empty = "-";
}

void ctl_table_add(ctl_table_t *t, const char *const *cells) {
  if (t->nrows == t->cap) {
    t->cap = t->cap ? t->cap * 2 : 64;
    t->cells = bson_realloc(t->cells, t->cap * t->ncols * sizeof *t->cells);
  }
  for (uint32_t c = 0; c < t->ncols; c++)
    t->cells[t->nrows * t->ncols + c] = bson_strdup(cells[c] && *cells[c] ? cells[c] : t->empty);
  t->nrows++;
}

static void cell(FILE *out, const char *s, size_t w, bool right, bool last) {
  size_t pad = w - width(s);
  if (right)
    for (size_t i = 0; i < pad; i++) fputc(' ', out);
  fputs(s, out);
  if (last) return;
  if (!right)
    for (size_t i = 0; i < pad; i++) fputc(' ', out);
  fputs("  ", out);
}

void ctl_table_print(const ctl_table_t *t, FILE *out) {
  size_t *w = bson_malloc0(t->ncols * sizeof *w);
  for (uint32_t c = 0; c < t->ncols; c++) {
    w[c] = width(t->heads[c]);
    for (size_t r = 0; r < t->nrows; r++) {
      size_t x = width(t->cells[r * t->ncols + c]);
      if (x > w[c]) w[c] = x;
    }
  }
  fprintf(out, "%*s", t->indent, "");
  for (uint32_t c = 0; c < t->ncols; c++)
    cell(out, t->heads[c], w[c], t->right_mask & (1u << c), c + 1 == t->ncols);
  fputc('\n', out);
  for (size_t r = 0; r < t->nrows; r++) {
    fprintf(out, "%*s", t->indent, "");
    for (uint32_t c = 0; c < t->ncols; c++)
      cell(out, t->cells[r * t->ncols + c], w[c], t->right_mask & (1u << c), c + 1 == t->ncols);
    fputc('\n', out);
  }
  bson_free(w);
}

void ctl_table_cleanup(ctl_table_t *t) {
  for (size_t i = 0; i < t->nrows * t->ncols; i++) bson_free(t->cells[i]);
  bson_free(t->cells);
  memset(t, 0, sizeof *t);
}
