/* test_bad_input.c - the bad-input catalogue (README "Bad input") over the
 * engine's own gate and reducer: tw_envelope_decode() (size limit,
 * protobuf decoding, NUL bytes, validation), then tw_apply_event().
 *
 * Each case is a message as a producer could put it on Kafka; the test
 * checks its documented outcome (the DLQ reason, or the reducer outcome and
 * what the timeline keeps) and that good events around it are applied.
 * tests/integration/test_bad_input.c sends the same cases through the real
 * broker and engine. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "arena.h"
#include "twin/rules.h"
#include "twin/twin.h"

#define MAX_BYTES 1048576 /* the default message.max.bytes */

/* ---- Building messages ----------------------------------------------------- */

typedef struct {
  uint8_t *b;
  size_t len;
} msg_t;

static msg_t pack(const Twin__V1__Envelope *env) {
  msg_t m;
  m.len = twin__v1__envelope__get_packed_size(env);
  m.b = malloc(m.len + 1);
  twin__v1__envelope__pack(env, m.b);
  return m;
}

/* A telemetry envelope with an odometer reading. */
static msg_t telemetry(const char *pid, const char *src, uint64_t seq, int64_t at, double odo) {
  Twin__V1__Envelope env = TWIN__V1__ENVELOPE__INIT;
  Twin__V1__Telemetry tm = TWIN__V1__TELEMETRY__INIT;
  env.product_id = (char *)pid;
  env.source = (char *)src;
  env.seq = seq;
  env.event_time_ms = at;
  env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY;
  env.telemetry = &tm;
  tm._odometer_km_case = TWIN__V1__TELEMETRY___ODOMETER_KM_ODOMETER_KM;
  tm.odometer_km = odo;
  return pack(&env);
}

static msg_t lifecycle(const char *pid, uint64_t seq, int64_t at, Twin__V1__LifecycleKind kind) {
  Twin__V1__Envelope env = TWIN__V1__ENVELOPE__INIT;
  Twin__V1__LifecycleEvent lc = TWIN__V1__LIFECYCLE_EVENT__INIT;
  env.product_id = (char *)pid;
  env.source = "mes";
  env.seq = seq;
  env.event_time_ms = at;
  env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_LIFECYCLE;
  env.lifecycle = &lc;
  lc.kind = kind;
  return pack(&env);
}

/* Raw protobuf writing, for what the generated code cannot produce. */
static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  do {
    p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v);
  return n;
}

static msg_t raw_concat(msg_t a, const uint8_t *b, size_t n) {
  a.b = realloc(a.b, a.len + n + 1);
  memcpy(a.b + a.len, b, n);
  a.len += n;
  return a;
}

/* ---- The gate, as a shard runs it ------------------------------------------ */

static tw_rules_t *g_rules;
static char g_why[512];

/* NULL when the message reached the reducer (then *out is its outcome),
 * else the DLQ reason. key NULL = no Kafka key; key_len -1 = strlen. */
static const char *gate(tw_twin_t *t, msg_t m, const char *key, long key_len, tw_outcome_t *out,
                        const char **reject) {
  size_t kl = key ? (key_len < 0 ? strlen(key) : (size_t)key_len) : 0;
  /* As a shard decodes (into its arena: the fast decoder), and with
   * protobuf-c alone: the same verdict and reason. */
  static tw_arena_t arena;
  static bool arena_ready;
  if (!arena_ready) tw_arena_init(&arena, 1 << 16), arena_ready = true;
  tw_arena_reset(&arena);
  char ref_why[512] = "";
  Twin__V1__Envelope *ref = tw_envelope_decode(NULL, m.b, m.len, key, kl, MAX_BYTES, ref_why, sizeof ref_why);
  Twin__V1__Envelope *env =
      tw_envelope_decode(&arena.pb, m.b, m.len, key, kl, MAX_BYTES, g_why, sizeof g_why);
  free(m.b);
  assert_int_equal(env != NULL, ref != NULL);
  if (ref) twin__v1__envelope__free_unpacked(ref, NULL);
  if (!env) {
    assert_true(g_why[0] != '\0'); /* every DLQ message carries a reason */
    assert_string_equal(g_why, ref_why);
    return g_why;
  }
  assert_string_equal(env->product_id, t->product_id);
  const char *why = NULL;
  tw_outcome_t o = tw_apply_event(g_rules, t, env, &why, NULL, NULL);
  if (out) *out = o;
  if (reject) *reject = why; /* kept by the twin (the timeline), not the arena */
  return NULL;
}

#define T0 INT64_C(1767225600000) /* 2026-01-01 */

static void expect_dlq(tw_twin_t *t, msg_t m, const char *key, long key_len, const char *reason) {
  const char *why = gate(t, m, key, key_len, NULL, NULL);
  if (!why) fail_msg("expected the DLQ with '%s', but the event reached the reducer", reason);
  if (!strstr(why, reason)) fail_msg("DLQ reason '%s' does not contain '%s'", why, reason);
}

static void expect_outcome(tw_twin_t *t, msg_t m, tw_outcome_t want) {
  tw_outcome_t o;
  const char *why = gate(t, m, t->product_id, -1, &o, NULL);
  if (why) fail_msg("expected %s, but it went to the DLQ: %s", tw_outcome_name(want), why);
  assert_string_equal(tw_outcome_name(o), tw_outcome_name(want));
}

/* A good event before and after each bad one: both applied. */
static void good(tw_twin_t *t, uint64_t seq) {
  uint64_t rev = t->rev;
  expect_outcome(t, telemetry(t->product_id, "tcu", seq, T0 + (int64_t)seq * 1000, (double)seq),
                 TW_OUT_APPLIED);
  assert_true(t->rev == rev + 1);
}

/* ---- Oversized, truncated, nested, wrong type -------------------------------- */

static void test_oversized(void **state) {
  (void)state;
  tw_twin_t *t = tw_twin_new("VIN-BIG", 0);
  good(t, 1);
  /* 1.5 MB firmware_version: over message.max.bytes before any decoding. */
  size_t n = 1536 * 1024;
  char *fw = malloc(n + 1);
  memset(fw, 'x', n);
  fw[n] = '\0';
  Twin__V1__Envelope env = TWIN__V1__ENVELOPE__INIT;
  Twin__V1__Telemetry tm = TWIN__V1__TELEMETRY__INIT;
  env.product_id = "VIN-BIG";
  env.source = "tcu";
  env.seq = 2;
  env.event_time_ms = T0;
  env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY;
  env.telemetry = &tm;
  tm._firmware_version_case = TWIN__V1__TELEMETRY___FIRMWARE_VERSION_FIRMWARE_VERSION;
  tm.firmware_version = fw;
  expect_dlq(t, pack(&env), "VIN-BIG", -1, "more than message.max.bytes (1048576)");
  /* Under the limit but a text field over its 4 KB bound: invalid. */
  fw[8192] = '\0';
  expect_dlq(t, pack(&env), "VIN-BIG", -1,
             "telemetry.firmware_version is not valid UTF-8 of at most 4096 bytes");
  free(fw);
  good(t, 3);
  tw_twin_destroy(t);
}

static void test_truncated(void **state) {
  (void)state;
  tw_twin_t *t = tw_twin_new("VIN-CUT", 0);
  good(t, 1);
  msg_t whole = telemetry("VIN-CUT", "tcu", 2, T0, 5);
  /* Cut anywhere: the payload is the last field, so every cut either ends
   * inside a field (decoding fails) or before the payload (none). */
  for (size_t k = 0; k < whole.len; k++) {
    msg_t m = {malloc(k + 1), k};
    memcpy(m.b, whole.b, k);
    const char *why = gate(t, m, "VIN-CUT", -1, NULL, NULL);
    if (!why) fail_msg("a message cut to %zu of %zu bytes reached the reducer", k, whole.len);
    if (!strstr(why, "protobuf decoding failed") && !strstr(why, "product_id is empty") &&
        !strstr(why, "message key does not equal product_id") && !strstr(why, "source is empty") &&
        !strstr(why, "seq must be at least 1") && !strstr(why, "no payload"))
      fail_msg("cut to %zu bytes: unexpected reason '%s'", k, why);
  }
  /* The typical case: cut inside the telemetry. */
  msg_t m = {malloc(whole.len), whole.len - 3};
  memcpy(m.b, whole.b, whole.len - 3);
  expect_dlq(t, m, "VIN-CUT", -1, "not a twin.v1.Envelope: protobuf decoding failed");
  free(whole.b);
  good(t, 3);
  tw_twin_destroy(t);
}

static void test_deeply_nested(void **state) {
  (void)state;
  tw_twin_t *t = tw_twin_new("VIN-DEEP", 0);
  good(t, 1);
  /* 100000 nested groups (field 99, wire type 3): protobuf-c has no group
   * support, so decoding fails without recursing. */
  size_t depth = 100000;
  uint8_t *g = malloc(depth * 2);
  for (size_t i = 0; i < depth; i++) {
    g[i * 2] = (uint8_t)(((99 << 3 | 3) & 0x7f) | 0x80);
    g[i * 2 + 1] = (uint8_t)((99 << 3 | 3) >> 7);
  }
  expect_dlq(t, raw_concat(telemetry("VIN-DEEP", "tcu", 2, T0, 2), g, depth * 2), "VIN-DEEP", -1,
             "protobuf decoding failed");
  free(g);
  /* 2000 levels of length-delimited messages in an unknown field (99): an
   * unknown field is skipped whole, whatever its depth (forward
   * compatibility), and the event applies. */
  size_t levels = 2000, cap = levels * 8, len = 0;
  uint8_t *nest = malloc(cap), *tmp = malloc(cap);
  for (size_t i = 0; i < levels; i++) {
    size_t h = put_varint(tmp, 99 << 3 | 2);
    h += put_varint(tmp + h, len);
    memcpy(tmp + h, nest, len);
    len += h;
    memcpy(nest, tmp, len);
  }
  expect_outcome(t, raw_concat(telemetry("VIN-DEEP", "tcu", 3, T0 + 3000, 3), nest, len), TW_OUT_APPLIED);
  free(nest);
  free(tmp);
  good(t, 4);
  assert_true(t->rev == 3);
  tw_twin_destroy(t);
}

static void test_wrong_type(void **state) {
  (void)state;
  tw_twin_t *t = tw_twin_new("VIN-TYPE", 0);
  good(t, 1);
  /* product_id (field 1, a string) sent as a varint. */
  uint8_t v[] = {0x08, 0x2a, 0x12, 0x03, 't', 'c', 'u', 0x18, 0x02};
  msg_t m = {malloc(sizeof v), sizeof v};
  memcpy(m.b, v, sizeof v);
  expect_dlq(t, m, "VIN-TYPE", -1, "protobuf decoding failed");
  /* A MaintenanceAlert (the engine's own output) on an input topic. */
  Twin__V1__MaintenanceAlert al = TWIN__V1__MAINTENANCE_ALERT__INIT;
  al.alert_id = "VIN-TYPE/brake_pad_low/1";
  al.product_id = "VIN-TYPE";
  al.rule_id = "brake_pad_low";
  al.message = "Brake pad at 2.0 mm";
  al.state = TWIN__V1__ALERT_STATE__RAISED;
  al.severity = TWIN__V1__SEVERITY__WARNING;
  m.len = twin__v1__maintenance_alert__get_packed_size(&al);
  m.b = malloc(m.len);
  twin__v1__maintenance_alert__pack(&al, m.b);
  expect_dlq(t, m, "VIN-TYPE", -1, "not a twin.v1.Envelope");
  /* JSON instead of protobuf. */
  const char *json = "{\"product_id\": \"VIN-TYPE\", \"source\": \"tcu\", \"seq\": 2}";
  m = (msg_t){(uint8_t *)strdup(json), strlen(json)};
  expect_dlq(t, m, "VIN-TYPE", -1, "protobuf decoding failed");
  /* A LifecycleEvent's bytes in the telemetry field: the wire types differ. */
  msg_t lc = lifecycle("VIN-TYPE", 2, T0, TWIN__V1__LIFECYCLE_KIND__ORDERED);
  Twin__V1__Envelope *e = twin__v1__envelope__unpack(NULL, lc.len, lc.b);
  size_t ln = twin__v1__lifecycle_event__get_packed_size(e->lifecycle);
  uint8_t *lb = malloc(ln);
  twin__v1__lifecycle_event__pack(e->lifecycle, lb);
  twin__v1__envelope__free_unpacked(e, NULL);
  free(lc.b);
  msg_t head = telemetry("VIN-TYPE", "tcu", 2, T0, 0); /* odometer 0 is still sent (presence) */
  uint8_t hdr[8];
  size_t hn = put_varint(hdr, 10 << 3 | 2);
  hn += put_varint(hdr + hn, ln);
  head = raw_concat(head, hdr, hn); /* a second telemetry field: merged into the first */
  head = raw_concat(head, lb, ln);
  free(lb);
  expect_dlq(t, head, "VIN-TYPE", -1, "protobuf decoding failed");
  /* An unknown LifecycleKind (an enum value from a newer producer). */
  expect_dlq(t, lifecycle("VIN-TYPE", 3, T0, 99), "VIN-TYPE", -1,
             "lifecycle.kind 99 is not a known LifecycleKind");
  good(t, 4);
  assert_true(t->rev == 2);
  tw_twin_destroy(t);
}

/* ---- Product ids ----------------------------------------------------------- */

static void test_product_ids(void **state) {
  (void)state;
  tw_twin_t *t = tw_twin_new("VIN-OK", 0);
  good(t, 1);
  expect_dlq(t, telemetry("", "tcu", 2, T0, 1), "", -1, "product_id is empty");
  char big[4097];
  memset(big, 'V', 4096);
  big[4096] = '\0';
  expect_dlq(t, telemetry(big, "tcu", 2, T0, 1), big, -1, "product_id is longer than 256 bytes");
  expect_dlq(t, telemetry("VIN\xff\xfe", "tcu", 2, T0, 1), "VIN\xff\xfe", -1,
             "product_id is not valid UTF-8");
  expect_dlq(t, telemetry("VIN\xc0\xaf", "tcu", 2, T0, 1), "VIN\xc0\xaf", -1,
             "product_id is not valid UTF-8"); /* overlong '/' */
  expect_dlq(t, telemetry("VIN\x01", "tcu", 2, T0, 1), "VIN\x01", -1,
             "product_id contains control characters");
  /* A NUL inside product_id: protobuf-c would hand over "VIN-OK" alone.
   * Neither the full bytes as key nor the cut-off key get it through. */
  msg_t m = telemetry("VIN-OKxNUL", "tcu", 2, T0, 1);
  uint8_t *x = memchr(m.b, 'x', m.len);
  *x = 0;
  msg_t m2 = {malloc(m.len), m.len};
  memcpy(m2.b, m.b, m.len);
  expect_dlq(t, m, "VIN-OK\0NUL", 10, "product_id contains a NUL byte");
  expect_dlq(t, m2, "VIN-OK", -1, "product_id contains a NUL byte");
  /* A NUL in a nested string (a metric name) is caught the same way. */
  Twin__V1__Envelope env = TWIN__V1__ENVELOPE__INIT;
  Twin__V1__Telemetry tm = TWIN__V1__TELEMETRY__INIT;
  Twin__V1__Telemetry__MetricsEntry me = TWIN__V1__TELEMETRY__METRICS_ENTRY__INIT, *mp = &me;
  me.key = "coolantXtemp";
  me.value = 90;
  env.product_id = "VIN-OK";
  env.source = "tcu";
  env.seq = 2;
  env.event_time_ms = T0;
  env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY;
  env.telemetry = &tm;
  tm.n_metrics = 1;
  tm.metrics = &mp;
  m = pack(&env);
  *(uint8_t *)memchr(m.b, 'X', m.len) = 0;
  expect_dlq(t, m, "VIN-OK", -1, "telemetry.metrics.key contains a NUL byte");
  /* The key must equal product_id byte for byte; no key at all fails too. */
  expect_dlq(t, telemetry("VIN-OK", "tcu", 2, T0, 1), "VIN-OK ", -1, "message key does not equal product_id");
  expect_dlq(t, telemetry("VIN-OK", "tcu", 2, T0, 1), NULL, 0, "message has no key");
  /* 256 bytes of multi-byte UTF-8 are fine. */
  char ok[257];
  for (int i = 0; i < 128; i++) memcpy(ok + 2 * i, "\xc3\xbc", 2);
  ok[256] = '\0';
  tw_twin_t *u = tw_twin_new(ok, 0);
  good(u, 1);
  tw_twin_destroy(u);
  good(t, 3);
  assert_true(t->rev == 2);
  tw_twin_destroy(t);
}

/* ---- Event times ----------------------------------------------------------- */

static void test_event_times(void **state) {
  (void)state;
  tw_twin_t *t = tw_twin_new("VIN-TIME", 0);
  good(t, 1);
  const int64_t bad[] = {
      INT64_MIN, -62135596800000 /* year 1 */, -1, TW_EVENT_TIME_MAX_MS, 253402300800000 /* year 10000 */,
      INT64_MAX};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    expect_dlq(t, telemetry("VIN-TIME", "tcu", 2, bad[i], 1e6), "VIN-TIME", -1,
               "is outside 1970-01-01..2100-01-01");
  expect_dlq(t, lifecycle("VIN-TIME", 1, INT64_MAX, TWIN__V1__LIFECYCLE_KIND__ORDERED), "VIN-TIME", -1,
             "event_time_ms 9223372036854775807 is outside");
  /* The odometer was not moved by any of them. */
  assert_true(t->tel->scalars[TW_F_ODOMETER_KM].value == 1);
  /* The edges are accepted; last-writer-wins then keeps the newest. */
  expect_outcome(t, telemetry("VIN-TIME", "tcu", 2, TW_EVENT_TIME_MAX_MS - 1, 7), TW_OUT_APPLIED);
  expect_outcome(t, telemetry("VIN-TIME", "tcu", 3, 0, 8), TW_OUT_STALE);
  assert_true(t->tel->scalars[TW_F_ODOMETER_KM].value == 7);
  /* A snapshot at the edge reads back unchanged. */
  bson_t doc = BSON_INITIALIZER;
  char err[256];
  tw_twin_to_bson(t, -1, &doc);
  tw_twin_t *back = tw_twin_from_bson(&doc, 0, err, sizeof err);
  assert_non_null(back);
  assert_true(tw_twin_state_hash(back) == tw_twin_state_hash(t));
  tw_twin_destroy(back);
  bson_destroy(&doc);
  tw_twin_destroy(t);
}

/* ---- Seq wrap-around ------------------------------------------------------- */

static void test_seq_wrap(void **state) {
  (void)state;
  tw_twin_t *t = tw_twin_new("VIN-SEQ", 0);
  expect_dlq(t, telemetry("VIN-SEQ", "tcu", 0, T0, 1), "VIN-SEQ", -1, "seq must be at least 1");
  expect_outcome(t, telemetry("VIN-SEQ", "tcu", UINT64_MAX - 1, T0 + 1, 1), TW_OUT_APPLIED);
  expect_outcome(t, telemetry("VIN-SEQ", "tcu", UINT64_MAX, T0 + 2, 2), TW_OUT_APPLIED);
  expect_outcome(t, telemetry("VIN-SEQ", "tcu", UINT64_MAX, T0 + 3, 3), TW_OUT_DUPLICATE);
  /* The producer's counter wrapped to 1: far behind the high-water mark,
   * so too late (counted, not applied) for good. */
  expect_outcome(t, telemetry("VIN-SEQ", "tcu", 1, T0 + 4, 4), TW_OUT_TOO_LATE);
  expect_outcome(t, telemetry("VIN-SEQ", "tcu", 2, T0 + 5, 5), TW_OUT_TOO_LATE);
  assert_true(t->counters.too_late == 2 && t->counters.duplicates == 1);
  assert_true(t->tel->scalars[TW_F_ODOMETER_KM].value == 2);
  /* The documented way out: a new source name starts its own seqs. */
  expect_outcome(t, telemetry("VIN-SEQ", "tcu-2", 1, T0 + 6, 6), TW_OUT_APPLIED);
  /* The marks survive a snapshot (uint64 stored as int64 bits). */
  bson_t doc = BSON_INITIALIZER;
  char err[256];
  tw_twin_to_bson(t, -1, &doc);
  tw_twin_t *back = tw_twin_from_bson(&doc, 0, err, sizeof err);
  assert_non_null(back);
  assert_true(tw_twin_state_hash(back) == tw_twin_state_hash(t));
  expect_outcome(back, telemetry("VIN-SEQ", "tcu", UINT64_MAX - 1, T0 + 7, 7), TW_OUT_DUPLICATE);
  expect_outcome(back, telemetry("VIN-SEQ", "tcu", 3, T0 + 8, 8), TW_OUT_TOO_LATE);
  tw_twin_destroy(back);
  bson_destroy(&doc);
  tw_twin_destroy(t);
}

/* ---- Rejected in the timeline ---------------------------------------------- */

static void test_rejected_in_timeline(void **state) {
  (void)state;
  tw_twin_t *t = tw_twin_new("VIN-LC", 0);
  expect_outcome(t, lifecycle("VIN-LC", 1, T0, TWIN__V1__LIFECYCLE_KIND__ORDERED), TW_OUT_APPLIED);
  tw_outcome_t o;
  const char *why = NULL;
  assert_null(
      gate(t, lifecycle("VIN-LC", 2, T0 + 1, TWIN__V1__LIFECYCLE_KIND__DELIVERED), "VIN-LC", -1, &o, &why));
  assert_int_equal(o, TW_OUT_REJECTED);
  assert_non_null(why);
  assert_true(t->n_timeline == 2 && t->timeline[1]->rejected &&
              strcmp(tw_entry_text(t->timeline[1], TW_ET_REASON), why) == 0);
  expect_outcome(t, lifecycle("VIN-LC", 3, T0 + 2, TWIN__V1__LIFECYCLE_KIND__BUILD_STARTED), TW_OUT_APPLIED);
  assert_int_equal(t->stage, TW_STAGE_IN_PRODUCTION);
  tw_twin_destroy(t);
}

static int setup(void **state) {
  (void)state;
  char err[256];
  g_rules = tw_rules_compile(true, NULL, 0, err, sizeof err);
  return g_rules ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  tw_rules_destroy(g_rules);
  return 0;
}

/* ---- Strings: the fast path's shortcut ------------------------------------ *
 *
 * The fast decoder vouches for the UTF-8, control-character, length, name
 * and finite-number checks when every string is printable ASCII of at most
 * TW_NAME_MAX bytes, every name is non-empty without '.' or a leading '$',
 * and every double is finite, and the validator then skips them. Random
 * strings from an alphabet of the edge cases (NUL, controls, DEL, '.', '$',
 * multi-byte and broken UTF-8) at lengths around the limits (0: the field is
 * left out), in every string field, and numbers that are now and then NaN or
 * infinite: the arena path must give protobuf-c's verdict and reason. */

static uint64_t g_x = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd32(void) {
  g_x ^= g_x << 13, g_x ^= g_x >> 7, g_x ^= g_x << 17;
  return (uint32_t)(g_x >> 16);
}

/* Mostly a plain number; now and then one the validator rejects. */
static double rnd_num(void) {
  static const double odd[] = {NAN, INFINITY, -INFINITY, -0.0, 1e308, 5e-324};
  return rnd32() % 8 ? (double)(rnd32() % 1000) / 10.0 : odd[rnd32() % 6];
}

static char *rnd_str(char *buf, size_t cap) {
  static const char *const pieces[] = {"a",
                                       "Z",
                                       "0",
                                       "-",
                                       " ",
                                       "~",
                                       ".",
                                       "$",
                                       "\x7f",
                                       "\x1f",
                                       "\t",
                                       "\x01",
                                       "\xc3\xbc",
                                       "\xe2\x82\xac",
                                       "\xf0\x9f\x9a\x97",
                                       "\xff",
                                       "\xc0\xaf",
                                       "\xed\xa0\x80",
                                       "\x80",
                                       "\0"};
  static const size_t lens[] = {0, 1, 7, 8, 9, 17, 127, 128, 129, 256, 257, 300, 4096, 4097};
  size_t want = lens[rnd32() % (sizeof lens / sizeof lens[0])] + (rnd32() % 4 == 0 ? rnd32() % 3 : 0);
  if (want > cap - 1) want = cap - 1;
  bool clean = rnd32() % 2; /* half the strings printable ASCII only */
  size_t n = 0;
  while (n < want) {
    const char *pc = clean ? pieces[rnd32() % 6] : pieces[rnd32() % (sizeof pieces / sizeof pieces[0])];
    size_t pl = pc[0] ? strlen(pc) : 1;
    if (n + pl > want) pl = want - n;
    memcpy(buf + n, pc, pl);
    n += pl;
  }
  buf[n] = '\0';
  return buf;
}

/* protobuf-c packs C strings: a NUL inside is written by patching the bytes. */
static void test_string_shortcut(void **state) {
  (void)state;
  static char b[24][4200];
  int plain = 0, rejected = 0;
  for (int i = 0; i < 20000; i++) {
    int k = 0;
    Twin__V1__Envelope env = TWIN__V1__ENVELOPE__INIT;
    Twin__V1__Telemetry tm = TWIN__V1__TELEMETRY__INIT;
    Twin__V1__LifecycleEvent lc = TWIN__V1__LIFECYCLE_EVENT__INIT;
    Twin__V1__Telemetry__MetricsEntry me[2] = {TWIN__V1__TELEMETRY__METRICS_ENTRY__INIT,
                                               TWIN__V1__TELEMETRY__METRICS_ENTRY__INIT};
    Twin__V1__Telemetry__MetricsEntry *mp[2] = {&me[0], &me[1]};
    Twin__V1__LifecycleEvent__AttributesEntry ae = TWIN__V1__LIFECYCLE_EVENT__ATTRIBUTES_ENTRY__INIT,
                                              *ap = &ae;
    char *codes[2], *parts[2];
    double wheels[4];
    /* Mostly valid identity, so the payload's strings get checked too. */
    env.product_id = rnd32() % 4 ? "VIN-STR" : rnd_str(b[k++], sizeof b[0]);
    env.source = rnd32() % 3 ? "tcu" : rnd_str(b[k++], sizeof b[0]);
    env.seq = 1 + (uint64_t)i;
    env.event_time_ms = T0;
    if (rnd32() % 2) {
      env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY;
      env.telemetry = &tm;
      tm.n_dtc_codes = rnd32() % 3;
      for (size_t j = 0; j < tm.n_dtc_codes; j++)
        codes[j] = rnd32() % 2 ? "P0420" : rnd_str(b[k++], sizeof b[0]);
      tm.dtc_codes = codes;
      if (rnd32() % 2) {
        tm._firmware_version_case = TWIN__V1__TELEMETRY___FIRMWARE_VERSION_FIRMWARE_VERSION;
        tm.firmware_version = rnd_str(b[k++], sizeof b[0]);
      }
      tm.n_metrics = rnd32() % 3;
      for (size_t j = 0; j < tm.n_metrics; j++) {
        me[j].key = rnd32() % 2 ? (j ? "b" : "a") : rnd_str(b[k++], sizeof b[0]);
        me[j].value = rnd_num();
      }
      tm.metrics = mp;
      /* Numbers too: the fast decoder also vouches for their finiteness. */
      if (rnd32() % 2) {
        tm._speed_kph_case = TWIN__V1__TELEMETRY___SPEED_KPH_SPEED_KPH;
        tm.speed_kph = rnd_num();
      }
      if (rnd32() % 2) {
        tm._range_km_case = TWIN__V1__TELEMETRY___RANGE_KM_RANGE_KM;
        tm.range_km = rnd_num();
      }
      for (size_t j = 0; j < 4; j++) wheels[j] = rnd_num();
      tm.n_tire_pressure_kpa = rnd32() % 2 ? 4 : 0;
      tm.tire_pressure_kpa = wheels;
      tm.n_brake_pad_mm = rnd32() % 2 ? 4 : 0;
      tm.brake_pad_mm = wheels;
    } else {
      env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_LIFECYCLE;
      env.lifecycle = &lc;
      lc.kind = TWIN__V1__LIFECYCLE_KIND__SERVICE_VISIT;
      if (rnd32() % 2) {
        lc._odometer_km_case = TWIN__V1__LIFECYCLE_EVENT___ODOMETER_KM_ODOMETER_KM;
        lc.odometer_km = rnd_num();
      }
      char **fields[] = {&lc.site,      &lc.actor,    &lc.detail, &lc.work_order,
                         &lc.recall_id, &lc.owner_id, &lc.model};
      for (size_t j = 0; j < 7; j++)
        if (rnd32() % 3 == 0) *fields[j] = rnd_str(b[k++], sizeof b[0]);
      lc.n_parts_replaced = rnd32() % 3;
      for (size_t j = 0; j < lc.n_parts_replaced; j++) parts[j] = rnd_str(b[k++], sizeof b[0]);
      lc.parts_replaced = parts;
      if (rnd32() % 2) {
        ae.key = rnd32() % 2 ? "shop" : rnd_str(b[k++], sizeof b[0]);
        ae.value = rnd_str(b[k++], sizeof b[0]);
        lc.n_attributes = 1;
        lc.attributes = &ap;
      }
    }
    assert_true(k <= 24);
    msg_t m = pack(&env);
    /* A NUL in the middle of one string, now and then: patched into the bytes. */
    if (rnd32() % 8 == 0) {
      uint8_t *x = memchr(m.b, 'a', m.len);
      if (x) *x = 0;
    }
    bool ascii = true;
    for (int j = 0; j < k; j++) {
      size_t n = strlen(b[j]);
      for (size_t q = 0; q < n; q++) ascii &= (unsigned char)b[j][q] >= 0x20 && (unsigned char)b[j][q] < 0x80;
      ascii &= n <= TW_NAME_MAX;
    }
    plain += ascii;
    /* gate() decodes both ways and asserts the same verdict and reason. */
    tw_twin_t *t = tw_twin_new(env.product_id, 0);
    if (gate(t, m, env.product_id, -1, NULL, NULL)) rejected++;
    tw_twin_destroy(t);
  }
  print_message("%d envelopes: %d with printable-ASCII strings only, %d rejected\n", 20000, plain, rejected);
  assert_true(plain > 2000 && rejected > 2000 && 20000 - rejected > 2000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_oversized),       cmocka_unit_test(test_truncated),
      cmocka_unit_test(test_deeply_nested),   cmocka_unit_test(test_wrong_type),
      cmocka_unit_test(test_product_ids),     cmocka_unit_test(test_event_times),
      cmocka_unit_test(test_seq_wrap),        cmocka_unit_test(test_rejected_in_timeline),
      cmocka_unit_test(test_string_shortcut),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
