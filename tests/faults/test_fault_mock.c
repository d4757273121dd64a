/* test_fault_mock.c - broker errors and timeouts, injected with librdkafka's
 * mock cluster (rdkafka_mock.h).
 *
 * The test process creates a 3-broker mock cluster; it listens on loopback
 * sockets (rd_kafka_mock_cluster_bootstraps), so the real twin-sim and the
 * real twin-engine binaries connect to it as to any Kafka cluster, while
 * MongoDB is the real FerretDB. While the fleet streams in, the test makes
 * the brokers fail requests (rd_kafka_mock_push_request_errors): fetch
 * errors, offset-commit failures, heartbeats that report a lost coordinator
 * or a rebalance; moves the group coordinator between brokers and takes one
 * down (rd_kafka_mock_coordinator_set, rd_kafka_mock_broker_set_down). Once
 * the whole fleet is in (checked), while the engine catches up: produce
 * errors, which hit its alert producer, and every broker slowed down
 * (rd_kafka_mock_broker_set_rtt), past the engine's 10 s alert flush and the
 * 6 s consumer session. The end state must still be exact. A second
 * scenario has Kafka refuse the engine's alerts for good: the engine stops
 * without a checkpoint (exit 3) and its restart sends them. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "faults.h"

/* Kafka protocol API keys (the protocol's numbers; librdkafka keeps its
 * names for them in a private header). */
enum {
  API_PRODUCE = 0,
  API_FETCH = 1,
  API_OFFSET_COMMIT = 8,
  API_HEARTBEAT = 12,
  API_SYNC_GROUP = 14,
  API_INIT_PRODUCER_ID = 22,
};

#define BROKERS 3

static rd_kafka_mock_cluster_t *g_mc;

static void push(f_run_t *r, int16_t api, const char *what, size_t n, const rd_kafka_resp_err_t *errs) {
  rd_kafka_mock_push_request_errors_array(g_mc, api, n, errs);
  r->faults += (int)n;
  fprintf(stderr, "[fault] %s: the next %zu requests fail:", what, n);
  for (size_t i = 0; i < n; i++) fprintf(stderr, " %s", rd_kafka_err2name(errs[i]));
  fprintf(stderr, "\n");
}

static void rtt_all(int ms) {
  for (int b = 1; b <= BROKERS; b++) rd_kafka_mock_broker_set_rtt(g_mc, b, ms);
}

/* A BROKERS-broker mock cluster with the scenario's topics and its group's
 * coordinator on broker 1; s->bootstrap points at it. Returns the client
 * that owns the cluster (destroyed after the cluster). */
static rd_kafka_t *mock_start(h_scenario_t *s) {
  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
  rd_kafka_t *mrk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  assert_non_null(mrk);
  g_mc = rd_kafka_mock_cluster_new(mrk, BROKERS);
  assert_non_null(g_mc);
  s->bootstrap = rd_kafka_mock_cluster_bootstraps(g_mc);
  fprintf(stderr, "[fault] mock cluster of %d brokers at %s\n", BROKERS, s->bootstrap);
  assert_int_equal(rd_kafka_mock_topic_create(g_mc, s->telemetry, s->partitions, BROKERS), 0);
  assert_int_equal(rd_kafka_mock_topic_create(g_mc, s->lifecycle, s->partitions, BROKERS), 0);
  assert_int_equal(rd_kafka_mock_topic_create(g_mc, s->alerts, s->partitions, BROKERS), 0);
  assert_int_equal(rd_kafka_mock_topic_create(g_mc, s->dlq, 2, BROKERS), 0);
  rd_kafka_mock_coordinator_set(g_mc, "group", s->group, 1);
  return mrk;
}

static void test_mock_cluster_errors(void **state) {
  (void)state;
  f_run_t r;
  f_begin(&r, "mock cluster errors/timeouts");
  h_scenario_t s;
  h_scenario_init(&s, "f_mock", 4);
  rd_kafka_t *mrk = mock_start(&s);

  /* One produce request in flight: with more, the mock cluster of
   * librdkafka 2.0.2 lost alerts the idempotent producer had reported
   * delivered (2 of 1289 in one run) after injected produce errors, which a
   * real broker refuses as out of order (README, Failure behaviour). */
  pid_t e =
      h_engine_start(&s, 2, (const char *const[]){"kafka.max.in.flight.requests.per.connection=1", NULL});
  const char *sim[] = {"--seed", "71",           "--products", "800",       "--rate", "700",     "--duration",
                       "30",     "--duplicates", "0.01",       "--reorder", "0.01",   "--quiet", NULL};
  pid_t sim_pid = h_sim_start(&s, sim);
  assert_true(h_wait_engine_log("assigned", 60));
  f_msleep(f_rnd(2000, 4000));

  /* While twin-sim produces: consumer-side faults. */
  /* Fetch errors: the consumer backs off, refreshes metadata, fetches again. */
  push(&r, API_FETCH, "fetch", 8,
       (rd_kafka_resp_err_t[]){
           RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
           RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
           RD_KAFKA_RESP_ERR_REPLICA_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_FENCED_LEADER_EPOCH,
           RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION});
  f_msleep(f_rnd(1500, 3000));

  /* Offset commits fail, some asking the member to rejoin (a rebalance):
   * the engine's truth is its MongoDB checkpoints, Kafka's offsets trail. */
  push(&r, API_OFFSET_COMMIT, "offset commit", 6,
       (rd_kafka_resp_err_t[]){
           RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
           RD_KAFKA_RESP_ERR_NOT_COORDINATOR, RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
           RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS, RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION});
  f_msleep(f_rnd(2000, 4000));

  /* Coordinator loss: heartbeats say so, the coordinator moves to another
   * broker, then that broker goes down for a while. */
  push(&r, API_HEARTBEAT, "heartbeat", 3,
       (rd_kafka_resp_err_t[]){RD_KAFKA_RESP_ERR_NOT_COORDINATOR, RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
                               RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS});
  f_msleep(f_rnd(1000, 2000));
  rd_kafka_mock_coordinator_set(g_mc, "group", s.group, 2);
  r.faults++;
  fprintf(stderr, "[fault] group coordinator moved to broker 2 (checkpoints at %lld)\n",
          (long long)h_checkpoints_total(&s));
  f_msleep(f_rnd(2000, 3000));
  rd_kafka_mock_broker_set_down(g_mc, 2);
  r.faults++;
  int down_ms = f_rnd(3000, 5000);
  fprintf(stderr, "[fault] broker 2 (coordinator, leader of some partitions) down for %d ms\n", down_ms);
  f_msleep(down_ms);
  rd_kafka_mock_coordinator_set(g_mc, "group", s.group, 3);
  rd_kafka_mock_broker_set_up(g_mc, 2);
  fprintf(stderr, "[fault] broker 2 up again, coordinator on broker 3\n");

  /* Every message twin-sim sent is in the mock cluster (the producer side
   * is not under test; a loss here would not be the engine's). */
  h_sim_wait(&s, sim_pid);
  h_expected_t ex;
  h_expected_build(&s, 64, &ex);
  int64_t in_topics = h_end_offsets_total(&s);
  fprintf(stderr, "[fault] twin-sim sent %llu messages, the mock cluster holds %lld\n",
          (unsigned long long)(ex.valid + ex.garbage), (long long)in_topics);
  assert_int_equal(in_topics, (int64_t)(ex.valid + ex.garbage));
  h_expected_cleanup(&ex);

  /* While the engine catches up: produce errors (its alert producer
   * retries), then slow brokers: 1.5 s per request, then 11 s, longer than
   * the engine's 10 s flush of alerts and the 6 s consumer session. */
  push(&r, API_PRODUCE, "produce", 8,
       (rd_kafka_resp_err_t[]){
           RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
           RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
           RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
           RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE});
  f_msleep(f_rnd(2000, 4000));
  rtt_all(1500);
  r.faults++;
  fprintf(stderr, "[fault] every broker answers after 1500 ms (checkpoints at %lld of %lld)\n",
          (long long)h_checkpoints_total(&s), (long long)in_topics);
  f_msleep(f_rnd(5000, 7000));
  rtt_all(11000);
  r.faults++;
  int slow_ms = f_rnd(12000, 15000);
  fprintf(stderr, "[fault] every broker answers after 11000 ms, for %d ms\n", slow_ms);
  f_msleep(slow_ms);
  rtt_all(0);
  fprintf(stderr, "[fault] brokers back to normal (checkpoints at %lld of %lld); engine alive: %s\n",
          (long long)h_checkpoints_total(&s), (long long)in_topics, h_rss_kib(e) > 0 ? "yes" : "no");
  assert_true(h_rss_kib(e) > 0);

  assert_true(h_wait_caught_up(&s, 180));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  f_finish(&r, &s);
  h_scenario_cleanup(&s);
  rd_kafka_mock_cluster_destroy(g_mc);
  rd_kafka_destroy(mrk);
}

/* Kafka refuses the engine's alerts for good (a permanent produce error,
 * as an ACL change or a fatal idempotent-producer error would give): the
 * engine must stop without checkpointing past them (exit 3), and the
 * restarted engine sends them; in the end every alert transition is on the
 * topic and the state is exact. */
static void test_mock_alerts_refused(void **state) {
  (void)state;
  f_run_t r;
  f_begin(&r, "alerts refused for good");
  h_scenario_t s;
  h_scenario_init(&s, "f_refused", 4);
  rd_kafka_t *mrk = mock_start(&s);
  /* The whole fleet first, so the refused produce requests are the
   * engine's. */
  const char *sim[] = {"--seed", "73", "--products", "300", "--events", "12000", "--quiet", NULL};
  h_run_sim(&s, sim);

  /* One refused request is enough: librdkafka then fails every queued
   * message for that topic with the same error. */
  push(&r, API_PRODUCE, "produce (permanent)", 1,
       (rd_kafka_resp_err_t[]){RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED});
  const char *const set[] = {"kafka.max.in.flight.requests.per.connection=1", NULL};
  pid_t e = h_engine_start(&s, 2, set);
  int st = 0;
  bool exited = false;
  for (int i = 0; i < 1200 && !exited; i++) { /* 120 s */
    exited = waitpid(e, &st, WNOHANG) == e;
    if (!exited) f_msleep(100);
  }
  if (!exited) {
    kill(e, SIGKILL);
    waitpid(e, &st, 0);
  }
  int64_t ck = h_checkpoints_total(&s);
  fprintf(stderr, "[fault] engine %s (status %d) at checkpoints %lld of %lld\n",
          exited ? "stopped by itself" : "still running after 120 s", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
          (long long)ck, (long long)h_end_offsets_total(&s));
  assert_true(exited);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 3);
  assert_true(h_wait_engine_log("could not be delivered", 1));

  /* Kafka accepts again: the restart sends what was refused. */
  e = h_engine_start(&s, 2, set);
  r.faults++;
  assert_true(h_wait_caught_up(&s, 180));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  f_finish(&r, &s);
  h_scenario_cleanup(&s);
  rd_kafka_mock_cluster_destroy(g_mc);
  rd_kafka_destroy(mrk);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_mock_cluster_errors),
                                     cmocka_unit_test(test_mock_alerts_refused)};
  return f_main(tests, sizeof tests / sizeof tests[0]);
}
