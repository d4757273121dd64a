/* test_secure.c - the engine over authenticated, encrypted connections, as
 * production runs it: the real broker's SASL_SSL listener (PLAIN,
 * SCRAM-SHA-256, SCRAM-SHA-512) and FerretDB's TLS listener, both started by
 * deploy/local/stack.sh with a certificate authority of its own
 * (TWIN_STACK_DIR/tls/ca.pem).
 *
 *   - PLAIN: an engine whose only way to Kafka is the SASL_SSL listener
 *     (consumer, alert and dead-letter producer) and whose only way to
 *     MongoDB is TLS, with the password from a ${file:...}: every twin
 *     exact, dead letters and alerts on their topics, the password never
 *     in the log;
 *   - SCRAM-SHA-256 and -512: the broker's SCRAM user works (Java client);
 *     with librdkafka >= 2.6.1 the engine runs as with PLAIN; with an older
 *     one (Debian 12: 2.0.2), which Kafka 4.x refuses, the engine warns at
 *     start with the cause and remedy, reports the refused login and
 *     consumes nothing;
 *   - a wrong password: the engine stops at start (exit 1), the failed
 *     authentication in its log, never the password; nothing consumed.
 * Needs `deploy/local/stack.sh up`; logs in /tmp/twin-it/secure_<pid>_<t>/. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <mongoc/mongoc.h>

#include "harness.h"
#include "twin/log.h"

/* The credentials stack.sh gives the broker (test fixtures, not secrets). */
#define SASL_USER "twin-test"
#define SASL_PASSWORD "twin-test-secret"

static char g_stack_dir[300], g_ca[400], g_sasl_bootstrap[64], g_tls_uri[600];

static void setup_addresses(void) {
  const char *dir = getenv("TWIN_STACK_DIR");
  const char *kp = getenv("TWIN_KAFKA_PORT"), *sp = getenv("TWIN_KAFKA_SASL_PORT");
  const char *mp = getenv("TWIN_MONGO_PORT"), *tp = getenv("TWIN_MONGO_TLS_PORT");
  int kafka = kp ? atoi(kp) : 9092, mongo = mp ? atoi(mp) : 27017;
  int sasl = sp ? atoi(sp) : kafka + 2, tls = tp ? atoi(tp) : mongo + 10;
  const char *src = getenv("TWIN_SOURCE_DIR");
  if (dir)
    snprintf(g_stack_dir, sizeof g_stack_dir, "%s", dir);
  else
    snprintf(g_stack_dir, sizeof g_stack_dir, "%s/.stack", src ? src : ".");
  snprintf(g_ca, sizeof g_ca, "%s/tls/ca.pem", g_stack_dir);
  snprintf(g_sasl_bootstrap, sizeof g_sasl_bootstrap, "127.0.0.1:%d", sasl);
  snprintf(g_tls_uri, sizeof g_tls_uri, "mongodb://127.0.0.1:%d/?tls=true&tlsCAFile=%s", tls, g_ca);
  if (access(g_ca, R_OK) != 0) fail_msg("no %s: run deploy/local/stack.sh up", g_ca);
}

/* Writes the password to a file in the scenario's log folder; the engine
 * reads it through ${file:...}. */
static void password_file(const h_scenario_t *s, const char *password, char *ref, size_t cap) {
  char path[300];
  snprintf(path, sizeof path, "%s/kafka-password", s->logdir);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(password, f);
  fclose(f);
  snprintf(ref, cap, "kafka.sasl.password=${file:%s}", path);
}

/* An engine that reaches Kafka only through SASL_SSL with mechanism and
 * MongoDB only through TLS, with the given password; its log in log
 * (logdir/engine.log). */
static pid_t secure_engine(const h_scenario_t *s, const char *mechanism, const char *password,
                           const char *mongo_uri, char *log, size_t log_cap) {
  static char bootstrap[128], mech[96], ca[500], uri[700], pw[400];
  snprintf(bootstrap, sizeof bootstrap, "kafka.bootstrap.servers=%s", g_sasl_bootstrap);
  snprintf(mech, sizeof mech, "kafka.sasl.mechanisms=%s", mechanism);
  snprintf(ca, sizeof ca, "kafka.ssl.ca.location=%s", g_ca);
  snprintf(uri, sizeof uri, "mongo.uri=%s", mongo_uri);
  password_file(s, password, pw, sizeof pw);
  const char *extra[] = {bootstrap, "kafka.security.protocol=SASL_SSL",
                         mech,      "kafka.sasl.username=" SASL_USER,
                         pw,        ca,
                         uri,       "log.level=debug",
                         NULL};
  snprintf(log, log_cap, "%s/engine.log", s->logdir);
  return h_engine_start_log(s, 2, extra, log);
}

static void run_mechanism(const char *name, const char *mechanism, const char *seed) {
  h_scenario_t s;
  h_scenario_init(&s, name, 4);
  const char *sim[] = {"--seed", seed,        "--products", "150",     "--events",
                       "6000",   "--invalid", "0.01",       "--quiet", NULL};
  h_run_sim(&s, sim);
  char log[400];
  pid_t e = secure_engine(&s, mechanism, SASL_PASSWORD, g_tls_uri, log, sizeof log);
  assert_true(h_wait_caught_up(&s, 180));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);

  /* Every twin exact: consumed over SASL_SSL, stored over TLS. */
  h_expected_t ex;
  h_expected_build(&s, 64, &ex);
  assert_true(ex.twins.len > 0);
  assert_int_equal(h_compare_store(&s, &ex), 0);
  /* The dead letters and alerts went out through the same listener. */
  int64_t bad_headers = 0;
  assert_int_equal(h_count_dlq(&s, &bad_headers), (int64_t)ex.garbage);
  assert_int_equal(bad_headers, 0);
  h_alerts_t a;
  h_read_alerts(&s, 1, 2000, 60, &a);
  assert_true(a.n > 0);
  h_alerts_free(&a);
  h_expected_cleanup(&ex);

  /* The password was read from its file and never logged. */
  char *text = h_slurp(log);
  assert_non_null(text);
  if (strstr(text, SASL_PASSWORD)) fail_msg("the SASL password is in %s", log);
  free(text);
  h_scenario_cleanup(&s);
}

/* A login the broker refuses: the engine cannot read the topics' metadata,
 * so it stops at start with exit 1 (a restart loop an operator sees), its
 * log names the refused authentication (never the password), and nothing
 * was consumed. */
static void expect_refused(h_scenario_t *s, pid_t e, const char *log, const char *password) {
  assert_true(h_wait_engine_log("Authentication failed", 60));
  assert_int_equal(h_engine_stop(e, 0), 1); /* signal 0: waits for it to exit by itself */
  char *text = h_slurp(log);
  assert_non_null(text);
  assert_non_null(strstr(text, "cannot read Kafka metadata"));
  if (password && strstr(text, password)) fail_msg("the SASL password is in %s", log);
  free(text);
  assert_int_equal(h_checkpoints_total(s), 0);
  h_scenario_cleanup(s);
}

/* SCRAM: the broker's user works (the Java client of the broker's own jars
 * logs in with it); the engine logs in too when its librdkafka can, and
 * otherwise warns at start with the cause and the remedy, then reports the
 * refused login and consumes nothing. */
static void scram(const char *name, const char *mechanism, const char *seed) {
  char props[] = "/tmp/twin-scram-XXXXXX", cmd[1200];
  int fd = mkstemp(props);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  assert_non_null(f);
  fprintf(
      f,
      "security.protocol=SASL_SSL\nsasl.mechanism=%s\nsasl.jaas.config="
      "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"%s\" password=\"%s\";\n"
      "ssl.truststore.type=PEM\nssl.truststore.location=%s\n",
      mechanism, SASL_USER, SASL_PASSWORD, g_ca);
  fclose(f);
  snprintf(cmd, sizeof cmd,
           "java -cp \"$(ls -d '%s'/cache/kafka-*/lib | head -1)/*\" org.apache.kafka.tools.TopicCommand "
           "--bootstrap-server %s --command-config %s --list 2>/dev/null | grep -qx twin.telemetry",
           g_stack_dir, g_sasl_bootstrap, props);
  int rc = system(cmd);
  unlink(props);
  assert_int_equal(rc, 0);

  if (rd_kafka_version() >= 0x020601ff) {
    run_mechanism(name, mechanism, seed);
    return;
  }
  h_scenario_t s;
  h_scenario_init(&s, name, 2);
  const char *sim[] = {"--seed", seed, "--products", "20", "--events", "500", "--quiet", NULL};
  h_run_sim(&s, sim);
  char log[400];
  pid_t e = secure_engine(&s, mechanism, SASL_PASSWORD, g_tls_uri, log, sizeof log);
  assert_true(h_wait_engine_log("Authentication failed", 60));
  char *text = h_slurp(log);
  assert_non_null(text);
  assert_non_null(strstr(text, "cannot log in with SCRAM to Apache Kafka 4.x brokers"));
  free(text);
  expect_refused(&s, e, log, NULL);
}

static void test_plain(void **state) {
  (void)state;
  run_mechanism("secure_plain", "PLAIN", "43");
}

static void test_scram_sha256(void **state) {
  (void)state;
  scram("secure_scram256", "SCRAM-SHA-256", "42");
}

static void test_scram_sha512(void **state) {
  (void)state;
  scram("secure_scram512", "SCRAM-SHA-512", "41");
}

/* A wrong password: refused (see expect_refused). */
static void test_wrong_password(void **state) {
  (void)state;
  h_scenario_t s;
  h_scenario_init(&s, "secure_badpw", 2);
  const char *sim[] = {"--seed", "44", "--products", "20", "--events", "500", "--quiet", NULL};
  h_run_sim(&s, sim);
  const char *wrong = "not-the-password-7f3a";
  char log[400];
  pid_t e = secure_engine(&s, "PLAIN", wrong, g_tls_uri, log, sizeof log);
  expect_refused(&s, e, log, wrong);
}

int main(void) {
  mongoc_init();
  tw_log_route_mongoc();
  setup_addresses();
  if (getenv("TWIN_TEST_FILTER")) cmocka_set_test_filter(getenv("TWIN_TEST_FILTER"));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_plain),
      cmocka_unit_test(test_scram_sha256),
      cmocka_unit_test(test_scram_sha512),
      cmocka_unit_test(test_wrong_password),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  mongoc_cleanup();
  return rc;
}
