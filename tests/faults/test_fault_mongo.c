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

static void test_ferretdb_kill_and_stall(void **state) {
  (void)state;
  f_run_t r;
  f_begin(&r, "ferretdb kill, stall, slow");
  h_scenario_t s;
  h_scenario_init(&s, "f_mongo", 4);
  atexit(cont_ferretdb);
  /* The engine talks to FerretDB through the latency proxy (no delay until
   * step 3); the checks read FerretDB directly. */
  const char *port = strrchr(s.mongo_uri, ':');
  assert_non_null(port);
  f_proxy_t *proxy = f_proxy_start(atoi(port + 1));
  char uri[128];
  snprintf(uri, sizeof uri, "mongo.uri=mongodb://127.0.0.1:%d", f_proxy_port(proxy));
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

/* The flush count and total flush seconds of the one shard, from /metrics. */
static void flush_stats(int port, double *count, double *secs) {
  static char body[1 << 18];
  assert_true(h_http_get(port, "/metrics", body, sizeof body));
  *count = h_metric_max(body, "twin_flush_duration_seconds_count");
  *secs = h_metric_max(body, "twin_flush_duration_seconds_sum");
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* 4. A slower store does not stretch snapshot.interval.ms: a shard that
 * keeps up flushes an interval after its previous flush started, so a twin
 * is written at most an interval and one flush after it changed. The
 * engine reaches FerretDB through the latency proxy (40-60 ms each way,
 * several round trips per flush) while a steady load keeps twins dirty;
 * the shard must flush about once an interval, not once per interval plus
 * a flush. The flushes' ends are timed by watching the flush count every
 * 20 ms. */
static void test_flush_interval_on_slow_store(void **state) {
  (void)state;
  f_run_t r;
  f_begin(&r, "flush interval, slow store");
  h_scenario_t s;
  h_scenario_init(&s, "f_interval", 2);
  const char *port = strrchr(s.mongo_uri, ':');
  assert_non_null(port);
  f_proxy_t *proxy = f_proxy_start(atoi(port + 1));
  char uri[128];
  snprintf(uri, sizeof uri, "mongo.uri=mongodb://127.0.0.1:%d", f_proxy_port(proxy));
  const int interval = 4000;
  const char *set[] = {uri, "snapshot.interval.ms=4000", NULL};
  pid_t e = h_engine_start(&s, 1, set);
  int http = h_engine_http_port(h_engine_log());
  assert_true(http > 0);
  const char *sim[] = {"--seed", "53",         "--products", "10",      "--rate",
                       "100",    "--duration", "50",         "--quiet", NULL};
  pid_t sim_pid = h_sim_start(&s, sim);
  f_proxy_delay(proxy, f_rnd(40, 60));
  r.faults++;
  f_msleep(6000); /* every twin made */
  double c0, s0, c, secs, last;
  flush_stats(http, &c0, &s0);
  last = c0;
  int64_t ends[64];
  size_t n = 0;
  for (int64_t t0 = f_now_ms(); f_now_ms() - t0 < 36000 && n < 64;) {
    f_msleep(20);
    flush_stats(http, &c, &secs);
    if (c != last) ends[n++] = f_now_ms();
    last = c;
  }
  assert_true(n >= 4);
  int64_t gaps[63];
  for (size_t i = 1; i < n; i++) gaps[i - 1] = ends[i] - ends[i - 1];
  qsort(gaps, n - 1, sizeof *gaps, cmp_i64);
  double took = (secs - s0) / (c - c0) * 1000.0;
  int64_t period = gaps[(n - 1) / 2];
  fprintf(stderr,
          "[fault] FerretDB 40-60 ms away, snapshot.interval.ms=%d: %zu flushes, one every %lld ms (median; "
          "%lld..%lld), each %.0f ms\n",
          interval, n, (long long)period, (long long)gaps[0], (long long)gaps[n - 2], took);
  /* The regime this is about: a flush much slower than a round trip, and
   * at most three quarters of the interval (a quarter of it is always left
   * for consuming). */
  assert_true(took > 200 && took < interval * 3 / 4);
  /* Counted from the end, the period would be interval + took. */
  assert_true(period < interval + took / 2);
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
