/* test_telemetry.c - the twin's telemetry block (twin.h, tw_telemetry_t).
 *
 * A twin gets the block with the first telemetry event that sets a value
 * and has none before: one that only had lifecycle events (most of a fleet
 * that is ordered, in production or in transit) has none, also after a
 * snapshot round trip. Without the block the twin reads, renders and
 * evaluates its rules exactly as with an empty one: same snapshot bytes,
 * same alerts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fixture.h"
#include "twin/rules.h"
#include "twin/twin.h"

#define PID "VIN0TELEMETRY0001"

static tw_rules_t *rules;

static int setup(void **state) {
  (void)state;
  char err[256];
  rules = tw_rules_compile(true, NULL, 0, err, sizeof err);
  return rules ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  tw_rules_destroy(rules);
  return 0;
}

/* Applies one fixture event (JSON, tests/support/fixture.h) as a shard
 * does: decode and validate, then the reducer and the default rules, whose
 * alerts go to alerts (may be NULL). */
static tw_outcome_t apply(tw_twin_t *t, const char *json, tw_alert_list_t *alerts) {
  bson_error_t berr;
  bson_t *ev = bson_new_from_json((const uint8_t *)json, -1, &berr);
  if (!ev) fail_msg("bad test event %s: %s", json, berr.message);
  char err[256];
  size_t len;
  uint8_t *buf = tw_fixture_encode(ev, PID, &len, err, sizeof err);
  if (!buf) fail_msg("%s: %s", json, err);
  Twin__V1__Envelope *env = tw_envelope_decode(NULL, buf, len, PID, strlen(PID), 1 << 20, err, sizeof err);
  if (!env) fail_msg("%s: %s", json, err);
  tw_outcome_t o = tw_apply_event(rules, t, env, NULL, alerts ? tw_alert_list_add : NULL, alerts);
  twin__v1__envelope__free_unpacked(env, NULL);
  free(buf);
  bson_destroy(ev);
  return o;
}

static const char *const LIFECYCLE[] = {
    "{'source': 'mes', 'seq': 1, 't': 1000, 'lifecycle': {'kind': 'ORDERED', 'model': 'Model T'}}",
    "{'source': 'mes', 'seq': 2, 't': 2000, 'lifecycle': {'kind': 'BUILD_STARTED', 'site': 'plant-1'}}",
    "{'source': 'mes', 'seq': 3, 't': 3000, 'lifecycle': {'kind': 'BUILD_COMPLETED'}}",
    "{'source': 'logistics', 'seq': 1, 't': 4000, 'lifecycle': {'kind': 'SHIPPED'}}",
    "{'source': 'logistics', 'seq': 2, 't': 5000, 'lifecycle': {'kind': 'ARRIVED_AT_DEALER'}}",
    "{'source': 'dms', 'seq': 1, 't': 6000, 'lifecycle': {'kind': 'DELIVERED', 'owner_id': 'cust-1', "
    "'odometer_km': 12}}",
    "{'source': 'dms', 'seq': 2, 't': 86400000, 'lifecycle': {'kind': 'SERVICE_VISIT', 'work_order': 'wo-1', "
    "'odometer_km': 900, 'parts_replaced': ['brake_pad_front']}}",
    "{'source': 'oem', 'seq': 1, 't': 90000000, 'lifecycle': {'kind': 'RECALL_ISSUED', 'recall_id': 'R-1'}}",
    /* Over a year after the visit: service_due fires, its message reads the
     * odometer (none: "?"). */
    "{'source': 'dms', 'seq': 3, 't': 40000000000, 'lifecycle': {'kind': 'WARRANTY_CLAIM'}}",
};
#define N_LIFECYCLE (sizeof LIFECYCLE / sizeof LIFECYCLE[0])

/* Single quotes in the test's JSON, for readability. */
static char *json(const char *s) {
  char *j = strdup(s);
  for (char *p = j; *p; p++)
    if (*p == '\'') *p = '"';
  return j;
}

static tw_outcome_t apply_q(tw_twin_t *t, const char *quoted, tw_alert_list_t *alerts) {
  char *j = json(quoted);
  tw_outcome_t o = apply(t, j, alerts);
  free(j);
  return o;
}

static void snapshot(const tw_twin_t *t, bson_t *doc) {
  bson_init(doc);
  tw_twin_to_bson(t, -1, doc);
}

static void assert_same_bytes(const bson_t *a, const bson_t *b) {
  assert_int_equal(a->len, b->len);
  assert_memory_equal(bson_get_data(a), bson_get_data(b), a->len);
}

static tw_twin_t *roundtrip(const tw_twin_t *t) {
  bson_t doc;
  snapshot(t, &doc);
  char err[256];
  tw_twin_t *back = tw_twin_from_bson(&doc, t->seq_window, err, sizeof err);
  if (!back) fail_msg("snapshot did not read back: %s", err);
  bson_t again;
  snapshot(back, &again);
  assert_same_bytes(&doc, &again);
  bson_destroy(&doc);
  bson_destroy(&again);
  return back;
}

/* The number of fields of the snapshot's telemetry document. */
static uint32_t telemetry_fields(const tw_twin_t *t) {
  bson_t doc;
  bson_iter_t it, in;
  snapshot(t, &doc);
  assert_true(bson_iter_init_find(&it, &doc, "telemetry"));
  assert_true(bson_iter_recurse(&it, &in));
  uint32_t n = 0;
  while (bson_iter_next(&in)) n++;
  bson_destroy(&doc);
  return n;
}

/* Lifecycle events only: no block, and the snapshot says "no telemetry"
 * as before the block existed (empty telemetry, derived values null, empty
 * fits), also after a round trip. */
static void test_lifecycle_only_has_no_block(void **state) {
  (void)state;
  tw_twin_t *t = tw_twin_new(PID, 0);
  tw_alert_list_t alerts;
  bson_init(&alerts.arr);
  alerts.n = 0;
  for (size_t i = 0; i < N_LIFECYCLE; i++) {
    assert_int_equal(apply_q(t, LIFECYCLE[i], &alerts), TW_OUT_APPLIED);
    assert_null(t->tel);
  }
  assert_int_equal(t->stage, TW_STAGE_IN_SERVICE);
  assert_int_equal(alerts.n, 2); /* recall_open, service_due */
  assert_int_equal(telemetry_fields(t), 0);

  bson_t doc;
  snapshot(t, &doc);
  char *want = json("{'active_dtcs': [], 'min_brake_pad_mm': null, 'odometer_since_service_km': null,"
                    " 'battery_health': {'soh_pct': null, 'trend_pct_per_year': null, 'samples': 0,"
                    "  't0_ms': 0, 'sum_t': 0, 'sum_y': 0, 'sum_tt': 0, 'sum_ty': 0},"
                    " 'last_brake_service_ms': 86400000,"
                    " 'brake_wear': {'mm_per_day': null, 'mm_per_1000_km': null, 'samples': 0, 't0_ms': 0,"
                    "  'last_at_ms': 0, 'last_mm': 0, 'sum_t': 0, 'sum_y': 0, 'sum_tt': 0, 'sum_ty': 0,"
                    "  'km_samples': 0, 'k0': 0, 'sum_k': 0, 'sum_kk': 0, 'sum_ky': 0, 'sum_yk': 0},"
                    " 'counters': {'telemetry': 0, 'lifecycle': 9}}");
  bson_error_t berr;
  bson_t *w = bson_new_from_json((const uint8_t *)want, -1, &berr);
  assert_non_null(w);
  char why[512];
  if (!tw_bson_subset(w, &doc, why, sizeof why)) fail_msg("snapshot: %s", why);
  bson_destroy(w);
  free(want);

  tw_twin_t *back = roundtrip(t);
  assert_null(back->tel);
  bson_destroy(&doc);
  bson_destroy(&alerts.arr);
  tw_twin_destroy(back);
  tw_twin_destroy(t);
}

/* A twin without the block and one given an empty block up front get the
 * same events: same outcomes, same alerts, same snapshot bytes after each
 * event, and each has a block exactly once telemetry set a value. */
static void test_no_block_reads_as_empty_block(void **state) {
  (void)state;
  const char *tel[] = {
      "{'source': 'tcu', 'seq': 1, 't': 40000001000, 'telemetry': {'odometer_km': 16100, "
      "'brake_pad_mm': [2.5, 4, 4, 4], 'tire_pressure_kpa': [230, 231, 229, 230], 'battery_soh_pct': 79,"
      " 'dtc_codes': ['P0420'], 'firmware_version': 'tcu-1', 'metrics': {'coolant_c': 90}}}",
      "{'source': 'tcu', 'seq': 2, 't': 40000000500, 'telemetry': {'odometer_km': 16000}}", /* stale */
  };
  tw_twin_t *a = tw_twin_new(PID, 0), *b = tw_twin_new(PID, 0);
  assert_non_null(tw_twin_tel_mut(b));
  tw_alert_list_t la, lb;
  bson_init(&la.arr);
  bson_init(&lb.arr);
  la.n = lb.n = 0;
  for (size_t i = 0; i < N_LIFECYCLE + 2; i++) {
    const char *ev = i < N_LIFECYCLE ? LIFECYCLE[i] : tel[i - N_LIFECYCLE];
    assert_int_equal(apply_q(a, ev, &la), apply_q(b, ev, &lb));
    assert_true((a->tel != NULL) == (i >= N_LIFECYCLE));
    bson_t da, db;
    snapshot(a, &da);
    snapshot(b, &db);
    assert_same_bytes(&da, &db);
    bson_destroy(&da);
    bson_destroy(&db);
  }
  assert_int_equal(la.n, lb.n);
  assert_true(la.n > 2); /* the telemetry raised alerts too */
  char why[512];
  if (!tw_bson_equal(&la.arr, &lb.arr, why, sizeof why)) fail_msg("alerts differ: %s", why);
  bson_destroy(&la.arr);
  bson_destroy(&lb.arr);
  tw_twin_destroy(a);
  tw_twin_destroy(b);
}

/* Each kind of telemetry value alone makes the block; an event with none
 * is accepted and counted but makes no block. */
static void test_first_value_makes_the_block(void **state) {
  (void)state;
  const char *one[] = {
      "'odometer_km': 1",       "'speed_kph': 0",           "'battery_soc_pct': 50",
      "'battery_soh_pct': 99",  "'battery_temp_c': 20",     "'latitude': 0",
      "'longitude': 0",         "'fuel_level_pct': 10",     "'aux_battery_v': 12.6",
      "'ambient_temp_c': -5",   "'range_km': 300",          "'tire_pressure_kpa': [230]",
      "'brake_pad_mm': [9]",    "'dtc_codes': ['P0420']",   "'dtc_codes_reported': true",
      "'firmware_version': ''", "'metrics': {'oil_c': 80}",
  };
  for (size_t i = 0; i < sizeof one / sizeof one[0]; i++) {
    tw_twin_t *t = tw_twin_new(PID, 0);
    assert_int_equal(apply_q(t, LIFECYCLE[0], NULL), TW_OUT_APPLIED);
    assert_int_equal(apply_q(t, "{'source': 'tcu', 'seq': 1, 't': 1500, 'telemetry': {}}", NULL),
                     TW_OUT_APPLIED);
    assert_null(t->tel);
    assert_int_equal(t->counters.telemetry, 1);
    char ev[256];
    snprintf(ev, sizeof ev, "{'source': 'tcu', 'seq': 2, 't': 2000, 'telemetry': {%s}}", one[i]);
    assert_int_equal(apply_q(t, ev, NULL), TW_OUT_APPLIED);
    if (!t->tel) fail_msg("no telemetry block after %s", one[i]);
    assert_int_equal(telemetry_fields(t), 1);
    tw_twin_t *back = roundtrip(t);
    assert_non_null(back->tel);
    tw_twin_destroy(back);
    tw_twin_destroy(t);
  }
}

/* Snapshots read back: no telemetry field and all-zero fits make no
 * block; a field or a fit with samples does. */
static void test_snapshot_makes_block_only_for_telemetry(void **state) {
  (void)state;
  const struct {
    const char *doc;
    bool block;
  } cases[] = {
      {"{'_id': '" PID "', 'stage': 'ORDERED'}", false},
      {"{'_id': '" PID "', 'stage': 'ORDERED', 'telemetry': {},"
       " 'battery_health': {'soh_pct': null, 'samples': 0, 't0_ms': 0, 'sum_t': 0, 'sum_y': 0},"
       " 'brake_wear': {'mm_per_day': null, 'samples': 0, 'last_mm': 0, 'k0': 0}}",
       false},
      {"{'_id': '" PID "', 'telemetry': {'speed_kph': {'value': 3, 'at_ms': 1, 'seq': 1}}}", true},
      {"{'_id': '" PID "', 'telemetry': {'metrics': {'oil_c': {'value': 80, 'at_ms': 1, 'seq': 1}}}}", true},
      {"{'_id': '" PID "', 'battery_health': {'samples': 1, 't0_ms': 5, 'sum_y': 97}}", true},
      {"{'_id': '" PID "', 'brake_wear': {'samples': 1, 't0_ms': 5, 'last_at_ms': 5, 'last_mm': 9}}", true},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *j = json(cases[i].doc);
    bson_error_t berr;
    bson_t *doc = bson_new_from_json((const uint8_t *)j, -1, &berr);
    if (!doc) fail_msg("bad test document %s: %s", j, berr.message);
    char err[256];
    tw_twin_t *t = tw_twin_from_bson(doc, 0, err, sizeof err);
    if (!t) fail_msg("%s: %s", j, err);
    if ((t->tel != NULL) != cases[i].block) fail_msg("%s: %s telemetry block", j, t->tel ? "a" : "no");
    tw_twin_t *back = roundtrip(t);
    assert_true((back->tel != NULL) == cases[i].block);
    tw_twin_destroy(back);
    tw_twin_destroy(t);
    bson_destroy(doc);
    free(j);
  }
  /* What the block holds is read back. */
  char *j = json("{'_id': '" PID "', 'battery_health': {'samples': 2, 't0_ms': 5, 'sum_t': 1, 'sum_y': 190,"
                 " 'sum_tt': 1, 'sum_ty': 94}, 'brake_wear': {'samples': 1, 'last_mm': 9, 'k0': 100}}");
  bson_error_t berr;
  bson_t *doc = bson_new_from_json((const uint8_t *)j, -1, &berr);
  char err[256];
  tw_twin_t *t = tw_twin_from_bson(doc, 0, err, sizeof err);
  assert_non_null(t);
  assert_non_null(t->tel);
  assert_int_equal(t->tel->soh_trend.n, 2);
  assert_int_equal(t->tel->soh_trend.t0_ms, 5);
  assert_true(t->tel->soh_trend.sy == 190 && t->tel->soh_trend.sty == 94);
  assert_int_equal(t->tel->brake_wear.n, 1);
  assert_true(t->tel->brake_wear.y_last == 9 && t->tel->brake_wear.k0 == 100);
  tw_twin_destroy(t);
  bson_destroy(doc);
  free(j);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lifecycle_only_has_no_block),
      cmocka_unit_test(test_no_block_reads_as_empty_block),
      cmocka_unit_test(test_first_value_makes_the_block),
      cmocka_unit_test(test_snapshot_makes_block_only_for_telemetry),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
