/* test_fault_group.c - several engine instances in one consumer group while
 * a fleet streams in: two instances, one stopped (SIGTERM) and restarted;
 * then a third joins, and one of the three is stopped and restarted. Every
 * membership change is an eager rebalance that revokes partitions while
 * shards flush (snapshots every 300 ms). The end state must be exact: an
 * instance flushes and checkpoints the partitions it gives up before it
 * releases them (README, Failure behaviour, for the bug this found). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "faults.h"

static const char *const g_set[] = {"snapshot.interval.ms=300", NULL};

static pid_t restart(f_run_t *r, const h_scenario_t *s, pid_t e, const char *what) {
  int64_t ck = h_checkpoints_total(s);
  int rc = h_engine_stop(e, SIGTERM);
  fprintf(stderr, "[fault] %s: stopped at checkpoints %lld (exit %d)\n", what, (long long)ck, rc);
  assert_int_equal(rc, 0);
  r->faults++;
  f_msleep(f_rnd(1000, 4000));
  pid_t n = h_engine_start(s, 2, g_set);
  r->faults++;
  return n;
}

static void test_group_rebalances(void **state) {
  (void)state;
  f_run_t r;
  f_begin(&r, "2-3 engines, stop/restart");
  h_scenario_t s;
  h_scenario_init(&s, "f_group", 6);
  pid_t e[3];
  e[0] = h_engine_start(&s, 2, g_set);
  e[1] = h_engine_start(&s, 2, g_set);
  const char *sim[] = {"--seed", "61",           "--products", "600",       "--rate", "700",     "--duration",
                       "30",     "--duplicates", "0.01",       "--reorder", "0.01",   "--quiet", NULL};
  pid_t sim_pid = h_sim_start(&s, sim);
  /* Two instances: one stops and comes back. */
  f_msleep(f_rnd(5000, 8000));
  int victim = f_rnd(0, 1);
  e[victim] = restart(&r, &s, e[victim], "2 instances, one stopped");
  /* A third joins; then one of the three stops and comes back. */
  f_msleep(f_rnd(4000, 7000));
  e[2] = h_engine_start(&s, 2, g_set);
  r.faults++;
  f_msleep(f_rnd(5000, 8000));
  victim = f_rnd(0, 2);
  e[victim] = restart(&r, &s, e[victim], "3 instances, one stopped");
  h_sim_wait(&s, sim_pid);
  assert_true(h_wait_caught_up(&s, 180));
  for (int i = 0; i < 3; i++) assert_int_equal(h_engine_stop(e[i], SIGTERM), 0);
  f_finish(&r, &s);
  h_scenario_cleanup(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_group_rebalances)};
  return f_main(tests, sizeof tests / sizeof tests[0]);
}
