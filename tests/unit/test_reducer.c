/* test_reducer.c - the pure reducer against golden fixtures.
 *
 * Every JSON file in tests/fixtures/reducer holds events (each with the outcome
 * it must have) and the twin document expected after them (a subset of the
 * snapshot). Each fixture is also replayed with a "restart" after every
 * event (snapshot to BSON, read back, continue), which must end in the
 * byte-identical document: that is what makes kill -9 recovery exact. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fixture.h"
#include "twin/twin.h"
#include "util.h"

typedef struct {
  char path[1400];
  bson_t *fx;
} fx_state_t;

static Twin__V1__Envelope *decode(const bson_t *ev, const char *pid, char *err, size_t cap, bool *valid) {
  size_t len;
  uint8_t *buf = tw_fixture_encode(ev, pid, &len, err, cap);
  assert_non_null(buf);
  Twin__V1__Envelope *env = twin__v1__envelope__unpack(NULL, len, buf);
  free(buf);
  assert_non_null(env);
  *valid = tw_envelope_validate(env, env->product_id, strlen(env->product_id), err, cap);
  return env;
}

static const char *str_field(const bson_t *b, const char *key, const char *def) {
  bson_iter_t it;
  if (bson_iter_init_find(&it, b, key) && BSON_ITER_HOLDS_UTF8(&it)) return bson_iter_utf8(&it, NULL);
  return def;
}

/* Replays the fixture's events; restart_at >= 0 round-trips the twin
 * through BSON after that many events. Checks outcomes when check. */
static tw_twin_t *replay(const fx_state_t *st, int restart_at, bool check) {
  bson_iter_t it, evs;
  const char *pid = str_field(st->fx, "product_id", "VIN0TEST000000001");
  uint32_t window = 0;
  if (bson_iter_init_find(&it, st->fx, "window")) window = (uint32_t)bson_iter_as_int64(&it);
  tw_twin_t *t = tw_twin_new(pid, window);
  assert_true(bson_iter_init_find(&evs, st->fx, "events"));
  bson_iter_recurse(&evs, &it);
  int i = 0;
  while (bson_iter_next(&it)) {
    if (i == restart_at) {
      bson_t doc = BSON_INITIALIZER;
      char err[256];
      tw_twin_to_bson(t, -1, &doc);
      tw_twin_t *back = tw_twin_from_bson(&doc, window, err, sizeof err);
      if (!back) fail_msg("%s: snapshot did not read back: %s", st->path, err);
      bson_destroy(&doc);
      tw_twin_destroy(t);
      t = back;
    }
    uint32_t len;
    const uint8_t *data;
    bson_iter_document(&it, &len, &data);
    bson_t ev;
    bson_init_static(&ev, data, len);
    char err[512] = "";
    bool valid;
    Twin__V1__Envelope *env = decode(&ev, pid, err, sizeof err, &valid);
    const char *expect = str_field(&ev, "expect", "applied");
    const char *want_reason = str_field(&ev, "reason", NULL);
    if (strcmp(expect, "invalid") == 0) {
      if (check && valid) fail_msg("%s: event %d should be invalid (DLQ) but passed validation", st->path, i);
      if (check && want_reason && !strstr(err, want_reason))
        fail_msg("%s: event %d invalid for '%s', expected a reason containing '%s'", st->path, i, err,
                 want_reason);
    } else {
      if (!valid) fail_msg("%s: event %d failed validation: %s", st->path, i, err);
      const char *why = NULL;
      tw_outcome_t o = tw_reduce(t, env, &why);
      if (check && strcmp(tw_outcome_name(o), expect) != 0)
        fail_msg("%s: event %d: outcome %s, expected %s", st->path, i, tw_outcome_name(o), expect);
      if (check && want_reason && (!why || !strstr(why, want_reason)))
        fail_msg("%s: event %d: reason '%s', expected it to contain '%s'", st->path, i, why ? why : "(none)",
                 want_reason);
    }
    twin__v1__envelope__free_unpacked(env, NULL);
    i++;
  }
  return t;
}

static void test_fixture(void **state) {
  fx_state_t *st = *state;
  tw_twin_t *t = replay(st, -1, true);
  bson_t doc = BSON_INITIALIZER;
  tw_twin_to_bson(t, -1, &doc);
  bson_iter_t it;
  if (bson_iter_init_find(&it, st->fx, "twin")) {
    uint32_t len;
    const uint8_t *data;
    bson_iter_document(&it, &len, &data);
    bson_t want;
    bson_init_static(&want, data, len);
    char why[1024];
    if (!tw_bson_subset(&want, &doc, why, sizeof why)) {
      char *json = bson_as_relaxed_extended_json(&doc, NULL);
      fprintf(stderr, "actual twin: %s\n", json);
      bson_free(json);
      fail_msg("%s: twin differs: %s", st->path, why);
    }
  }
  /* Restarting after any event ends in the same bytes. */
  uint64_t want_hash = tw_twin_state_hash(t);
  bson_iter_t evs, e;
  bson_iter_init_find(&evs, st->fx, "events");
  bson_iter_recurse(&evs, &e);
  int n = 0;
  while (bson_iter_next(&e)) n++;
  for (int k = 0; k <= n; k++) {
    tw_twin_t *r = replay(st, k, false);
    if (tw_twin_state_hash(r) != want_hash)
      fail_msg("%s: restart after event %d changed the twin", st->path, k);
    tw_twin_destroy(r);
  }
  bson_destroy(&doc);
  tw_twin_destroy(t);
}

/* ---- Seq window edge cases, without fixtures ------------------------------- */

/* Reduces a telemetry report tm from src into t. */
static tw_outcome_t reduce_tel(tw_twin_t *t, const char *src, uint64_t seq, int64_t at,
                               Twin__V1__Telemetry *tm) {
  Twin__V1__Envelope env = TWIN__V1__ENVELOPE__INIT;
  env.product_id = t->product_id;
  env.source = (char *)src;
  env.seq = seq;
  env.event_time_ms = at;
  env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY;
  env.telemetry = tm;
  return tw_reduce(t, &env, NULL);
}

static tw_outcome_t tel(tw_twin_t *t, const char *src, uint64_t seq, int64_t at, double odo) {
  Twin__V1__Telemetry tm = TWIN__V1__TELEMETRY__INIT;
  tm._odometer_km_case = TWIN__V1__TELEMETRY___ODOMETER_KM_ODOMETER_KM;
  tm.odometer_km = odo;
  return reduce_tel(t, src, seq, at, &tm);
}

/* A timeline entry owns copies of every text of its event, in one block:
 * here with more texts (9 fields, 12 parts, 40 attributes) than
 * tw_twin_timeline_add() measures on its stack, a repeated attribute key and an
 * empty site (stored as none). */
static void test_timeline_entry_texts(void **state) {
  (void)state;
  tw_twin_t *t = tw_twin_new("VIN-TEXTS", 0);
  char parts_buf[12][16], keys[40][16], vals[40][16];
  char *parts[12];
  Twin__V1__LifecycleEvent__AttributesEntry ae[41], *ap[41];
  for (int i = 0; i < 12; i++) {
    snprintf(parts_buf[i], sizeof parts_buf[i], "part-%02d", i);
    parts[i] = parts_buf[i];
  }
  for (int i = 0; i < 40; i++) { /* keys in reverse order */
    twin__v1__lifecycle_event__attributes_entry__init(&ae[i]);
    snprintf(keys[i], sizeof keys[i], "key-%02d", 39 - i);
    snprintf(vals[i], sizeof vals[i], "value-%02d", 39 - i);
    ae[i].key = keys[i];
    ae[i].value = vals[i];
    ap[i] = &ae[i];
  }
  twin__v1__lifecycle_event__attributes_entry__init(&ae[40]);
  ae[40].key = keys[0]; /* "key-39" again: the last value wins */
  ae[40].value = "last";
  ap[40] = &ae[40];
  char source[] = "plant-7", actor[] = "robot cell 3", detail[] = "torque check";
  Twin__V1__Envelope env = TWIN__V1__ENVELOPE__INIT;
  Twin__V1__LifecycleEvent lc = TWIN__V1__LIFECYCLE_EVENT__INIT;
  env.product_id = t->product_id;
  env.source = source;
  env.seq = 1;
  env.event_time_ms = 1700000000000;
  env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_LIFECYCLE;
  env.lifecycle = &lc;
  lc.kind = TWIN__V1__LIFECYCLE_KIND__BUILD_STEP_COMPLETED;
  lc.site = "";
  lc.actor = actor;
  lc.detail = detail;
  lc.n_parts_replaced = 12;
  lc.parts_replaced = parts;
  lc.n_attributes = 41;
  lc.attributes = ap;
  /* Building before ORDERED is rejected: the entry keeps the reason too. */
  const char *why = NULL;
  assert_int_equal(tw_reduce(t, &env, &why), TW_OUT_REJECTED);
  assert_non_null(why);
  /* The event's texts change after the call: the entry must not see it. */
  memset(parts_buf, 'x', sizeof parts_buf);
  memset(keys, 'x', sizeof keys);
  memset(vals, 'x', sizeof vals);
  memset(source, 'x', sizeof source - 1);
  memset(actor, 'x', sizeof actor - 1);
  assert_int_equal(t->n_timeline, 1);
  const tw_entry_t *e = t->timeline[0];
  const char *text[TW_ET_COUNT], *p = tw_entry_texts(e, text);
  assert_string_equal(text[TW_ET_SOURCE], "plant-7");
  assert_null(text[TW_ET_SITE]);
  assert_string_equal(text[TW_ET_ACTOR], "robot cell 3");
  assert_string_equal(text[TW_ET_DETAIL], "torque check");
  assert_null(text[TW_ET_WORK_ORDER]);
  assert_true(e->rejected && text[TW_ET_REASON] == why);
  for (int i = 0; i < TW_ET_COUNT; i++) { /* one text read alone: the same */
    const char *one = tw_entry_text(e, (tw_entry_text_t)i);
    assert_true(one == text[i]);
  }
  assert_int_equal(e->n_parts, 12);
  for (int i = 0; i < 12; i++, p = tw_text_next(p)) {
    char want[16];
    snprintf(want, sizeof want, "part-%02d", i);
    assert_string_equal(p, want);
  }
  assert_int_equal(e->n_attrs, 40);
  for (int i = 0; i < 40; i++) {
    char k[16], v[16];
    snprintf(k, sizeof k, "key-%02d", i);
    snprintf(v, sizeof v, "value-%02d", i);
    assert_string_equal(p, k);
    p = tw_text_next(p);
    assert_string_equal(p, i == 39 ? "last" : v);
    p = tw_text_next(p);
  }
  tw_twin_destroy(t);
}

static void test_window_multiword(void **state) {
  (void)state;
  tw_twin_t *t = tw_twin_new("P1", 130); /* three 64-bit words, last one partial */
  assert_int_equal(tel(t, "a", 200, 1, 1), TW_OUT_APPLIED);
  assert_int_equal(tel(t, "a", 71, 2, 1), TW_OUT_APPLIED); /* 129 behind: inside */
  assert_int_equal(tel(t, "a", 71, 3, 1), TW_OUT_DUPLICATE);
  assert_int_equal(tel(t, "a", 70, 4, 1), TW_OUT_TOO_LATE);   /* 130 behind: outside */
  assert_int_equal(tel(t, "a", 265, 5, 1), TW_OUT_APPLIED);   /* shift by 65 bits */
  assert_int_equal(tel(t, "a", 200, 6, 1), TW_OUT_DUPLICATE); /* still remembered after the shift */
  assert_int_equal(tel(t, "a", 199, 7, 1), TW_OUT_APPLIED);
  assert_int_equal(tel(t, "a", 136, 8, 1), TW_OUT_APPLIED); /* 129 behind 265 */
  assert_int_equal(tel(t, "a", 135, 9, 1), TW_OUT_TOO_LATE);
  assert_int_equal(tel(t, "b", 1, 10, 1), TW_OUT_APPLIED); /* sources are independent */
  assert_int_equal(t->rev, 6);
  assert_int_equal(t->counters.duplicates, 2);
  assert_int_equal(t->counters.too_late, 2);
  assert_int_equal(t->seen, 10);

  /* The window survives a snapshot round trip, including its holes. */
  bson_t doc = BSON_INITIALIZER;
  char err[128];
  tw_twin_to_bson(t, -1, &doc);
  tw_twin_t *r = tw_twin_from_bson(&doc, 130, err, sizeof err);
  assert_non_null(r);
  assert_int_equal(tel(r, "a", 199, 11, 1), TW_OUT_DUPLICATE);
  assert_int_equal(tel(r, "a", 198, 12, 1), TW_OUT_APPLIED);
  assert_int_equal(tel(r, "a", 135, 13, 1), TW_OUT_TOO_LATE);
  bson_destroy(&doc);
  tw_twin_destroy(r);
  tw_twin_destroy(t);
}

/* A telemetry event with one metric. */
static tw_outcome_t metric(tw_twin_t *t, const char *src, uint64_t seq, int64_t at, const char *key,
                           double v) {
  Twin__V1__Telemetry tm = TWIN__V1__TELEMETRY__INIT;
  Twin__V1__Telemetry__MetricsEntry me = TWIN__V1__TELEMETRY__METRICS_ENTRY__INIT, *mp = &me;
  me.key = (char *)key;
  me.value = v;
  tm.n_metrics = 1;
  tm.metrics = &mp;
  return reduce_tel(t, src, seq, at, &tm);
}

/* A twin's sources (entries, windows, names) and its metrics (entries,
 * names) are each one block that a new source or metric rebuilds: what
 * every earlier one held survives each rebuild, whichever place in the
 * sorted order the new one takes, and through a snapshot round trip. */
static void test_blocks_rebuilt(void **state) {
  (void)state;
  static const char *const srcs[] = {"mes", "crm", "tcu", "a", "dms-long-source-name", "b"};
  static const char *const keys[] = {"oil_temp_c", "cabin_temp_c", "zz", "a", "coolant_temp_c", "m"};
  enum { N = 6 };
  tw_twin_t *t = tw_twin_new("VIN-BLOCKS", 130); /* three window words per source */
  for (int k = 0; k < N; k++) {
    /* The new source: seqs 200, 72, 100 + 2k (a window of its own) and
     * 201; the window then holds 72..201, with holes such as 73. Each event
     * is later than the one before, so none is stale. */
    assert_int_equal(tel(t, srcs[k], 200, 1000 + 4 * k, 1), TW_OUT_APPLIED);
    assert_int_equal(tel(t, srcs[k], 72, 1001 + 4 * k, 1), TW_OUT_APPLIED);
    assert_int_equal(tel(t, srcs[k], 100 + 2 * k, 1002 + 4 * k, 1), TW_OUT_APPLIED);
    assert_int_equal(metric(t, srcs[k], 201, 1003 + 4 * k, keys[k], 10.0 * (k + 1)), TW_OUT_APPLIED);
    for (int j = 0; j <= k; j++) { /* every source so far still holds its own window */
      assert_int_equal(tel(t, srcs[j], 72, 3000, 1), TW_OUT_DUPLICATE);
      assert_int_equal(tel(t, srcs[j], 100 + 2 * j, 3000, 1), TW_OUT_DUPLICATE);
      assert_int_equal(tel(t, srcs[j], 71, 3000, 1), TW_OUT_TOO_LATE);
      assert_int_equal(tel(t, srcs[j], 201, 3000, 1), TW_OUT_DUPLICATE);
    }
  }
  assert_int_equal(t->n_sources, N);
  assert_int_equal(t->tel->n_metrics, N);
  for (uint32_t i = 1; i < N; i++) {
    assert_true(strcmp(t->sources[i - 1].name, t->sources[i].name) < 0);
    assert_true(strcmp(t->tel->metrics[i - 1].name, t->tel->metrics[i].name) < 0);
  }
  bson_t doc = BSON_INITIALIZER;
  char err[128];
  tw_twin_to_bson(t, -1, &doc);
  tw_twin_t *r = tw_twin_from_bson(&doc, 130, err, sizeof err);
  assert_non_null(r);
  for (tw_twin_t *x = t; x; x = x == t ? r : NULL) {
    for (int k = 0; k < N; k++) {
      const tw_metric_t *m = NULL;
      for (uint32_t i = 0; i < x->tel->n_metrics; i++)
        if (strcmp(x->tel->metrics[i].name, keys[k]) == 0) m = &x->tel->metrics[i];
      assert_non_null(m);
      assert_true(m->val.value == 10.0 * (k + 1));
      assert_int_equal(m->val.st.at_ms, 1003 + 4 * k);
      assert_int_equal(tel(x, srcs[k], 73, 4000 + k, 1), TW_OUT_APPLIED); /* the hole */
      assert_int_equal(tel(x, srcs[k], 73, 4000 + k, 1), TW_OUT_DUPLICATE);
    }
  }
  bson_destroy(&doc);
  tw_twin_destroy(r);
  tw_twin_destroy(t);
}

/* A telemetry event with n tire pressures, base + i each. */
static tw_outcome_t tires(tw_twin_t *t, uint64_t seq, size_t n, double base) {
  double v[16];
  for (size_t i = 0; i < n; i++) v[i] = base + (double)i;
  Twin__V1__Telemetry tm = TWIN__V1__TELEMETRY__INIT;
  tm.n_tire_pressure_kpa = n;
  tm.tire_pressure_kpa = v;
  return reduce_tel(t, "tcu", seq, (int64_t)seq * 1000, &tm);
}

static void assert_tires(const tw_twin_t *t, size_t n, double base) {
  const tw_vec_t *f = &t->tel->tire_pressure_kpa;
  assert_int_equal(f->n, n);
  assert_true(n <= TW_VEC_INLINE ? f->v == f->inl : f->v != f->inl);
  for (size_t i = 0; i < n; i++) assert_true(f->v[i] == base + (double)i);
}

/* Up to TW_VEC_INLINE wheel values live in the vector itself, more in an
 * array of their own: a twin whose wheel count changes (a trailer hitched
 * on, a sensor dropping out) moves between the two and keeps the latest
 * values, also through a snapshot round trip (ASan checks the frees). */
static void test_wheel_vectors(void **state) {
  (void)state;
  static const size_t counts[] = {4, 6, 6, 2, 8, 8, 4, 10, 3};
  tw_twin_t *t = tw_twin_new("VIN-WHEELS", 0);
  for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
    double base = 200.0 + 10.0 * (double)k;
    assert_int_equal(tires(t, k + 1, counts[k], base), TW_OUT_APPLIED);
    assert_tires(t, counts[k], base);
    bson_t doc = BSON_INITIALIZER;
    char err[128];
    tw_twin_to_bson(t, -1, &doc);
    tw_twin_t *r = tw_twin_from_bson(&doc, 0, err, sizeof err);
    assert_non_null(r);
    assert_tires(r, counts[k], base);
    bson_destroy(&doc);
    tw_twin_destroy(r);
  }
  tw_twin_destroy(t);
}

/* The validator's UTF-8 check (util.c), which replaced libbson's. */
static void test_utf8(void **state) {
  (void)state;
  static const struct {
    const char *s;
    bool ok;
  } v[] = {
      {"", true},
      {"WVWZZZ1JZXW000001", true},
      {"Gr\xc3\xbcnheide", true},                       /* U+00FC */
      {"\xe2\x82\xac 12345678 \xf0\x9f\x9a\x97", true}, /* euro sign, U+1F697 after an ASCII run */
      {"\xc0\xaf", false},                              /* overlong '/' */
      {"\xe0\x80\xaf", false},                          /* overlong, 3 bytes */
      {"\xed\xa0\x80", false},                          /* surrogate U+D800 */
      {"\xf4\x90\x80\x80", false},                      /* past U+10FFFF */
      {"\xf5\x80\x80\x80", false},
      {"abcdefgh\xc3", false},    /* truncated after an 8-byte run */
      {"\x80", false},            /* continuation without a start */
      {"\xc3\x28", false},        /* bad continuation */
      {"\xef\xbf\xbf", true},     /* U+FFFF */
      {"\xf4\x8f\xbf\xbf", true}, /* U+10FFFF */
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    if (tw_utf8_valid(v[i].s, strlen(v[i].s)) != v[i].ok)
      fail_msg("utf8 vector %zu: expected %d", i, v[i].ok);
    /* libbson agrees on every vector */
    assert_int_equal(bson_utf8_validate(v[i].s, strlen(v[i].s), false), v[i].ok);
  }
}

static void test_window_huge_seqs(void **state) {
  (void)state;
  tw_twin_t *t = tw_twin_new("P2", 64);
  /* seqs near 2^64 are stored as int64 bit patterns and must survive. */
  assert_int_equal(tel(t, "a", UINT64_MAX - 1, 1, 1), TW_OUT_APPLIED);
  assert_int_equal(tel(t, "a", UINT64_MAX, 2, 2), TW_OUT_APPLIED);
  assert_int_equal(tel(t, "a", UINT64_MAX - 1, 3, 3), TW_OUT_DUPLICATE);
  assert_int_equal(tel(t, "a", 5, 4, 4), TW_OUT_TOO_LATE); /* no wrap-around: 5 is very old */
  bson_t doc = BSON_INITIALIZER;
  char err[128];
  tw_twin_to_bson(t, -1, &doc);
  tw_twin_t *r = tw_twin_from_bson(&doc, 64, err, sizeof err);
  assert_non_null(r);
  assert_true(r->sources[0].hwm == UINT64_MAX);
  assert_int_equal(tel(r, "a", UINT64_MAX, 5, 5), TW_OUT_DUPLICATE);
  bson_destroy(&doc);
  tw_twin_destroy(r);
  tw_twin_destroy(t);
}

static void test_lww_tie_breaks_by_seq(void **state) {
  (void)state;
  tw_twin_t *t = tw_twin_new("P3", 64);
  assert_int_equal(tel(t, "a", 2, 1000, 20), TW_OUT_APPLIED);
  assert_int_equal(tel(t, "a", 1, 1000, 10), TW_OUT_STALE); /* same time, lower seq */
  assert_true(t->tel->scalars[TW_F_ODOMETER_KM].value == 20);
  assert_int_equal(tel(t, "a", 3, 999, 5), TW_OUT_STALE); /* older time, higher seq */
  assert_true(t->tel->scalars[TW_F_ODOMETER_KM].value == 20);
  assert_int_equal(t->rev, 3);
  assert_int_equal(t->counters.stale_fields, 2);
  tw_twin_destroy(t);
}

/* ---- Runner ---------------------------------------------------------------- */

static int cmp_path(const void *a, const void *b) {
  return strcmp(((const fx_state_t *)a)->path, ((const fx_state_t *)b)->path);
}

int main(void) {
  const char *src = getenv("TWIN_SOURCE_DIR");
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/tests/fixtures/reducer", src ? src : ".");
  DIR *d = opendir(dir);
  if (!d) {
    fprintf(stderr, "cannot open %s (set TWIN_SOURCE_DIR)\n", dir);
    return 1;
  }
  fx_state_t *fx = calloc(256, sizeof *fx);
  size_t n = 0;
  struct dirent *de;
  while ((de = readdir(d)) && n < 256) {
    size_t l = strlen(de->d_name);
    if (l < 6 || strcmp(de->d_name + l - 5, ".json") != 0) continue;
    snprintf(fx[n].path, sizeof fx[n].path, "%s/%s", dir, de->d_name);
    n++;
  }
  closedir(d);
  qsort(fx, n, sizeof *fx, cmp_path);
  struct CMUnitTest *tests = calloc(n + 7, sizeof *tests);
  for (size_t i = 0; i < n; i++) {
    char err[512];
    fx[i].fx = tw_fixture_load_json(fx[i].path, err, sizeof err);
    if (!fx[i].fx) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    tests[i].name = strrchr(fx[i].path, '/') + 1;
    tests[i].test_func = test_fixture;
    tests[i].initial_state = &fx[i];
  }
  tests[n] = (struct CMUnitTest)cmocka_unit_test(test_window_multiword);
  tests[n + 1] = (struct CMUnitTest)cmocka_unit_test(test_window_huge_seqs);
  tests[n + 2] = (struct CMUnitTest)cmocka_unit_test(test_lww_tie_breaks_by_seq);
  tests[n + 3] = (struct CMUnitTest)cmocka_unit_test(test_utf8);
  tests[n + 4] = (struct CMUnitTest)cmocka_unit_test(test_timeline_entry_texts);
  tests[n + 5] = (struct CMUnitTest)cmocka_unit_test(test_blocks_rebuilt);
  tests[n + 6] = (struct CMUnitTest)cmocka_unit_test(test_wheel_vectors);
  int rc = _cmocka_run_group_tests("reducer", tests, n + 7, NULL, NULL);
  for (size_t i = 0; i < n; i++) bson_destroy(fx[i].fx);
  free(fx);
  free(tests);
  return rc;
}
