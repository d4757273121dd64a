/* twin_bson.c - the twin as a MongoDB snapshot document, and back.
 *
 * The document layout is a public contract (schemas/twin.schema.json):
 * fields are written in a fixed order so equal twins give equal bytes,
 * and tw_twin_from_bson(tw_twin_to_bson(t)) continues exactly where t was
 * (the seq windows, LWW stamps and trend sums are all stored). Unsigned
 * 64-bit seqs are stored as int64 with the same bits. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "twin/twin.h"
#include "twin/v1/alerts.pb-c.h"
#include "twin_int.h"
#include "util.h"

/* ---- Writing --------------------------------------------------------------- */

static void put_stamp(bson_t *d, const tw_stamp_t *st) {
  BSON_APPEND_INT64(d, "at_ms", st->at_ms);
  BSON_APPEND_INT64(d, "seq", (int64_t)st->seq);
}

static void put_str_or_null(bson_t *d, const char *k, const char *v) {
  if (v)
    BSON_APPEND_UTF8(d, k, v);
  else
    BSON_APPEND_NULL(d, k);
}

static void put_doubles(bson_t *d, const char *k, const double *v, uint32_t n) {
  bson_t a;
  char key[16];
  const char *kp;
  BSON_APPEND_ARRAY_BEGIN(d, k, &a);
  for (uint32_t i = 0; i < n; i++) {
    bson_uint32_to_string(i, &kp, key, sizeof key);
    BSON_APPEND_DOUBLE(&a, kp, v[i]);
  }
  bson_append_array_end(d, &a);
}

static void put_strings(bson_t *d, const char *k, char *const *v, uint32_t n) {
  bson_t a;
  char key[16];
  const char *kp;
  BSON_APPEND_ARRAY_BEGIN(d, k, &a);
  for (uint32_t i = 0; i < n; i++) {
    bson_uint32_to_string(i, &kp, key, sizeof key);
    BSON_APPEND_UTF8(&a, kp, v[i]);
  }
  bson_append_array_end(d, &a);
}

static void put_telemetry(bson_t *doc, const tw_telemetry_t *t) {
  bson_t tel, f;
  BSON_APPEND_DOCUMENT_BEGIN(doc, "telemetry", &tel);
  for (int i = 0; i < TW_F_SCALAR_COUNT; i++) {
    const tw_scalar_t *s = &t->scalars[i];
    if (!tw_stamp_set(&s->st)) continue;
    BSON_APPEND_DOCUMENT_BEGIN(&tel, tw_scalar_field_name((tw_scalar_field_t)i), &f);
    BSON_APPEND_DOUBLE(&f, "value", s->value);
    put_stamp(&f, &s->st);
    bson_append_document_end(&tel, &f);
  }
  const struct {
    const char *name;
    const tw_vec_t *v;
  } vecs[] = {{"tire_pressure_kpa", &t->tire_pressure_kpa}, {"brake_pad_mm", &t->brake_pad_mm}};
  for (size_t i = 0; i < 2; i++) {
    if (!tw_stamp_set(&vecs[i].v->st)) continue;
    BSON_APPEND_DOCUMENT_BEGIN(&tel, vecs[i].name, &f);
    put_doubles(&f, "value", vecs[i].v->v, vecs[i].v->n);
    put_stamp(&f, &vecs[i].v->st);
    bson_append_document_end(&tel, &f);
  }
  if (tw_stamp_set(&t->dtc_codes.st)) {
    BSON_APPEND_DOCUMENT_BEGIN(&tel, "dtc_codes", &f);
    put_strings(&f, "value", t->dtc_codes.s, t->dtc_codes.n);
    put_stamp(&f, &t->dtc_codes.st);
    bson_append_document_end(&tel, &f);
  }
  if (tw_stamp_set(&t->firmware_st)) {
    BSON_APPEND_DOCUMENT_BEGIN(&tel, "firmware_version", &f);
    BSON_APPEND_UTF8(&f, "value", t->firmware_version);
    put_stamp(&f, &t->firmware_st);
    bson_append_document_end(&tel, &f);
  }
  if (t->n_metrics) {
    bson_t m;
    BSON_APPEND_DOCUMENT_BEGIN(&tel, "metrics", &m);
    for (uint32_t i = 0; i < t->n_metrics; i++) {
      BSON_APPEND_DOCUMENT_BEGIN(&m, t->metrics[i].name, &f);
      BSON_APPEND_DOUBLE(&f, "value", t->metrics[i].val.value);
      put_stamp(&f, &t->metrics[i].val.st);
      bson_append_document_end(&m, &f);
    }
    bson_append_document_end(&tel, &m);
  }
  bson_append_document_end(doc, &tel);
}

static void put_entry(bson_t *a, const char *key, const tw_entry_t *e) {
  const char *text[TW_ET_COUNT], *p = tw_entry_texts(e, text);
  bson_t d;
  BSON_APPEND_DOCUMENT_BEGIN(a, key, &d);
  const char *kind = tw_lifecycle_kind_name(e->kind);
  BSON_APPEND_UTF8(&d, "kind", kind ? kind : "UNKNOWN");
  BSON_APPEND_INT64(&d, "event_time_ms", e->event_time_ms);
  BSON_APPEND_UTF8(&d, "source", text[TW_ET_SOURCE]);
  BSON_APPEND_INT64(&d, "seq", (int64_t)e->seq);
  BSON_APPEND_UTF8(&d, "status", e->rejected ? "rejected" : "applied");
  if (text[TW_ET_REASON]) BSON_APPEND_UTF8(&d, "reason", text[TW_ET_REASON]);
  if (text[TW_ET_SITE]) BSON_APPEND_UTF8(&d, "site", text[TW_ET_SITE]);
  if (text[TW_ET_ACTOR]) BSON_APPEND_UTF8(&d, "actor", text[TW_ET_ACTOR]);
  if (text[TW_ET_DETAIL]) BSON_APPEND_UTF8(&d, "detail", text[TW_ET_DETAIL]);
  if (text[TW_ET_WORK_ORDER]) BSON_APPEND_UTF8(&d, "work_order", text[TW_ET_WORK_ORDER]);
  if (e->has_odometer) BSON_APPEND_DOUBLE(&d, "odometer_km", e->odometer_km);
  if (e->n_parts) {
    bson_t arr;
    char kb[16];
    const char *kp;
    BSON_APPEND_ARRAY_BEGIN(&d, "parts_replaced", &arr);
    for (uint32_t i = 0; i < e->n_parts; i++, p = tw_text_next(p)) {
      bson_uint32_to_string(i, &kp, kb, sizeof kb);
      BSON_APPEND_UTF8(&arr, kp, p);
    }
    bson_append_array_end(&d, &arr);
  }
  if (text[TW_ET_RECALL_ID]) BSON_APPEND_UTF8(&d, "recall_id", text[TW_ET_RECALL_ID]);
  if (text[TW_ET_OWNER_ID]) BSON_APPEND_UTF8(&d, "owner_id", text[TW_ET_OWNER_ID]);
  if (text[TW_ET_MODEL]) BSON_APPEND_UTF8(&d, "model", text[TW_ET_MODEL]);
  if (e->n_attrs) {
    bson_t at;
    BSON_APPEND_DOCUMENT_BEGIN(&d, "attributes", &at);
    for (uint32_t i = 0; i < e->n_attrs; i++) {
      const char *k = p, *v = tw_text_next(k);
      BSON_APPEND_UTF8(&at, k, v);
      p = tw_text_next(v);
    }
    bson_append_document_end(&d, &at);
  }
  bson_append_document_end(a, &d);
}

/* Slope of the least-squares line through (days, soh), in % per year. */
static bool trend_slope(const tw_trend_t *tr, double *out) {
  double n = (double)tr->n;
  double den = n * tr->stt - tr->st * tr->st;
  if (tr->n < 2 || den <= 0) return false;
  *out = (n * tr->sty - tr->st * tr->sy) / den * 365.0;
  return true;
}

/* Wear rates from the fit, shown to people; the sums make it resumable. */
static void put_wear(bson_t *doc, const tw_wear_t *w) {
  bson_t d;
  double n = (double)w->n, nk = (double)w->nk;
  double den = n * w->stt - w->st * w->st, denk = nk * w->skk - w->sk * w->sk;
  BSON_APPEND_DOCUMENT_BEGIN(doc, "brake_wear", &d);
  if (w->n >= 2 && den > 0)
    BSON_APPEND_DOUBLE(&d, "mm_per_day", -(n * w->sty - w->st * w->sy) / den);
  else
    BSON_APPEND_NULL(&d, "mm_per_day");
  if (w->nk >= 2 && denk > 0)
    BSON_APPEND_DOUBLE(&d, "mm_per_1000_km", -(nk * w->sky - w->sk * w->syk) / denk * 1000.0);
  else
    BSON_APPEND_NULL(&d, "mm_per_1000_km");
  BSON_APPEND_INT64(&d, "samples", (int64_t)w->n);
  BSON_APPEND_INT64(&d, "t0_ms", w->t0_ms);
  BSON_APPEND_INT64(&d, "last_at_ms", w->t_last);
  BSON_APPEND_DOUBLE(&d, "last_mm", w->y_last);
  BSON_APPEND_DOUBLE(&d, "sum_t", w->st);
  BSON_APPEND_DOUBLE(&d, "sum_y", w->sy);
  BSON_APPEND_DOUBLE(&d, "sum_tt", w->stt);
  BSON_APPEND_DOUBLE(&d, "sum_ty", w->sty);
  BSON_APPEND_INT64(&d, "km_samples", (int64_t)w->nk);
  BSON_APPEND_DOUBLE(&d, "k0", w->k0);
  BSON_APPEND_DOUBLE(&d, "sum_k", w->sk);
  BSON_APPEND_DOUBLE(&d, "sum_kk", w->skk);
  BSON_APPEND_DOUBLE(&d, "sum_ky", w->sky);
  BSON_APPEND_DOUBLE(&d, "sum_yk", w->syk);
  bson_append_document_end(doc, &d);
}

static const char *severity_name(int s) {
  switch (s) {
  case TWIN__V1__SEVERITY__INFO: return "INFO";
  case TWIN__V1__SEVERITY__WARNING: return "WARNING";
  case TWIN__V1__SEVERITY__CRITICAL: return "CRITICAL";
  default: return "UNSPECIFIED";
  }
}

static void put_alerts(bson_t *doc, const tw_twin_t *t) {
  bson_t d, a, e;
  char key[16];
  const char *kp;
  BSON_APPEND_DOCUMENT_BEGIN(doc, "alerts", &d);
  BSON_APPEND_ARRAY_BEGIN(&d, "active", &a);
  for (uint32_t i = 0; i < t->n_alerts; i++) {
    const tw_alert_t *al = &t->alerts[i];
    bson_uint32_to_string(i, &kp, key, sizeof key);
    BSON_APPEND_DOCUMENT_BEGIN(&a, kp, &e);
    BSON_APPEND_UTF8(&e, "rule", al->rule);
    BSON_APPEND_UTF8(&e, "alert_id", al->alert_id);
    BSON_APPEND_UTF8(&e, "severity", severity_name(al->severity));
    BSON_APPEND_INT64(&e, "since", al->since_ms);
    BSON_APPEND_DOUBLE(&e, "value", al->value);
    BSON_APPEND_DOUBLE(&e, "threshold", al->threshold);
    BSON_APPEND_UTF8(&e, "unit", al->unit);
    if (al->has_predicted)
      BSON_APPEND_INT64(&e, "predicted_at_ms", al->predicted_at_ms);
    else
      BSON_APPEND_NULL(&e, "predicted_at_ms");
    BSON_APPEND_UTF8(&e, "message", al->message);
    BSON_APPEND_INT32(&e, "leaf", al->leaf);
    bson_append_document_end(&a, &e);
  }
  bson_append_array_end(&d, &a);
  /* Raises per rule so far: the cycle number in alert ids. */
  bson_t cy;
  BSON_APPEND_DOCUMENT_BEGIN(&d, "cycles", &cy);
  for (uint32_t i = 0; i < t->n_alert_cycles; i++)
    BSON_APPEND_INT64(&cy, t->alert_cycles[i].rule, t->alert_cycles[i].n);
  bson_append_document_end(&d, &cy);
  bson_append_document_end(doc, &d);
}

void tw_twin_to_bson(const tw_twin_t *t, int64_t updated_at_ms, bson_t *doc) {
  char key[16];
  const char *kp;
  bson_t a, d;

  BSON_APPEND_UTF8(doc, "_id", t->product_id);
  BSON_APPEND_UTF8(doc, "stage", tw_stage_name(t->stage));
  put_str_or_null(doc, "model", t->model);
  put_str_or_null(doc, "owner", t->owner);
  BSON_APPEND_INT64(doc, "rev", (int64_t)t->rev);
  BSON_APPEND_INT64(doc, "seen", (int64_t)t->seen);
  BSON_APPEND_BOOL(doc, "quality_hold", t->quality_hold);
  const tw_telemetry_t *tel = tw_twin_tel(t);
  put_telemetry(doc, tel);

  /* Derived values users filter and sort on. */
  put_strings(doc, "active_dtcs", tel->dtc_codes.s, tel->dtc_codes.n);
  if (tel->brake_pad_mm.n) {
    double m = tel->brake_pad_mm.v[0];
    for (uint32_t i = 1; i < tel->brake_pad_mm.n; i++)
      if (tel->brake_pad_mm.v[i] < m) m = tel->brake_pad_mm.v[i];
    BSON_APPEND_DOUBLE(doc, "min_brake_pad_mm", m);
  } else {
    BSON_APPEND_NULL(doc, "min_brake_pad_mm");
  }
  const tw_scalar_t *odo = &tel->scalars[TW_F_ODOMETER_KM];
  if (tw_stamp_set(&odo->st) && t->last_service.set && t->last_service.has_odometer)
    BSON_APPEND_DOUBLE(doc, "odometer_since_service_km", odo->value - t->last_service.odometer_km);
  else if (tw_stamp_set(&odo->st) && !t->last_service.set)
    BSON_APPEND_DOUBLE(doc, "odometer_since_service_km", odo->value);
  else
    BSON_APPEND_NULL(doc, "odometer_since_service_km");

  BSON_APPEND_DOCUMENT_BEGIN(doc, "battery_health", &d);
  const tw_scalar_t *soh = &tel->scalars[TW_F_BATTERY_SOH_PCT];
  if (tw_stamp_set(&soh->st))
    BSON_APPEND_DOUBLE(&d, "soh_pct", soh->value);
  else
    BSON_APPEND_NULL(&d, "soh_pct");
  double slope;
  if (trend_slope(&tel->soh_trend, &slope))
    BSON_APPEND_DOUBLE(&d, "trend_pct_per_year", slope);
  else
    BSON_APPEND_NULL(&d, "trend_pct_per_year");
  BSON_APPEND_INT64(&d, "samples", (int64_t)tel->soh_trend.n);
  BSON_APPEND_INT64(&d, "t0_ms", tel->soh_trend.t0_ms);
  BSON_APPEND_DOUBLE(&d, "sum_t", tel->soh_trend.st);
  BSON_APPEND_DOUBLE(&d, "sum_y", tel->soh_trend.sy);
  BSON_APPEND_DOUBLE(&d, "sum_tt", tel->soh_trend.stt);
  BSON_APPEND_DOUBLE(&d, "sum_ty", tel->soh_trend.sty);
  bson_append_document_end(doc, &d);

  BSON_APPEND_ARRAY_BEGIN(doc, "timeline", &a);
  for (uint32_t i = 0; i < t->n_timeline; i++) {
    bson_uint32_to_string(i, &kp, key, sizeof key);
    put_entry(&a, kp, t->timeline[i]);
  }
  bson_append_array_end(doc, &a);
  put_strings(doc, "open_recalls", t->open_recalls, t->n_open_recalls);

  if (t->last_service.set) {
    BSON_APPEND_DOCUMENT_BEGIN(doc, "last_service", &d);
    BSON_APPEND_INT64(&d, "at_ms", t->last_service.at_ms);
    if (t->last_service.has_odometer)
      BSON_APPEND_DOUBLE(&d, "odometer_km", t->last_service.odometer_km);
    else
      BSON_APPEND_NULL(&d, "odometer_km");
    put_str_or_null(&d, "work_order", t->last_service.work_order);
    put_str_or_null(&d, "site", t->last_service.site);
    bson_append_document_end(doc, &d);
  } else {
    BSON_APPEND_NULL(doc, "last_service");
  }
  if (t->last_brake_service_ms)
    BSON_APPEND_INT64(doc, "last_brake_service_ms", t->last_brake_service_ms);
  else
    BSON_APPEND_NULL(doc, "last_brake_service_ms");
  put_wear(doc, &tel->brake_wear);
  if (t->delivered) {
    BSON_APPEND_DOCUMENT_BEGIN(doc, "delivered", &d);
    BSON_APPEND_INT64(&d, "at_ms", t->delivered_ms);
    if (t->delivered_has_odometer)
      BSON_APPEND_DOUBLE(&d, "odometer_km", t->delivered_odometer_km);
    else
      BSON_APPEND_NULL(&d, "odometer_km");
    bson_append_document_end(doc, &d);
  } else {
    BSON_APPEND_NULL(doc, "delivered");
  }
  BSON_APPEND_INT64(doc, "last_event_ms", t->last_event_ms);
  put_alerts(doc, t);

  BSON_APPEND_ARRAY_BEGIN(doc, "sources", &a);
  for (uint32_t i = 0; i < t->n_sources; i++) {
    const tw_source_t *s = &t->sources[i];
    bson_t sd, miss;
    bson_uint32_to_string(i, &kp, key, sizeof key);
    BSON_APPEND_DOCUMENT_BEGIN(&a, kp, &sd);
    BSON_APPEND_UTF8(&sd, "name", s->name);
    BSON_APPEND_INT64(&sd, "hwm", (int64_t)s->hwm);
    /* The window as the seqs behind hwm not yet seen: usually none. */
    BSON_APPEND_ARRAY_BEGIN(&sd, "missing", &miss);
    uint64_t span = s->hwm < t->seq_window ? s->hwm : t->seq_window;
    uint32_t k = 0;
    for (uint64_t j = span; j-- > 1;) {
      if (s->bits[j / 64] & (UINT64_C(1) << (j % 64))) continue;
      bson_uint32_to_string(k++, &kp, key, sizeof key);
      BSON_APPEND_INT64(&miss, kp, (int64_t)(s->hwm - j));
    }
    bson_append_array_end(&sd, &miss);
    bson_append_document_end(&a, &sd);
  }
  bson_append_array_end(doc, &a);

  BSON_APPEND_DOCUMENT_BEGIN(doc, "counters", &d);
  BSON_APPEND_INT64(&d, "telemetry", (int64_t)t->counters.telemetry);
  BSON_APPEND_INT64(&d, "lifecycle", (int64_t)t->counters.lifecycle);
  BSON_APPEND_INT64(&d, "duplicates", (int64_t)t->counters.duplicates);
  BSON_APPEND_INT64(&d, "too_late", (int64_t)t->counters.too_late);
  BSON_APPEND_INT64(&d, "rejected", (int64_t)t->counters.rejected);
  BSON_APPEND_INT64(&d, "stale_fields", (int64_t)t->counters.stale_fields);
  bson_append_document_end(doc, &d);

  BSON_APPEND_DOCUMENT_BEGIN(doc, "offsets", &d);
  BSON_APPEND_INT64(&d, "telemetry", t->offsets[TW_TOPIC_TELEMETRY]);
  BSON_APPEND_INT64(&d, "lifecycle", t->offsets[TW_TOPIC_LIFECYCLE]);
  bson_append_document_end(doc, &d);

  if (updated_at_ms >= 0) BSON_APPEND_DATE_TIME(doc, "updated_at", updated_at_ms);
}

/* ---- Reading --------------------------------------------------------------- */

typedef struct {
  char *err;
  size_t cap;
  bool failed;
} rd_t;

static void rd_fail(rd_t *r, const char *fmt, ...) {
  if (r->failed) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->err, r->cap, fmt, ap);
  va_end(ap);
  r->failed = true;
}

static int64_t it_i64(const bson_iter_t *it) {
  if (BSON_ITER_HOLDS_INT64(it)) return bson_iter_int64(it);
  if (BSON_ITER_HOLDS_INT32(it)) return bson_iter_int32(it);
  if (BSON_ITER_HOLDS_DOUBLE(it)) return (int64_t)bson_iter_double(it);
  return 0;
}

static double it_dbl(const bson_iter_t *it) {
  if (BSON_ITER_HOLDS_DOUBLE(it)) return bson_iter_double(it);
  if (BSON_ITER_HOLDS_INT64(it)) return (double)bson_iter_int64(it);
  if (BSON_ITER_HOLDS_INT32(it)) return bson_iter_int32(it);
  return 0;
}

/* Copy of a UTF-8 value, or NULL for null/absent/other types. */
static char *it_str(const bson_iter_t *it) {
  if (!BSON_ITER_HOLDS_UTF8(it)) return NULL;
  uint32_t n;
  const char *s = bson_iter_utf8(it, &n);
  return tw_xstrndup(s, n);
}

static void read_stamp_from(const bson_iter_t *field, tw_stamp_t *st) {
  bson_iter_t in;
  if (!bson_iter_recurse(field, &in)) return;
  /* Set when seq >= 1; the engine never writes seq 0 (validation rejects it). */
  while (bson_iter_next(&in)) {
    if (strcmp(bson_iter_key(&in), "at_ms") == 0) st->at_ms = it_i64(&in);
    if (strcmp(bson_iter_key(&in), "seq") == 0) st->seq = (uint64_t)it_i64(&in);
  }
}

static bool sub_find(const bson_iter_t *field, const char *key, bson_iter_t *out) {
  bson_iter_t in;
  if (!bson_iter_recurse(field, &in)) return false;
  return bson_iter_find(&in, key) && (*out = in, true);
}

static double *read_doubles(const bson_iter_t *arr, uint32_t *n) {
  bson_iter_t in;
  double *v = NULL;
  *n = 0;
  if (!BSON_ITER_HOLDS_ARRAY(arr) || !bson_iter_recurse(arr, &in)) return NULL;
  while (bson_iter_next(&in)) {
    v = tw_xrealloc(v, (*n + 1) * sizeof *v);
    v[(*n)++] = it_dbl(&in);
  }
  return v;
}

static char **read_strings(const bson_iter_t *arr, uint32_t *n) {
  bson_iter_t in;
  char **v = NULL;
  *n = 0;
  if (!BSON_ITER_HOLDS_ARRAY(arr) || !bson_iter_recurse(arr, &in)) return NULL;
  while (bson_iter_next(&in)) {
    char *s = it_str(&in);
    if (!s) continue;
    v = tw_xrealloc(v, (*n + 1) * sizeof *v);
    v[(*n)++] = s;
  }
  return v;
}

/* The twin gets its telemetry block at the first field read: a document
 * with none (the twin had no telemetry) leaves it without. */
static void read_telemetry(tw_twin_t *tw, const bson_iter_t *tel) {
  bson_iter_t in, v;
  if (!bson_iter_recurse(tel, &in)) return;
  while (bson_iter_next(&in)) {
    const char *k = bson_iter_key(&in);
    bool done = false;
    for (int i = 0; i < TW_F_SCALAR_COUNT && !done; i++) {
      if (strcmp(k, tw_scalar_field_name((tw_scalar_field_t)i)) != 0) continue;
      tw_telemetry_t *t = tw_twin_tel_mut(tw);
      if (sub_find(&in, "value", &v)) t->scalars[i].value = it_dbl(&v);
      read_stamp_from(&in, &t->scalars[i].st);
      done = true;
    }
    if (done) continue;
    if (strcmp(k, "tire_pressure_kpa") == 0 || strcmp(k, "brake_pad_mm") == 0) {
      tw_telemetry_t *t = tw_twin_tel_mut(tw);
      tw_vec_t *vec = k[0] == 't' ? &t->tire_pressure_kpa : &t->brake_pad_mm;
      if (sub_find(&in, "value", &v)) {
        uint32_t n;
        double *d = read_doubles(&v, &n);
        tw_vec_set(vec, d, n);
        free(d);
      }
      read_stamp_from(&in, &vec->st);
    } else if (strcmp(k, "dtc_codes") == 0) {
      tw_telemetry_t *t = tw_twin_tel_mut(tw);
      if (sub_find(&in, "value", &v)) t->dtc_codes.s = read_strings(&v, &t->dtc_codes.n);
      read_stamp_from(&in, &t->dtc_codes.st);
    } else if (strcmp(k, "firmware_version") == 0) {
      tw_telemetry_t *t = tw_twin_tel_mut(tw);
      if (sub_find(&in, "value", &v)) t->firmware_version = it_str(&v);
      read_stamp_from(&in, &t->firmware_st);
    } else if (strcmp(k, "metrics") == 0) {
      bson_iter_t m;
      if (!bson_iter_recurse(&in, &m)) continue;
      while (bson_iter_next(&m)) {
        tw_metric_t *mt = tw_telemetry_metric(tw_twin_tel_mut(tw), bson_iter_key(&m));
        if (sub_find(&m, "value", &v)) mt->val.value = it_dbl(&v);
        read_stamp_from(&m, &mt->val.st);
      }
    }
  }
}

/* A string inside the document (borrowed), or NULL. */
static const char *it_cstr(const bson_iter_t *it) {
  return BSON_ITER_HOLDS_UTF8(it) ? bson_iter_utf8(it, NULL) : NULL;
}

/* The strings of an array, borrowed from the document; *n of them. */
static char **borrow_strings(const bson_iter_t *arr, uint32_t *n) {
  bson_iter_t in;
  char **v = NULL;
  *n = 0;
  if (!BSON_ITER_HOLDS_ARRAY(arr) || !bson_iter_recurse(arr, &in)) return NULL;
  while (bson_iter_next(&in)) {
    const char *s = it_cstr(&in);
    if (!s) continue;
    v = tw_xrealloc(v, (*n + 1) * sizeof *v);
    v[(*n)++] = (char *)s;
  }
  return v;
}

static void read_entry(tw_twin_t *t, const bson_iter_t *it) {
  bson_iter_t in;
  if (!bson_iter_recurse(it, &in)) return;
  /* Texts are borrowed from the document until tw_twin_timeline_add() copies them. */
  tw_entry_in_t e = {0};
  char **parts = NULL;
  tw_kv_t *attrs = NULL;
  static const struct {
    const char *name;
    tw_entry_text_t i;
  } texts[] = {{"source", TW_ET_SOURCE},       {"reason", TW_ET_REASON},     {"site", TW_ET_SITE},
               {"actor", TW_ET_ACTOR},         {"detail", TW_ET_DETAIL},     {"work_order", TW_ET_WORK_ORDER},
               {"recall_id", TW_ET_RECALL_ID}, {"owner_id", TW_ET_OWNER_ID}, {"model", TW_ET_MODEL}};
  while (bson_iter_next(&in)) {
    const char *k = bson_iter_key(&in), *s = it_cstr(&in);
    size_t ti = 0;
    while (ti < sizeof texts / sizeof texts[0] && strcmp(k, texts[ti].name) != 0) ti++;
    if (ti < sizeof texts / sizeof texts[0])
      e.text[texts[ti].i] = s;
    else if (strcmp(k, "kind") == 0) {
      for (int i = 1; s && tw_lifecycle_kind_name(i); i++)
        if (strcmp(s, tw_lifecycle_kind_name(i)) == 0) e.kind = i;
    } else if (strcmp(k, "event_time_ms") == 0)
      e.event_time_ms = it_i64(&in);
    else if (strcmp(k, "seq") == 0)
      e.seq = (uint64_t)it_i64(&in);
    else if (strcmp(k, "status") == 0)
      e.rejected = s && strcmp(s, "rejected") == 0;
    else if (strcmp(k, "odometer_km") == 0) {
      e.has_odometer = true;
      e.odometer_km = it_dbl(&in);
    } else if (strcmp(k, "parts_replaced") == 0) {
      free(parts);
      e.parts = parts = borrow_strings(&in, &e.n_parts);
    } else if (strcmp(k, "attributes") == 0) {
      bson_iter_t a;
      if (!bson_iter_recurse(&in, &a)) continue;
      while (bson_iter_next(&a)) {
        const char *v = it_cstr(&a);
        attrs = tw_xrealloc(attrs, (e.n_attrs + 1) * sizeof *attrs);
        attrs[e.n_attrs++] = (tw_kv_t){bson_iter_key(&a), v ? v : ""};
      }
      e.attrs = attrs;
    }
  }
  tw_twin_timeline_add(t, &e);
  free(parts);
  free(attrs);
}

static void read_source(tw_twin_t *t, const bson_iter_t *it, rd_t *r) {
  bson_iter_t in;
  char *name = NULL;
  uint64_t hwm = 0;
  uint64_t *missing = NULL;
  uint32_t n_missing = 0;
  if (!bson_iter_recurse(it, &in)) return;
  while (bson_iter_next(&in)) {
    const char *k = bson_iter_key(&in);
    if (strcmp(k, "name") == 0) {
      free(name);
      name = it_str(&in);
    } else if (strcmp(k, "hwm") == 0) {
      hwm = (uint64_t)it_i64(&in);
    } else if (strcmp(k, "missing") == 0 && BSON_ITER_HOLDS_ARRAY(&in)) {
      bson_iter_t m;
      bson_iter_recurse(&in, &m);
      while (bson_iter_next(&m)) {
        missing = tw_xrealloc(missing, (n_missing + 1) * sizeof *missing);
        missing[n_missing++] = (uint64_t)it_i64(&m);
      }
    }
  }
  if (!name) {
    rd_fail(r, "sources entry without name");
    free(missing);
    return;
  }
  tw_source_t *s = tw_twin_source(t, name);
  uint32_t w = t->seq_window;
  s->hwm = hwm;
  /* Every seq in the window that exists (>= 1) was seen, but the missing ones. */
  uint64_t span = hwm < w ? hwm : w;
  for (uint64_t j = 0; j < span; j++) s->bits[j / 64] |= UINT64_C(1) << (j % 64);
  for (uint32_t i = 0; i < n_missing; i++) {
    uint64_t j = hwm - missing[i];
    if (missing[i] <= hwm && j < span) s->bits[j / 64] &= ~(UINT64_C(1) << (j % 64));
  }
  free(missing);
  free(name);
}

/* The battery trend and the wear fit are in every snapshot, all zero in a
 * twin without telemetry: they are read into a copy that goes into the
 * telemetry block when the twin has one or they are not all zero bits. */
static bool zero_bits(const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i]) return false;
  return true;
}

static void read_trend(tw_twin_t *t, const bson_iter_t *it) {
  bson_iter_t in;
  tw_trend_t tr = tw_twin_tel(t)->soh_trend;
  if (!bson_iter_recurse(it, &in)) return;
  while (bson_iter_next(&in)) {
    const char *b = bson_iter_key(&in);
    if (strcmp(b, "samples") == 0)
      tr.n = (uint64_t)it_i64(&in);
    else if (strcmp(b, "t0_ms") == 0)
      tr.t0_ms = it_i64(&in);
    else if (strcmp(b, "sum_t") == 0)
      tr.st = it_dbl(&in);
    else if (strcmp(b, "sum_y") == 0)
      tr.sy = it_dbl(&in);
    else if (strcmp(b, "sum_tt") == 0)
      tr.stt = it_dbl(&in);
    else if (strcmp(b, "sum_ty") == 0)
      tr.sty = it_dbl(&in);
  }
  if (t->tel || !zero_bits(&tr, sizeof tr)) tw_twin_tel_mut(t)->soh_trend = tr;
}

static void read_wear(tw_twin_t *t, const bson_iter_t *it) {
  bson_iter_t in;
  tw_wear_t wear = tw_twin_tel(t)->brake_wear, *w = &wear;
  if (!BSON_ITER_HOLDS_DOCUMENT(it) || !bson_iter_recurse(it, &in)) return;
  while (bson_iter_next(&in)) {
    const char *b = bson_iter_key(&in);
    if (strcmp(b, "samples") == 0)
      w->n = (uint64_t)it_i64(&in);
    else if (strcmp(b, "t0_ms") == 0)
      w->t0_ms = it_i64(&in);
    else if (strcmp(b, "last_at_ms") == 0)
      w->t_last = it_i64(&in);
    else if (strcmp(b, "last_mm") == 0)
      w->y_last = it_dbl(&in);
    else if (strcmp(b, "sum_t") == 0)
      w->st = it_dbl(&in);
    else if (strcmp(b, "sum_y") == 0)
      w->sy = it_dbl(&in);
    else if (strcmp(b, "sum_tt") == 0)
      w->stt = it_dbl(&in);
    else if (strcmp(b, "sum_ty") == 0)
      w->sty = it_dbl(&in);
    else if (strcmp(b, "km_samples") == 0)
      w->nk = (uint64_t)it_i64(&in);
    else if (strcmp(b, "k0") == 0)
      w->k0 = it_dbl(&in);
    else if (strcmp(b, "sum_k") == 0)
      w->sk = it_dbl(&in);
    else if (strcmp(b, "sum_kk") == 0)
      w->skk = it_dbl(&in);
    else if (strcmp(b, "sum_ky") == 0)
      w->sky = it_dbl(&in);
    else if (strcmp(b, "sum_yk") == 0)
      w->syk = it_dbl(&in);
  }
  if (t->tel || !zero_bits(w, sizeof *w)) tw_twin_tel_mut(t)->brake_wear = *w;
}

static void read_alerts(tw_twin_t *t, const bson_iter_t *it, rd_t *r) {
  bson_iter_t in, act, e, cy;
  if (!BSON_ITER_HOLDS_DOCUMENT(it) || !bson_iter_recurse(it, &in)) return;
  if (bson_iter_find(&in, "cycles") && BSON_ITER_HOLDS_DOCUMENT(&in) && bson_iter_recurse(&in, &cy)) {
    while (bson_iter_next(&cy)) {
      t->alert_cycles = tw_xrealloc(t->alert_cycles, (t->n_alert_cycles + 1) * sizeof *t->alert_cycles);
      t->alert_cycles[t->n_alert_cycles].rule = tw_xstrdup(bson_iter_key(&cy));
      t->alert_cycles[t->n_alert_cycles++].n = (uint32_t)it_i64(&cy);
    }
  }
  if (!BSON_ITER_HOLDS_DOCUMENT(it) || !bson_iter_recurse(it, &in)) return;
  if (!bson_iter_find(&in, "active") || !BSON_ITER_HOLDS_ARRAY(&in) || !bson_iter_recurse(&in, &act)) return;
  while (bson_iter_next(&act)) {
    if (!bson_iter_recurse(&act, &e)) continue;
    tw_alert_t al = {0};
    while (bson_iter_next(&e)) {
      const char *b = bson_iter_key(&e);
      if (strcmp(b, "rule") == 0)
        al.rule = it_str(&e);
      else if (strcmp(b, "alert_id") == 0)
        al.alert_id = it_str(&e);
      else if (strcmp(b, "message") == 0)
        al.message = it_str(&e);
      else if (strcmp(b, "unit") == 0)
        al.unit = it_str(&e);
      else if (strcmp(b, "severity") == 0) {
        char *s = it_str(&e);
        for (int v = 0; s && v <= TWIN__V1__SEVERITY__CRITICAL; v++)
          if (strcmp(s, severity_name(v)) == 0) al.severity = v;
        free(s);
      } else if (strcmp(b, "since") == 0)
        al.since_ms = it_i64(&e);
      else if (strcmp(b, "value") == 0)
        al.value = it_dbl(&e);
      else if (strcmp(b, "threshold") == 0)
        al.threshold = it_dbl(&e);
      else if (strcmp(b, "predicted_at_ms") == 0 && !BSON_ITER_HOLDS_NULL(&e)) {
        al.has_predicted = true;
        al.predicted_at_ms = it_i64(&e);
      } else if (strcmp(b, "leaf") == 0)
        al.leaf = (int)it_i64(&e);
    }
    if (!al.rule || !al.alert_id) {
      rd_fail(r, "snapshot %s: alerts.active entry without rule or alert_id", t->product_id);
      free(al.rule);
      free(al.alert_id);
      free(al.message);
      free(al.unit);
      continue;
    }
    char *tmp[] = {al.rule, al.alert_id, al.message, al.unit};
    tw_alert_own(&al); /* copies; NULL message or unit become "" */
    for (size_t i = 0; i < 4; i++) free(tmp[i]);
    t->alerts = tw_xrealloc(t->alerts, (t->n_alerts + 1) * sizeof *t->alerts);
    t->alerts[t->n_alerts++] = al;
  }
}

tw_twin_t *tw_twin_from_bson(const bson_t *doc, uint32_t seq_window, char *err, size_t err_cap) {
  bson_iter_t it, in;
  rd_t r = {err, err_cap, false};
  if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_UTF8(&it)) {
    snprintf(err, err_cap, "snapshot has no string _id");
    return NULL;
  }
  tw_twin_t *t = tw_twin_new(bson_iter_utf8(&it, NULL), seq_window);
  bson_iter_init(&it, doc);
  while (bson_iter_next(&it)) {
    const char *k = bson_iter_key(&it);
    if (strcmp(k, "stage") == 0) {
      char *s = it_str(&it);
      if (!s || !tw_stage_parse(s, &t->stage)) rd_fail(&r, "snapshot %s has an unknown stage", t->product_id);
      free(s);
    } else if (strcmp(k, "model") == 0)
      t->model = it_str(&it);
    else if (strcmp(k, "owner") == 0)
      t->owner = it_str(&it);
    else if (strcmp(k, "rev") == 0)
      t->rev = (uint64_t)it_i64(&it);
    else if (strcmp(k, "seen") == 0)
      t->seen = (uint64_t)it_i64(&it);
    else if (strcmp(k, "quality_hold") == 0)
      t->quality_hold = BSON_ITER_HOLDS_BOOL(&it) && bson_iter_bool(&it);
    else if (strcmp(k, "telemetry") == 0)
      read_telemetry(t, &it);
    else if (strcmp(k, "battery_health") == 0)
      read_trend(t, &it);
    else if (strcmp(k, "timeline") == 0 && bson_iter_recurse(&it, &in)) {
      while (bson_iter_next(&in)) read_entry(t, &in);
    } else if (strcmp(k, "open_recalls") == 0) {
      t->open_recalls = read_strings(&it, &t->n_open_recalls);
    } else if (strcmp(k, "last_service") == 0 && BSON_ITER_HOLDS_DOCUMENT(&it) &&
               bson_iter_recurse(&it, &in)) {
      t->last_service.set = true;
      while (bson_iter_next(&in)) {
        const char *b = bson_iter_key(&in);
        if (strcmp(b, "at_ms") == 0)
          t->last_service.at_ms = it_i64(&in);
        else if (strcmp(b, "odometer_km") == 0 && !BSON_ITER_HOLDS_NULL(&in)) {
          t->last_service.has_odometer = true;
          t->last_service.odometer_km = it_dbl(&in);
        } else if (strcmp(b, "work_order") == 0)
          t->last_service.work_order = it_str(&in);
        else if (strcmp(b, "site") == 0)
          t->last_service.site = it_str(&in);
      }
    } else if (strcmp(k, "last_brake_service_ms") == 0)
      t->last_brake_service_ms = it_i64(&it);
    else if (strcmp(k, "brake_wear") == 0)
      read_wear(t, &it);
    else if (strcmp(k, "delivered") == 0 && BSON_ITER_HOLDS_DOCUMENT(&it) && bson_iter_recurse(&it, &in)) {
      t->delivered = true;
      while (bson_iter_next(&in)) {
        const char *b = bson_iter_key(&in);
        if (strcmp(b, "at_ms") == 0)
          t->delivered_ms = it_i64(&in);
        else if (strcmp(b, "odometer_km") == 0 && !BSON_ITER_HOLDS_NULL(&in)) {
          t->delivered_has_odometer = true;
          t->delivered_odometer_km = it_dbl(&in);
        }
      }
    } else if (strcmp(k, "last_event_ms") == 0)
      t->last_event_ms = it_i64(&it);
    else if (strcmp(k, "alerts") == 0)
      read_alerts(t, &it, &r);
    else if (strcmp(k, "sources") == 0 && bson_iter_recurse(&it, &in)) {
      while (bson_iter_next(&in)) read_source(t, &in, &r);
    } else if (strcmp(k, "counters") == 0 && bson_iter_recurse(&it, &in)) {
      while (bson_iter_next(&in)) {
        const char *b = bson_iter_key(&in);
        uint64_t v = (uint64_t)it_i64(&in);
        if (strcmp(b, "telemetry") == 0)
          t->counters.telemetry = v;
        else if (strcmp(b, "lifecycle") == 0)
          t->counters.lifecycle = v;
        else if (strcmp(b, "duplicates") == 0)
          t->counters.duplicates = v;
        else if (strcmp(b, "too_late") == 0)
          t->counters.too_late = v;
        else if (strcmp(b, "rejected") == 0)
          t->counters.rejected = v;
        else if (strcmp(b, "stale_fields") == 0)
          t->counters.stale_fields = v;
      }
    } else if (strcmp(k, "offsets") == 0 && bson_iter_recurse(&it, &in)) {
      while (bson_iter_next(&in)) {
        if (strcmp(bson_iter_key(&in), "telemetry") == 0) t->offsets[TW_TOPIC_TELEMETRY] = it_i64(&in);
        if (strcmp(bson_iter_key(&in), "lifecycle") == 0) t->offsets[TW_TOPIC_LIFECYCLE] = it_i64(&in);
      }
    }
  }
  if (r.failed) {
    tw_twin_destroy(t);
    return NULL;
  }
  t->stored = true;
  return t;
}

uint64_t tw_twin_state_hash(const tw_twin_t *t) {
  bson_t doc = BSON_INITIALIZER;
  tw_twin_to_bson(t, -1, &doc);
  const uint8_t *p = bson_get_data(&doc);
  uint64_t h = UINT64_C(1469598103934665603);
  for (uint32_t i = 0; i < doc.len; i++) {
    h ^= p[i];
    h *= UINT64_C(1099511628211);
  }
  bson_destroy(&doc);
  return h;
}
