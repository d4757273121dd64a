/* test_alerts.c - maintenance alerts end to end: fixtures and a simulated
 * fleet go through the real broker, the real engine and FerretDB; a
 * consumer of the alerts topic decodes each message with the generated
 * protobuf code (twin__v1__maintenance_alert__unpack), as a real consumer.
 *
 * Alert transitions depend on the order in which a product's events are
 * applied, and the engine reads the telemetry and lifecycle topics side by
 * side. So the scenarios produce in phases (a run of one topic's events,
 * then wait until the engine has checkpointed it), which fixes the order
 * the expected alerts are computed in. */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>

#include "fixture.h"
#include "harness.h"
#include "twin/record.h"
#include "twin/rules.h"

#define DAY 86400000LL

static unsigned g_seed;

static void msleep(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int rnd(int lo, int hi) { return lo + (int)(rand_r(&g_seed) % (unsigned)(hi - lo + 1)); }

/* ---- Producing --------------------------------------------------------------- */

static rd_kafka_t *producer(const h_scenario_t *s) {
  char err[512];
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  rd_kafka_conf_set(c, "bootstrap.servers", s->bootstrap, err, sizeof err);
  rd_kafka_conf_set(c, "partitioner", "murmur2_random", err, sizeof err);
  rd_kafka_conf_set(c, "enable.idempotence", "true", err, sizeof err);
  rd_kafka_conf_set(c, "linger.ms", "5", err, sizeof err);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof err);
  if (!rk) fail_msg("producer: %s", err);
  return rk;
}

static void produce(rd_kafka_t *rk, const char *topic, const void *key, size_t key_len, const void *val,
                    size_t len) {
  for (;;) {
    rd_kafka_resp_err_t err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len),
                                                RD_KAFKA_V_VALUE((void *)val, len),
                                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    if (!err) return;
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) fail_msg("produce to %s: %s", topic, rd_kafka_err2str(err));
    rd_kafka_poll(rk, 10);
  }
}

static void flush_producer(rd_kafka_t *rk) {
  if (rd_kafka_flush(rk, 30000)) fail_msg("producer flush timed out");
}

/* ---- Consuming the alerts topic: h_read_alerts (harness) -------------------- */

/* The alerts of one product, in topic order (one product = one partition). */
static size_t product_alerts(const h_alerts_t *a, const char *pid, const bson_t **out, size_t cap) {
  size_t n = 0;
  for (size_t i = 0; i < a->n && n < cap; i++)
    if (strcmp(h_doc_str(a->docs[i], "product_id"), pid) == 0) out[n++] = a->docs[i];
  return n;
}

/* ---- 1. Golden fixtures through Kafka ---------------------------------------- */

typedef struct {
  char name[256];
  bson_t *fx;
  const char *pid;
  bson_iter_t events; /* positioned inside the events array */
  bool done;
} fx_t;

/* Produces the fixture's next run of events of one topic; false when none. */
static bool produce_run(rd_kafka_t *rk, const h_scenario_t *s, fx_t *f) {
  if (f->done) return false;
  int topic = -1;
  bool any = false;
  for (;;) {
    bson_iter_t peek = f->events;
    if (!bson_iter_next(&peek)) {
      f->done = true;
      break;
    }
    uint32_t len;
    const uint8_t *data;
    bson_iter_document(&peek, &len, &data);
    bson_t ev;
    bson_init_static(&ev, data, len);
    bson_iter_t k;
    int t = bson_iter_init_find(&k, &ev, "lifecycle") ? 1 : 0;
    if (topic >= 0 && t != topic) break;
    topic = t;
    char err[512];
    size_t blen;
    uint8_t *buf = tw_fixture_encode(&ev, f->pid, &blen, err, sizeof err);
    if (!buf) fail_msg("%s: %s", f->name, err);
    produce(rk, t ? s->lifecycle : s->telemetry, f->pid, strlen(f->pid), buf, blen);
    free(buf);
    f->events = peek;
    any = true;
  }
  return any;
}

/* A wear curve with known truth: the thinnest pad loses 0.02 mm a day from
 * 9.0 mm with ±0.05 mm sensor noise, so it reaches 3.0 mm on day 300. The
 * samples stop on day 290, before the pad itself gets near 3.0 mm. */
#define WEAR_PID "VIN0WEARKAFKA0001"
#define WEAR_T0 1767225600000LL
#define WEAR_TRUTH (WEAR_T0 + 300 * DAY)

static void produce_wear_curve(rd_kafka_t *rk, const h_scenario_t *s) {
  uint64_t x = 7;
  for (int h = 0; h < 290 * 4; h++) {
    double d = h / 4.0;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    double noise = ((double)(x >> 11) * 0x1.0p-53 - 0.5) * 0.1;
    double pad = 9.0 - 0.02 * d + noise;
    double pads[4] = {pad, pad + 0.5, pad + 1.0, pad + 1.2};
    Twin__V1__Envelope env = TWIN__V1__ENVELOPE__INIT;
    Twin__V1__Telemetry tm = TWIN__V1__TELEMETRY__INIT;
    env.product_id = WEAR_PID;
    env.source = "tcu";
    env.seq = (uint64_t)h + 1;
    env.event_time_ms = WEAR_T0 + (int64_t)(d * DAY);
    env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY;
    env.telemetry = &tm;
    tm.n_brake_pad_mm = 4;
    tm.brake_pad_mm = pads;
    tm._odometer_km_case = TWIN__V1__TELEMETRY___ODOMETER_KM_ODOMETER_KM;
    tm.odometer_km = 35.0 * d;
    uint8_t buf[256];
    size_t len = twin__v1__envelope__pack(&env, buf);
    produce(rk, s->telemetry, WEAR_PID, strlen(WEAR_PID), buf, len);
  }
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void test_golden_through_kafka(void **state) {
  (void)state;
  h_scenario_t s;
  h_scenario_init(&s, "alerts_golden", 4);

  /* The fixtures' custom rule joins the built-ins through a config file. */
  char cfg[400];
  snprintf(cfg, sizeof cfg, "%s/engine.yaml", s.logdir);
  FILE *cf = fopen(cfg, "w");
  assert_non_null(cf);
  fputs("alerts:\n"
        "  rules:\n"
        "    - id: coolant_hot\n"
        "      severity: CRITICAL\n"
        "      condition: metrics.coolant_temp_c > 110\n"
        "      clear: metrics.coolant_temp_c < 100\n"
        "      message: \"Coolant at {value} degC on {product_id}\"\n"
        "      clear_message: \"Coolant back to {value} degC\"\n",
        cf);
  fclose(cf);
  setenv("TWIN_CONFIG", cfg, 1);
  pid_t e = h_engine_start(&s, 2, NULL);
  unsetenv("TWIN_CONFIG");
  assert_true(h_wait_engine_log("8 alert rules", 30));

  char dir[1200];
  snprintf(dir, sizeof dir, "%s/tests/fixtures/alerts", s.source_dir);
  DIR *d = opendir(dir);
  assert_non_null(d);
  char *names[64];
  size_t nn = 0;
  struct dirent *de;
  while ((de = readdir(d)) && nn < 64) {
    size_t l = strlen(de->d_name);
    if (l > 5 && strcmp(de->d_name + l - 5, ".json") == 0) names[nn++] = strdup(de->d_name);
  }
  closedir(d);
  qsort(names, nn, sizeof *names, cmp_names);
  fx_t *fx = calloc(nn, sizeof *fx);
  size_t expected_total = 0;
  for (size_t i = 0; i < nn; i++) {
    char path[1400], err[512];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    snprintf(fx[i].name, sizeof fx[i].name, "%s", names[i]);
    fx[i].fx = tw_fixture_load_json(path, err, sizeof err);
    if (!fx[i].fx) fail_msg("%s", err);
    fx[i].pid = h_doc_str(fx[i].fx, "product_id");
    bson_iter_t it;
    assert_true(bson_iter_init_find(&it, fx[i].fx, "events"));
    bson_iter_recurse(&it, &fx[i].events);
    assert_true(bson_iter_init_find(&it, fx[i].fx, "alerts"));
    bson_iter_t a;
    bson_iter_recurse(&it, &a);
    while (bson_iter_next(&a)) expected_total++;
  }

  rd_kafka_t *rk = producer(&s);
  produce_wear_curve(rk, &s);
  int phase = 0;
  for (;;) {
    bool any = false;
    for (size_t i = 0; i < nn; i++) any |= produce_run(rk, &s, &fx[i]);
    if (!any) break;
    flush_producer(rk);
    assert_true(h_wait_caught_up(&s, 90));
    phase++;
  }
  fprintf(stderr, "[test] %zu fixtures produced in %d phases\n", nn, phase);

  h_alerts_t got;
  h_read_alerts(&s, expected_total + 1, 3000, 90, &got);
  assert_int_equal(got.bad_key, 0);
  for (size_t i = 0; i < nn; i++) {
    const bson_t *mine[64];
    size_t n = product_alerts(&got, fx[i].pid, mine, 64);
    bson_iter_t it, a;
    bson_iter_init_find(&it, fx[i].fx, "alerts");
    bson_iter_recurse(&it, &a);
    size_t k = 0;
    while (bson_iter_next(&a)) {
      uint32_t len;
      const uint8_t *data;
      bson_iter_document(&a, &len, &data);
      bson_t want;
      bson_init_static(&want, data, len);
      if (k >= n) fail_msg("%s: only %zu alerts on the topic, expected more", fx[i].name, n);
      char why[512];
      if (!tw_bson_equal(&want, mine[k], why, sizeof why)) {
        char *j = bson_as_relaxed_extended_json(mine[k], NULL);
        fprintf(stderr, "got: %s\n", j);
        bson_free(j);
        fail_msg("%s: alert %zu differs: %s", fx[i].name, k, why);
      }
      k++;
    }
    if (k != n) fail_msg("%s: %zu alerts on the topic, expected %zu", fx[i].name, n, k);
    fprintf(stderr, "[test] %s: %zu alerts as expected\n", fx[i].name, n);
  }

  /* The predicted date of the wear curve: within 5 % of the time left. */
  const bson_t *wear[8];
  size_t nw = product_alerts(&got, WEAR_PID, wear, 8);
  assert_int_equal(nw, 1);
  assert_string_equal(h_doc_str(wear[0], "rule_id"), "brake_wear_predicted");
  assert_string_equal(h_doc_str(wear[0], "state"), "RAISED");
  bson_iter_t it;
  assert_true(bson_iter_init_find(&it, wear[0], "predicted_at_ms"));
  int64_t pred = bson_iter_int64(&it);
  assert_true(bson_iter_init_find(&it, wear[0], "event_time_ms"));
  int64_t raised = bson_iter_int64(&it);
  double frac = fabs((double)(pred - WEAR_TRUTH)) / (double)(WEAR_TRUTH - raised);
  fprintf(stderr, "[test] wear curve: raised on day %.2f, predicted day %.3f (truth 300): error %.2f %%\n",
          (double)(raised - WEAR_T0) / DAY, (double)(pred - WEAR_T0) / DAY, frac * 100);
  assert_true(frac <= 0.05);
  assert_true(got.n == expected_total + 1);

  /* twinctl alerts shows the same alerts: every one as JSON, and a table. */
  char cmd[1600];
  snprintf(
      cmd, sizeof cmd,
      "%s/twinctl alerts --brokers %s --topic %s --json > %s/alerts.jsonl && "
      "test $(wc -l < %s/alerts.jsonl) -eq %zu && "
      "grep -c '\"rule_id\" : \"brake_wear_predicted\"' %s/alerts.jsonl | grep -qx 3 && "
      "%s/twinctl alerts --brokers %s --topic %s --product VIN0ALERT00000002 | grep -c 'battery_temp_high' "
      "| grep -qx 4",
      s.bin_dir, s.bootstrap, s.alerts, s.logdir, s.logdir, expected_total + 1, s.logdir, s.bin_dir,
      s.bootstrap, s.alerts);
  if (system(cmd) != 0) fail_msg("twinctl alerts output is not as expected: %s", cmd);

  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  rd_kafka_destroy(rk);
  h_alerts_free(&got);
  for (size_t i = 0; i < nn; i++) {
    bson_destroy(fx[i].fx);
    free(names[i]);
  }
  free(fx);
  h_scenario_cleanup(&s);
}

/* ---- 2. kill -9 during a fleet's stream: each transition exactly once --------- */

/* Replays the record in the order it is produced below (every lifecycle
 * event, then every telemetry event) through the reducer and the rules. */
static void expected_transitions(const h_scenario_t *s, tw_alert_list_t *out) {
  char err[512];
  tw_rules_t *rules = tw_rules_compile(true, NULL, 0, err, sizeof err);
  assert_non_null(rules);
  tw_map_t twins;
  tw_map_init(&twins);
  bson_init(&out->arr);
  out->n = 0;
  for (int pass = 0; pass < 2; pass++) {
    const char *topic = pass == 0 ? s->lifecycle : s->telemetry;
    tw_record_reader_t *r;
    if (!tw_record_reader_open(s->record, &r, err, sizeof err)) fail_msg("%s", err);
    for (;;) {
      tw_record_t rec;
      bool eof;
      if (!tw_record_reader_next(r, &rec, &eof, err, sizeof err)) fail_msg("%s", err);
      if (eof) break;
      if (strcmp(rec.topic, topic) != 0) continue;
      Twin__V1__Envelope *env = twin__v1__envelope__unpack(NULL, rec.value_len, rec.value);
      if (!env || !tw_envelope_validate(env, rec.key, rec.key_len, err, sizeof err)) {
        if (env) twin__v1__envelope__free_unpacked(env, NULL);
        continue;
      }
      tw_apply_event(rules, tw_map_get_or_new(&twins, env->product_id, 64), env, NULL, tw_alert_list_add,
                     out);
      twin__v1__envelope__free_unpacked(env, NULL);
    }
    tw_record_reader_close(r);
  }
  tw_map_cleanup(&twins, true);
  tw_rules_destroy(rules);
}

/* Produces the record's messages of one topic: all of them (chunks = 1) or
 * the part [k/chunks, (k+1)/chunks) of them. */
static void produce_topic_from_record(rd_kafka_t *rk, const h_scenario_t *s, const char *topic, int k,
                                      int chunks) {
  tw_record_reader_t *r;
  char err[512];
  size_t total = 0, i = 0;
  for (int pass = 0; pass < 2; pass++) {
    if (!tw_record_reader_open(s->record, &r, err, sizeof err)) fail_msg("%s", err);
    for (;;) {
      tw_record_t rec;
      bool eof;
      if (!tw_record_reader_next(r, &rec, &eof, err, sizeof err)) fail_msg("%s", err);
      if (eof) break;
      if (strcmp(rec.topic, topic) != 0) continue;
      if (pass == 0) {
        total++;
        continue;
      }
      if (i * chunks / total == (size_t)k) produce(rk, topic, rec.key, rec.key_len, rec.value, rec.value_len);
      i++;
    }
    tw_record_reader_close(r);
  }
  flush_producer(rk);
}

/* Messages on the alerts topic so far (sum of the partitions' end offsets). */
static int64_t alerts_end_total(const h_scenario_t *s) {
  rd_kafka_t *rk = producer(s);
  int64_t sum = 0;
  for (int p = 0; p < s->partitions; p++) {
    int64_t lo, hi;
    rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(rk, s->alerts, p, &lo, &hi, 10000);
    if (err) fail_msg("watermarks %s[%d]: %s", s->alerts, p, rd_kafka_err2str(err));
    sum += hi;
  }
  rd_kafka_destroy(rk);
  return sum;
}

static void test_crash_dedupe(void **state) {
  (void)state;
  h_scenario_t s;
  h_scenario_init(&s, "alerts_crash", 4);
  const char *sim[] = {"--no-kafka",   "--seed", "21",        "--products", "120",     "--events", "40000",
                       "--duplicates", "0.01",   "--reorder", "0.01",       "--quiet", NULL};
  h_run_sim(&s, sim);
  tw_alert_list_t want;
  expected_transitions(&s, &want);
  fprintf(stderr, "[test] the record gives %u alert transitions\n", want.n);
  assert_true(want.n >= 50);

  rd_kafka_t *rk = producer(&s);
  /* Snapshots every 8 s: alerts reach Kafka at once, so most kills fall
   * between an alert and the snapshot that records it (those alerts are sent
   * again after the restart), some after it. */
  const char *slow[] = {"snapshot.interval.ms=8000", NULL};
  pid_t e = h_engine_start(&s, 2, slow);
  produce_topic_from_record(rk, &s, s.lifecycle, 0, 1);
  assert_true(h_wait_caught_up(&s, 120));
  /* The telemetry in chunks, each cut short by a kill -9 at a random point
   * of its consumption (or of a flush), then a restart. */
  const int chunks = 6;
  for (int k = 0; k < chunks; k++) {
    assert_true(h_wait_engine_log("assigned", 60));
    int64_t before = alerts_end_total(&s);
    produce_topic_from_record(rk, &s, s.telemetry, k, chunks);
    /* Kill once this incarnation has sent alerts, so some are on the topic
     * that no snapshot or checkpoint covers yet. */
    for (int i = 0; i < 600 && alerts_end_total(&s) == before; i++) msleep(50);
    int ms = rnd(0, 6000);
    msleep(ms);
    h_engine_stop(e, SIGKILL);
    fprintf(
        stderr,
        "[test] kill -9 #%d %d ms after the first alert of chunk %d: checkpoints %lld of %lld, %lld alerts\n",
        k + 1, ms, k + 1, (long long)h_checkpoints_total(&s), (long long)h_end_offsets_total(&s),
        (long long)alerts_end_total(&s));
    e = h_engine_start(&s, 2, slow);
  }
  assert_true(h_wait_engine_log("assigned", 60));
  assert_true(h_wait_caught_up(&s, 300));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);

  h_alerts_t got;
  h_read_alerts(&s, want.n, 3000, 120, &got);
  assert_int_equal(got.bad_key, 0);
  /* Deduplicate by (alert_id, state), keeping the first copy. */
  size_t unique = 0, dups = 0;
  bool *keep = calloc(got.n + 1, sizeof *keep);
  for (size_t i = 0; i < got.n; i++) {
    bool seen = false;
    for (size_t j = 0; j < i && !seen; j++)
      seen = keep[j] && strcmp(h_doc_str(got.docs[i], "alert_id"), h_doc_str(got.docs[j], "alert_id")) == 0 &&
             strcmp(h_doc_str(got.docs[i], "state"), h_doc_str(got.docs[j], "state")) == 0;
    keep[i] = !seen;
    if (seen) {
      dups++;
      continue;
    }
    unique++;
  }
  fprintf(stderr, "[test] %zu alerts on the topic: %zu unique transitions, %zu repeated after kill -9\n",
          got.n, unique, dups);
  /* Every expected transition once, with the same content; nothing else. */
  size_t matched = 0;
  bson_iter_t it;
  bson_iter_init(&it, &want.arr);
  while (bson_iter_next(&it)) {
    uint32_t len;
    const uint8_t *data;
    bson_iter_document(&it, &len, &data);
    bson_t w;
    bson_init_static(&w, data, len);
    size_t found = 0;
    for (size_t i = 0; i < got.n; i++) {
      if (!keep[i] || strcmp(h_doc_str(&w, "alert_id"), h_doc_str(got.docs[i], "alert_id")) != 0 ||
          strcmp(h_doc_str(&w, "state"), h_doc_str(got.docs[i], "state")) != 0)
        continue;
      char why[512];
      if (!tw_bson_equal(&w, got.docs[i], why, sizeof why))
        fail_msg("%s %s differs: %s", h_doc_str(&w, "alert_id"), h_doc_str(&w, "state"), why);
      found++;
    }
    if (found != 1)
      fail_msg("%s %s: found %zu times", h_doc_str(&w, "alert_id"), h_doc_str(&w, "state"), found);
    matched++;
  }
  assert_int_equal(matched, want.n);
  assert_int_equal(unique, want.n);
  assert_true(dups > 0); /* the kills did hit between an alert and its snapshot */

  /* The twins, their active alerts included, are exact too. */
  h_expected_t ex;
  h_expected_build(&s, 64, &ex);
  assert_int_equal(h_compare_store(&s, &ex), 0);
  h_expected_cleanup(&ex);

  free(keep);
  h_alerts_free(&got);
  bson_destroy(&want.arr);
  rd_kafka_destroy(rk);
  h_scenario_cleanup(&s);
}

int main(void) {
  const char *seed = getenv("TWIN_TEST_SEED");
  g_seed = seed ? (unsigned)atoi(seed) : (unsigned)time(NULL);
  fprintf(stderr, "[test] seed %u (TWIN_TEST_SEED=%u to repeat)\n", g_seed, g_seed);
  srand(g_seed);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_golden_through_kafka),
      cmocka_unit_test(test_crash_dedupe),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
