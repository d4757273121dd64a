/* test_alerts.c - maintenance-alert rules against golden fixtures.
 *
 * Every JSON file in tests/fixtures/alerts holds events and the exact
 * alerts they must produce, in order (every field of MaintenanceAlert).
 * Each fixture is also replayed with a snapshot round trip after every
 * event, which must give the same alerts: active alerts and their cycle
 * numbers live in the twin document. The integration test test_alerts
 * sends the same fixtures through Kafka and the engine. Also here: the
 * predictive rule against a known wear curve, and rule configuration. */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "util.h"

#include "fixture.h"
#include "map.h"
#include "twin/config.h"
#include "twin/record.h"
#include "twin/rules.h"
#include "twin/twin.h"

#define DAY 86400000LL

typedef struct {
  char path[1400];
  bson_t *fx;
} fx_state_t;

static tw_twin_t *roundtrip(tw_twin_t *t) {
  bson_t doc = BSON_INITIALIZER;
  char err[256];
  tw_twin_to_bson(t, -1, &doc);
  tw_twin_t *back = tw_twin_from_bson(&doc, t->seq_window, err, sizeof err);
  if (!back) fail_msg("snapshot did not read back: %s", err);
  bson_destroy(&doc);
  tw_twin_destroy(t);
  return back;
}

/* Applies one envelope and evaluates the rules, as a shard does. */
static void apply(const tw_rules_t *rules, tw_twin_t *t, const Twin__V1__Envelope *env, tw_alert_list_t *c) {
  tw_apply_event(rules, t, env, NULL, tw_alert_list_add, c);
}

static const char *str_field(const bson_t *b, const char *key, const char *def) {
  bson_iter_t it;
  if (bson_iter_init_find(&it, b, key) && BSON_ITER_HOLDS_UTF8(&it)) return bson_iter_utf8(&it, NULL);
  return def;
}

/* The fixture's rules: the defaults, unless "defaults": false, plus "rules". */
static tw_rules_t *fixture_rules(const bson_t *fx, tw_rule_spec_t *specs, size_t *n_specs) {
  bson_iter_t it, r, f;
  bool defaults = true;
  *n_specs = 0;
  if (bson_iter_init_find(&it, fx, "defaults")) defaults = bson_iter_as_bool(&it);
  if (bson_iter_init_find(&it, fx, "rules") && bson_iter_recurse(&it, &r)) {
    while (bson_iter_next(&r) && *n_specs < 16) {
      tw_rule_spec_t *sp = &specs[(*n_specs)++];
      memset(sp, 0, sizeof *sp);
      bson_iter_recurse(&r, &f);
      while (bson_iter_next(&f)) {
        const char *k = bson_iter_key(&f);
        char *v = strdup(BSON_ITER_HOLDS_UTF8(&f) ? bson_iter_utf8(&f, NULL) : "?");
        if (strcmp(k, "id") == 0)
          sp->id = v;
        else if (strcmp(k, "severity") == 0)
          sp->severity = v;
        else if (strcmp(k, "condition") == 0)
          sp->condition = v;
        else if (strcmp(k, "clear") == 0)
          sp->clear = v;
        else if (strcmp(k, "message") == 0)
          sp->message = v;
        else if (strcmp(k, "clear_message") == 0)
          sp->clear_message = v;
        else if (strcmp(k, "limit") == 0)
          sp->limit = v;
        else if (strcmp(k, "enabled") == 0)
          sp->enabled = v;
        else
          free(v);
      }
    }
  }
  char err[512];
  tw_rules_t *rules = tw_rules_compile(defaults, specs, *n_specs, err, sizeof err);
  if (!rules) fail_msg("fixture rules do not compile: %s", err);
  return rules;
}

static void free_specs(tw_rule_spec_t *specs, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(specs[i].id);
    free(specs[i].severity);
    free(specs[i].condition);
    free(specs[i].clear);
    free(specs[i].message);
    free(specs[i].clear_message);
    free(specs[i].limit);
    free(specs[i].enabled);
  }
}

/* Replays the fixture; restart: round-trip the twin after every event. */
static tw_twin_t *replay(const fx_state_t *st, bool restart, tw_alert_list_t *c) {
  tw_rule_spec_t specs[16];
  size_t n_specs;
  tw_rules_t *rules = fixture_rules(st->fx, specs, &n_specs);
  const char *pid = str_field(st->fx, "product_id", "VIN0ALERT00000001");
  tw_twin_t *t = tw_twin_new(pid, 0);
  bson_iter_t it, evs;
  assert_true(bson_iter_init_find(&evs, st->fx, "events"));
  bson_iter_recurse(&evs, &it);
  bson_init(&c->arr);
  c->n = 0;
  while (bson_iter_next(&it)) {
    uint32_t len;
    const uint8_t *data;
    bson_iter_document(&it, &len, &data);
    bson_t ev;
    bson_init_static(&ev, data, len);
    char err[512];
    size_t blen;
    uint8_t *buf = tw_fixture_encode(&ev, pid, &blen, err, sizeof err);
    if (!buf) fail_msg("%s: %s", st->path, err);
    Twin__V1__Envelope *env = twin__v1__envelope__unpack(NULL, blen, buf);
    free(buf);
    assert_non_null(env);
    if (!tw_envelope_validate(env, env->product_id, strlen(env->product_id), err, sizeof err))
      fail_msg("%s: invalid event: %s", st->path, err);
    apply(rules, t, env, c);
    twin__v1__envelope__free_unpacked(env, NULL);
    if (restart) t = roundtrip(t);
  }
  tw_rules_destroy(rules);
  free_specs(specs, n_specs);
  return t;
}

static void test_fixture(void **state) {
  fx_state_t *st = *state;
  tw_alert_list_t got, again;
  tw_twin_t *t = replay(st, false, &got);
  bson_iter_t it;
  assert_true(bson_iter_init_find(&it, st->fx, "alerts"));
  uint32_t len;
  const uint8_t *data;
  bson_iter_array(&it, &len, &data);
  bson_t want;
  bson_init_static(&want, data, len);
  char why[1024];
  if (!tw_bson_equal(&want, &got.arr, why, sizeof why)) {
    char *json = bson_as_relaxed_extended_json(&got.arr, NULL);
    fprintf(stderr, "actual alerts: %s\n", json);
    bson_free(json);
    fail_msg("%s: alerts differ: %s", st->path, why);
  }
  /* The rules active at the end are in the twin document. */
  if (bson_iter_init_find(&it, st->fx, "active")) {
    bson_iter_t a;
    bson_iter_recurse(&it, &a);
    uint32_t k = 0;
    while (bson_iter_next(&a)) {
      if (k >= t->n_alerts) fail_msg("%s: expected rule %s active", st->path, bson_iter_utf8(&a, NULL));
      assert_string_equal(bson_iter_utf8(&a, NULL), t->alerts[k].rule);
      k++;
    }
    if (k != t->n_alerts) fail_msg("%s: %u alerts active, expected %u", st->path, t->n_alerts, k);
  }
  /* A restart after any event changes nothing. */
  tw_twin_t *r = replay(st, true, &again);
  if (!tw_bson_equal(&got.arr, &again.arr, why, sizeof why))
    fail_msg("%s: with a snapshot round trip after every event the alerts differ: %s", st->path, why);
  assert_true(tw_twin_state_hash(r) == tw_twin_state_hash(t));
  bson_destroy(&got.arr);
  bson_destroy(&again.arr);
  tw_twin_destroy(r);
  tw_twin_destroy(t);
}

/* ---- Predictive rule against a known wear curve ---------------------------- */

static Twin__V1__Envelope *pad_sample(int64_t at, uint64_t seq, double pad, double odo) {
  static Twin__V1__Envelope env;
  static Twin__V1__Telemetry tm;
  static double pads[4];
  twin__v1__envelope__init(&env);
  twin__v1__telemetry__init(&tm);
  env.product_id = "VIN0WEAR000000001";
  env.source = "tcu";
  env.seq = seq;
  env.event_time_ms = at;
  env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY;
  env.telemetry = &tm;
  for (int i = 0; i < 4; i++) pads[i] = pad + 0.4 * i; /* the front-left pad is the thinnest */
  tm.n_brake_pad_mm = 4;
  tm.brake_pad_mm = pads;
  tm._odometer_km_case = TWIN__V1__TELEMETRY___ODOMETER_KM_ODOMETER_KM;
  tm.odometer_km = odo;
  return &env;
}

static double noise(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return (double)(*x >> 11) * 0x1.0p-53 - 0.5; /* [-0.5, 0.5) */
}

static void test_predictive_accuracy(void **state) {
  (void)state;
  char err[256];
  tw_rules_t *rules = tw_rules_compile(true, NULL, 0, err, sizeof err);
  assert_non_null(rules);
  const int64_t t0 = 1767225600000LL;    /* 2026-01-01 */
  const double start = 9.0, rate = 0.02; /* mm/day: 3.0 mm on day 300 */
  const int64_t truth = t0 + 300 * DAY;
  uint64_t x = 42;
  tw_twin_t *t = tw_twin_new("VIN0WEAR000000001", 0);
  tw_alert_list_t c;
  bson_init(&c.arr);
  c.n = 0;
  uint64_t seq = 0;
  int raised_at = -1;
  for (int h = 0; h < 300 * 4 && raised_at < 0; h++) {
    double d = h / 4.0;
    double pad = start - rate * d + 0.1 * noise(&x); /* ±0.05 mm sensor noise */
    apply(rules, t, pad_sample(t0 + (int64_t)(d * DAY), ++seq, pad, 40.0 * d), &c);
    if (c.n) raised_at = h;
  }
  assert_true(raised_at > 0);
  bson_iter_t it, a;
  assert_true(bson_iter_init(&it, &c.arr) && bson_iter_next(&it) && bson_iter_recurse(&it, &a));
  assert_true(bson_iter_find(&a, "rule_id"));
  assert_string_equal(bson_iter_utf8(&a, NULL), "brake_wear_predicted");
  assert_true(bson_iter_recurse(&it, &a) && bson_iter_find(&a, "predicted_at_ms"));
  int64_t pred = bson_iter_int64(&a);
  int64_t raised_ms = t0 + (int64_t)(raised_at / 4.0 * DAY);
  double err_frac = fabs((double)(pred - truth)) / (double)(truth - raised_ms);
  fprintf(stderr, "predictive: raised on day %.2f, predicted day %.3f, truth day 300, error %.2f%%\n",
          (double)(raised_ms - t0) / DAY, (double)(pred - t0) / DAY, err_frac * 100);
  assert_true(err_frac <= 0.05);

  /* New pads at a service visit: the estimate resets and the alert clears
   * once the first sample of the new pads shows them. */
  Twin__V1__Envelope env = TWIN__V1__ENVELOPE__INIT;
  Twin__V1__LifecycleEvent lc = TWIN__V1__LIFECYCLE_EVENT__INIT;
  char *parts[] = {"brake_pad_front", "brake_pad_rear"};
  int64_t now = raised_ms + DAY;
  env.product_id = "VIN0WEAR000000001";
  env.source = "dms";
  env.seq = 1;
  env.event_time_ms = now;
  env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_LIFECYCLE;
  env.lifecycle = &lc;
  lc.kind = TWIN__V1__LIFECYCLE_KIND__SERVICE_VISIT;
  lc.n_parts_replaced = 2;
  lc.parts_replaced = parts;
  t->stage = TW_STAGE_IN_SERVICE; /* the visit needs a vehicle in service */
  apply(rules, t, &env, &c);
  assert_int_equal(c.n, 2); /* CLEARED: the fit says nothing about the new pads */
  apply(rules, t, pad_sample(now + DAY / 4, ++seq, 12.0, 40.0 * 300), &c);
  assert_int_equal(c.n, 2);
  assert_int_equal(t->tel->brake_wear.n, 1); /* a fresh fit */
  assert_int_equal(t->n_alerts, 0);
  bson_destroy(&c.arr);
  tw_twin_destroy(t);
  tw_rules_destroy(rules);
}

/* ---- Rule configuration ---------------------------------------------------- */

static bool load_yaml(const char *yaml, tw_config_t *c, char *err, size_t cap) {
  char path[] = "/tmp/twin-alerts-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_true(write(fd, yaml, strlen(yaml)) == (ssize_t)strlen(yaml));
  close(fd);
  tw_config_init(c);
  bool ok = tw_config_load_yaml(c, path, err, cap) && tw_config_validate(c, err, cap);
  unlink(path);
  return ok;
}

static void expect_config_error(const char *yaml, const char *needle) {
  tw_config_t c;
  char err[1024] = "";
  if (load_yaml(yaml, &c, err, sizeof err)) fail_msg("accepted a bad rule config; expected '%s'", needle);
  if (!strstr(err, needle)) fail_msg("error '%s' does not contain '%s'", err, needle);
  tw_config_cleanup(&c);
}

static void test_rule_config(void **state) {
  (void)state;
  tw_config_t c;
  char err[1024] = "";
  assert_true(load_yaml("alerts:\n"
                        "  rules:\n"
                        "    - id: coolant_hot\n"
                        "      severity: critical\n"
                        "      condition: metrics.coolant_temp_c > 110 and stage == IN_SERVICE\n"
                        "      clear: metrics.coolant_temp_c < 100\n"
                        "      message: \"Coolant at {value} degC\"\n"
                        "    - id: dtc_active\n"
                        "      enabled: false\n"
                        "    - id: brake_pad_low\n"
                        "      severity: WARNING\n",
                        &c, err, sizeof err));
  tw_rules_t *r = tw_config_rules(&c, err, sizeof err);
  assert_non_null(r);
  const tw_rule_spec_t *d;
  size_t nd = tw_rules_default_specs(&d);
  assert_int_equal(tw_rules_count(r), nd); /* + coolant_hot - dtc_active */
  bool coolant = false, dtc = false;
  for (size_t i = 0; i < tw_rules_count(r); i++) {
    coolant |= strcmp(tw_rules_id(r, i), "coolant_hot") == 0;
    dtc |= strcmp(tw_rules_id(r, i), "dtc_active") == 0;
  }
  assert_true(coolant && !dtc);
  tw_rules_destroy(r);
  tw_config_cleanup(&c);

  assert_true(load_yaml("alerts:\n  defaults: false\n", &c, err, sizeof err));
  r = tw_config_rules(&c, err, sizeof err);
  assert_int_equal(tw_rules_count(r), 0);
  tw_rules_destroy(r);
  tw_config_cleanup(&c);

  expect_config_error("alerts:\n  rules:\n    - id: x\n      condition: battery_temp_c >> 60\n",
                      "rule x: condition 'battery_temp_c >> 60': expected a number");
  expect_config_error("alerts:\n  rules:\n    - id: x\n      condition: warp_factor > 9\n",
                      "unknown signal 'warp_factor'");
  expect_config_error(
      "alerts:\n  rules:\n    - id: x\n      severity: loud\n      condition: speed_kph > 1\n",
      "severity = 'loud' is not allowed: expected one of INFO, WARNING, CRITICAL");
  expect_config_error("alerts:\n  rules:\n    - id: x\n      condition: speed_kph > 1\n      colour: red\n",
                      "unknown rule key 'colour'");
  expect_config_error(
      "alerts:\n  rules:\n    - id: x\n      condition: speed_kph > 1\n      message: \"{speed}\"\n",
      "unknown placeholder {speed}");
  expect_config_error("alerts:\n  rules:\n    - id: x\n", "rule x: condition is missing");
  expect_config_error("alerts:\n  rules:\n    - id: x\n      condition: stage > BUILT\n",
                      "stage is compared with == or != only");
  expect_config_error("alerts:\n  rules:\n    - condition: speed_kph > 1\n", "a rule without id");
  expect_config_error("alerts:\n  rules:\n    - id: a\n      condition: speed_kph > 1\n"
                      "    - id: a\n      condition: speed_kph > 2\n",
                      "the id is used twice");
  expect_config_error("topics:\n  alerts: twin.dlq\n", "topics.alerts must differ");
}

/* ---- Registration ---------------------------------------------------------- */

static int fx_setup(void **state) { return *state ? 0 : -1; }

static int fx_teardown(void **state) {
  fx_state_t *st = *state;
  bson_destroy(st->fx);
  free(st);
  return 0;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Alert messages format numbers by hand on the fast path: the result must be
 * exactly printf's %.0f / %.2f with trailing zeros cut, for every value. */
static void ref_num(double v, char *buf, size_t cap) {
  if (!isfinite(v)) {
    snprintf(buf, cap, "?");
    return;
  }
  snprintf(buf, cap, fabs(v - nearbyint(v)) < 1e-9 && fabs(v) < 1e15 ? "%.0f" : "%.2f", v);
  char *dot = strchr(buf, '.');
  if (!dot) return;
  char *e = buf + strlen(buf) - 1;
  while (e > dot && *e == '0') *e-- = '\0';
  if (e == dot) *e = '\0';
}

static void test_fmt_num(void **state) {
  (void)state;
  static const double fixed[] = {0,        -0.0,    0.005,     0.015, 0.125, 1.005,
                                 -1.005,   2.675,   1e9 + 0.5, 1e15,  1e300, -1e-9,
                                 0.0049,   99.995,  12.34,     -7.1,  3.0,   NAN,
                                 INFINITY, -2.5e-3, -1e-10,    1e-10, -42.0, 999999999999999.0};
  char a[64], b[64];
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
    tw_fmt_num(fixed[i], a, sizeof a);
    ref_num(fixed[i], b, sizeof b);
    assert_string_equal(a, b);
  }
  uint64_t x = 88172645463325252ULL;
  for (int i = 0; i < 2000000; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    double v;
    switch (i % 5) {
    case 0: v = (double)(int64_t)(x % 2000000001ULL - 1000000000) / 1000.0; break; /* 3 decimals */
    case 1: v = (double)(int64_t)(x % 200001ULL - 100000) / 200.0; break;          /* exact halves of cents */
    case 2: v = ((double)(x >> 11) / 9007199254740992.0 - 0.5) * 2e6; break;
    case 3:
      v = (double)(int64_t)(x % 20000000001ULL - 10000000000) + (double)(x % 7) * 1e-10;
      break;                                  /* near integers */
    default: memcpy(&v, &x, sizeof v); break; /* any bits */
    }
    tw_fmt_num(v, a, sizeof a);
    ref_num(v, b, sizeof b);
    if (strcmp(a, b) != 0) fail_msg("%.17g: got %s, printf gives %s", v, a, b);
  }
}

/* tw_utoa, which alert ids and tw_fmt_num's fast paths print with: against
 * printf, with and without leading zeros, at the edges of uint64_t. */
static void test_utoa(void **state) {
  (void)state;
  uint64_t x = 0x9e3779b97f4a7c15ULL;
  for (int i = 0; i < 200000; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    uint64_t v = i < 3 ? (uint64_t[]){0, 9, UINT64_MAX}[i] : x >> (x % 64);
    size_t min = 1 + (size_t)(x % 20);
    char got[24], want[24];
    size_t n = tw_utoa(v, min, got);
    got[n] = '\0';
    snprintf(want, sizeof want, "%0*llu", (int)min, (unsigned long long)v);
    if (strcmp(got, want) != 0)
      fail_msg("%llu, at least %zu digits: got %s, want %s", (unsigned long long)v, min, got, want);
  }
}

/* ---- Only the rules an event can affect ------------------------------------ *
 *
 * tw_apply_event() evaluates a rule only when the event changed a class of
 * inputs it reads (tw_rules_reads()), and a rule on the twin's time or
 * odometer only once these have reached the point where it could hold. A
 * whole twin-sim stream, replayed so and with every rule on every accepted
 * event (tw_reduce() + tw_rules_eval(), what tw_apply_event() did before),
 * must give byte-identical twins and the same alerts, byte for byte, in the
 * same order. */

/* Extra rules over every signal class, beside the built-ins. x_overlap and
 * x_stage_or may raise and clear on the same inputs: they run every time. */
static const tw_rule_spec_t SKIP_RULES[] = {
    {.id = "x_coolant",
     .condition = "metrics.coolant_temp_c > 88",
     .clear = "metrics.coolant_temp_c < 70",
     .message = "{value}: cabin {metrics.cabin_temp_c}, codes {dtc_codes}, recalls {recalls}, "
                "{service.days_since} days"},
    {.id = "x_tires", .condition = "tire_pressure_kpa.min < 200 or tire_pressure_kpa.max > 400"},
    {.id = "x_pads",
     .condition = "brake_pad_mm.max < 8 and odometer_km > 1000",
     .clear = "brake_pad_mm.max >= 9"},
    {.id = "x_speed", .condition = "speed_kph > 120", .clear = "speed_kph < 60"},
    /* twin-sim's batteries stay below battery_temp_high's 60 degC. */
    {.id = "x_temp", .condition = "battery_temp_c > 38", .clear = "battery_temp_c <= 30"},
    {.id = "x_svc_km",
     .condition = "service.km_since > 8000 and stage != DECOMMISSIONED",
     .clear = "service.km_since < 100",
     .message = "{service.km_since} km, {service.days_since} days"},
    {.id = "x_wear",
     .condition = "brake_pad_mm.days_to_limit < 400",
     .clear = "brake_pad_mm.days_to_limit > 500",
     .limit = "5",
     .message = "{predicted_date} {predicted_km} {value}"},
    /* Bounded by both the reading and the time (rules.c, hold_wake). */
    {.id = "x_odo_days",
     .condition = "odometer_km >= 20000 and service.days_since > 100",
     .clear = "odometer_km < 10",
     .message = "{odometer_km} km, {service.days_since} days"},
    {.id = "x_dtc2", .condition = "dtc.count >= 2", .clear = "dtc.count == 0"},
    {.id = "x_recalls", .condition = "recalls.open >= 1 and stage != IN_SERVICE"},
    {.id = "x_dealer", .condition = "stage == AT_DEALER"},
    {.id = "x_overlap", .condition = "battery_soc_pct < 40", .clear = "battery_soc_pct < 60"},
    {.id = "x_stage_or", .condition = "stage == IN_SERVICE or aux_battery_v < 12.3"},
};
#define N_SKIP_RULES (sizeof SKIP_RULES / sizeof SKIP_RULES[0])

static uint32_t reads_of(const tw_rules_t *r, const char *id) {
  for (size_t i = 0; i < tw_rules_count(r); i++)
    if (strcmp(tw_rules_id(r, i), id) == 0) return tw_rules_reads(r, i);
  fail_msg("no rule %s", id);
  return 0;
}

/* What each rule reads, and which ones must run on every event. */
static void test_rule_reads(void **state) {
  (void)state;
  char err[512];
  tw_rules_t *r = tw_rules_compile(true, SKIP_RULES, N_SKIP_RULES, err, sizeof err);
  if (!r) fail_msg("%s", err);
  assert_int_equal(reads_of(r, "battery_temp_high"), TW_SIG_SCALAR(TW_F_BATTERY_TEMP_C));
  assert_int_equal(reads_of(r, "battery_health_low"), TW_SIG_SCALAR(TW_F_BATTERY_SOH_PCT));
  assert_int_equal(reads_of(r, "brake_pad_low"), TW_SIG_PADS);
  assert_int_equal(reads_of(r, "dtc_active"), TW_SIG_DTCS);
  assert_int_equal(reads_of(r, "recall_open"), TW_SIG_RECALLS | TW_SIG_STAGE);
  assert_int_equal(reads_of(r, "brake_wear_predicted"), TW_SIG_WEAR | TW_SIG_TIME);
  assert_int_equal(reads_of(r, "service_due"),
                   TW_SIG_STAGE | TW_SIG_SERVICE | TW_SIG_TIME | TW_SIG_SCALAR(TW_F_ODOMETER_KM));
  assert_int_equal(reads_of(r, "x_coolant"), TW_SIG_METRICS);
  assert_int_equal(reads_of(r, "x_tires"), TW_SIG_TIRES);
  assert_int_equal(reads_of(r, "x_odo_days"), TW_SIG_SCALAR(TW_F_ODOMETER_KM) | TW_SIG_SERVICE | TW_SIG_TIME);
  assert_int_equal(reads_of(r, "x_dealer"), TW_SIG_STAGE);
  assert_int_equal(reads_of(r, "x_overlap"), TW_SIG_ALL);
  assert_int_equal(reads_of(r, "x_stage_or"), TW_SIG_ALL);
  tw_rules_destroy(r);
  /* Condition and clear may hold together (a shared point, !=, different
   * signals): every event. Provably apart: only their inputs. */
  static const struct {
    const char *cond, *clear;
    bool all;
  } cases[] = {
      {"speed_kph > 5", "speed_kph <= 5", false},
      {"speed_kph >= 5", "speed_kph <= 5", true},
      {"speed_kph == 5", "speed_kph != 5", true},
      {"speed_kph == 5", "speed_kph > 5", false},
      {"speed_kph < 5", "range_km > 5", true},
      {"metrics.a > 5", "metrics.b < 5", true},
      {"metrics.a > 5", "metrics.a < 5", false},
      {"stage == BUILT", "stage != BUILT", false},
      {"stage == BUILT", "stage == IN_SERVICE", false},
      {"stage != BUILT", "stage != IN_SERVICE", true},
      {"speed_kph > 5 or range_km > 5", "speed_kph < 1 and range_km < 1", false},
      {"speed_kph > 5 or range_km > 5", "speed_kph < 1", true},
      {"stage == BUILT or speed_kph > 5", NULL, true},
      {"stage == BUILT and speed_kph > 5", NULL, false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    tw_rule_spec_t sp = {.id = "x", .condition = (char *)cases[i].cond, .clear = (char *)cases[i].clear};
    r = tw_rules_compile(false, &sp, 1, err, sizeof err);
    if (!r) fail_msg("%s", err);
    if ((tw_rules_reads(r, 0) == TW_SIG_ALL) != cases[i].all)
      fail_msg("'%s' / clear '%s': reads %#x", cases[i].cond, cases[i].clear ? cases[i].clear : "-",
               tw_rules_reads(r, 0));
    tw_rules_destroy(r);
  }
}

/* The alerts of a replay, packed one after the other (u32 length, bytes). */
typedef struct {
  uint8_t *p;
  size_t n, cap;
  size_t count;
} packed_t;

static void pack_alert(void *ud, const Twin__V1__MaintenanceAlert *a) {
  packed_t *b = ud;
  size_t len = twin__v1__maintenance_alert__get_packed_size(a);
  if (b->n + 4 + len > b->cap) {
    b->cap = (b->n + 4 + len) * 2;
    b->p = tw_xrealloc(b->p, b->cap);
  }
  uint32_t l = (uint32_t)len;
  memcpy(b->p + b->n, &l, 4);
  twin__v1__maintenance_alert__pack(a, b->p + b->n + 4);
  b->n += 4 + len;
  b->count++;
}

/* Replays a twin-sim record as a shard does (skip) or with every rule on
 * every accepted event. */
static void replay_record(const char *path, const tw_rules_t *rules, bool skip, tw_map_t *twins,
                          packed_t *alerts) {
  tw_record_reader_t *rd;
  char err[512];
  if (!tw_record_reader_open(path, &rd, err, sizeof err)) fail_msg("%s", err);
  tw_map_init(twins);
  for (;;) {
    tw_record_t rec;
    bool eof;
    if (!tw_record_reader_next(rd, &rec, &eof, err, sizeof err)) fail_msg("%s", err);
    if (eof) break;
    Twin__V1__Envelope *env =
        tw_envelope_decode(NULL, rec.value, rec.value_len, rec.key, rec.key_len, 1048576, err, sizeof err);
    if (!env) continue;
    tw_twin_t *t = tw_map_get_or_new(twins, env->product_id, 64);
    if (skip) {
      tw_apply_event(rules, t, env, NULL, pack_alert, alerts);
    } else {
      tw_outcome_t o = tw_reduce(t, env, NULL);
      tw_rule_event_t ev = {env->event_time_ms, env->source, env->seq};
      if (o == TW_OUT_APPLIED || o == TW_OUT_STALE) tw_rules_eval(rules, t, &ev, pack_alert, alerts);
    }
    twin__v1__envelope__free_unpacked(env, NULL);
  }
  tw_record_reader_close(rd);
}

static char *alert_json(const uint8_t *p, size_t len) {
  Twin__V1__MaintenanceAlert *a = twin__v1__maintenance_alert__unpack(NULL, len, p);
  bson_t d = BSON_INITIALIZER;
  tw_alert_to_bson(a, &d);
  char *j = bson_as_relaxed_extended_json(&d, NULL);
  bson_destroy(&d);
  twin__v1__maintenance_alert__free_unpacked(a, NULL);
  return j;
}

/* sim_args: twin-sim options for the record; raised and cleared count the
 * transitions of each rule (by index). */
static void skip_equivalence(const char *sim_args, size_t *raised, size_t *cleared) {
  const char *bin = getenv("TWIN_BIN_DIR");
  char dir[] = "/tmp/test_alerts_skip_XXXXXX", path[128], cmd[1024], err[512];
  if (!mkdtemp(dir)) fail_msg("mkdtemp failed");
  snprintf(path, sizeof path, "%s/sim.rec", dir);
  snprintf(cmd, sizeof cmd, "%s/twin-sim --no-kafka --quiet --record %s %s", bin ? bin : "build/bin", path,
           sim_args);
  if (system(cmd) != 0) fail_msg("failed: %s", cmd);
  tw_rules_t *rules = tw_rules_compile(true, SKIP_RULES, N_SKIP_RULES, err, sizeof err);
  if (!rules) fail_msg("%s", err);
  tw_map_t a, b;
  packed_t pa = {0}, pb = {0};
  replay_record(path, rules, true, &a, &pa);
  replay_record(path, rules, false, &b, &pb);
  unlink(path);
  rmdir(dir);

  /* The same alerts in the same order; the first difference, readably. */
  size_t oa = 0, ob = 0;
  for (size_t i = 0; oa < pa.n && ob < pb.n; i++) {
    uint32_t la, lb;
    memcpy(&la, pa.p + oa, 4);
    memcpy(&lb, pb.p + ob, 4);
    if (la != lb || memcmp(pa.p + oa + 4, pb.p + ob + 4, la) != 0) {
      char *ja = alert_json(pa.p + oa + 4, la), *jb = alert_json(pb.p + ob + 4, lb);
      fail_msg("alert %zu differs:\n  skipping:  %s\n  all rules: %s", i, ja, jb);
    }
    oa += 4 + la;
    ob += 4 + lb;
  }
  if (pa.count != pb.count) fail_msg("%zu alerts when skipping, %zu with all rules", pa.count, pb.count);
  assert_memory_equal(pa.p, pb.p, pa.n);

  /* Byte-identical twins. */
  assert_int_equal(a.len, b.len);
  for (size_t i = 0; i < a.cap; i++) {
    tw_twin_t *ta = a.slots[i];
    if (!ta) continue;
    tw_twin_t *tb = tw_map_get(&b, ta->product_id);
    assert_non_null(tb);
    bson_t da = BSON_INITIALIZER, db = BSON_INITIALIZER;
    tw_twin_to_bson(ta, -1, &da);
    tw_twin_to_bson(tb, -1, &db);
    if (da.len != db.len || memcmp(bson_get_data(&da), bson_get_data(&db), da.len) != 0) {
      char *ja = bson_as_relaxed_extended_json(&da, NULL), *jb = bson_as_relaxed_extended_json(&db, NULL);
      fail_msg("twin %s differs:\n  skipping:  %s\n  all rules: %s", ta->product_id, ja, jb);
    }
    bson_destroy(&da);
    bson_destroy(&db);
  }
  /* Count transitions per rule, to show the streams exercise every rule. */
  for (size_t o = 0; o < pa.n;) {
    uint32_t l;
    memcpy(&l, pa.p + o, 4);
    Twin__V1__MaintenanceAlert *al = twin__v1__maintenance_alert__unpack(NULL, l, pa.p + o + 4);
    /* alert_id is "product:rule:cycle", cycle counting from 1. */
    const char *cyc = strrchr(al->alert_id, ':');
    assert_non_null(cyc);
    char want[700];
    snprintf(want, sizeof want, "%s:%s:%lu", al->product_id, al->rule_id, strtoul(cyc + 1, NULL, 10));
    if (strcmp(al->alert_id, want) != 0 || strtoul(cyc + 1, NULL, 10) < 1)
      fail_msg("alert_id %s: want product:rule:cycle (%s)", al->alert_id, want);
    for (size_t k = 0; k < tw_rules_count(rules) && k < 64; k++) {
      if (strcmp(al->rule_id, tw_rules_id(rules, k)) != 0) continue;
      raised[k] += al->state == TWIN__V1__ALERT_STATE__RAISED;
      cleared[k] += al->state == TWIN__V1__ALERT_STATE__CLEARED;
    }
    twin__v1__maintenance_alert__free_unpacked(al, NULL);
    o += 4 + l;
  }
  print_message("%s: %zu alerts, %zu twins: identical\n", sim_args, pa.count, a.len);
  free(pa.p);
  free(pb.p);
  tw_map_cleanup(&a, true);
  tw_map_cleanup(&b, true);
  tw_rules_destroy(rules);
}

/* The benchmark's stream (bench/run.sh, phase core), then long histories
 * (service visits, recalls, worn pads) with every kind of event the reducer
 * turns away or finds stale. */
static void test_skip_equivalence(void **state) {
  (void)state;
  size_t raised[64] = {0}, cleared[64] = {0};
  skip_equivalence("--seed 7 --products 10000 --events 200000", raised, cleared);
  skip_equivalence("--seed 3 --products 200 --events 150000 --duplicates 0.05 --reorder 0.1 --late 0.02 "
                   "--invalid 0.02 --garbage 0.01",
                   raised, cleared);
  char err[512];
  tw_rules_t *rules = tw_rules_compile(true, SKIP_RULES, N_SKIP_RULES, err, sizeof err);
  if (!rules) fail_msg("%s", err);
  int idle = 0;
  for (size_t k = 0; k < tw_rules_count(rules); k++) {
    const char *id = tw_rules_id(rules, k);
    print_message("  %-22s %6zu raised %6zu cleared\n", id, raised[k], cleared[k]);
    /* twin-sim's batteries never get that hot or that worn (x_temp stands in). */
    idle += !raised[k] && strcmp(id, "battery_temp_high") != 0 && strcmp(id, "battery_health_low") != 0;
  }
  if (idle) fail_msg("%d rules never raised: the streams do not exercise them", idle);
  tw_rules_destroy(rules);
}

int main(void) {
  const char *src = getenv("TWIN_SOURCE_DIR");
  char dir[1200];
  snprintf(dir, sizeof dir, "%s/tests/fixtures/alerts", src ? src : ".");
  DIR *d = opendir(dir);
  if (!d) {
    fprintf(stderr, "cannot open %s\n", dir);
    return 1;
  }
  char *names[256];
  size_t nn = 0;
  struct dirent *de;
  while ((de = readdir(d)) && nn < 256) {
    size_t l = strlen(de->d_name);
    if (l > 5 && strcmp(de->d_name + l - 5, ".json") == 0) names[nn++] = strdup(de->d_name);
  }
  closedir(d);
  qsort(names, nn, sizeof *names, cmp_names);
  struct CMUnitTest tests[260];
  size_t nt = 0;
  for (size_t i = 0; i < nn; i++) {
    fx_state_t *st = calloc(1, sizeof *st);
    char err[512];
    snprintf(st->path, sizeof st->path, "%s/%s", dir, names[i]);
    st->fx = tw_fixture_load_json(st->path, err, sizeof err);
    if (!st->fx) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    tests[nt++] = (struct CMUnitTest){names[i], test_fixture, fx_setup, fx_teardown, st};
  }
  tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_predictive_accuracy);
  tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_rule_config);
  tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_fmt_num);
  tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_utoa);
  tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_rule_reads);
  tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_skip_equivalence);
  int rc = _cmocka_run_group_tests("alerts", tests, nt, NULL, NULL);
  for (size_t i = 0; i < nn; i++) free(names[i]);
  return rc;
}
