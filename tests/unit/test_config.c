/* test_config.c - the settings table: defaults, YAML, environment, --set
 * precedence, and errors that name the key and what is allowed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "twin/config.h"

static void test_defaults(void **state) {
  (void)state;
  tw_config_t c;
  char err[512];
  tw_config_init(&c);
  assert_string_equal(tw_config_kafka(&c, "bootstrap.servers"), "127.0.0.1:9092");
  assert_string_equal(tw_config_kafka(&c, "group.id"), "twin-engine");
  assert_string_equal(c.mongo_uri, "mongodb://127.0.0.1:27017");
  assert_string_equal(c.mongo_database, "twin");
  assert_string_equal(c.topic_telemetry, "twin.telemetry");
  assert_int_equal(c.seq_window, 64);
  assert_true(c.shards >= 1);
  assert_true(tw_config_validate(&c, err, sizeof err));
  tw_config_cleanup(&c);
}

static char *write_tmp(const char *text) {
  static char path[64];
  strcpy(path, "/tmp/twin-config-XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  return path;
}

static void test_yaml_env_set_precedence(void **state) {
  (void)state;
  tw_config_t c;
  char err[512];
  tw_config_init(&c);
  char *p = write_tmp("kafka:\n  bootstrap.servers: broker-a:9093\n  sasl:\n    mechanisms: SCRAM-SHA-512\n"
                      "snapshot:\n  interval.ms: 250\nshards: 3\nmongo.database: fleet\n");
  assert_true(tw_config_load_yaml(&c, p, err, sizeof err));
  unlink(p);
  assert_string_equal(tw_config_kafka(&c, "bootstrap.servers"), "broker-a:9093");
  assert_string_equal(tw_config_kafka(&c, "sasl.mechanisms"), "SCRAM-SHA-512");
  assert_int_equal(c.snapshot_interval_ms, 250);
  assert_int_equal(c.shards, 3);
  assert_string_equal(c.mongo_database, "fleet");

  /* Kubernetes service links for a Service named twin-engine are not settings: ignored. */
  char *env[] = {"TWIN_SNAPSHOT_INTERVAL_MS=400",
                 "TWIN_KAFKA_SASL_USERNAME=svc",
                 "PATH=/bin",
                 "TWIN_ENGINE_SERVICE_HOST=10.0.0.7",
                 "TWIN_ENGINE_SERVICE_PORT=8080",
                 "TWIN_ENGINE_SERVICE_PORT_HTTP=8080",
                 "TWIN_ENGINE_PORT=tcp://10.0.0.7:8080",
                 "TWIN_ENGINE_PORT_8080_TCP=tcp://10.0.0.7:8080",
                 "TWIN_ENGINE_PORT_8080_TCP_ADDR=10.0.0.7",
                 NULL};
  assert_true(tw_config_load_env(&c, env, err, sizeof err));
  assert_int_equal(c.snapshot_interval_ms, 400);
  assert_string_equal(tw_config_kafka(&c, "sasl.username"), "svc");

  assert_true(tw_config_set(&c, "snapshot.interval.ms", "500", "--set", err, sizeof err));
  assert_int_equal(c.snapshot_interval_ms, 500);
  tw_config_cleanup(&c);
}

static void test_errors_name_key_and_allowed(void **state) {
  (void)state;
  tw_config_t c;
  char err[512];
  tw_config_init(&c);
  assert_false(tw_config_set(&c, "snapshot.interval.ms", "fast", "--set", err, sizeof err));
  assert_non_null(strstr(err, "snapshot.interval.ms"));
  assert_non_null(strstr(err, "10 to 600000"));
  assert_false(tw_config_set(&c, "shards", "0", "--set", err, sizeof err));
  assert_non_null(strstr(err, "shards"));
  assert_false(tw_config_set(&c, "log.format", "xml", "--set", err, sizeof err));
  assert_non_null(strstr(err, "text|json"));
  assert_false(tw_config_set(&c, "snapshot.intervl.ms", "5", "--set", err, sizeof err));
  assert_non_null(strstr(err, "unknown config key 'snapshot.intervl.ms'"));
  assert_false(tw_config_set(&c, "mongo.database", "", "--set", err, sizeof err));
  assert_non_null(strstr(err, "mongo.database is empty"));

  char *env[] = {"TWIN_SNAPSHOT_INTERVL_MS=1", NULL};
  assert_false(tw_config_load_env(&c, env, err, sizeof err));
  assert_non_null(strstr(err, "TWIN_SNAPSHOT_INTERVL_MS"));

  char *p = write_tmp("shards: [1, 2]\n");
  assert_false(tw_config_load_yaml(&c, p, err, sizeof err));
  assert_non_null(strstr(err, "shards"));
  unlink(p);
  p = write_tmp("shards: 2\n  bad: indent\n");
  assert_false(tw_config_load_yaml(&c, p, err, sizeof err));
  assert_non_null(strstr(err, p));
  unlink(p);
  assert_false(tw_config_load_yaml(&c, "/nonexistent/twin.yaml", err, sizeof err));
  assert_non_null(strstr(err, "/nonexistent/twin.yaml"));

  assert_true(tw_config_set(&c, "topics.lifecycle", "twin.telemetry", "--set", err, sizeof err));
  assert_false(tw_config_validate(&c, err, sizeof err));
  assert_non_null(strstr(err, "topics.telemetry and topics.lifecycle"));
  tw_config_cleanup(&c);

  tw_config_init(&c);
  assert_true(tw_config_set(&c, "kafka.partition.assignment.strategy", "cooperative-sticky", "--set", err,
                            sizeof err));
  assert_false(tw_config_validate(&c, err, sizeof err));
  assert_non_null(strstr(err, "expected range"));
  tw_config_cleanup(&c);

  tw_config_init(&c);
  assert_true(tw_config_set(&c, "kafka.enable.auto.commit", "true", "--set", err, sizeof err));
  assert_false(tw_config_validate(&c, err, sizeof err));
  assert_non_null(strstr(err, "enable.auto.commit"));
  tw_config_cleanup(&c);
}

static void test_dump_masks_secrets(void **state) {
  (void)state;
  tw_config_t c;
  char err[512];
  tw_config_init(&c);
  assert_true(tw_config_set(&c, "kafka.sasl.password", "hunter2-secret", "--set", err, sizeof err));
  assert_true(tw_config_set(&c, "mongo.uri", "mongodb://u:pa55word@db:27017", "--set", err, sizeof err));
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  tw_config_dump(&c, f);
  fclose(f);
  assert_null(strstr(buf, "hunter2-secret"));
  assert_null(strstr(buf, "pa55word"));
  assert_non_null(strstr(buf, "kafka.sasl.password=(secret)"));
  free(buf);
  tw_config_cleanup(&c);
}

/* ${file:PATH} and ${env:NAME}: secrets kept out of the config file and the
 * command line; errors name the key and the file or variable, never the
 * secret; a bad value of a secret setting is not echoed either. */
static void test_secret_references(void **state) {
  (void)state;
  tw_config_t c;
  char err[512];
  tw_config_init(&c);
  char *p = strdup(write_tmp("s3cr3t-from-file\n"));
  char ref[600];
  snprintf(ref, sizeof ref, "${file:%s}", p);
  assert_true(tw_config_set(&c, "kafka.sasl.password", ref, "--set", err, sizeof err));
  assert_string_equal(tw_config_kafka(&c, "sasl.password"), "s3cr3t-from-file");
  assert_true(tw_config_set(&c, "mongo.uri", "${env:TWIN_TEST_MONGO_SECRET_URI}", "--set", err, sizeof err) ==
              false);
  assert_non_null(strstr(err, "mongo.uri"));
  assert_non_null(strstr(err, "TWIN_TEST_MONGO_SECRET_URI"));
  setenv("TWIN_TEST_MONGO_SECRET_URI", "mongodb://svc:env-pa55@db:27017/?authSource=admin", 1);
  assert_true(tw_config_set(&c, "mongo.uri", "${env:TWIN_TEST_MONGO_SECRET_URI}", "--set", err, sizeof err));
  /* the YAML file can refer too */
  char yaml[700];
  snprintf(yaml, sizeof yaml, "http:\n  tokens: \"${file:%s}\"\n", p);
  char *y = strdup(write_tmp(yaml));
  assert_true(tw_config_load_yaml(&c, y, err, sizeof err));
  assert_true(tw_config_validate(&c, err, sizeof err));
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  tw_config_dump(&c, f);
  fclose(f);
  assert_null(strstr(buf, "s3cr3t-from-file"));
  assert_null(strstr(buf, "env-pa55"));
  free(buf);
  unlink(y);
  free(y);

  assert_false(
      tw_config_set(&c, "kafka.sasl.password", "${file:/nonexistent/secret}", "--set", err, sizeof err));
  assert_non_null(strstr(err, "kafka.sasl.password"));
  assert_non_null(strstr(err, "/nonexistent/secret"));
  assert_false(tw_config_set(&c, "mongo.uri", "${file:}", "--set", err, sizeof err));
  assert_non_null(strstr(err, "names no file"));
  /* a literal that merely looks similar is kept as it is */
  assert_true(tw_config_set(&c, "kafka.client.id", "${file:x", "--set", err, sizeof err));
  assert_string_equal(tw_config_kafka(&c, "client.id"), "${file:x");
  /* an invalid URI with credentials: the error does not repeat it */
  assert_true(tw_config_set(&c, "mongo.uri", "mongdb://u:typo-pa55@db", "--set", err, sizeof err));
  assert_false(tw_config_validate(&c, err, sizeof err));
  assert_non_null(strstr(err, "mongo.uri"));
  assert_null(strstr(err, "typo-pa55"));
  unlink(p);
  free(p);
  tw_config_cleanup(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_yaml_env_set_precedence),
      cmocka_unit_test(test_errors_name_key_and_allowed),
      cmocka_unit_test(test_dump_masks_secrets),
      cmocka_unit_test(test_secret_references),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
