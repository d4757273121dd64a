/* test_fault_churn.c - one engine while a fleet streams in, and another
 * member of its consumer group (a plain consumer in this test) that joins
 * and leaves over and over. Every join and every leave is an eager
 * rebalance in which the engine gives up all its partitions and gets some
 * of them straight back, often within milliseconds: partitions it paused
 * while revoking them come back to it again and again.
 *
 * The end state must be exact, and every partition must be read to its end:
 * a partition that came back still paused, or whose queue lost its route to
 * the shard, would never be read again (README, Failure behaviour). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>

#include "faults.h"

static const char *const g_set[] = {"snapshot.interval.ms=300", NULL};

static void conf(rd_kafka_conf_t *c, const char *k, const char *v) {
  char err[256];
  if (rd_kafka_conf_set(c, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) fail_msg("%s=%s: %s", k, v, err);
}

/* A member of the engine's group that holds its share of the partitions
 * for hold_ms after it gets them, then leaves. It commits nothing. */
static void visit_group(const h_scenario_t *s, int hold_ms) {
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  conf(c, "bootstrap.servers", s->bootstrap);
  conf(c, "group.id", s->group);
  conf(c, "partition.assignment.strategy", "range"); /* the engine's */
  conf(c, "enable.auto.commit", "false");
  conf(c, "session.timeout.ms", "6000");
  char err[256];
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
  if (!rk) fail_msg("consumer: %s", err);
  rd_kafka_poll_set_consumer(rk);
  rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(2);
  rd_kafka_topic_partition_list_add(subs, s->telemetry, RD_KAFKA_PARTITION_UA);
  rd_kafka_topic_partition_list_add(subs, s->lifecycle, RD_KAFKA_PARTITION_UA);
  if (rd_kafka_subscribe(rk, subs)) fail_msg("subscribe failed");
  rd_kafka_topic_partition_list_destroy(subs);
  int64_t t_assigned = -1, t0 = f_now_ms();
  while (f_now_ms() - t0 < 60000) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
    if (m) rd_kafka_message_destroy(m);
    rd_kafka_topic_partition_list_t *a = NULL;
    if (t_assigned < 0 && rd_kafka_assignment(rk, &a) == RD_KAFKA_RESP_ERR_NO_ERROR && a->cnt > 0)
      t_assigned = f_now_ms();
    if (a) rd_kafka_topic_partition_list_destroy(a);
    if (t_assigned >= 0 && f_now_ms() - t_assigned >= hold_ms) break;
  }
  if (t_assigned < 0) fail_msg("the visiting member got no partitions within 60 s");
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
}

static void test_group_churn(void **state) {
  (void)state;
  f_run_t r;
  f_begin(&r, "group churn (20 joins/leaves)");
  h_scenario_t s;
  h_scenario_init(&s, "f_churn", 6);
  pid_t e = h_engine_start(&s, 2, g_set);
  const char *sim[] = {"--seed", "62",           "--products", "600",       "--rate", "700",     "--duration",
                       "40",     "--duplicates", "0.01",       "--reorder", "0.01",   "--quiet", NULL};
  pid_t sim_pid = h_sim_start(&s, sim);
  f_msleep(3000);
  for (int i = 0; i < 10; i++) {
    visit_group(&s, f_rnd(200, 1500)); /* join, then leave: two rebalances */
    r.faults += 2;
    f_msleep(f_rnd(0, 1500));
  }
  h_sim_wait(&s, sim_pid);
  assert_true(h_wait_caught_up(&s, 120));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  f_finish(&r, &s);
  h_scenario_cleanup(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_group_churn)};
  return f_main(tests, sizeof tests / sizeof tests[0]);
}
