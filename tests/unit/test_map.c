/* test_map.c - the product_id -> twin map: look-ups one at a time and in
 * batches (tw_map_find_batch, the shards' path) agree, across growth,
 * deletions with backward shift, missing ids and repeated ids; and the
 * prefetch hints read only what the twin owns (run under ASan in CI). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "map.h"
#include "twin/twin.h"

#define N_IDS 20000

static char ids[N_IDS][32];

static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Batch look-up of want[0..n) must give what tw_map_get gives for each. */
static void check_batch(const tw_map_t *m, const char **want, size_t n) {
  tw_twin_t **got = calloc(n ? n : 1, sizeof *got);
  for (size_t i = 0; i < n; i++) got[i] = (tw_twin_t *)(uintptr_t)1; /* overwritten, also with NULL */
  tw_map_find_batch(m, want, got, n);
  for (size_t i = 0; i < n; i++) {
    tw_twin_t *one = tw_map_get(m, want[i]);
    assert_ptr_equal(got[i], one);
    if (one) assert_string_equal(one->product_id, want[i]);
  }
  free(got);
}

static void test_batch_matches_single(void **state) {
  (void)state;
  for (int i = 0; i < N_IDS; i++) snprintf(ids[i], sizeof ids[i], "VIN%017d", i * 7919);
  tw_map_t m;
  tw_map_init(&m);
  const char **want = malloc(3 * N_IDS * sizeof *want);
  uint64_t seed = 0x9e3779b97f4a7c15u;

  /* Empty map, every size around the pipeline's depth. */
  for (size_t n = 0; n < 40; n++) {
    for (size_t i = 0; i < n; i++) want[i] = ids[i];
    check_batch(&m, want, n);
  }
  /* Half the ids in (the map grows several times), then batches of present,
   * missing and repeated ids in random order. */
  for (int i = 0; i < N_IDS; i += 2) tw_map_put(&m, tw_twin_new(ids[i], 64));
  assert_int_equal(m.len, N_IDS / 2);
  for (size_t n = 0; n < 3 * N_IDS; n += 1 + n / 3) {
    size_t range = 50 + n < N_IDS ? 50 + n : N_IDS; /* small batches repeat ids */
    for (size_t i = 0; i < n; i++) want[i] = ids[rnd(&seed) % range];
    check_batch(&m, want, n);
  }
  /* Deleting shifts runs back; look-ups after that must still agree. */
  for (int i = 0; i < N_IDS; i += 6) tw_twin_destroy(tw_map_del(&m, ids[i]));
  for (int i = 0; i < N_IDS; i++) want[i] = ids[(i * 31) % N_IDS];
  check_batch(&m, want, N_IDS);
  size_t present = 0;
  for (int i = 0; i < N_IDS; i++) present += tw_map_get(&m, ids[i]) != NULL;
  assert_int_equal(present, m.len);
  assert_int_equal(present, N_IDS / 2 - (N_IDS / 6 + 1));

  free(want);
  tw_map_cleanup(&m, true);
}

static Twin__V1__Envelope *telemetry(const char *pid, const char *source, uint64_t seq, int64_t at,
                                     double v) {
  Twin__V1__Envelope *e = calloc(1, sizeof *e);
  twin__v1__envelope__init(e);
  Twin__V1__Telemetry *tm = calloc(1, sizeof *tm);
  twin__v1__telemetry__init(tm);
  e->product_id = (char *)pid;
  e->source = (char *)source;
  e->seq = seq;
  e->event_time_ms = at;
  e->payload_case = TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY;
  e->telemetry = tm;
  tm->_odometer_km_case = TWIN__V1__TELEMETRY___ODOMETER_KM_ODOMETER_KM;
  tm->odometer_km = v;
  static Twin__V1__Telemetry__MetricsEntry me[3];
  static Twin__V1__Telemetry__MetricsEntry *mp[3];
  static const char *names[3] = {"coolant_c", "oil_pressure_kpa", "cabin_c"};
  for (int i = 0; i < 3; i++) {
    twin__v1__telemetry__metrics_entry__init(&me[i]);
    me[i].key = (char *)names[i];
    me[i].value = v + i;
    mp[i] = &me[i];
  }
  tm->n_metrics = 3;
  tm->metrics = mp;
  return e;
}

/* Every stage on twins that own sources, metrics and a timeline: nothing
 * changes, and under ASan any read outside what the twin owns fails. */
static void test_prefetch_reads_only_the_twin(void **state) {
  (void)state;
  tw_twin_t *empty = tw_twin_new("VIN-EMPTY", 64);
  tw_twin_t *t = tw_twin_new("VIN-FULL", 64);
  const char *sources[] = {"telematics", "dealer-dms", "obd-dongle"};
  for (int i = 0; i < 30; i++) {
    Twin__V1__Envelope *e =
        telemetry("VIN-FULL", sources[i % 3], (uint64_t)(i + 1), 1700000000000 + i, i * 10.0);
    char err[256];
    assert_true(tw_envelope_validate(e, "VIN-FULL", 8, err, sizeof err));
    assert_int_equal(tw_reduce(t, e, NULL), TW_OUT_APPLIED);
    free(e->telemetry);
    free(e);
  }
  assert_int_equal(t->n_sources, 3);
  assert_int_equal(t->tel->n_metrics, 3);
  uint64_t rev = t->rev;
  tw_twin_t *tw[] = {t, empty, NULL, t, empty, t};
  for (size_t i = 0; i < 6; i++) tw_twin_prefetch_ahead(tw, i, 6);
  for (int stage = 0; stage < 4; stage++) {
    tw_twin_prefetch(t, stage);
    tw_twin_prefetch(empty, stage);
    tw_twin_prefetch(NULL, stage);
  }
  assert_int_equal(t->rev, rev);
  assert_int_equal(t->n_sources, 3);
  tw_twin_destroy(t);
  tw_twin_destroy(empty);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_batch_matches_single),
      cmocka_unit_test(test_prefetch_reads_only_the_twin),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
