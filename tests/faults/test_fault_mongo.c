/* test_fault_mongo.c - FerretDB (the MongoDB the engine writes to) fails
 * while a fleet streams in:
 *  1. FerretDB killed with kill -9 and restarted by deploy/local/stack.sh;
 *  2. FerretDB stalled (SIGSTOP, then SIGCONT): every request hangs, as on
 *     a server that stopped answering or a network that drops packets;
 *  3. FerretDB slow: the engine reaches it through a proxy that holds every
 *     request and every answer back 150-250 ms (tests/faults/faults.c), as
 *     an overloaded server or a distant replica set would.
 * The engine pauses the shards that cannot flush, keeps consuming nothing
 * more than librdkafka's bounded prefetch (RSS stays bounded), keeps
 * checkpointing while the server is only slow, resumes by itself, and the
 * end state is exact. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "faults.h"

static pid_t g_stopped; /* FerretDB while SIGSTOPped: continued on any exit */
static void cont_ferretdb(void) {
  if (g_stopped > 0) kill(g_stopped, SIGCONT);
}

/* Watches the engine for ms: returns its largest RSS (KiB), 0 if it died. */
static long watch_rss(pid_t e, int ms) {
  long max = 0;
  for (int t = 0; t < ms; t += 250) {
    long r = h_rss_kib(e);
    if (r == 0) return 0;
    if (r > max) max = r;
    f_msleep(250);
  }
  return max;
}

/* Waits until the engine checkpoints past ck (it resumed); returns the
 * milliseconds that took, -1 after 90 s. */
static int64_t resumed_after(const h_scenario_t *s, int64_t ck) {
  int64_t t0 = f_now_ms();
  while (f_now_ms() - t0 < 90000) {
    if (h_checkpoints_total(s) > ck) return f_now_ms() - t0;
    f_msleep(100);
  }
  return -1;
}

/* A latency proxy (no delay yet) in front of the scenario's FerretDB, and
 * in uri the engine setting that sends the engine through it. */
static f_proxy_t *proxy_to_ferretdb(const h_scenario_t *s, char *uri, size_t cap) {
  const char *port = strrchr(s->mongo_uri, ':');
  assert_non_null(port);
  f_proxy_t *proxy = f_proxy_start(atoi(port + 1));
  snprintf(uri, cap, "mongo.uri=mongodb://127.0.0.1:%d", f_proxy_port(proxy));
  return proxy;
}

static void test_ferretdb_kill_and_stall(void **state) {
  (void)state;
  f_run_t r;
  f_begin(&r, "ferretdb kill, stall, slow");
  h_scenario_t s;
  h_scenario_init(&s, "f_mongo", 4);
  atexit(cont_ferretdb);
  /* The engine talks to FerretDB through the latency proxy (no delay until
   * step 3); the checks read FerretDB directly. */
  char uri[128];
  f_proxy_t *proxy = proxy_to_ferretdb(&s, uri, sizeof uri);
  const char *set[] = {uri, NULL};
  pid_t e = h_engine_start(&s, 2, set);
  const char *sim[] = {"--seed", "51",           "--products", "600",       "--rate", "700",     "--duration",
                       "65",     "--duplicates", "0.01",       "--reorder", "0.01",   "--quiet", NULL};
  pid_t sim_pid = h_sim_start(&s, sim);
  f_msleep(f_rnd(5000, 8000));
  long rss0 = h_rss_kib(e);

  /* 1. kill -9, down for 8-12 s, restarted. */
  pid_t fdb = h_stack_pid(&s, "ferretdb");
  assert_true(fdb > 0);
  int64_t ck = h_checkpoints_total(&s);
  kill(fdb, SIGKILL);
  r.faults++;
  long rss1 = watch_rss(e, f_rnd(8000, 12000));
  assert_true(rss1 > 0);
  assert_int_equal(h_stack(&s, "up", "ferretdb"), 0);
  int64_t back = h_checkpoints_total(&s);
  int64_t took = resumed_after(&s, back);
  fprintf(stderr,
          "[fault] FerretDB kill -9 at checkpoints %lld: engine RSS %ld KiB before, max %ld KiB while down; "
          "checkpointing again %lld ms after FerretDB was back\n",
          (long long)ck, rss0, rss1, (long long)took);
  assert_true(took >= 0);

  /* 2. Stalled for 10-15 s: requests hang instead of failing. */
  f_msleep(f_rnd(1000, 3000));
  fdb = h_stack_pid(&s, "ferretdb");
  assert_true(fdb > 0);
  ck = h_checkpoints_total(&s);
  g_stopped = fdb;
  kill(fdb, SIGSTOP);
  r.faults++;
  long rss2 = watch_rss(e, f_rnd(10000, 15000));
  kill(fdb, SIGCONT);
  g_stopped = 0;
  back = h_checkpoints_total(&s);
  took = resumed_after(&s, back);
  fprintf(
      stderr,
      "[fault] FerretDB stalled at checkpoints %lld: engine max RSS %ld KiB during the stall; checkpointing "
      "again %lld ms after it was continued\n",
      (long long)ck, rss2, (long long)took);
  assert_true(rss2 > 0);
  assert_true(took >= 0);

  /* 3. Slow: every request and answer 150-250 ms late, for 12-16 s and
   * then until the engine has checkpointed through the delay (at most
   * 90 s more: each flush takes several round trips, and FerretDB itself
   * can take seconds per flush on a loaded machine). */
  f_msleep(f_rnd(1000, 3000));
  int delay = f_rnd(150, 250);
  int64_t ck0 = h_checkpoints_total(&s);
  long long chunks0 = f_proxy_chunks(proxy);
  f_proxy_delay(proxy, delay);
  r.faults++;
  int64_t t0 = f_now_ms();
  long rss3 = watch_rss(e, f_rnd(12000, 16000));
  int64_t ck1 = h_checkpoints_total(&s);
  while (rss3 > 0 && ck1 <= ck0 && f_now_ms() - t0 < 106000) {
    long m = watch_rss(e, 1000);
    rss3 = m > rss3 ? m : m == 0 ? 0 : rss3;
    ck1 = h_checkpoints_total(&s);
  }
  long long chunks1 = f_proxy_chunks(proxy);
  f_proxy_delay(proxy, 0);
  fprintf(
      stderr,
      "[fault] FerretDB slow (%d ms each way) for %lld ms: checkpoints %lld -> %lld, %lld chunks through the "
      "proxy, engine max RSS %ld KiB\n",
      delay, (long long)(f_now_ms() - t0), (long long)ck0, (long long)ck1, chunks1 - chunks0, rss3);
  assert_true(rss3 > 0);
  assert_true(chunks1 > chunks0); /* the engine really went through the proxy */
  assert_true(ck1 > ck0);         /* slow, not stopped */

  /* Bounded: librdkafka's prefetch (queued.min.messages and
   * queued.max.messages.kbytes per shard, paused partitions hold none) and
   * the twins; nothing grows with the outage. */
  assert_true(rss1 < rss0 + 256 * 1024);
  assert_true(rss2 < rss0 + 256 * 1024);
  assert_true(rss3 < rss0 + 256 * 1024);

  h_sim_wait(&s, sim_pid);
  assert_true(h_wait_caught_up(&s, 180));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  f_proxy_stop(proxy);
  f_finish(&r, &s);
  h_scenario_cleanup(&s);
}

/* A shard's sample of a metric (name{shard="k"} value), -1 if none. */
static double shard_metric(const char *body, const char *name, int shard) {
  char want[128];
  int n = snprintf(want, sizeof want, "%s{shard=\"%d\"} ", name, shard);
  for (const char *p = body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
    if (strncmp(p, want, (size_t)n) == 0) return strtod(p + n, NULL);
  return -1;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static int64_t median(int64_t *v, size_t n) {
  qsort(v, n, sizeof *v, cmp_i64);
  return v[(n - 1) / 2];
}

#define MAX_FLUSHES 64

/* 4. A slower store does not stretch snapshot.interval.ms: a shard that
 * keeps up flushes an interval after its previous flush started, so a twin
 * is written at most an interval and one flush after it changed. And the
 * shards spread their flushes over the interval, so the database takes one
 * shard's writes at a time. The engine (2 shards) reaches FerretDB through
 * the latency proxy (40-60 ms each way, several round trips per flush)
 * while a steady load keeps twins dirty; each shard must flush about once
 * an interval, not once per interval plus a flush, and the two shards'
 * flushes must be apart, not together. The flushes' ends are timed by
 * watching the shards' flush counts every 20 ms. */
static void test_flush_interval_on_slow_store(void **state) {
  (void)state;
  f_run_t r;
  f_begin(&r, "flush interval, slow store");
  h_scenario_t s;
  h_scenario_init(&s, "f_interval", 2);
  char uri[128];
  f_proxy_t *proxy = proxy_to_ferretdb(&s, uri, sizeof uri);
  const int interval = 4000;
  const char *set[] = {uri, "snapshot.interval.ms=4000", NULL};
  pid_t e = h_engine_start(&s, 2, set);
  /* The port is logged once the HTTP server listens, which start-up does
   * not wait for. */
  assert_true(h_wait_engine_log("listening on http://", 60));
  int http = h_engine_http_port(h_engine_log());
  assert_true(http > 0);
  const char *sim[] = {"--seed", "53",         "--products", "12",      "--rate",
                       "120",    "--duration", "50",         "--quiet", NULL};
  pid_t sim_pid = h_sim_start(&s, sim);
  f_proxy_delay(proxy, f_rnd(40, 60));
  r.faults++;
  f_msleep(6000); /* every twin made */
  static char body[1 << 18];
  double c0[2], s0[2], c[2], secs[2], last[2];
  assert_true(h_http_get(http, "/metrics", body, sizeof body));
  for (int k = 0; k < 2; k++) {
    last[k] = c0[k] = shard_metric(body, "twin_flush_duration_seconds_count", k);
    s0[k] = shard_metric(body, "twin_flush_duration_seconds_sum", k);
    assert_true(c0[k] >= 0 && s0[k] >= 0);
  }
  int64_t ends[2][MAX_FLUSHES];
  size_t n[2] = {0, 0};
  for (int64_t t0 = f_now_ms(); f_now_ms() - t0 < 36000 && n[0] < MAX_FLUSHES && n[1] < MAX_FLUSHES;) {
    f_msleep(20);
    assert_true(h_http_get(http, "/metrics", body, sizeof body));
    for (int k = 0; k < 2; k++) {
      c[k] = shard_metric(body, "twin_flush_duration_seconds_count", k);
      secs[k] = shard_metric(body, "twin_flush_duration_seconds_sum", k);
      if (c[k] != last[k]) ends[k][n[k]++] = f_now_ms();
      last[k] = c[k];
    }
  }
  int64_t gaps[MAX_FLUSHES], period[2], apart[MAX_FLUSHES];
  double took[2];
  for (int k = 0; k < 2; k++) {
    assert_true(n[k] >= 4);
    for (size_t i = 1; i < n[k]; i++) gaps[i - 1] = ends[k][i] - ends[k][i - 1];
    period[k] = median(gaps, n[k] - 1);
    took[k] = (secs[k] - s0[k]) / (c[k] - c0[k]) * 1000.0;
  }
  /* How far each of shard 1's flushes ended from the nearest of shard 0's. */
  for (size_t i = 0; i < n[1]; i++) {
    apart[i] = INT64_MAX;
    for (size_t j = 0; j < n[0]; j++) {
      int64_t d = llabs(ends[1][i] - ends[0][j]);
      if (d < apart[i]) apart[i] = d;
    }
  }
  int64_t spread = median(apart, n[1]);
  fprintf(
      stderr,
      "[fault] FerretDB 40-60 ms away, snapshot.interval.ms=%d: shard 0 flushed %zu times, one every %lld ms "
      "(median), each %.0f ms; shard 1 %zu times, every %lld ms, each %.0f ms; their flushes ended %lld ms "
      "apart (median)\n",
      interval, n[0], (long long)period[0], took[0], n[1], (long long)period[1], took[1], (long long)spread);
  for (int k = 0; k < 2; k++) {
    /* The regime this is about: a flush much slower than a round trip, and
     * at most three quarters of the interval (a quarter of it is always
     * left for consuming). */
    assert_true(took[k] > 150 && took[k] < interval * 3 / 4);
    /* Counted from the end, the period would be interval + took. */
    assert_true(period[k] < interval + took[k] / 2);
  }
  /* Spread: half an interval apart; together, they would end within the
   * difference of their flushes' durations. */
  assert_true(spread > interval / 4);
  f_proxy_delay(proxy, 0);
  h_sim_wait(&s, sim_pid);
  assert_true(h_wait_caught_up(&s, 120));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  f_proxy_stop(proxy);
  f_finish(&r, &s);
  h_scenario_cleanup(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_ferretdb_kill_and_stall),
                                     cmocka_unit_test(test_flush_interval_on_slow_store)};
  return f_main(tests, sizeof tests / sizeof tests[0]);
}
