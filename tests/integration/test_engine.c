/* test_engine.c - twin-engine end to end on the real broker and FerretDB.
 *
 * Every scenario produces a seeded twin-sim fleet to its own topics, runs
 * the real engine binary, and ends by comparing every stored twin with the
 * state computed independently from the simulator's record (and with the
 * simulator's truth file): none missing, none extra, no event applied twice.
 * Crash points and delays come from a seed printed at the start, so a
 * failure can be replayed with TWIN_TEST_SEED. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <mongoc/mongoc.h>

#include "harness.h"
#include "twin/log.h"

static unsigned g_seed;

static void msleep(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int rnd(int lo, int hi) { return lo + (int)(rand_r(&g_seed) % (unsigned)(hi - lo + 1)); }

static void expect_exact(const h_scenario_t *s) {
  h_expected_t e;
  h_expected_build(s, 64, &e);
  assert_true(e.twins.len > 0);
  assert_int_equal(h_compare_store(s, &e), 0);
  assert_int_equal(h_check_truth(s), 0);
  h_expected_cleanup(&e);
}

/* 1. Duplicates, reordering, late and impossible events: exact end state. */
static void test_exact_state(void **state) {
  (void)state;
  h_scenario_t s;
  h_scenario_init(&s, "exact", 4);
  const char *sim[] = {"--seed",       "11",   "--products", "300",  "--events", "30000",
                       "--duplicates", "0.02", "--reorder",  "0.02", "--late",   "0.005",
                       "--invalid",    "0.01", "--quiet",    NULL};
  h_run_sim(&s, sim);
  pid_t e = h_engine_start(&s, 2, NULL);
  assert_true(h_wait_caught_up(&s, 120));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  expect_exact(&s);

  /* Every stored twin, as twinctl prints it, matches schemas/twin.schema.json
   * for an independent validator. */
  char cmd[1200];
  snprintf(cmd, sizeof cmd,
           "%s/twinctl --database %s list --json --limit 10000 > %s/twins.jsonl && "
           "/usr/bin/python3 %s/tests/tools/validate_schema.py %s/schemas/twin.schema.json %s/twins.jsonl",
           s.bin_dir, s.database, s.logdir, s.source_dir, s.source_dir, s.logdir);
  assert_int_equal(system(cmd), 0);

  /* twinctl get: the stored twin as JSON; an unknown id exits 1. */
  snprintf(cmd, sizeof cmd,
           "id=$(head -1 %s/twins.jsonl | sed 's/^{ \"_id\" : \"\\([^\"]*\\)\".*/\\1/') && "
           "%s/twinctl --database %s get --json \"$id\" | grep -q \"\\\"_id\\\" : \\\"$id\\\"\"",
           s.logdir, s.bin_dir, s.database);
  assert_int_equal(system(cmd), 0);
  snprintf(cmd, sizeof cmd, "%s/twinctl --database %s get NO-SUCH-VIN >/dev/null 2>&1; test $? -eq 1",
           s.bin_dir, s.database);
  assert_int_equal(system(cmd), 0);
  h_scenario_cleanup(&s);
}

/* 4. Garbage and duplicates: every garbage message in the DLQ with its
 * reason and origin, every good event applied once. */
static void test_garbage_to_dlq(void **state) {
  (void)state;
  h_scenario_t s;
  h_scenario_init(&s, "garbage", 4);
  const char *sim[] = {"--seed",    "12",   "--products",   "200",  "--events", "20000",
                       "--garbage", "0.01", "--duplicates", "0.01", "--quiet",  NULL};
  h_run_sim(&s, sim);
  pid_t e = h_engine_start(&s, 2, NULL);
  assert_true(h_wait_caught_up(&s, 120));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  h_expected_t ex;
  h_expected_build(&s, 64, &ex);
  assert_true(ex.garbage > 50);
  int64_t bad = 0;
  int64_t dlq = h_count_dlq(&s, &bad);
  fprintf(stderr, "[test] garbage sent %llu, DLQ holds %lld\n", (unsigned long long)ex.garbage,
          (long long)dlq);
  assert_int_equal(dlq, (int64_t)ex.garbage);
  assert_int_equal(bad, 0);
  assert_int_equal(h_compare_store(&s, &ex), 0);
  assert_int_equal(h_check_truth(&s), 0);
  h_expected_cleanup(&ex);
  h_scenario_cleanup(&s);
}

/* 3. kill -9 at random points while consuming; restart each time. */
static void test_crash_kill9(void **state) {
  (void)state;
  h_scenario_t s;
  h_scenario_init(&s, "crash", 6);
  /* TWIN_TEST_CRASH_EVENTS: a shorter stream for slow builds (TSan in run-all.sh). */
  const char *events = getenv("TWIN_TEST_CRASH_EVENTS") ? getenv("TWIN_TEST_CRASH_EVENTS") : "150000";
  const char *sim[] = {"--seed",       "13",    "--products", "2000", "--events",  events,
                       "--duplicates", "0.01",  "--reorder",  "0.01", "--invalid", "0.005",
                       "--garbage",    "0.002", "--quiet",    NULL};
  h_run_sim(&s, sim);
  int64_t end = h_end_offsets_total(&s);
  for (int round = 0; round < 5; round++) {
    pid_t e = h_engine_start(&s, 2, (const char *const[]){"snapshot.interval.ms=300", NULL});
    /* Kill while it consumes: after it has partitions, at a random point. */
    assert_true(h_wait_engine_log("assigned", 90));
    int wait_ms = rnd(200, 8000);
    msleep(wait_ms);
    fprintf(stderr, "[test] kill -9 after %d ms: checkpoints at %lld of %lld\n", wait_ms,
            (long long)h_checkpoints_total(&s), (long long)end);
    h_engine_stop(e, SIGKILL);
  }
  pid_t e = h_engine_start(&s, 2, NULL);
  assert_true(h_wait_caught_up(&s, 180));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  expect_exact(&s);
  h_scenario_cleanup(&s);
}

/* 2. Determinism: an uninterrupted run and a run restarted (kill -9) at a
 * random point, on the same topics, store byte-identical twins. */
static void collect_hashes(const h_scenario_t *s, uint64_t *sum, size_t *n) {
  mongoc_client_t *c = mongoc_client_new(s->mongo_uri);
  mongoc_collection_t *col = mongoc_client_get_collection(c, s->database, "twins");
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj;
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
  BSON_APPEND_INT32(&proj, "updated_at", 0);
  /* Alerts that combine telemetry and lifecycle state depend on how the two
   * topics interleave; expect_exact compares the others. */
  BSON_APPEND_INT32(&proj, "alerts", 0);
  bson_append_document_end(&opts, &proj);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, &opts, NULL);
  const bson_t *doc;
  *sum = 0;
  *n = 0;
  while (mongoc_cursor_next(cur, &doc)) {
    /* Stored bytes, minus updated_at, hashed per document and summed so the
     * order documents come back in does not matter. */
    uint64_t h = UINT64_C(1469598103934665603);
    const uint8_t *p = bson_get_data(doc);
    for (uint32_t i = 0; i < doc->len; i++) h = (h ^ p[i]) * UINT64_C(1099511628211);
    *sum += h;
    (*n)++;
  }
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  bson_destroy(&opts);
  mongoc_collection_destroy(col);
  mongoc_client_destroy(c);
}

static void test_determinism_restart(void **state) {
  (void)state;
  h_scenario_t a;
  h_scenario_init(&a, "determinism", 4);
  const char *sim[] = {"--seed",    "14",   "--products", "500",  "--events", "60000", "--duplicates", "0.01",
                       "--reorder", "0.01", "--invalid",  "0.01", "--quiet",  NULL};
  h_run_sim(&a, sim);
  pid_t e = h_engine_start(&a, 2, NULL);
  assert_true(h_wait_caught_up(&a, 120));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);

  h_scenario_t b = a; /* same topics, its own group and database */
  strcat(b.group, "-b");
  strcat(b.database, "_b");
  e = h_engine_start(&b, 3, NULL);
  assert_true(h_wait_engine_log("assigned", 90));
  int wait_ms = rnd(200, 4000);
  msleep(wait_ms);
  h_engine_stop(e, SIGKILL);
  fprintf(stderr, "[test] run b killed after %d ms at checkpoint %lld\n", wait_ms,
          (long long)h_checkpoints_total(&b));
  e = h_engine_start(&b, 1, NULL);
  assert_true(h_wait_caught_up(&b, 120));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);

  uint64_t ha, hb;
  size_t na, nb;
  collect_hashes(&a, &ha, &na);
  collect_hashes(&b, &hb, &nb);
  fprintf(stderr, "[test] run a: %zu twins hash %016llx; run b: %zu twins hash %016llx\n", na,
          (unsigned long long)ha, nb, (unsigned long long)hb);
  assert_true(na > 0);
  assert_int_equal(na, nb);
  assert_true(ha == hb);
  expect_exact(&b);
  h_scenario_cleanup(&a);
  h_scenario_cleanup(&b);
}

/* 5. FerretDB stopped for 20 s mid-stream: the engine pauses, keeps its
 * memory bounded, resumes by itself, and loses nothing. */
static void test_mongo_outage(void **state) {
  (void)state;
  h_scenario_t s;
  h_scenario_init(&s, "outage", 4);
  pid_t e = h_engine_start(&s, 2, NULL);
  const char *sim[] = {"--seed",     "15", "--products",   "1000", "--rate",  "3000",
                       "--duration", "35", "--duplicates", "0.01", "--quiet", NULL};
  pid_t sim_pid = h_sim_start(&s, sim);
  msleep(6000);
  long rss_before = h_rss_kib(e);
  assert_int_equal(h_stack(&s, "down", "ferretdb"), 0);
  long rss_max = rss_before;
  for (int i = 0; i < 80; i++) { /* 20 s */
    msleep(250);
    long r = h_rss_kib(e);
    if (r > rss_max) rss_max = r;
    assert_true(r > 0); /* still running */
  }
  assert_int_equal(h_stack(&s, "up", "ferretdb"), 0);
  h_sim_wait(&s, sim_pid);
  fprintf(stderr, "[test] engine RSS before the outage %ld KiB, max during it %ld KiB\n", rss_before,
          rss_max);
  assert_true(rss_max < rss_before + 256 * 1024);
  assert_true(h_wait_caught_up(&s, 120));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  expect_exact(&s);
  h_scenario_cleanup(&s);
}

/* 6. Two engines in one group; one stops mid-stream; the other takes over. */
static void test_rebalance(void **state) {
  (void)state;
  h_scenario_t s;
  h_scenario_init(&s, "rebalance", 6);
  pid_t e1 = h_engine_start(&s, 2, NULL);
  pid_t e2 = h_engine_start(&s, 2, NULL);
  const char *sim[] = {"--seed", "16",           "--products", "1000",      "--rate", "4000",    "--duration",
                       "20",     "--duplicates", "0.01",       "--reorder", "0.01",   "--quiet", NULL};
  pid_t sim_pid = h_sim_start(&s, sim);
  msleep(rnd(5000, 9000));
  assert_int_equal(h_engine_stop(e1, SIGTERM), 0);
  h_sim_wait(&s, sim_pid);
  assert_true(h_wait_caught_up(&s, 120));
  assert_int_equal(h_engine_stop(e2, SIGTERM), 0);
  expect_exact(&s);
  h_scenario_cleanup(&s);
}

/* Static membership (kafka.group.instance.id): an instance restarted after
 * kill -9 gets its partitions back at once, not after the dead member's
 * session times out (45 s here); a second instance with the same id fences
 * the first, which stops (exit 3) and says why. The end state is exact. */
static void test_static_membership(void **state) {
  (void)state;
  h_scenario_t s;
  h_scenario_init(&s, "static", 4);
  const char *sim[] = {"--seed", "17",           "--products", "500",     "--events",
                       "60000",  "--duplicates", "0.01",       "--quiet", NULL};
  h_run_sim(&s, sim);
  char id[200], log_b[300];
  snprintf(id, sizeof id, "kafka.group.instance.id=%s-1", s.group);
  const char *set[] = {id, "kafka.session.timeout.ms=45000", "snapshot.interval.ms=300", NULL};
  pid_t a = h_engine_start(&s, 2, set);
  assert_true(h_wait_engine_log(" to shard ", 60));
  assert_true(h_wait_engine_log("as static member", 5));
  msleep(rnd(200, 2000));
  h_engine_stop(a, SIGKILL);

  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  /* In a directory of its own, which the harness's sanitizer check of the
   * scenario's logs does not read: see the exit status check below. */
  char dir_b[260];
  snprintf(dir_b, sizeof dir_b, "%s/fenced", s.logdir);
  mkdir(dir_b, 0755);
  snprintf(log_b, sizeof log_b, "%s/engine.log", dir_b);
  pid_t b = h_engine_start_log(&s, 2, set, log_b);
  /* Without static membership the group would wait for the killed member's
   * 45-s session to run out before it assigns anything. */
  if (!h_wait_engine_log(" to shard ", 20))
    fail_msg("the restarted static member had no partitions after 20 s");
  clock_gettime(CLOCK_MONOTONIC, &t1);
  fprintf(stderr, "[test] restarted static member assigned after %lld ms\n",
          (long long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));

  pid_t c = h_engine_start(&s, 2, set);
  int rc = h_engine_stop(b, 0); /* fenced: exits by itself */
  char *text = h_slurp(log_b);
  assert_non_null(text);
  assert_non_null(strstr(text, "kafka.group.instance.id must be unique per instance"));
  /* Under ThreadSanitizer the _exit() that leaves the other threads
   * unjoined is reported as thread leaks, and TSan exits 66 instead: allowed
   * when those are its only reports (any other fails here). */
  int leaks = 0, others = 0;
  for (const char *p = text; (p = strstr(p, "WARNING: ThreadSanitizer: ")); p++) {
    if (strncmp(p + strlen("WARNING: ThreadSanitizer: "), "thread leak", 11) == 0)
      leaks++;
    else
      others++;
  }
  if (!(rc == 3 || (rc == 66 && leaks > 0 && others == 0)))
    fail_msg("the fenced engine exited %d, not 3 (log %s)", rc, log_b);
  free(text);
  assert_true(h_wait_caught_up(&s, 120));
  assert_int_equal(h_engine_stop(c, SIGTERM), 0);
  expect_exact(&s);
  h_scenario_cleanup(&s);
}

/* Start-up refusals: topics that are not co-partitioned, a bad setting. */
static void test_refuses_bad_setup(void **state) {
  (void)state;
  h_scenario_t s;
  h_scenario_init(&s, "refuse", 4);
  h_scenario_t other;
  h_scenario_init(&other, "refuse2", 3);
  char set[200];
  snprintf(set, sizeof set, "topics.lifecycle=%s", other.lifecycle);
  pid_t e = h_engine_start(&s, 1, (const char *const[]){set, NULL});
  int st;
  waitpid(e, &st, 0);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "grep -q 'not co-partitioned' %s/engine-*.log", s.logdir);
  assert_int_equal(system(cmd), 0);
  snprintf(cmd, sizeof cmd,
           "%s/twin-engine run --set snapshot.interval.ms=soon 2>&1 | grep -q 'snapshot.interval.ms'",
           s.bin_dir);
  assert_int_equal(system(cmd), 0);
  snprintf(cmd, sizeof cmd,
           "%s/twin-engine run --set snapshot.interval.ms=soon >/dev/null 2>&1; test $? -eq 2", s.bin_dir);
  assert_int_equal(system(cmd), 0);
  h_scenario_cleanup(&s);
  h_scenario_cleanup(&other);
}

/* Kafka prefetch limits: the engine's defaults split 500,000 messages and
 * 128 MiB between the shards (never below 100,000 / 16 MiB each) and fetch
 * up to 4 MiB per partition, a kafka.* setting (under either of
 * librdkafka's names) wins, and the log says which is in effect. */
static void test_prefetch_limits(void **state) {
  (void)state;
  h_scenario_t s;
  h_scenario_init(&s, "prefetch", 4);
  static const struct {
    int shards;
    const char *set, *line;
  } cases[] = {
      {1, NULL,
       "queued.min.messages=500000 (engine default), queued.max.messages.kbytes=131072 (engine default)"},
      {2, NULL,
       "queued.min.messages=250000 (engine default), queued.max.messages.kbytes=65536 (engine default)"},
      {16, NULL,
       "queued.min.messages=100000 (engine default), queued.max.messages.kbytes=16384 (engine default)"},
      {2, "kafka.queued.min.messages=20000",
       "queued.min.messages=20000 (config), queued.max.messages.kbytes=65536 (engine default); "
       "max.partition.fetch.bytes=4194304 (engine default)"},
      {2, "kafka.max.partition.fetch.bytes=1048576", "; max.partition.fetch.bytes=1048576 (config)"},
      {2, "kafka.fetch.message.max.bytes=2097152", "; max.partition.fetch.bytes=2097152 (config)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *extra[] = {cases[i].set, NULL};
    pid_t e = h_engine_start(&s, cases[i].shards, cases[i].set ? extra : NULL);
    /* The allocator this build linked (CMakeLists.txt, TWIN_JEMALLOC; not
     * in sanitizer builds), the one malloc of the whole process. */
    if (i == 0)
      assert_true(h_wait_engine_log(
          TWIN_ENGINE_JEMALLOC ? "memory allocator: jemalloc 5." : "memory allocator: libc malloc", 30));
    /* Built in (main.c): fetch buffers of 8 MiB and more stay in jemalloc's
     * arenas instead of going back to the kernel at every free. */
    if (i == 0 && TWIN_ENGINE_JEMALLOC) assert_true(h_wait_engine_log("(oversize_threshold 0)", 30));
    if (!h_wait_engine_log(cases[i].line, 60))
      fail_msg("shards=%d %s: no log line \"%s\"", cases[i].shards, cases[i].set ? cases[i].set : "",
               cases[i].line);
    assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  }
  h_scenario_cleanup(&s);
}

/* A backlog: librdkafka 2.0.2 stops fetching while a shard's queue holds
 * queued.min.messages and, with every partition stopped, looks again only
 * a second later. The engine wakes the fetcher when a shard's queue, after
 * being half full, runs down to a quarter (twin_kafka_fetch_wakeups_total),
 * and sends nothing once it keeps up. */
static void test_fetch_wake(void **state) {
  (void)state;
  h_scenario_t s;
  h_scenario_init(&s, "wake", 4);
  const char *sim[] = {"--seed", "18", "--products", "1000", "--events", "200000", "--quiet", NULL};
  h_run_sim(&s, sim);
  /* One shard: all partitions stop together, as they do on a backlog with
   * more shards (with two, the other shard's fetches often wake the thread). */
  const char *set[] = {"kafka.queued.min.messages=20000", NULL};
  pid_t e = h_engine_start(&s, 1, set);
  assert_true(h_wait_caught_up(&s, 180));
  static char body[1 << 18]; /* room for the whole of /metrics */
  int port = h_engine_http_port(h_engine_log());
  assert_true(port > 0);
  msleep(1000);
  assert_true(h_http_get(port, "/metrics", body, sizeof body));
  double woke = h_metric_max(body, "twin_kafka_fetch_wakeups_total");
  fprintf(stderr, "[test] 200,000 events with queued.min.messages=20000: %.0f fetcher wake-ups\n", woke);
  if (woke < 1) fail_msg("the engine never woke the fetcher on a backlog of ten times its prefetch limit");
  msleep(2000);
  assert_true(h_http_get(port, "/metrics", body, sizeof body));
  assert_true(h_metric_max(body, "twin_kafka_fetch_wakeups_total") == woke);
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  expect_exact(&s);
  h_scenario_cleanup(&s);
}

int main(void) {
  const char *seed = getenv("TWIN_TEST_SEED");
  g_seed = seed ? (unsigned)atoi(seed) : (unsigned)time(NULL);
  fprintf(stderr, "[test] TWIN_TEST_SEED=%u\n", g_seed);
  mongoc_init();
  tw_log_route_mongoc();
  if (getenv("TWIN_TEST_FILTER")) cmocka_set_test_filter(getenv("TWIN_TEST_FILTER"));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_refuses_bad_setup),   cmocka_unit_test(test_exact_state),
      cmocka_unit_test(test_garbage_to_dlq),      cmocka_unit_test(test_crash_kill9),
      cmocka_unit_test(test_determinism_restart), cmocka_unit_test(test_rebalance),
      cmocka_unit_test(test_mongo_outage),        cmocka_unit_test(test_prefetch_limits),
      cmocka_unit_test(test_static_membership),   cmocka_unit_test(test_fetch_wake),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  mongoc_cleanup();
  return rc;
}
