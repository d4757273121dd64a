/* test_ui.c - the twin viewer in a real browser (headless Debian chromium
 * driven by playwright-core, tests/ui/viewer.test.mjs).
 *
 * Produces a seeded twin-sim fleet to the scenario's topics, starts
 * twin-engine with bearer tokens and its HTTP server on a free loopback
 * port, waits until the checkpoints cover every message, picks a twin with
 * active alerts and rejected timeline entries, and writes what its page must
 * show (expected.json, read from MongoDB). Then runs the browser script,
 * which searches the VIN by keyboard, enters the token, opens the twin and
 * asks (handshake file want-event) for a live event: this side produces a
 * telemetry Envelope with a new odometer reading for that product, waits
 * until MongoDB holds it, counts the fleet figures with MongoDB queries of
 * its own and answers (event-sent); the script watches the open page show
 * the new value without a reload and compares the fleet page with those
 * counts. Screenshots: $TWIN_TEST_UI_ARTIFACTS (build/ui-artifacts), the ones
 * the README shows are copied from there to docs/. Needs the local stack,
 * chromium and node >= 20; tests/ui/install.sh fetches playwright-core. */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <mongoc/mongoc.h>

#include "fixture.h"
#include "harness.h"
#include "twin/log.h"
#include "util.h"

#define TOKEN "it-ui-token-3c9a51"
#define PAGE 25 /* the viewer's search page size (web/app.js) */

static h_scenario_t g_s;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
  char cmd[4000];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  fprintf(stderr, "[test] %s\n", cmd);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void write_json(const char *path, const bson_t *doc) {
  char *j = bson_as_relaxed_extended_json(doc, NULL);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(j, f);
  fclose(f);
  bson_free(j);
}

/* The engine's "listening on http://127.0.0.1:PORT" line. */
static void base_url(const char *log, char *base, size_t cap) {
  if (!h_wait_engine_log("listening on http://", 60))
    fail_msg("the engine did not start its HTTP server (%s)", log);
  char *text = h_slurp(log);
  const char *p = strstr(text, "listening on http://");
  assert_non_null(p);
  p += strlen("listening on ");
  snprintf(base, cap, "%.*s", (int)strcspn(p, " "), p);
  free(text);
}

static bool timeline_has(const bson_t *doc, const char *kind, const char *status) {
  bson_iter_t it, a, e;
  if (!bson_iter_init_find(&it, doc, "timeline") || !bson_iter_recurse(&it, &a)) return false;
  while (bson_iter_next(&a)) {
    bool k = false, s = false;
    bson_iter_recurse(&a, &e);
    while (bson_iter_next(&e)) {
      if (!strcmp(bson_iter_key(&e), "kind")) k = !kind || !strcmp(bson_iter_utf8(&e, NULL), kind);
      if (!strcmp(bson_iter_key(&e), "status")) s = !status || !strcmp(bson_iter_utf8(&e, NULL), status);
    }
    if (k && s) return true;
  }
  return false;
}

static int active_alerts(const bson_t *doc) {
  bson_iter_t it, a;
  int n = 0;
  if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "alerts.active", &a) &&
      bson_iter_recurse(&a, &it))
    while (bson_iter_next(&it)) n++;
  return n;
}

static const char *str_at(const bson_t *doc, const char *path) {
  bson_iter_t it, d;
  if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, path, &d) && BSON_ITER_HOLDS_UTF8(&d))
    return bson_iter_utf8(&d, NULL);
  return NULL;
}

static double num_at(const bson_t *doc, const char *path) {
  bson_iter_t it, d;
  if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, path, &d) && BSON_ITER_HOLDS_NUMBER(&d))
    return bson_iter_as_double(&d);
  return NAN;
}

/* The twin the browser opens: in service, with build, delivery, service,
 * rejected entries and the most active alerts (ties: the smallest id). */
static bson_t *pick_twin(mongoc_collection_t *col) {
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort;
  BSON_APPEND_UTF8(&filter, "stage", "IN_SERVICE");
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
  BSON_APPEND_INT32(&sort, "_id", 1);
  bson_append_document_end(&opts, &sort);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, &opts, NULL);
  const bson_t *doc;
  bson_t *best = NULL;
  int best_n = 0;
  while (mongoc_cursor_next(cur, &doc)) {
    int n = active_alerts(doc);
    if (n > best_n && timeline_has(doc, NULL, "rejected") &&
        timeline_has(doc, "BUILD_COMPLETED", "applied") && timeline_has(doc, "DELIVERED", "applied") &&
        timeline_has(doc, "SERVICE_VISIT", "applied")) {
      if (best) bson_destroy(best);
      best = bson_copy(doc);
      best_n = n;
    }
  }
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  bson_destroy(&opts);
  if (!best) fail_msg("no twin in service with alerts, a rejected event, build, delivery and service visits");
  return best;
}

/* What the twin page must show: id, stage, timeline, one alert, the ids a
 * search for the first 9 characters finds (first page). */
static void write_twin_expectations(mongoc_collection_t *col, const bson_t *twin, const char *path) {
  const char *id = str_at(twin, "_id");
  char prefix[16];
  snprintf(prefix, sizeof prefix, "%.9s", id);
  bson_t x = BSON_INITIALIZER, ids, tl;
  BSON_APPEND_UTF8(&x, "vin", id);
  BSON_APPEND_UTF8(&x, "prefix", prefix);
  BSON_APPEND_UTF8(&x, "stage", str_at(twin, "stage"));
  BSON_APPEND_UTF8(&x, "alert_rule", str_at(twin, "alerts.active.0.rule"));
  BSON_APPEND_UTF8(&x, "alert_severity", str_at(twin, "alerts.active.0.severity"));
  /* Every id, compared here with strncmp: independent of the server's range query. */
  BSON_APPEND_ARRAY_BEGIN(&x, "prefix_ids", &ids);
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort, proj;
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
  BSON_APPEND_INT32(&sort, "_id", 1);
  bson_append_document_end(&opts, &sort);
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
  BSON_APPEND_INT32(&proj, "_id", 1);
  bson_append_document_end(&opts, &proj);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, &opts, NULL);
  const bson_t *doc;
  int n = 0;
  while (mongoc_cursor_next(cur, &doc) && n < PAGE) {
    const char *other = str_at(doc, "_id");
    if (other && !strncmp(other, prefix, strlen(prefix))) {
      char k[16];
      snprintf(k, sizeof k, "%d", n++);
      BSON_APPEND_UTF8(&ids, k, other);
    }
  }
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  bson_destroy(&opts);
  bson_append_array_end(&x, &ids);
  bson_iter_t it;
  assert_true(bson_iter_init_find(&it, twin, "timeline"));
  BSON_APPEND_ARRAY_BEGIN(&x, "timeline", &tl);
  bson_iter_t a, e;
  bson_iter_recurse(&it, &a);
  while (bson_iter_next(&a)) {
    bson_t entry;
    BSON_APPEND_DOCUMENT_BEGIN(&tl, bson_iter_key(&a), &entry);
    bson_iter_recurse(&a, &e);
    while (bson_iter_next(&e)) {
      const char *k = bson_iter_key(&e);
      if (!strcmp(k, "kind") || !strcmp(k, "status") || !strcmp(k, "reason"))
        bson_append_iter(&entry, k, -1, &e);
    }
    bson_append_document_end(&tl, &entry);
  }
  bson_append_array_end(&x, &tl);
  write_json(path, &x);
  fprintf(stderr, "[test] the browser opens %s (prefix %s, %d ids with it)\n", id, prefix, n);
  bson_destroy(&x);
}

static int64_t count(mongoc_collection_t *col, const bson_t *filter) {
  bson_error_t e;
  int64_t n = mongoc_collection_count_documents(col, filter, NULL, NULL, NULL, &e);
  if (n < 0) fail_msg("count_documents: %s", e.message);
  return n;
}

/* The fleet page's figures, each from its own MongoDB count (not the
 * engine's /v1/stats pass over the collection). */
static void fleet_expectations(mongoc_collection_t *col, bson_t *x) {
  static const char *const stages[] = {"NONE",       "ORDERED",   "IN_PRODUCTION", "BUILT",
                                       "IN_TRANSIT", "AT_DEALER", "IN_SERVICE",    "DECOMMISSIONED"};
  static const char *const rules[] = {"battery_health_low", "battery_temp_high", "brake_pad_low",
                                      "dtc_active",         "service_due",       "brake_wear_predicted",
                                      "recall_open"};
  static const double edges[] = {80, 82, 84, 86, 88, 90, 92, 94, 96, 98}; /* /v1/stats' bins */
  bson_t empty = BSON_INITIALIZER, sub, f;
  BSON_APPEND_INT64(x, "twins", count(col, &empty));
  BSON_APPEND_DOCUMENT_BEGIN(x, "by_stage", &sub);
  for (size_t i = 0; i < sizeof stages / sizeof stages[0]; i++) {
    bson_init(&f);
    BSON_APPEND_UTF8(&f, "stage", stages[i]);
    BSON_APPEND_INT64(&sub, stages[i], count(col, &f));
    bson_destroy(&f);
  }
  bson_append_document_end(x, &sub);
  BSON_APPEND_DOCUMENT_BEGIN(x, "alerts_by_rule", &sub);
  for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
    bson_init(&f);
    BSON_APPEND_UTF8(&f, "alerts.active.rule", rules[i]);
    int64_t n = count(col, &f);
    if (n) BSON_APPEND_INT64(&sub, rules[i], n);
    bson_destroy(&f);
  }
  bson_append_document_end(x, &sub);
  BSON_APPEND_ARRAY_BEGIN(x, "soh_bins", &sub);
  size_t nb = sizeof edges / sizeof edges[0] + 1;
  for (size_t b = 0; b < nb; b++) {
    bson_t range;
    bson_init(&f);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "battery_health.soh_pct", &range);
    if (b > 0) BSON_APPEND_DOUBLE(&range, "$gte", edges[b - 1]);
    if (b < nb - 1) BSON_APPEND_DOUBLE(&range, "$lt", edges[b]);
    bson_append_document_end(&f, &range);
    char k[8];
    snprintf(k, sizeof k, "%zu", b);
    BSON_APPEND_INT64(&sub, k, count(col, &f));
    bson_destroy(&f);
  }
  bson_append_array_end(x, &sub);
  bson_init(&f);
  BSON_APPEND_NULL(&f, "battery_health.soh_pct");
  BSON_APPEND_INT64(x, "soh_none", count(col, &f));
  bson_destroy(&f);

  /* Soonest brake_wear_predicted dates, first 10 (ties by id). */
  typedef struct {
    int64_t at;
    char id[300];
  } item_t;
  static item_t items[512];
  size_t n = 0;
  bson_init(&f);
  BSON_APPEND_UTF8(&f, "alerts.active.rule", "brake_wear_predicted");
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &f, NULL, NULL);
  const bson_t *doc;
  while (mongoc_cursor_next(cur, &doc) && n < 512) {
    for (int i = 0; i < 16; i++) {
      char path[64];
      snprintf(path, sizeof path, "alerts.active.%d.rule", i);
      const char *r = str_at(doc, path);
      if (!r) break;
      snprintf(path, sizeof path, "alerts.active.%d.predicted_at_ms", i);
      double at = num_at(doc, path);
      if (!strcmp(r, "brake_wear_predicted") && !isnan(at)) {
        items[n].at = (int64_t)at;
        snprintf(items[n].id, sizeof items[n].id, "%s", str_at(doc, "_id"));
        n++;
      }
    }
  }
  mongoc_cursor_destroy(cur);
  bson_destroy(&f);
  for (size_t i = 1; i < n; i++) /* insertion sort by (at, id) */
    for (size_t j = i; j > 0 && (items[j].at < items[j - 1].at || (items[j].at == items[j - 1].at &&
                                                                   strcmp(items[j].id, items[j - 1].id) < 0));
         j--) {
      item_t t = items[j];
      items[j] = items[j - 1];
      items[j - 1] = t;
    }
  BSON_APPEND_ARRAY_BEGIN(x, "brake_ids", &sub);
  for (size_t i = 0; i < n && i < 10; i++) {
    char k[8];
    snprintf(k, sizeof k, "%zu", i);
    BSON_APPEND_UTF8(&sub, k, items[i].id);
  }
  bson_append_array_end(x, &sub);
  bson_destroy(&empty);
}

/* A telemetry Envelope with a new odometer reading, as a TCU would send it. */
static double produce_live_event(mongoc_collection_t *col, const char *id) {
  bson_t filter = BSON_INITIALIZER, doc = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&filter, "_id", id);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, NULL, NULL);
  const bson_t *d;
  assert_true(mongoc_cursor_next(cur, &d));
  bson_copy_to(d, &doc);
  mongoc_cursor_destroy(cur);
  bson_iter_t it;
  assert_true(bson_iter_init_find(&it, &doc, "last_event_ms"));
  int64_t t = bson_iter_as_int64(&it) + 60000;
  double odo = floor(num_at(&doc, "telemetry.odometer_km.value")) + 2; /* shows as another whole km */
  assert_false(isnan(odo));
  char json[600], err[256];
  snprintf(json, sizeof json,
           "{\"product_id\": \"%s\", \"source\": \"ui-test\", \"seq\": 1, \"t\": %lld, "
           "\"telemetry\": {\"odometer_km\": %.1f}}",
           id, (long long)t, odo);
  bson_error_t be;
  bson_t *ev = bson_new_from_json((const uint8_t *)json, -1, &be);
  assert_non_null(ev);
  size_t len;
  uint8_t *bytes = tw_fixture_encode(ev, NULL, &len, err, sizeof err);
  if (!bytes) fail_msg("encode: %s", err);

  rd_kafka_conf_t *c = rd_kafka_conf_new();
  rd_kafka_conf_set(c, "bootstrap.servers", g_s.bootstrap, err, sizeof err);
  rd_kafka_conf_set(c, "partitioner", "murmur2_random", err, sizeof err); /* as twin-sim: same partition */
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof err);
  assert_non_null(rk);
  rd_kafka_resp_err_t e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(g_s.telemetry),
                                            RD_KAFKA_V_KEY(id, strlen(id)), RD_KAFKA_V_VALUE(bytes, len),
                                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
  if (e) fail_msg("produce: %s", rd_kafka_err2str(e));
  if (rd_kafka_flush(rk, 30000)) fail_msg("producer flush timed out");
  rd_kafka_destroy(rk);
  free(bytes);
  bson_destroy(ev);
  bson_destroy(&filter);
  bson_destroy(&doc);
  fprintf(stderr, "[test] produced odometer_km %.1f for %s to %s\n", odo, id, g_s.telemetry);
  return odo;
}

/* Waits until MongoDB holds the new reading (the engine applied and flushed it). */
static void wait_stored(mongoc_collection_t *col, const char *id, double odo) {
  for (int i = 0; i < 600; i++) {
    bson_t f = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_DOUBLE(&f, "telemetry.odometer_km.value", odo);
    int64_t n = count(col, &f);
    bson_destroy(&f);
    if (n == 1) return;
    usleep(100000);
  }
  fail_msg("the new odometer reading of %s is not in MongoDB after 60 s", id);
}

static void test_viewer(void **state) {
  (void)state;
  h_scenario_init(&g_s, "ui", 4);
  const char *sim[] = {"--seed",       "33",   "--products", "40",   "--events", "12000",
                       "--duplicates", "0.01", "--invalid",  "0.02", "--quiet",  NULL};
  h_run_sim(&g_s, sim);
  const char *extra[] = {"http.tokens=" TOKEN, "snapshot.interval.ms=200", NULL};
  pid_t engine = h_engine_start(&g_s, 2, extra);
  char log[400], base[128];
  snprintf(log, sizeof log, "%s/engine-0.log", g_s.logdir);
  base_url(log, base, sizeof base);
  assert_true(h_wait_caught_up(&g_s, 180));

  mongoc_client_t *mc = mongoc_client_new(g_s.mongo_uri);
  mongoc_collection_t *col = mongoc_client_get_collection(mc, g_s.database, "twins");
  bson_t *twin = pick_twin(col);
  char expect[400], hs[400], want[450], sent[450], out[400];
  snprintf(expect, sizeof expect, "%s/expected.json", g_s.logdir);
  snprintf(hs, sizeof hs, "%s/handshake", g_s.logdir);
  mkdir(hs, 0755);
  snprintf(want, sizeof want, "%s/want-event", hs);
  snprintf(sent, sizeof sent, "%s/event-sent", hs);
  write_twin_expectations(col, twin, expect);
  const char *art = getenv("TWIN_TEST_UI_ARTIFACTS");
  snprintf(out, sizeof out, "%s", art && *art ? art : g_s.logdir);

  assert_int_equal(sh("%s/tests/ui/install.sh", g_s.source_dir), 0);
  char script[400];
  snprintf(script, sizeof script, "%s/tests/ui/viewer.test.mjs", g_s.source_dir);
  pid_t node = fork();
  assert_true(node >= 0);
  if (node == 0) {
    execlp("node", "node", script, "--base", base, "--token", TOKEN, "--expect", expect, "--out", out,
           "--handshake", hs, (char *)NULL);
    _exit(127);
  }
  int st = 0;
  bool answered = false, done = false;
  for (int i = 0; i < 3000 && !done; i++) { /* 300 s */
    if (waitpid(node, &st, WNOHANG) == node) {
      done = true;
      break;
    }
    if (!answered && access(want, F_OK) == 0) {
      answered = true;
      const char *id = str_at(twin, "_id");
      int64_t produced_ms = tw_now_ms();
      double odo = produce_live_event(col, id);
      wait_stored(col, id, odo);
      bson_t x = BSON_INITIALIZER;
      BSON_APPEND_DOUBLE(&x, "odometer_km", odo);
      BSON_APPEND_INT64(&x, "produced_at_ms", produced_ms);
      fleet_expectations(col, &x);
      char tmp[460];
      snprintf(tmp, sizeof tmp, "%s.tmp", sent);
      write_json(tmp, &x);
      rename(tmp, sent); /* the script never reads a half-written file */
      bson_destroy(&x);
    }
    usleep(100000);
  }
  if (!done) {
    kill(node, SIGKILL);
    waitpid(node, &st, 0);
  }
  bson_destroy(twin);
  mongoc_collection_destroy(col);
  mongoc_client_destroy(mc);
  assert_int_equal(h_engine_stop(engine, SIGTERM), 0);
  if (!done) fail_msg("the browser test did not finish within 300 s");
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail_msg("viewer.test.mjs failed (exit %d)", WEXITSTATUS(st));
  assert_true(answered);
  for (int i = 0; i < 2; i++) {
    char png[460];
    snprintf(png, sizeof png, "%s/%s", out, i ? "viewer-fleet.png" : "viewer-twin.png");
    struct stat sb;
    if (stat(png, &sb) != 0 || sb.st_size < 10000) fail_msg("screenshot %s is missing or tiny", png);
    fprintf(stderr, "[test] screenshot %s (%lld bytes)\n", png, (long long)sb.st_size);
  }
  h_scenario_cleanup(&g_s);
}

int main(void) {
  mongoc_init();
  tw_log_route_mongoc();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_viewer)};
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  mongoc_cleanup();
  return rc;
}
