/* test_fault_engine.c - the engine process dies or is stopped at bad times:
 *  1. kill -9 at 20+ random points (seeded) while a fleet streams in, each
 *     followed by a restart: the store converges to the exact state;
 *  2. SIGTERM while a flush is in progress (held up by a stalled FerretDB):
 *     the engine finishes the flush, checkpoints and exits 0, and a restart
 *     has nothing to replay. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "faults.h"

/* Static membership: a restarted instance takes its place in the group at
 * once instead of waiting out the dead one's session, so 20 restarts fit in
 * about a minute (as a StatefulSet pod with a stable name would run). */
#define INSTANCE "kafka.group.instance.id=fault-engine-0"

static void test_kill9_loop(void **state) {
  (void)state;
  f_run_t r;
  f_begin(&r, "engine kill -9 x21");
  h_scenario_t s;
  h_scenario_init(&s, "f_kill9", 6);
  const char *sim[] = {"--seed",     "31",    "--products",   "800",   "--rate",    "200",
                       "--duration", "120",   "--duplicates", "0.01",  "--reorder", "0.01",
                       "--invalid",  "0.005", "--garbage",    "0.002", "--quiet",   NULL};
  /* Slow and long: the fleet streams in during the whole kill loop. */
  pid_t sim_pid = h_sim_start(&s, sim);
  const char *set[] = {INSTANCE, "snapshot.interval.ms=300", NULL};
  const int kills = 21;
  for (int k = 0; k < kills; k++) {
    int64_t ck0 = h_checkpoints_total(&s);
    pid_t e = h_engine_start(&s, 2, set);
    int ms;
    const char *when;
    if (k % 3 == 0) {
      /* During start-up: checkpoint reads, journal repair, joining. */
      ms = f_rnd(100, 1500);
      when = "after start";
    } else if (k % 3 == 1) {
      /* While it loads stored twins and applies the first batches. */
      assert_true(h_wait_engine_log("assigned", 90));
      ms = f_rnd(0, 5000);
      when = "after its assignment";
    } else {
      /* Once it has flushed and checkpointed (or after 30 s), in its
       * stride of 300 ms flushes (snapshots, checkpoints, Kafka commits). */
      for (int i = 0; i < 300 && h_checkpoints_total(&s) <= ck0; i++) f_msleep(100);
      ms = f_rnd(0, 2000);
      when = "after its first new checkpoint";
    }
    f_msleep(ms);
    h_engine_stop(e, SIGKILL);
    r.faults++;
    fprintf(stderr, "[fault] kill -9 #%d, %d ms %s: checkpoints at %lld\n", k + 1, ms, when,
            (long long)h_checkpoints_total(&s));
  }
  h_sim_wait(&s, sim_pid);
  pid_t e = h_engine_start(&s, 2, set);
  assert_true(h_wait_caught_up(&s, 180));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  f_finish(&r, &s);
  h_scenario_cleanup(&s);
}

static pid_t g_stopped; /* FerretDB while SIGSTOPped: continued on any exit */
static void cont_ferretdb(void) {
  if (g_stopped > 0) kill(g_stopped, SIGCONT);
}

static void test_sigterm_during_flush(void **state) {
  (void)state;
  f_run_t r;
  f_begin(&r, "engine SIGTERM in flush");
  h_scenario_t s;
  h_scenario_init(&s, "f_sigterm", 4);
  const char *sim[] = {"--seed", "32",           "--products", "600",       "--rate", "800",     "--duration",
                       "25",     "--duplicates", "0.01",       "--reorder", "0.01",   "--quiet", NULL};
  pid_t sim_pid = h_sim_start(&s, sim);
  char log1[400], log2[400];
  snprintf(log1, sizeof log1, "%s/engine-sigterm.log", s.logdir);
  snprintf(log2, sizeof log2, "%s/engine-after.log", s.logdir);
  pid_t e = h_engine_start_log(&s, 2, (const char *const[]){"snapshot.interval.ms=1000", NULL}, log1);
  /* Mid-stream: some checkpoints written while the fleet still streams. */
  int64_t ck = 0;
  for (int i = 0; i < 1200 && (ck = h_checkpoints_total(&s)) < 3000; i++) f_msleep(50);
  f_msleep(f_rnd(0, 3000));
  ck = h_checkpoints_total(&s);
  assert_true(ck > 0);
  int port = h_engine_http_port(log1);
  assert_true(port > 0);
  pid_t fdb = h_stack_pid(&s, "ferretdb");
  assert_true(fdb > 0);
  atexit(cont_ferretdb);
  /* FerretDB stalls; within 2.5 s every shard with changes starts its next
   * flush (interval 1 s) and blocks in it: the oldest unwritten change is
   * then older than the interval plus the shard's 100 ms poll. */
  /* Only while the engine holds unwritten changes (it may have caught up
   * with the fleet for a moment): then its next flush has work to do. */
  static char body[1 << 18];
  for (int i = 0; i < 600; i++) {
    if (h_http_get(port, "/metrics", body, sizeof body) &&
        h_metric_max(body, "twin_snapshot_staleness_seconds") > 0)
      break;
    f_msleep(50);
  }
  g_stopped = fdb;
  kill(fdb, SIGSTOP);
  f_msleep(2500);
  double stale = h_http_get(port, "/metrics", body, sizeof body)
                     ? h_metric_max(body, "twin_snapshot_staleness_seconds")
                     : -1;
  kill(e, SIGTERM);
  f_msleep(1500);
  long alive = h_rss_kib(e); /* still flushing, not killed by the signal */
  kill(fdb, SIGCONT);
  g_stopped = 0;
  r.faults += 2; /* the stall and the SIGTERM inside it */
  int rc = h_engine_stop(e, 0);
  int64_t after_stop = h_checkpoints_total(&s);
  fprintf(stderr,
          "[fault] SIGTERM with FerretDB stalled and the oldest unwritten change %.1f s old: exit %d, "
          "checkpoints %lld (were %lld; %lld produced so "
          "far)\n",
          stale, rc, (long long)after_stop, (long long)ck, (long long)h_end_offsets_total(&s));
  assert_true(stale > 1.1);
  assert_true(alive > 0);
  assert_int_equal(rc, 0);
  assert_true(after_stop >= ck);
  /* A clean stop leaves every applied event in a checkpointed snapshot: the
   * next run replays nothing (replayed counts messages a snapshot already
   * holds but no checkpoint covered). */
  e = h_engine_start_log(&s, 2, NULL, log2);
  h_sim_wait(&s, sim_pid);
  assert_true(h_wait_caught_up(&s, 180));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  long long replayed = f_log_final_count(log2, "replayed");
  fprintf(stderr, "[fault] the run after the clean stop replayed %lld messages\n", replayed);
  assert_int_equal(replayed, 0);
  f_finish(&r, &s);
  h_scenario_cleanup(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kill9_loop),
      cmocka_unit_test(test_sigterm_during_flush),
  };
  return f_main(tests, sizeof tests / sizeof tests[0]);
}
