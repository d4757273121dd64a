/* test_kafka.c - protobuf Envelopes through the real local Kafka broker.
 *
 * Needs `deploy/local/stack.sh up` (bootstrap from TWIN_KAFKA_BOOTSTRAP,
 * default 127.0.0.1:9092); fails, never skips, when the broker is absent.
 * Creates a fresh uniquely named topic with the admin API, produces Envelopes
 * keyed by product_id (with headers), consumes them back through a consumer
 * group, and checks bytes, keys, headers, per-key partition and per-key order.
 * The topic is deleted at the end. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>

#include "twin/v1/events.pb-c.h"

#define N_PRODUCTS 10
#define N_PER_PRODUCT 30
#define N_MSGS (N_PRODUCTS * N_PER_PRODUCT)
#define N_PARTITIONS 6
#define TIMEOUT_MS 30000

static const char *bootstrap(void) {
  const char *b = getenv("TWIN_KAFKA_BOOTSTRAP");
  return b && *b ? b : "127.0.0.1:9092";
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static rd_kafka_conf_t *base_conf(void) {
  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap(), err, sizeof err) != RD_KAFKA_CONF_OK)
    fail_msg("bootstrap.servers: %s", err);
  return conf;
}

static void conf_set(rd_kafka_conf_t *conf, const char *k, const char *v) {
  char err[512];
  if (rd_kafka_conf_set(conf, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) fail_msg("%s=%s: %s", k, v, err);
}

/* ---- Fixture: one producer and one fresh topic per run ------------------------ */

typedef struct {
  rd_kafka_t *producer;
  char topic[128];
  int delivered;
  int delivery_errors;
  /* expected[i]: the packed Envelope for product i/N_PER_PRODUCT, seq i%N_PER_PRODUCT+1 */
  uint8_t *expected[N_MSGS];
  size_t expected_len[N_MSGS];
} fixture_t;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  fixture_t *f = opaque;
  if (m->err) {
    f->delivery_errors++;
    fprintf(stderr, "delivery failed: %s\n", rd_kafka_err2str(m->err));
  } else {
    f->delivered++;
  }
}

/* Runs one admin request and waits for its result event. */
static rd_kafka_event_t *admin_wait(rd_kafka_queue_t *q, rd_kafka_event_type_t type) {
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, TIMEOUT_MS + 5000);
  if (!ev) fail_msg("no admin result from Kafka at %s within %d ms", bootstrap(), TIMEOUT_MS + 5000);
  if (rd_kafka_event_type(ev) != type) fail_msg("unexpected admin event %s", rd_kafka_event_name(ev));
  if (rd_kafka_event_error(ev)) fail_msg("admin request failed: %s", rd_kafka_event_error_string(ev));
  return ev;
}

static int setup(void **state) {
  char err[512];
  fixture_t *f = calloc(1, sizeof *f);
  assert_non_null(f);
  snprintf(f->topic, sizeof f->topic, "twin.test.kafka.%ld.%ld", (long)getpid(), (long)time(NULL));

  rd_kafka_conf_t *conf = base_conf();
  conf_set(conf, "acks", "all");
  conf_set(conf, "enable.idempotence", "true");
  conf_set(conf, "linger.ms", "5");
  conf_set(conf, "message.timeout.ms", "30000");
  /* The partitioner Java clients use, so C and Java producers agree on
   * product_id -> partition (librdkafka's default is consistent_random). */
  conf_set(conf, "partitioner", "murmur2_random");
  rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
  rd_kafka_conf_set_opaque(conf, f);
  f->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (!f->producer) fail_msg("rd_kafka_new: %s", err);

  /* Fail fast, with a message saying what to do, when no broker answers. */
  const struct rd_kafka_metadata *md = NULL;
  rd_kafka_resp_err_t e = rd_kafka_metadata(f->producer, 0, NULL, &md, 10000);
  if (e) {
    fail_msg("Kafka at %s does not answer (%s): start it with deploy/local/stack.sh up", bootstrap(),
             rd_kafka_err2str(e));
  }
  rd_kafka_metadata_destroy(md);

  rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(f->topic, N_PARTITIONS, 1, err, sizeof err);
  assert_non_null(nt);
  rd_kafka_queue_t *q = rd_kafka_queue_new(f->producer);
  rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(f->producer, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  assert_int_equal(rd_kafka_AdminOptions_set_operation_timeout(opt, TIMEOUT_MS, err, sizeof err), 0);
  rd_kafka_CreateTopics(f->producer, &nt, 1, opt, q);
  rd_kafka_event_t *ev = admin_wait(q, RD_KAFKA_EVENT_CREATETOPICS_RESULT);
  size_t n = 0;
  const rd_kafka_topic_result_t **res =
      rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
  assert_int_equal(n, 1);
  if (rd_kafka_topic_result_error(res[0]))
    fail_msg("creating %s: %s", f->topic, rd_kafka_topic_result_error_string(res[0]));
  rd_kafka_event_destroy(ev);
  rd_kafka_AdminOptions_destroy(opt);
  rd_kafka_NewTopic_destroy(nt);
  rd_kafka_queue_destroy(q);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  if (!f) return 0;
  /* Best effort: leave the broker as we found it. */
  char err[512];
  rd_kafka_DeleteTopic_t *dt = rd_kafka_DeleteTopic_new(f->topic);
  rd_kafka_queue_t *q = rd_kafka_queue_new(f->producer);
  rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(f->producer, RD_KAFKA_ADMIN_OP_DELETETOPICS);
  rd_kafka_AdminOptions_set_operation_timeout(opt, 10000, err, sizeof err);
  rd_kafka_DeleteTopics(f->producer, &dt, 1, opt, q);
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
  if (ev) rd_kafka_event_destroy(ev);
  rd_kafka_AdminOptions_destroy(opt);
  rd_kafka_DeleteTopic_destroy(dt);
  rd_kafka_queue_destroy(q);
  rd_kafka_destroy(f->producer);
  for (int i = 0; i < N_MSGS; i++) free(f->expected[i]);
  free(f);
  return 0;
}

/* ---- Messages ------------------------------------------------------------------ */

static void product_id(char *buf, size_t cap, int p) { snprintf(buf, cap, "WVWZZZ1JZTEST%04d", p); }

/* Builds and packs message i: alternating telemetry and lifecycle payloads. */
static void make_message(fixture_t *f, int i) {
  char pid[32];
  int p = i / N_PER_PRODUCT, s = i % N_PER_PRODUCT;
  product_id(pid, sizeof pid, p);
  Twin__V1__Envelope env = TWIN__V1__ENVELOPE__INIT;
  Twin__V1__Telemetry t = TWIN__V1__TELEMETRY__INIT;
  Twin__V1__LifecycleEvent lc = TWIN__V1__LIFECYCLE_EVENT__INIT;
  Twin__V1__Telemetry__MetricsEntry me = TWIN__V1__TELEMETRY__METRICS_ENTRY__INIT;
  Twin__V1__Telemetry__MetricsEntry *mes[] = {&me};
  double tires[4] = {230 + s, 231 + s, 229 + s, 228 + s};
  char *parts[] = {"brake_pad_front"};
  env.product_id = pid;
  env.source = s % 2 ? "dms" : "tcu";
  env.seq = (uint64_t)s + 1;
  env.event_time_ms = 1767225600000 + (int64_t)i * 1000;
  if (s % 2 == 0) {
    env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY;
    env.telemetry = &t;
    t._odometer_km_case = TWIN__V1__TELEMETRY___ODOMETER_KM_ODOMETER_KM;
    t.odometer_km = 1000.0 + s;
    t._battery_soc_pct_case = TWIN__V1__TELEMETRY___BATTERY_SOC_PCT_BATTERY_SOC_PCT;
    t.battery_soc_pct = 80.5;
    t.n_tire_pressure_kpa = 4;
    t.tire_pressure_kpa = tires;
    me.key = "coolant_temp_c";
    me.value = 90.0 + s;
    t.n_metrics = 1;
    t.metrics = mes;
  } else {
    env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_LIFECYCLE;
    env.lifecycle = &lc;
    lc.kind = TWIN__V1__LIFECYCLE_KIND__SERVICE_VISIT;
    lc.site = "DEALER-1";
    lc.work_order = "WO-1";
    lc._odometer_km_case = TWIN__V1__LIFECYCLE_EVENT___ODOMETER_KM_ODOMETER_KM;
    lc.odometer_km = 1000.0 + s;
    lc.n_parts_replaced = 1;
    lc.parts_replaced = parts;
  }
  f->expected_len[i] = twin__v1__envelope__get_packed_size(&env);
  f->expected[i] = malloc(f->expected_len[i]);
  assert_non_null(f->expected[i]);
  twin__v1__envelope__pack(&env, f->expected[i]);
}

/* ---- The test ------------------------------------------------------------------ */

static void test_produce_consume_envelopes(void **state) {
  fixture_t *f = *state;
  char err[512];

  /* Produce, interleaving products so per-key order is meaningful. */
  for (int s = 0; s < N_PER_PRODUCT; s++) {
    for (int p = 0; p < N_PRODUCTS; p++) {
      int i = p * N_PER_PRODUCT + s;
      char pid[32], idx[16];
      make_message(f, i);
      product_id(pid, sizeof pid, p);
      snprintf(idx, sizeof idx, "%d", i);
      rd_kafka_resp_err_t e;
      do {
        e = rd_kafka_producev(
            f->producer, RD_KAFKA_V_TOPIC(f->topic), RD_KAFKA_V_KEY(pid, strlen(pid)),
            RD_KAFKA_V_VALUE(f->expected[i], f->expected_len[i]), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADER("twin-test-index", idx, (ssize_t)strlen(idx)), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) rd_kafka_poll(f->producer, 100);
      } while (e == RD_KAFKA_RESP_ERR__QUEUE_FULL);
      if (e) fail_msg("producev: %s", rd_kafka_err2str(e));
      rd_kafka_poll(f->producer, 0);
    }
  }
  if (rd_kafka_flush(f->producer, TIMEOUT_MS)) fail_msg("flush timed out after %d ms", TIMEOUT_MS);
  assert_int_equal(f->delivery_errors, 0);
  assert_int_equal(f->delivered, N_MSGS);

  /* Consume through a consumer group, as the engine does. */
  char group[160];
  snprintf(group, sizeof group, "%s.group", f->topic);
  rd_kafka_conf_t *conf = base_conf();
  conf_set(conf, "group.id", group);
  conf_set(conf, "auto.offset.reset", "earliest");
  conf_set(conf, "enable.auto.commit", "false");
  conf_set(conf, "enable.partition.eof", "false");
  rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (!c) fail_msg("consumer: %s", err);
  rd_kafka_poll_set_consumer(c);
  rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(sub, f->topic, RD_KAFKA_PARTITION_UA);
  assert_int_equal(rd_kafka_subscribe(c, sub), 0);
  rd_kafka_topic_partition_list_destroy(sub);

  int seen[N_MSGS] = {0};
  int32_t partition_of[N_PRODUCTS];
  uint64_t last_seq[N_PRODUCTS][2] = {{0}};
  int got = 0;
  for (int p = 0; p < N_PRODUCTS; p++) partition_of[p] = -1;
  int64_t deadline = now_ms() + 60000;
  while (got < N_MSGS && now_ms() < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 500);
    if (!m) continue;
    if (m->err) {
      fail_msg("consume error: %s", rd_kafka_message_errstr(m));
    }
    Twin__V1__Envelope *env = twin__v1__envelope__unpack(NULL, m->len, m->payload);
    if (!env) fail_msg("message at %s [%d] @%" PRId64 " does not decode", f->topic, m->partition, m->offset);
    /* key == product_id */
    assert_int_equal(m->key_len, strlen(env->product_id));
    assert_memory_equal(m->key, env->product_id, m->key_len);
    int p = atoi(env->product_id + strlen("WVWZZZ1JZTEST"));
    assert_in_range(p, 0, N_PRODUCTS - 1);
    int i = p * N_PER_PRODUCT + (int)env->seq - 1;
    assert_in_range(i, 0, N_MSGS - 1);
    /* The bytes are exactly what was produced. */
    assert_int_equal(m->len, f->expected_len[i]);
    assert_memory_equal(m->payload, f->expected[i], m->len);
    /* Header survives. */
    rd_kafka_headers_t *hdrs = NULL;
    const void *hv = NULL;
    size_t hlen = 0;
    assert_int_equal(rd_kafka_message_headers(m, &hdrs), 0);
    assert_int_equal(rd_kafka_header_get_last(hdrs, "twin-test-index", &hv, &hlen), 0);
    char idx[16];
    snprintf(idx, sizeof idx, "%d", i);
    assert_int_equal(hlen, strlen(idx));
    assert_memory_equal(hv, idx, hlen);
    /* Same key, same partition; per (product, source) seqs in order. */
    if (partition_of[p] < 0) partition_of[p] = m->partition;
    assert_int_equal(partition_of[p], m->partition);
    int src = strcmp(env->source, "dms") == 0;
    if (env->seq <= last_seq[p][src])
      fail_msg("product %d: seq %" PRIu64 " after %" PRIu64, p, env->seq, last_seq[p][src]);
    last_seq[p][src] = env->seq;
    /* A decoded payload has the fields we set. */
    if (env->payload_case == TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY) {
      assert_int_equal(env->telemetry->_odometer_km_case, TWIN__V1__TELEMETRY___ODOMETER_KM_ODOMETER_KM);
      assert_int_equal(env->telemetry->n_tire_pressure_kpa, 4);
    } else {
      assert_int_equal(env->payload_case, TWIN__V1__ENVELOPE__PAYLOAD_LIFECYCLE);
      assert_int_equal(env->lifecycle->kind, TWIN__V1__LIFECYCLE_KIND__SERVICE_VISIT);
    }
    if (seen[i]++) fail_msg("message %d delivered twice", i);
    got++;
    twin__v1__envelope__free_unpacked(env, NULL);
    rd_kafka_message_destroy(m);
  }
  if (got != N_MSGS) fail_msg("consumed %d of %d messages within 60 s", got, N_MSGS);

  /* Keys spread over more than one partition (the partitioner is in use). */
  int distinct = 0;
  for (int p = 0; p < N_PRODUCTS; p++) {
    int first = 1;
    for (int q = 0; q < p; q++) first &= partition_of[q] != partition_of[p];
    distinct += first;
  }
  assert_true(distinct > 1);

  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_produce_consume_envelopes, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
