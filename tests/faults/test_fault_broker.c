/* test_fault_broker.c - the Kafka broker (the only one: KRaft broker and
 * controller in one process) is killed with kill -9 twice while the engine
 * works through a fleet's stream, and restarted each time with
 * deploy/local/stack.sh. The engine's consumer and alert producer reconnect,
 * a flush that cannot reach Kafka pauses the shard, partitions lost with the
 * session come back from the checkpoints, and nothing is lost or applied
 * twice.
 *
 * The fleet is produced before the first kill: twin-sim's idempotent
 * producer, killed broker and all, once failed for good with "out of order
 * sequence number" (librdkafka treats the desynchronisation as fatal), which
 * is the simulator's problem, not the engine's. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "faults.h"

static void test_broker_kill9(void **state) {
  (void)state;
  f_run_t r;
  f_begin(&r, "kafka broker kill -9 x2");
  h_scenario_t s;
  h_scenario_init(&s, "f_broker", 4);
  const char *sim[] = {"--seed",       "41",   "--products", "600",  "--events", "60000",
                       "--duplicates", "0.01", "--reorder",  "0.01", "--quiet",  NULL};
  h_run_sim(&s, sim);
  int64_t end = h_end_offsets_total(&s);
  pid_t e = h_engine_start(&s, 2, NULL);
  assert_true(h_wait_engine_log("assigned", 60));
  for (int k = 0; k < 2; k++) {
    /* Within 1.5 s of the assignment, and of the broker being back: the
     * engine has consumed much of the backlog but not checkpointed it (on a
     * fast machine it works through 60,000 events in a few seconds). */
    f_msleep(f_rnd(0, 1500));
    pid_t kafka = h_stack_pid(&s, "kafka");
    assert_true(kafka > 0);
    int64_t ck = h_checkpoints_total(&s);
    kill(kafka, SIGKILL);
    r.faults++;
    int down_ms = f_rnd(2000, 6000);
    f_msleep(down_ms);
    int64_t t0 = f_now_ms();
    assert_int_equal(h_stack(&s, "up", "kafka"), 0);
    fprintf(stderr,
            "[fault] broker kill -9 #%d at checkpoints %lld of %lld: down %d ms, restart took %.1f s; engine "
            "alive: %s\n",
            k + 1, (long long)ck, (long long)end, down_ms, (double)(f_now_ms() - t0) / 1000.0,
            h_rss_kib(e) > 0 ? "yes" : "no");
    assert_true(h_rss_kib(e) > 0);
  }
  assert_true(h_wait_caught_up(&s, 180));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  f_finish(&r, &s);
  h_scenario_cleanup(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_broker_kill9)};
  return f_main(tests, sizeof tests / sizeof tests[0]);
}
