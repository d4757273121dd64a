/* test_fault_mongo.c - FerretDB (the MongoDB the engine writes to) fails
 * while a fleet streams in:
 *  1. FerretDB killed with kill -9 and restarted by deploy/local/stack.sh;
 *  2. FerretDB stalled (SIGSTOP, then SIGCONT): every request hangs, as on
 *     a server that stopped answering or a network that drops packets.
 * The engine pauses the shards that cannot flush, keeps consuming nothing
 * more than librdkafka's bounded prefetch (RSS stays bounded), resumes by
 * itself, and the end state is exact. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <mongoc/mongoc.h>

#include "faults.h"
#include "twin/log.h"

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

static void test_ferretdb_kill_and_stall(void **state) {
  (void)state;
  f_run_t r;
  f_begin(&r, "ferretdb kill -9 + stall");
  h_scenario_t s;
  h_scenario_init(&s, "f_mongo", 4);
  atexit(cont_ferretdb);
  pid_t e = h_engine_start(&s, 2, NULL);
  const char *sim[] = {"--seed", "51",           "--products", "600",       "--rate", "700",     "--duration",
                       "35",     "--duplicates", "0.01",       "--reorder", "0.01",   "--quiet", NULL};
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
  fprintf(stderr,
          "[fault] FerretDB kill -9 at checkpoints %lld: engine RSS %ld KiB before, max %ld KiB while down\n",
          (long long)ck, rss0, rss1);

  /* 2. Stalled for 10-15 s: requests hang instead of failing. */
  f_msleep(f_rnd(3000, 6000));
  fdb = h_stack_pid(&s, "ferretdb");
  assert_true(fdb > 0);
  ck = h_checkpoints_total(&s);
  g_stopped = fdb;
  kill(fdb, SIGSTOP);
  r.faults++;
  long rss2 = watch_rss(e, f_rnd(10000, 15000));
  kill(fdb, SIGCONT);
  g_stopped = 0;
  fprintf(stderr, "[fault] FerretDB stalled at checkpoints %lld: engine max RSS %ld KiB during the stall\n",
          (long long)ck, rss2);
  assert_true(rss2 > 0);
  /* Bounded: librdkafka's prefetch (queued.max.messages.kbytes, 16 MiB per
   * partition at most) and the twins; nothing grows with the outage. */
  assert_true(rss1 < rss0 + 256 * 1024);
  assert_true(rss2 < rss0 + 256 * 1024);

  h_sim_wait(&s, sim_pid);
  assert_true(h_wait_caught_up(&s, 180));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  f_finish(&r, &s);
  h_scenario_cleanup(&s);
}

int main(void) {
  f_seed_init();
  mongoc_init();
  tw_log_route_mongoc();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_ferretdb_kill_and_stall)};
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  mongoc_cleanup();
  return rc;
}
