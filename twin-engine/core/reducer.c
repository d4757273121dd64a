/* reducer.c - the pure twin reducer: (twin, envelope) -> outcome.
 *
 * No I/O, no clock, no logging, no global state: the same envelopes in the
 * same order always give the same twin. Allocation failure aborts (util.h).
 *
 * Semantics (README "Guarantees"):
 *  - dedupe per (product, source) by seq with a sliding window behind the
 *    high-water mark: seen -> DUPLICATE, older than the window -> TOO_LATE;
 *  - telemetry fields are last-writer-wins by (event time, seq); order-free
 *    statistics (battery health trend) take every accepted sample;
 *  - lifecycle events drive the stage machine; impossible ones are kept in
 *    the timeline as rejected, with the reason. */
#include <stdlib.h>
#include <string.h>

#include "twin/twin.h"
#include "twin_int.h"
#include "util.h"

/* ---- Names ----------------------------------------------------------------- */

static const char *stage_names[TW_STAGE_COUNT] = {
    "NONE", "ORDERED", "IN_PRODUCTION", "BUILT", "IN_TRANSIT", "AT_DEALER", "IN_SERVICE", "DECOMMISSIONED",
};

const char *tw_stage_name(tw_stage_t s) { return (unsigned)s < TW_STAGE_COUNT ? stage_names[s] : "NONE"; }

bool tw_stage_parse(const char *name, tw_stage_t *out) {
  for (int i = 0; i < TW_STAGE_COUNT; i++) {
    if (strcmp(name, stage_names[i]) == 0) {
      *out = (tw_stage_t)i;
      return true;
    }
  }
  return false;
}

static const char *kind_names[] = {
    NULL,
    "ORDERED",
    "BUILD_STARTED",
    "BUILD_STEP_COMPLETED",
    "QUALITY_GATE_PASSED",
    "QUALITY_GATE_FAILED",
    "BUILD_COMPLETED",
    "SHIPPED",
    "ARRIVED_AT_DEALER",
    "DELIVERED",
    "SERVICE_VISIT",
    "WARRANTY_CLAIM",
    "RECALL_ISSUED",
    "RECALL_COMPLETED",
    "OWNERSHIP_TRANSFERRED",
    "DECOMMISSIONED",
};

const char *tw_lifecycle_kind_name(int kind) {
  if (kind <= 0 || kind >= (int)(sizeof kind_names / sizeof kind_names[0])) return NULL;
  return kind_names[kind];
}

static const char *scalar_names[TW_F_SCALAR_COUNT] = {
    "odometer_km", "speed_kph",      "battery_soc_pct", "battery_soh_pct", "battery_temp_c", "latitude",
    "longitude",   "fuel_level_pct", "aux_battery_v",   "ambient_temp_c",  "range_km",
};

const char *tw_scalar_field_name(tw_scalar_field_t f) { return scalar_names[f]; }

static const char *outcome_names[TW_OUT_COUNT] = {"applied", "stale", "duplicate", "too_late", "rejected"};

const char *tw_outcome_name(tw_outcome_t o) { return (unsigned)o < TW_OUT_COUNT ? outcome_names[o] : "?"; }

/* ---- Twin lifetime --------------------------------------------------------- */

tw_twin_t *tw_twin_new(const char *product_id, uint32_t seq_window) {
  /* The id lives in the same block: one cache miss less per map look-up. */
  size_t n = strlen(product_id) + 1;
  tw_twin_t *t = tw_xcalloc(1, sizeof *t + n);
  t->product_id = memcpy((char *)(t + 1), product_id, n);
  if (seq_window == 0) seq_window = TW_SEQ_WINDOW_DEFAULT;
  t->seq_window = seq_window > TW_SEQ_WINDOW_MAX ? TW_SEQ_WINDOW_MAX : seq_window;
  t->offsets[0] = t->offsets[1] = -1;
  t->partition = -1;
  return t;
}

/* The telemetry state of a twin without any: every value unset. */
const tw_telemetry_t tw_telemetry_none;

tw_telemetry_t *tw_twin_tel_mut(tw_twin_t *t) {
  if (!t->tel) t->tel = tw_xcalloc(1, sizeof *t->tel);
  return t->tel;
}

static uint32_t window_words(uint32_t w) { return (w + 63) / 64; }

/* Every cache line of a block of n bytes at p, which malloc aligned to at
 * least 16 bytes: n + 48 bytes from the start of p's line cover the block
 * wherever it starts. With a constant n the loop unrolls. */
static inline void prefetch_block(const void *p, size_t n) {
  const char *line = (const char *)((uintptr_t)p & ~(uintptr_t)63);
  for (size_t off = 0; off < n + 48; off += 64) __builtin_prefetch(line + off);
}

void tw_twin_prefetch(const tw_twin_t *t, int stage) {
  if (!t) return;
  switch (stage) {
  case 0: prefetch_block(t, sizeof *t); break;
  case 1:
    if (t->sources) __builtin_prefetch(t->sources);
    if (t->tel) prefetch_block(t->tel, sizeof *t->tel);
    if (t->alerts) __builtin_prefetch(t->alerts);
    if (t->n_timeline < t->cap_timeline) __builtin_prefetch(&t->timeline[t->n_timeline]);
    break;
  case 2:
    if (t->n_sources) { /* the block's entries, windows and names; the first few lines */
      size_t n = t->n_sources * (sizeof *t->sources + 8 * window_words(t->seq_window) + 8);
      prefetch_block(t->sources, n < 256 ? n : 256);
    }
    for (uint32_t i = 0; i < t->n_alerts; i++) __builtin_prefetch(t->alerts[i].rule);
    if (t->tel) {
      if (t->tel->metrics) __builtin_prefetch(t->tel->metrics);
      if (t->tel->tire_pressure_kpa.n > TW_VEC_INLINE) __builtin_prefetch(t->tel->tire_pressure_kpa.v);
      if (t->tel->brake_pad_mm.n > TW_VEC_INLINE) __builtin_prefetch(t->tel->brake_pad_mm.v);
    }
    break;
  default:
    if (t->tel)
      for (uint32_t i = 0; i < t->tel->n_metrics; i++) __builtin_prefetch(t->tel->metrics[i].name);
    break;
  }
}

/* Copies the n bytes of s (its NUL included) to *p. */
static void copy_to(char **p, const char *s, size_t n) {
  memcpy(*p, s, n);
  *p += n;
}

_Static_assert(sizeof(tw_entry_t) == 40, "a timeline entry's header is 40 bytes (see twin.h)");

static tw_entry_t *entry_new(const tw_entry_in_t *in) {
  const char *text[TW_ET_COUNT];
  memcpy(text, in->text, sizeof text);
  if (!text[TW_ET_SOURCE]) text[TW_ET_SOURCE] = "";
  /* Each length measured once, for the size and then for the copy. */
  size_t n_len = TW_ET_COUNT + in->n_parts + 2 * (size_t)in->n_attrs, few[64];
  size_t *len = n_len <= 64 ? few : tw_xmalloc(n_len * sizeof *len), k = 0, size = sizeof(tw_entry_t);
  for (size_t i = 0; i < TW_ET_COUNT; i++) size += len[k++] = text[i] ? strlen(text[i]) + 1 : 0;
  for (uint32_t i = 0; i < in->n_parts; i++) size += len[k++] = strlen(in->parts[i]) + 1;
  for (uint32_t i = 0; i < in->n_attrs; i++) {
    size += len[k++] = strlen(in->attrs[i].k) + 1;
    size += len[k++] = strlen(in->attrs[i].v) + 1;
  }
  tw_entry_t *e = tw_xmalloc(size);
  *e = (tw_entry_t){.event_time_ms = in->event_time_ms,
                    .seq = in->seq,
                    .odometer_km = in->has_odometer ? in->odometer_km : 0,
                    .kind = in->kind,
                    .has_odometer = in->has_odometer,
                    .rejected = in->rejected,
                    .n_parts = in->n_parts,
                    .n_attrs = in->n_attrs};
  char *p = e->texts;
  k = 0;
  for (size_t i = 0; i < TW_ET_COUNT; i++, k++)
    if (text[i]) {
      e->present |= (uint16_t)(1u << i);
      copy_to(&p, text[i], len[k]);
    }
  for (uint32_t i = 0; i < in->n_parts; i++, k++) copy_to(&p, in->parts[i], len[k]);
  for (uint32_t i = 0; i < in->n_attrs; i++, k += 2) {
    copy_to(&p, in->attrs[i].k, len[k]);
    copy_to(&p, in->attrs[i].v, len[k + 1]);
  }
  if (len != few) free(len);
  return e;
}

const char *tw_entry_texts(const tw_entry_t *e, const char *out[TW_ET_COUNT]) {
  const char *p = e->texts;
  for (int i = 0; i < TW_ET_COUNT; i++) {
    out[i] = NULL;
    if (e->present & (1u << i)) {
      out[i] = p;
      p = tw_text_next(p);
    }
  }
  return p;
}

const char *tw_entry_text(const tw_entry_t *e, tw_entry_text_t i) {
  if (!(e->present & (1u << i))) return NULL;
  const char *p = e->texts;
  for (unsigned j = 0; j < (unsigned)i; j++)
    if (e->present & (1u << j)) p = tw_text_next(p);
  return p;
}

void tw_alert_own(tw_alert_t *a) {
  char **strs[] = {&a->rule, &a->alert_id, &a->message, &a->unit};
  size_t len[4], size = 0;
  for (size_t i = 0; i < 4; i++) size += len[i] = (*strs[i] ? strlen(*strs[i]) : 0) + 1;
  char *p = tw_xmalloc(size);
  for (size_t i = 0; i < 4; i++) {
    const char *s = *strs[i] ? *strs[i] : "";
    *strs[i] = p;
    copy_to(&p, s, len[i]);
  }
}

void tw_alert_cleanup(tw_alert_t *a) {
  free(a->rule); /* and the other three, in the same block */
  a->rule = a->alert_id = a->message = a->unit = NULL;
}

void tw_twin_destroy(tw_twin_t *t) {
  if (!t) return;
  free(t->model);
  free(t->owner);
  tw_telemetry_t *tel = t->tel;
  if (tel) {
    tw_vec_set(&tel->tire_pressure_kpa, NULL, 0); /* frees an owned array */
    tw_vec_set(&tel->brake_pad_mm, NULL, 0);
    for (uint32_t i = 0; i < tel->dtc_codes.n; i++) free(tel->dtc_codes.s[i]);
    free(tel->dtc_codes.s);
    free(tel->firmware_version);
    free(tel->metrics); /* and the names in it */
    free(tel);
  }
  free(t->sources); /* and the windows and names in it */
  for (uint32_t i = 0; i < t->n_timeline; i++) free(t->timeline[i]);
  free(t->timeline);
  for (uint32_t i = 0; i < t->n_open_recalls; i++) free(t->open_recalls[i]);
  free(t->open_recalls);
  free(t->last_service.work_order);
  free(t->last_service.site);
  for (uint32_t i = 0; i < t->n_alerts; i++) tw_alert_cleanup(&t->alerts[i]);
  free(t->alerts);
  for (uint32_t i = 0; i < t->n_alert_cycles; i++) free(t->alert_cycles[i].rule);
  free(t->alert_cycles);
  free(t);
}

/* ---- Seq window ------------------------------------------------------------ */

/* A twin's sources are one block: the entries, sorted by name, then each
 * one's window (window_words(t->seq_window) words), then the names back
 * to back (each NUL-terminated). A look-up reads a line or two next to
 * each other instead of an allocation per source; a new source (a twin's
 * first event from it) rebuilds the block. */
tw_source_t *tw_twin_source(tw_twin_t *t, const char *name) {
  uint32_t lo = 0, hi = t->n_sources, n = t->n_sources;
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    int c = strcmp(t->sources[mid].name, name);
    if (c == 0) return &t->sources[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  tw_source_t *old = t->sources;
  size_t nw = window_words(t->seq_window), size = (n + 1) * (sizeof *old + nw * sizeof(uint64_t));
  size += strlen(name) + 1;
  for (uint32_t i = 0; i < n; i++) size += strlen(old[i].name) + 1;
  tw_source_t *v = tw_xmalloc(size);
  uint64_t *bits = (uint64_t *)(v + n + 1);
  char *p = (char *)(bits + (n + 1) * nw);
  for (uint32_t i = 0, j = 0; i <= n; i++, bits += nw) {
    const char *nm = name;
    v[i].bits = bits;
    if (i == lo) {
      v[i].hwm = 0;
      memset(bits, 0, nw * sizeof *bits);
    } else {
      v[i].hwm = old[j].hwm;
      memcpy(bits, old[j].bits, nw * sizeof *bits);
      nm = old[j++].name;
    }
    v[i].name = p;
    copy_to(&p, nm, strlen(nm) + 1);
  }
  free(old);
  t->sources = v;
  t->n_sources = n + 1;
  return &v[lo];
}

/* Moves every bit d positions up (towards older seqs), dropping bits that
 * fall out of a window of w bits. */
static void bits_shift_up(uint64_t *b, uint32_t w, uint64_t d) {
  uint32_t nw = window_words(w);
  if (d >= w) {
    memset(b, 0, nw * sizeof *b);
    return;
  }
  uint32_t ws = (uint32_t)(d / 64), bs = (uint32_t)(d % 64);
  for (int64_t i = (int64_t)nw - 1; i >= 0; i--) {
    int64_t src = i - ws;
    uint64_t v = 0;
    if (src >= 0) {
      v = b[src] << bs;
      if (bs && src - 1 >= 0) v |= b[src - 1] >> (64 - bs);
    }
    b[i] = v;
  }
  if (w % 64) b[nw - 1] &= (UINT64_C(1) << (w % 64)) - 1;
}

/* Returns APPLIED when seq is new (and records it), else DUPLICATE/TOO_LATE. */
static tw_outcome_t seq_admit(tw_source_t *s, uint64_t seq, uint32_t w) {
  if (seq > s->hwm) {
    bits_shift_up(s->bits, w, seq - s->hwm);
    s->bits[0] |= 1;
    s->hwm = seq;
    return TW_OUT_APPLIED;
  }
  uint64_t i = s->hwm - seq;
  if (i >= w) return TW_OUT_TOO_LATE;
  uint64_t mask = UINT64_C(1) << (i % 64);
  if (s->bits[i / 64] & mask) return TW_OUT_DUPLICATE;
  s->bits[i / 64] |= mask;
  return TW_OUT_APPLIED;
}

/* ---- Telemetry ------------------------------------------------------------- */

/* True when a sample stamped (at, seq) replaces what st holds. */
static bool newer(const tw_stamp_t *st, int64_t at, uint64_t seq) {
  if (!tw_stamp_set(st)) return true;
  if (at != st->at_ms) return at > st->at_ms;
  return seq > st->seq;
}

/* seq >= 1 (validated), so the stamp reads as set from now on. */
static void stamp(tw_stamp_t *st, int64_t at, uint64_t seq) {
  st->at_ms = at;
  st->seq = seq;
}

typedef struct {
  int64_t at;
  uint64_t seq;
  uint32_t applied, stale;
  uint32_t changed; /* TW_SIG_* */
} tel_ctx_t;

/* Bit for bit, so 0.0 and -0.0 differ (they print differently). */
static bool same_bits(const double *a, const double *b, size_t n) { return memcmp(a, b, n * sizeof *a) == 0; }

static void put_scalar(tw_scalar_t *f, double v, tel_ctx_t *c, uint32_t sig) {
  if (!newer(&f->st, c->at, c->seq)) {
    c->stale++;
    return;
  }
  if (!tw_stamp_set(&f->st) || !same_bits(&f->value, &v, 1)) c->changed |= sig;
  f->value = v;
  stamp(&f->st, c->at, c->seq);
  c->applied++;
}

static void put_field(tw_telemetry_t *tel, tw_scalar_field_t f, double v, tel_ctx_t *c) {
  put_scalar(&tel->scalars[f], v, c, TW_SIG_SCALAR(f));
}

void tw_vec_set(tw_vec_t *f, const double *v, size_t n) {
  bool owned = f->v && f->v != f->inl;
  if (owned && (n <= TW_VEC_INLINE || f->n != n)) {
    free(f->v);
    owned = false;
  }
  if (n == 0)
    f->v = NULL;
  else if (n <= TW_VEC_INLINE)
    f->v = f->inl;
  else if (!owned)
    f->v = tw_xmalloc(n * sizeof *v); /* kept while the wheel count stays */
  if (n) memcpy(f->v, v, n * sizeof *v);
  f->n = (uint32_t)n;
}

static void put_vec(tw_vec_t *f, const double *v, size_t n, tel_ctx_t *c, uint32_t sig) {
  if (!newer(&f->st, c->at, c->seq)) {
    c->stale++;
    return;
  }
  if (!tw_stamp_set(&f->st) || f->n != n || !same_bits(f->v, v, n)) c->changed |= sig;
  tw_vec_set(f, v, n);
  stamp(&f->st, c->at, c->seq);
  c->applied++;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* True when codes (any order, repeats allowed) are exactly the sorted set held. */
static bool same_set(const tw_strs_t *f, char **codes, size_t n) {
  if (n < f->n) return false;
  for (size_t i = 0; i < n; i++) {
    uint32_t lo = 0, hi = f->n;
    bool found = false;
    while (lo < hi && !found) {
      uint32_t mid = (lo + hi) / 2;
      int c = strcmp(f->s[mid], codes[i]);
      if (c == 0)
        found = true;
      else if (c < 0)
        lo = mid + 1;
      else
        hi = mid;
    }
    if (!found) return false;
  }
  /* Every code is held; every held code is reported unless n has repeats
   * that hide a missing one: count distinct reported codes. */
  size_t distinct = 0;
  for (size_t i = 0; i < n; i++) {
    bool dup = false;
    for (size_t j = 0; j < i && !dup; j++) dup = strcmp(codes[i], codes[j]) == 0;
    distinct += !dup;
  }
  return distinct == f->n;
}

static void put_dtcs(tw_strs_t *f, char **codes, size_t n, tel_ctx_t *c) {
  if (!newer(&f->st, c->at, c->seq)) {
    c->stale++;
    return;
  }
  /* Most reports repeat the set held: then only the stamp moves. */
  if (same_set(f, codes, n)) {
    if (!tw_stamp_set(&f->st)) c->changed |= TW_SIG_DTCS;
    stamp(&f->st, c->at, c->seq);
    c->applied++;
    return;
  }
  for (uint32_t i = 0; i < f->n; i++) free(f->s[i]);
  /* Stored as a sorted set without repeats, so the same set reads the same. */
  f->s = tw_xrealloc(f->s, n * sizeof *f->s);
  for (size_t i = 0; i < n; i++) f->s[i] = tw_xstrdup(codes[i]);
  qsort(f->s, n, sizeof *f->s, cmp_str);
  uint32_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (k > 0 && strcmp(f->s[k - 1], f->s[i]) == 0) {
      free(f->s[i]);
      continue;
    }
    f->s[k++] = f->s[i];
  }
  if (!tw_stamp_set(&f->st) || f->n != k) c->changed |= TW_SIG_DTCS;
  f->n = k;
  stamp(&f->st, c->at, c->seq);
  c->applied++;
}

/* A twin's metrics and their names are one block: the entries, sorted by
 * name, then the names back to back (each NUL-terminated), so a look-up
 * reads a line or two next to each other instead of an allocation per
 * name. A new metric (a twin's first reports of it) rebuilds the block. */
tw_metric_t *tw_telemetry_metric(tw_telemetry_t *tel, const char *name) {
  uint32_t lo = 0, hi = tel->n_metrics, n = tel->n_metrics;
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    int cmp = strcmp(tel->metrics[mid].name, name);
    if (cmp == 0) return &tel->metrics[mid];
    if (cmp < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  tw_metric_t *old = tel->metrics;
  size_t size = (n + 1) * sizeof *old + strlen(name) + 1;
  for (uint32_t i = 0; i < n; i++) size += strlen(old[i].name) + 1;
  tw_metric_t *v = tw_xmalloc(size);
  char *p = (char *)(v + n + 1);
  for (uint32_t i = 0, j = 0; i <= n; i++) {
    const char *nm = name;
    if (i == lo) {
      v[i].val = (tw_scalar_t){0};
    } else {
      v[i].val = old[j].val;
      nm = old[j++].name;
    }
    v[i].name = p;
    copy_to(&p, nm, strlen(nm) + 1);
  }
  free(old);
  tel->metrics = v;
  tel->n_metrics = n + 1;
  return &v[lo];
}

static void trend_add(tw_trend_t *tr, int64_t at, double soh) {
  if (tr->n == 0) tr->t0_ms = at;
  double d = (double)(at - tr->t0_ms) / 86400000.0;
  tr->n++;
  tr->st += d;
  tr->sy += soh;
  tr->stt += d * d;
  tr->sty += d * soh;
}

/* Adds a brake pad sample to the wear fit of the current pads. Samples
 * older than the current pads' first one belong to earlier pads. */
static void wear_add(tw_wear_t *w, int64_t at, const double *pads, size_t n, bool has_odo, double odo) {
  double y = pads[0];
  for (size_t i = 1; i < n; i++)
    if (pads[i] < y) y = pads[i];
  if (w->n > 0 && at < w->t0_ms) return;
  if (w->n > 0 && at > w->t_last && y > w->y_last + TW_WEAR_JUMP_MM) memset(w, 0, sizeof *w); /* new pads */
  if (w->n == 0) {
    w->t0_ms = at;
    w->t_last = at;
    w->y_last = y;
  } else if (at >= w->t_last) {
    w->t_last = at;
    w->y_last = y;
  }
  double d = (double)(at - w->t0_ms) / 86400000.0;
  w->n++;
  w->st += d;
  w->sy += y;
  w->stt += d * d;
  w->sty += d * y;
  if (has_odo) {
    if (w->nk == 0) w->k0 = odo;
    double k = odo - w->k0;
    w->nk++;
    w->sk += k;
    w->skk += k * k;
    w->sky += k * y;
    w->syk += y;
  }
}

#define TEL_HAS(tm, f) ((tm)->_##f##_case != 0)

/* True when the event carries a value: only then does it change the
 * telemetry state (an event with none is accepted and counted). */
static bool tel_has_value(const Twin__V1__Telemetry *tm) {
  return TEL_HAS(tm, odometer_km) || TEL_HAS(tm, speed_kph) || TEL_HAS(tm, battery_soc_pct) ||
         TEL_HAS(tm, battery_soh_pct) || TEL_HAS(tm, battery_temp_c) || TEL_HAS(tm, latitude) ||
         TEL_HAS(tm, longitude) || TEL_HAS(tm, fuel_level_pct) || TEL_HAS(tm, aux_battery_v) ||
         TEL_HAS(tm, ambient_temp_c) || TEL_HAS(tm, range_km) || tm->n_tire_pressure_kpa ||
         tm->n_brake_pad_mm || tm->n_dtc_codes || tm->dtc_codes_reported || TEL_HAS(tm, firmware_version) ||
         tm->n_metrics;
}

/* Applies the event's values to the twin's telemetry state. */
static void tel_apply(tw_telemetry_t *tel, const Twin__V1__Envelope *env, tel_ctx_t *c) {
  const Twin__V1__Telemetry *tm = env->telemetry;

  if (TEL_HAS(tm, odometer_km)) put_field(tel, TW_F_ODOMETER_KM, tm->odometer_km, c);
  if (TEL_HAS(tm, speed_kph)) put_field(tel, TW_F_SPEED_KPH, tm->speed_kph, c);
  if (TEL_HAS(tm, battery_soc_pct)) put_field(tel, TW_F_BATTERY_SOC_PCT, tm->battery_soc_pct, c);
  if (TEL_HAS(tm, battery_soh_pct)) {
    put_field(tel, TW_F_BATTERY_SOH_PCT, tm->battery_soh_pct, c);
    trend_add(&tel->soh_trend, env->event_time_ms, tm->battery_soh_pct);
  }
  if (TEL_HAS(tm, battery_temp_c)) put_field(tel, TW_F_BATTERY_TEMP_C, tm->battery_temp_c, c);
  if (TEL_HAS(tm, latitude)) put_field(tel, TW_F_LATITUDE, tm->latitude, c);
  if (TEL_HAS(tm, longitude)) put_field(tel, TW_F_LONGITUDE, tm->longitude, c);
  if (TEL_HAS(tm, fuel_level_pct)) put_field(tel, TW_F_FUEL_LEVEL_PCT, tm->fuel_level_pct, c);
  if (TEL_HAS(tm, aux_battery_v)) put_field(tel, TW_F_AUX_BATTERY_V, tm->aux_battery_v, c);
  if (TEL_HAS(tm, ambient_temp_c)) put_field(tel, TW_F_AMBIENT_TEMP_C, tm->ambient_temp_c, c);
  if (TEL_HAS(tm, range_km)) put_field(tel, TW_F_RANGE_KM, tm->range_km, c);
  if (tm->n_tire_pressure_kpa)
    put_vec(&tel->tire_pressure_kpa, tm->tire_pressure_kpa, tm->n_tire_pressure_kpa, c, TW_SIG_TIRES);
  if (tm->n_brake_pad_mm) {
    put_vec(&tel->brake_pad_mm, tm->brake_pad_mm, tm->n_brake_pad_mm, c, TW_SIG_PADS);
    wear_add(&tel->brake_wear, env->event_time_ms, tm->brake_pad_mm, tm->n_brake_pad_mm,
             TEL_HAS(tm, odometer_km), tm->odometer_km);
    c->changed |= TW_SIG_WEAR; /* also when the pads are stale: the fit takes every sample */
  }
  if (tm->n_dtc_codes || tm->dtc_codes_reported) put_dtcs(&tel->dtc_codes, tm->dtc_codes, tm->n_dtc_codes, c);
  if (TEL_HAS(tm, firmware_version)) {
    if (newer(&tel->firmware_st, c->at, c->seq)) {
      if (!tel->firmware_version || strcmp(tel->firmware_version, tm->firmware_version) != 0) {
        free(tel->firmware_version);
        tel->firmware_version = tw_xstrdup(tm->firmware_version);
      }
      stamp(&tel->firmware_st, c->at, c->seq);
      c->applied++;
    } else {
      c->stale++;
    }
  }
  for (size_t i = 0; i < tm->n_metrics; i++) {
    tw_metric_t *m = tw_telemetry_metric(tel, tm->metrics[i]->key);
    put_scalar(&m->val, tm->metrics[i]->value, c, TW_SIG_METRICS);
  }
}

static tw_outcome_t reduce_telemetry(tw_twin_t *t, const Twin__V1__Envelope *env) {
  tel_ctx_t c = {.at = env->event_time_ms, .seq = env->seq};
  /* A twin without a telemetry block has no value set, so an event with a
   * value sets one: the block is made then, never for an empty event. */
  tw_telemetry_t *tel = t->tel;
  if (!tel && tel_has_value(env->telemetry)) tel = tw_twin_tel_mut(t);
  if (tel) tel_apply(tel, env, &c);
  t->rule_inputs |= c.changed;

  t->counters.telemetry++;
  t->counters.stale_fields += c.stale;
  /* An event whose every field was older than what the twin holds is still
   * accepted (it fed the order-free statistics) but changed no value. */
  return (c.applied == 0 && c.stale > 0) ? TW_OUT_STALE : TW_OUT_APPLIED;
}

/* ---- Lifecycle ------------------------------------------------------------- */

tw_entry_t *tw_twin_timeline_add(tw_twin_t *t, const tw_entry_in_t *in) {
  if (t->n_timeline == t->cap_timeline) {
    t->cap_timeline = t->cap_timeline ? t->cap_timeline * 2 : 8;
    t->timeline = tw_xrealloc(t->timeline, t->cap_timeline * sizeof *t->timeline);
  }
  return t->timeline[t->n_timeline++] = entry_new(in);
}

static const char *nonempty(const char *s) { return s && *s ? s : NULL; }

static tw_entry_t *timeline_push(tw_twin_t *t, const Twin__V1__Envelope *env, const char *reason) {
  const Twin__V1__LifecycleEvent *lc = env->lifecycle;
  /* Borrowed from the message; tw_twin_timeline_add() copies them. */
  tw_entry_in_t in = {.kind = (int)lc->kind,
                      .event_time_ms = env->event_time_ms,
                      .seq = env->seq,
                      .text = {[TW_ET_SOURCE] = env->source,
                               [TW_ET_SITE] = nonempty(lc->site),
                               [TW_ET_ACTOR] = nonempty(lc->actor),
                               [TW_ET_DETAIL] = nonempty(lc->detail),
                               [TW_ET_WORK_ORDER] = nonempty(lc->work_order),
                               [TW_ET_RECALL_ID] = nonempty(lc->recall_id),
                               [TW_ET_OWNER_ID] = nonempty(lc->owner_id),
                               [TW_ET_MODEL] = nonempty(lc->model),
                               [TW_ET_REASON] = reason},
                      .has_odometer = lc->_odometer_km_case != 0,
                      .rejected = reason != NULL,
                      .odometer_km = lc->odometer_km,
                      .parts = lc->parts_replaced,
                      .n_parts = (uint32_t)lc->n_parts_replaced};
  tw_kv_t few[16], *kv = lc->n_attributes <= 16 ? few : tw_xmalloc(lc->n_attributes * sizeof *kv);
  for (size_t i = 0; i < lc->n_attributes; i++) {
    /* Keep attributes sorted by key so the document does not depend on the
     * producer's map order; a repeated key keeps its last value. */
    const char *k = lc->attributes[i]->key, *v = lc->attributes[i]->value;
    uint32_t j = 0;
    while (j < in.n_attrs && strcmp(kv[j].k, k) < 0) j++;
    if (j < in.n_attrs && strcmp(kv[j].k, k) == 0) {
      kv[j].v = v;
      continue;
    }
    memmove(&kv[j + 1], &kv[j], (in.n_attrs - j) * sizeof *kv);
    kv[j] = (tw_kv_t){k, v};
    in.n_attrs++;
  }
  in.attrs = kv;
  tw_entry_t *e = tw_twin_timeline_add(t, &in);
  if (kv != few) free(kv);
  return e;
}

static int open_recall_index(const tw_twin_t *t, const char *id) {
  for (uint32_t i = 0; i < t->n_open_recalls; i++)
    if (strcmp(t->open_recalls[i], id) == 0) return (int)i;
  return -1;
}

static bool recall_was_completed(const tw_twin_t *t, const char *id) {
  for (uint32_t i = 0; i < t->n_timeline; i++) {
    const tw_entry_t *e = t->timeline[i];
    if (e->rejected || e->kind != TWIN__V1__LIFECYCLE_KIND__RECALL_COMPLETED) continue;
    const char *recall_id = tw_entry_text(e, TW_ET_RECALL_ID);
    if (recall_id && strcmp(recall_id, id) == 0) return true;
  }
  return false;
}

static bool has_brake_parts(const Twin__V1__LifecycleEvent *lc) {
  for (size_t i = 0; i < lc->n_parts_replaced; i++)
    if (strncmp(lc->parts_replaced[i], "brake_pad", 9) == 0) return true;
  return false;
}

/* Returns NULL when the event may apply to t, else why not. Reasons are
 * fixed strings so equal histories give equal documents. */
static const char *lifecycle_check(const tw_twin_t *t, const Twin__V1__LifecycleEvent *lc) {
  tw_stage_t s = t->stage;
  if (s == TW_STAGE_DECOMMISSIONED) return "product is decommissioned: no lifecycle event may follow";
  switch (lc->kind) {
  case TWIN__V1__LIFECYCLE_KIND__ORDERED:
    return s == TW_STAGE_NONE ? NULL : "ORDERED for a product that is already ordered";
  case TWIN__V1__LIFECYCLE_KIND__BUILD_STARTED:
    return (s == TW_STAGE_NONE || s == TW_STAGE_ORDERED) ? NULL : "BUILD_STARTED requires stage ORDERED";
  case TWIN__V1__LIFECYCLE_KIND__BUILD_STEP_COMPLETED:
  case TWIN__V1__LIFECYCLE_KIND__QUALITY_GATE_PASSED:
  case TWIN__V1__LIFECYCLE_KIND__QUALITY_GATE_FAILED:
    return s == TW_STAGE_IN_PRODUCTION ? NULL : "build and quality events require stage IN_PRODUCTION";
  case TWIN__V1__LIFECYCLE_KIND__BUILD_COMPLETED:
    if (s != TW_STAGE_IN_PRODUCTION) return "BUILD_COMPLETED requires stage IN_PRODUCTION";
    return t->quality_hold ? "BUILD_COMPLETED while the last quality gate failed" : NULL;
  case TWIN__V1__LIFECYCLE_KIND__SHIPPED:
    return (s == TW_STAGE_BUILT || s == TW_STAGE_AT_DEALER) ? NULL
                                                            : "SHIPPED requires stage BUILT or AT_DEALER";
  case TWIN__V1__LIFECYCLE_KIND__ARRIVED_AT_DEALER:
    return s == TW_STAGE_IN_TRANSIT ? NULL : "ARRIVED_AT_DEALER requires stage IN_TRANSIT";
  case TWIN__V1__LIFECYCLE_KIND__DELIVERED:
    if (s != TW_STAGE_AT_DEALER && s != TW_STAGE_IN_TRANSIT)
      return "DELIVERED requires stage AT_DEALER or IN_TRANSIT (the product is not built and shipped)";
    return lc->owner_id[0] ? NULL : "DELIVERED without owner_id";
  case TWIN__V1__LIFECYCLE_KIND__SERVICE_VISIT:
  case TWIN__V1__LIFECYCLE_KIND__WARRANTY_CLAIM:
    return s == TW_STAGE_IN_SERVICE ? NULL : "service and warranty events require stage IN_SERVICE";
  case TWIN__V1__LIFECYCLE_KIND__OWNERSHIP_TRANSFERRED:
    if (s != TW_STAGE_IN_SERVICE) return "OWNERSHIP_TRANSFERRED requires stage IN_SERVICE";
    return lc->owner_id[0] ? NULL : "OWNERSHIP_TRANSFERRED without owner_id";
  case TWIN__V1__LIFECYCLE_KIND__RECALL_ISSUED:
    if (s < TW_STAGE_BUILT) return "RECALL_ISSUED for a product that is not built";
    if (!lc->recall_id[0]) return "RECALL_ISSUED without recall_id";
    return open_recall_index(t, lc->recall_id) >= 0 ? "RECALL_ISSUED for a recall that is already open"
                                                    : NULL;
  case TWIN__V1__LIFECYCLE_KIND__RECALL_COMPLETED:
    if (!lc->recall_id[0]) return "RECALL_COMPLETED without recall_id";
    if (open_recall_index(t, lc->recall_id) >= 0) return NULL;
    return recall_was_completed(t, lc->recall_id) ? "RECALL_COMPLETED for a recall already completed"
                                                  : "RECALL_COMPLETED for a recall that was never issued";
  case TWIN__V1__LIFECYCLE_KIND__DECOMMISSIONED: return NULL;
  default: return "unknown lifecycle kind"; /* tw_envelope_validate() sends these to the DLQ */
  }
}

static void set_str(char **dst, const char *src) {
  free(*dst);
  *dst = tw_xstrdup_nonempty(src);
}

/* Applies an accepted lifecycle event; returns the TW_SIG_* classes it may
 * have changed. */
static uint32_t lifecycle_apply(tw_twin_t *t, const Twin__V1__Envelope *env) {
  const Twin__V1__LifecycleEvent *lc = env->lifecycle;
  tw_stage_t stage = t->stage;
  uint32_t changed = 0;
  if (lc->model[0]) set_str(&t->model, lc->model);
  switch (lc->kind) {
  case TWIN__V1__LIFECYCLE_KIND__ORDERED: t->stage = TW_STAGE_ORDERED; break;
  case TWIN__V1__LIFECYCLE_KIND__BUILD_STARTED: t->stage = TW_STAGE_IN_PRODUCTION; break;
  case TWIN__V1__LIFECYCLE_KIND__QUALITY_GATE_PASSED: t->quality_hold = false; break;
  case TWIN__V1__LIFECYCLE_KIND__QUALITY_GATE_FAILED: t->quality_hold = true; break;
  case TWIN__V1__LIFECYCLE_KIND__BUILD_COMPLETED: t->stage = TW_STAGE_BUILT; break;
  case TWIN__V1__LIFECYCLE_KIND__SHIPPED: t->stage = TW_STAGE_IN_TRANSIT; break;
  case TWIN__V1__LIFECYCLE_KIND__ARRIVED_AT_DEALER: t->stage = TW_STAGE_AT_DEALER; break;
  case TWIN__V1__LIFECYCLE_KIND__DELIVERED:
    t->stage = TW_STAGE_IN_SERVICE;
    set_str(&t->owner, lc->owner_id);
    t->delivered = true;
    t->delivered_ms = env->event_time_ms;
    t->delivered_has_odometer = lc->_odometer_km_case != 0;
    t->delivered_odometer_km = t->delivered_has_odometer ? lc->odometer_km : 0;
    changed |= TW_SIG_SERVICE;
    break;
  case TWIN__V1__LIFECYCLE_KIND__OWNERSHIP_TRANSFERRED: set_str(&t->owner, lc->owner_id); break;
  case TWIN__V1__LIFECYCLE_KIND__SERVICE_VISIT: {
    tw_service_t *sv = &t->last_service;
    sv->set = true;
    sv->at_ms = env->event_time_ms;
    sv->has_odometer = lc->_odometer_km_case != 0;
    sv->odometer_km = sv->has_odometer ? lc->odometer_km : 0;
    set_str(&sv->work_order, lc->work_order);
    set_str(&sv->site, lc->site);
    changed |= TW_SIG_SERVICE;
    if (has_brake_parts(lc) && env->event_time_ms > t->last_brake_service_ms) {
      t->last_brake_service_ms = env->event_time_ms;
      changed |= TW_SIG_WEAR;
    }
    break;
  }
  case TWIN__V1__LIFECYCLE_KIND__RECALL_ISSUED:
    t->open_recalls = tw_xrealloc(t->open_recalls, (t->n_open_recalls + 1) * sizeof *t->open_recalls);
    t->open_recalls[t->n_open_recalls++] = tw_xstrdup(lc->recall_id);
    changed |= TW_SIG_RECALLS;
    break;
  case TWIN__V1__LIFECYCLE_KIND__RECALL_COMPLETED: {
    int i = open_recall_index(t, lc->recall_id);
    free(t->open_recalls[i]);
    memmove(&t->open_recalls[i], &t->open_recalls[i + 1],
            (t->n_open_recalls - (uint32_t)i - 1) * sizeof *t->open_recalls);
    t->n_open_recalls--;
    changed |= TW_SIG_RECALLS;
    break;
  }
  case TWIN__V1__LIFECYCLE_KIND__DECOMMISSIONED: t->stage = TW_STAGE_DECOMMISSIONED; break;
  default: break; /* BUILD_STEP_COMPLETED, WARRANTY_CLAIM: timeline only */
  }
  if (t->stage != stage) changed |= TW_SIG_STAGE;
  return changed;
}

static tw_outcome_t reduce_lifecycle(tw_twin_t *t, const Twin__V1__Envelope *env, const char **reason) {
  const char *why = lifecycle_check(t, env->lifecycle);
  const tw_entry_t *e = timeline_push(t, env, why);
  if (why) {
    t->counters.rejected++;
    if (reason) *reason = tw_entry_text(e, TW_ET_REASON);
    return TW_OUT_REJECTED;
  }
  t->rule_inputs |= lifecycle_apply(t, env);
  t->counters.lifecycle++;
  return TW_OUT_APPLIED;
}

/* ---- Entry point ----------------------------------------------------------- */

tw_outcome_t tw_reduce(tw_twin_t *t, const Twin__V1__Envelope *env, const char **reason) {
  uint32_t w = t->seq_window;
  if (reason) *reason = NULL;
  t->seen++;
  tw_source_t *src = tw_twin_source(t, env->source);
  tw_outcome_t o = seq_admit(src, env->seq, w);
  if (o == TW_OUT_DUPLICATE) {
    t->counters.duplicates++;
    return o;
  }
  if (o == TW_OUT_TOO_LATE) {
    t->counters.too_late++;
    return o;
  }
  if (env->payload_case == TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY) {
    o = reduce_telemetry(t, env);
  } else {
    o = reduce_lifecycle(t, env, reason);
  }
  if (o != TW_OUT_REJECTED) {
    t->rev++;
    if (env->event_time_ms > t->last_event_ms) {
      t->last_event_ms = env->event_time_ms;
      t->rule_inputs |= TW_SIG_TIME;
    }
  }
  return o;
}
