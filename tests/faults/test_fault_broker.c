/* test_fault_broker.c - the Kafka broker (the only one: KRaft broker and
 * controller in one process) is killed with kill -9 twice while a fleet
 * streams in and the engine consumes, and restarted each time with
 * deploy/local/stack.sh. twin-sim's idempotent producer and the engine ride
 * it out: the engine's consumer and alert producer reconnect, a flush that
 * cannot reach Kafka pauses the shard, and nothing is lost or applied twice. */
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

static void test_broker_kill9(void **state) {
  (void)state;
  f_run_t r;
  f_begin(&r, "kafka broker kill -9 x2");
  h_scenario_t s;
  h_scenario_init(&s, "f_broker", 4);
  pid_t e = h_engine_start(&s, 2, NULL);
  const char *sim[] = {"--seed", "41",           "--products", "600",       "--rate", "700",     "--duration",
                       "30",     "--duplicates", "0.01",       "--reorder", "0.01",   "--quiet", NULL};
  pid_t sim_pid = h_sim_start(&s, sim);
  for (int k = 0; k < 2; k++) {
    f_msleep(f_rnd(4000, 8000));
    pid_t kafka = h_stack_pid(&s, "kafka");
    assert_true(kafka > 0);
    int64_t ck = h_checkpoints_total(&s);
    kill(kafka, SIGKILL);
    r.faults++;
    int down_ms = f_rnd(2000, 6000);
    f_msleep(down_ms);
    int64_t t0 = f_now_ms();
    assert_int_equal(h_stack(&s, "up", "kafka"), 0);
    fprintf(
        stderr,
        "[fault] broker kill -9 #%d at checkpoints %lld: down %d ms, restart took %.1f s; engine alive: %s\n",
        k + 1, (long long)ck, down_ms, (double)(f_now_ms() - t0) / 1000.0, h_rss_kib(e) > 0 ? "yes" : "no");
    assert_true(h_rss_kib(e) > 0);
  }
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
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_broker_kill9)};
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  mongoc_cleanup();
  return rc;
}
