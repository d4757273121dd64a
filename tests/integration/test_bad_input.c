/* test_bad_input.c - the bad-input catalogue (README "Bad input") through
 * the real broker and the real engine: each bad message is produced to an
 * input topic between good events; afterwards the DLQ holds exactly the bad
 * ones (same bytes, same key, twin.error naming the documented reason,
 * twin.origin.* naming where it came from), MongoDB holds every good event
 * applied once, the impossible transition is in the timeline as rejected,
 * and the wrapped seqs are counted too late. tests/unit/test_bad_input.c
 * checks the same cases without servers. */
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <mongoc/mongoc.h>

#include "harness.h"
#include "twin/rules.h"
#include "twin/twin.h"

#define T0 INT64_C(1767225600000) /* 2026-01-01 */
#define MAX_BYTES 102400          /* the engine's message.max.bytes here */
#define MAX_MSGS 64

typedef struct {
  uint8_t *b;
  size_t len;
  char *key; /* NULL: no key */
  size_t key_len;
  int topic;          /* TW_TOPIC_TELEMETRY or TW_TOPIC_LIFECYCLE */
  const char *reason; /* NULL: a good message; else the DLQ reason it must get */
} msg_t;

static msg_t g_msgs[MAX_MSGS];
static int g_n;

static msg_t *add(const Twin__V1__Envelope *env, int topic, const char *reason) {
  assert_true(g_n < MAX_MSGS);
  msg_t *m = &g_msgs[g_n++];
  m->len = twin__v1__envelope__get_packed_size(env);
  m->b = malloc(m->len + 1);
  twin__v1__envelope__pack(env, m->b);
  m->key_len = strlen(env->product_id);
  m->key = malloc(m->key_len + 1);
  memcpy(m->key, env->product_id, m->key_len + 1);
  m->topic = topic;
  m->reason = reason;
  return m;
}

static msg_t *tel(const char *pid, const char *src, uint64_t seq, int64_t at, double odo,
                  const char *reason) {
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
  return add(&env, TW_TOPIC_TELEMETRY, reason);
}

static msg_t *life(const char *pid, uint64_t seq, Twin__V1__LifecycleKind kind, const char *reason) {
  Twin__V1__Envelope env = TWIN__V1__ENVELOPE__INIT;
  Twin__V1__LifecycleEvent lc = TWIN__V1__LIFECYCLE_EVENT__INIT;
  env.product_id = (char *)pid;
  env.source = "mes";
  env.seq = seq;
  env.event_time_ms = T0 + (int64_t)seq * 1000;
  env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_LIFECYCLE;
  env.lifecycle = &lc;
  lc.kind = kind;
  return add(&env, TW_TOPIC_LIFECYCLE, reason);
}

static int g_good_seq;
static void good(void) {
  g_good_seq++;
  tel("VIN-GOOD", "tcu", (uint64_t)g_good_seq, T0 + g_good_seq * 1000, g_good_seq, NULL);
}

/* The catalogue, in the order produced, good events between the bad. */
static void build_messages(void) {
  good();
  /* Oversized: over message.max.bytes. */
  {
    Twin__V1__Envelope env = TWIN__V1__ENVELOPE__INIT;
    Twin__V1__Telemetry tm = TWIN__V1__TELEMETRY__INIT;
    char *fw = malloc(150001);
    memset(fw, 'x', 150000);
    fw[150000] = '\0';
    env.product_id = "VIN-GOOD";
    env.source = "tcu";
    env.seq = 1000;
    env.event_time_ms = T0;
    env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY;
    env.telemetry = &tm;
    tm._firmware_version_case = TWIN__V1__TELEMETRY___FIRMWARE_VERSION_FIRMWARE_VERSION;
    tm.firmware_version = fw;
    add(&env, TW_TOPIC_TELEMETRY, "more than message.max.bytes (102400)");
    free(fw);
  }
  good();
  /* Truncated: cut inside the telemetry. */
  tel("VIN-GOOD", "tcu", 1001, T0, 1, "protobuf decoding failed")->len -= 3;
  good();
  /* Deeply nested: 50000 nested groups after a valid envelope. */
  {
    msg_t *m = tel("VIN-GOOD", "tcu", 1002, T0, 1, "protobuf decoding failed");
    m->b = realloc(m->b, m->len + 100000);
    for (size_t i = 0; i < 50000; i++) {
      m->b[m->len++] = (uint8_t)(((99 << 3 | 3) & 0x7f) | 0x80);
      m->b[m->len++] = (uint8_t)((99 << 3 | 3) >> 7);
    }
  }
  good();
  /* Wrong type: product_id as a varint; JSON text. */
  {
    msg_t *m = tel("VIN-GOOD", "tcu", 1003, T0, 1, "protobuf decoding failed");
    static const uint8_t v[] = {0x08, 0x2a, 0x12, 0x03, 't', 'c', 'u', 0x18, 0x02};
    memcpy(m->b, v, sizeof v);
    m->len = sizeof v;
    m = tel("VIN-GOOD", "tcu", 1004, T0, 1, "protobuf decoding failed");
    const char *json = "{\"product_id\": \"VIN-GOOD\", \"seq\": 1004}";
    m->b = realloc(m->b, strlen(json));
    memcpy(m->b, json, strlen(json));
    m->len = strlen(json);
  }
  good();
  /* Product ids: empty, 4 KB, not UTF-8, a NUL inside (key cut at the NUL,
   * as a producer using C strings would send it). */
  tel("", "tcu", 1, T0, 1, "product_id is empty");
  {
    char big[4097];
    memset(big, 'V', 4096);
    big[4096] = '\0';
    tel(big, "tcu", 1, T0, 1, "product_id is longer than 256 bytes");
  }
  tel("VIN-\xff\xfe", "tcu", 1, T0, 1, "product_id is not valid UTF-8");
  {
    msg_t *m = tel("VIN-GOODxEVIL", "tcu", 1005, T0, 1, "product_id contains a NUL byte");
    *(uint8_t *)memchr(m->b, 'x', m->len) = 0;
    m->key_len = 8; /* "VIN-GOOD" */
  }
  good();
  /* Event times far in the past and the future. */
  tel("VIN-GOOD", "tcu", 1006, INT64_MIN, 1, "event_time_ms -9223372036854775808 is outside");
  tel("VIN-GOOD", "tcu", 1007, -1, 1, "is outside 1970-01-01..2100-01-01");
  tel("VIN-GOOD", "tcu", 1008, INT64_C(253402300800000), 1, "is outside 1970-01-01..2100-01-01");
  tel("VIN-GOOD", "tcu", 1009, INT64_MAX, 1, "is outside 1970-01-01..2100-01-01");
  good();
  /* Seq wrap-around: near UINT64_MAX, then 1 and 2 again: too late. */
  tel("VIN-SEQ", "tcu", UINT64_MAX - 1, T0 + 1, 1, NULL);
  tel("VIN-SEQ", "tcu", UINT64_MAX, T0 + 2, 2, NULL);
  tel("VIN-SEQ", "tcu", 1, T0 + 3, 3, NULL);
  tel("VIN-SEQ", "tcu", 2, T0 + 4, 4, NULL);
  tel("VIN-SEQ", "tcu", 0, T0 + 5, 5, "seq must be at least 1");
  tel("VIN-SEQ", "tcu-2", 1, T0 + 6, 6, NULL);
  /* An impossible transition: kept in the timeline, rejected. */
  life("VIN-LC", 1, TWIN__V1__LIFECYCLE_KIND__ORDERED, NULL);
  life("VIN-LC", 2, TWIN__V1__LIFECYCLE_KIND__DELIVERED, NULL);
  life("VIN-LC", 3, TWIN__V1__LIFECYCLE_KIND__BUILD_STARTED, NULL);
  life("VIN-LC", 4, 99, "lifecycle.kind 99 is not a known LifecycleKind");
  good();
}

static void produce_all(const h_scenario_t *s) {
  char err[512];
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  rd_kafka_conf_set(c, "bootstrap.servers", s->bootstrap, err, sizeof err);
  rd_kafka_conf_set(c, "enable.idempotence", "true", err, sizeof err); /* keeps the order */
  rd_kafka_conf_set(c, "partitioner", "murmur2_random", err, sizeof err);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof err);
  if (!rk) fail_msg("producer: %s", err);
  for (int i = 0; i < g_n; i++) {
    msg_t *m = &g_msgs[i];
    rd_kafka_resp_err_t e =
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(m->topic == TW_TOPIC_TELEMETRY ? s->telemetry : s->lifecycle),
                          RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_VALUE(m->b, m->len),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    if (e) fail_msg("produce message %d: %s", i, rd_kafka_err2str(e));
  }
  if (rd_kafka_flush(rk, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR) fail_msg("producer flush timed out");
  rd_kafka_destroy(rk);
}

/* ---- Expected state: the same messages through the engine's gate ------------ */

static void expected_twins(h_expected_t *ex) {
  char err[512];
  tw_rules_t *rules = tw_rules_compile(true, NULL, 0, err, sizeof err);
  assert_non_null(rules);
  memset(ex, 0, sizeof *ex);
  tw_map_init(&ex->twins);
  for (int i = 0; i < g_n; i++) {
    msg_t *m = &g_msgs[i];
    Twin__V1__Envelope *env =
        tw_envelope_decode(NULL, m->b, m->len, m->key, m->key_len, MAX_BYTES, err, sizeof err);
    if (m->reason) {
      if (env) fail_msg("message %d passed the gate, expected '%s'", i, m->reason);
      if (!strstr(err, m->reason)) fail_msg("message %d: reason '%s', expected '%s'", i, err, m->reason);
      ex->garbage++;
      continue;
    }
    if (!env) fail_msg("good message %d fails the gate: %s", i, err);
    tw_apply_event(rules, tw_map_get_or_new(&ex->twins, env->product_id, 64), env, NULL, NULL, NULL);
    ex->valid++;
    twin__v1__envelope__free_unpacked(env, NULL);
  }
  tw_rules_destroy(rules);
  for (size_t i = 0; i < ex->twins.cap; i++)
    if (ex->twins.slots[i]) h_strip_interleaved_alerts(ex->twins.slots[i]);
}

/* ---- The DLQ, message by message ------------------------------------------- */

static const char *header(rd_kafka_message_t *m, const char *name, char *buf, size_t cap) {
  rd_kafka_headers_t *h;
  const void *v;
  size_t vl;
  if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR ||
      rd_kafka_header_get_last(h, name, &v, &vl) != RD_KAFKA_RESP_ERR_NO_ERROR || !v)
    return NULL;
  snprintf(buf, cap, "%.*s", (int)vl, (const char *)v);
  return buf;
}

static void check_dlq(const h_scenario_t *s, int want) {
  char err[512];
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  rd_kafka_conf_set(c, "bootstrap.servers", s->bootstrap, err, sizeof err);
  rd_kafka_conf_set(c, "group.id", "bad-input-reader", err, sizeof err);
  rd_kafka_conf_set(c, "enable.auto.commit", "false", err, sizeof err);
  rd_kafka_conf_set(c, "fetch.message.max.bytes", "1048576", err, sizeof err);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
  if (!rk) fail_msg("dlq consumer: %s", err);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(2);
  int64_t total = 0;
  for (int p = 0; p < 2; p++) {
    int64_t lo, hi;
    rd_kafka_query_watermark_offsets(rk, s->dlq, p, &lo, &hi, 10000);
    total += hi - lo;
    rd_kafka_topic_partition_list_add(l, s->dlq, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  }
  rd_kafka_assign(rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  bool found[MAX_MSGS] = {false};
  int64_t got = 0;
  for (int idle = 0; got < total && idle < 100;) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
    if (!m) {
      idle++;
      continue;
    }
    if (m->err) {
      rd_kafka_message_destroy(m);
      continue;
    }
    got++;
    char why[600], topic[200], off[32];
    if (!header(m, "twin.error", why, sizeof why) || !header(m, "twin.origin.topic", topic, sizeof topic) ||
        !header(m, "twin.origin.offset", off, sizeof off) ||
        !header(m, "twin.origin.partition", off, sizeof off))
      fail_msg("DLQ message at %d@%" PRId64 " lacks the twin.* headers", m->partition, m->offset);
    int match = -1;
    for (int i = 0; i < g_n && match < 0; i++) {
      msg_t *b = &g_msgs[i];
      if (b->reason && !found[i] && b->len == m->len && memcmp(b->b, m->payload, m->len) == 0 &&
          b->key_len == m->key_len && memcmp(b->key, m->key, m->key_len) == 0)
        match = i;
    }
    if (match < 0) fail_msg("DLQ message (%s) is not one of the bad messages sent", why);
    msg_t *b = &g_msgs[match];
    if (!strstr(why, b->reason))
      fail_msg("message %d: DLQ reason '%s', expected '%s'", match, why, b->reason);
    const char *want_topic = b->topic == TW_TOPIC_TELEMETRY ? s->telemetry : s->lifecycle;
    if (strcmp(topic, want_topic) != 0)
      fail_msg("message %d: origin %s, expected %s", match, topic, want_topic);
    fprintf(stderr, "[test] DLQ: %s\n", why);
    found[match] = true;
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  for (int i = 0; i < g_n; i++)
    if (g_msgs[i].reason && !found[i])
      fail_msg("bad message %d ('%s') is not in the DLQ", i, g_msgs[i].reason);
  assert_int_equal(got, want);
}

/* ---- The stored twins ------------------------------------------------------ */

/* Copies the stored twin into out (uninitialised; the caller destroys it). */
static bool find_twin(const h_scenario_t *s, const char *id, bson_t *out) {
  mongoc_client_t *c = mongoc_client_new(s->mongo_uri);
  mongoc_collection_t *col = mongoc_client_get_collection(c, s->database, "twins");
  bson_t *q = BCON_NEW("_id", BCON_UTF8(id));
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, q, NULL, NULL);
  const bson_t *doc;
  bool ok = mongoc_cursor_next(cur, &doc);
  if (ok)
    bson_copy_to(doc, out);
  else
    bson_init(out);
  mongoc_cursor_destroy(cur);
  bson_destroy(q);
  mongoc_collection_destroy(col);
  mongoc_client_destroy(c);
  return ok;
}

static int64_t i64_at(const bson_t *d, const char *path) {
  bson_iter_t it, f;
  if (!bson_iter_init(&it, d) || !bson_iter_find_descendant(&it, path, &f)) fail_msg("no %s", path);
  return bson_iter_as_int64(&f);
}

static const char *str_at(const bson_t *d, const char *path) {
  bson_iter_t it, f;
  if (!bson_iter_init(&it, d) || !bson_iter_find_descendant(&it, path, &f) || !BSON_ITER_HOLDS_UTF8(&f))
    fail_msg("no string %s", path);
  return bson_iter_utf8(&f, NULL);
}

static void test_catalogue(void **state) {
  (void)state;
  h_scenario_t s;
  h_scenario_init(&s, "badinput", 2);
  build_messages();
  h_expected_t ex;
  expected_twins(&ex);
  produce_all(&s);
  char max[64];
  snprintf(max, sizeof max, "message.max.bytes=%d", MAX_BYTES);
  pid_t e = h_engine_start(&s, 2, (const char *const[]){max, NULL});
  assert_true(h_wait_caught_up(&s, 120));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);

  check_dlq(&s, (int)ex.garbage);
  /* Every good event applied once; nothing else stored (no twin for the
   * bad product ids, none for "VIN-GOOD" cut at its NUL either). */
  assert_int_equal(h_compare_store(&s, &ex), 0);
  bson_t d; /* find_twin() initialises it */
  assert_true(find_twin(&s, "VIN-GOOD", &d));
  assert_int_equal(i64_at(&d, "rev"), g_good_seq);
  bson_destroy(&d);
  assert_true(find_twin(&s, "VIN-SEQ", &d));
  assert_int_equal(i64_at(&d, "counters.too_late"), 2);
  assert_int_equal(i64_at(&d, "rev"), 3);
  bson_destroy(&d);
  assert_true(find_twin(&s, "VIN-LC", &d));
  assert_string_equal(str_at(&d, "timeline.1.kind"), "DELIVERED");
  assert_string_equal(str_at(&d, "timeline.1.status"), "rejected");
  fprintf(stderr, "[test] VIN-LC DELIVERED rejected: %s\n", str_at(&d, "timeline.1.reason"));
  assert_string_equal(str_at(&d, "timeline.2.status"), "applied");
  assert_string_equal(str_at(&d, "stage"), "IN_PRODUCTION");
  bson_destroy(&d);

  h_expected_cleanup(&ex);
  for (int i = 0; i < g_n; i++) {
    free(g_msgs[i].b);
    free(g_msgs[i].key);
  }
  h_scenario_cleanup(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_catalogue)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
