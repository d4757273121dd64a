/* test_bench_freshness.c - twin-bench-tool freshness, the benchmark's
 * outside view of freshness, against the real engine, Kafka and FerretDB:
 * every event twin-sim sent is found in its product's snapshot, every
 * alert is joined to its event, and the latencies are those of a snapshot
 * interval (above zero, at most a few intervals). The join itself is
 * tested in tests/unit/test_freshness.c. Also: the tool's create returns
 * topics ready to use. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

/* The number after "key": in the JSON line (keys are unique here). */
static long long num_after(const char *json, const char *key) {
  const char *p = strstr(json, key);
  if (!p) fail_msg("no %s in %s", key, json);
  return strtoll(p + strlen(key), NULL, 10);
}

static void msleep(int ms) { usleep((useconds_t)ms * 1000); }

static void test_freshness_tool(void **state) {
  (void)state;
  h_scenario_t s;
  h_scenario_init(&s, "bench_fresh", 4);
  const char *set[] = {"snapshot.interval.ms=500", NULL};
  pid_t e = h_engine_start(&s, 2, set);

  char out[400], tool[300];
  snprintf(out, sizeof out, "%s/freshness.out", s.logdir);
  snprintf(tool, sizeof tool, "%s/twin-bench-tool", s.bin_dir);
  pid_t t = fork();
  assert_true(t >= 0);
  if (t == 0) {
    if (!freopen(out, "w", stdout)) _exit(127);
    execl(tool, tool, "freshness", s.bootstrap, s.mongo_uri, s.database, s.telemetry, s.lifecycle, s.alerts,
          "50", "60", (char *)NULL);
    _exit(127);
  }
  char *text = NULL;
  for (int i = 0; i < 600; i++) {
    free(text);
    text = h_slurp(out);
    if (text && strncmp(text, "ready", 5) == 0) break;
    msleep(100);
  }
  assert_non_null(text);
  assert_true(strncmp(text, "ready", 5) == 0);

  const char *sim[] = {"--seed", "61",         "--products", "30",      "--rate",
                       "2000",   "--duration", "6",          "--quiet", NULL};
  h_run_sim(&s, sim);
  int64_t sent = h_end_offsets_total(&s);
  kill(t, SIGINT);
  int status;
  assert_int_equal(waitpid(t, &status, 0), t);
  free(text);
  text = h_slurp(out);
  assert_non_null(text);
  fprintf(stderr, "[test] %s", text);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0); /* 3: an event never read */
  const char *json = strchr(text, '{');
  assert_non_null(json);

  /* Every event sent, each found in a snapshot. */
  assert_int_equal(num_after(json, "\"events\":"), sent);
  const char *snap = strstr(json, "\"snapshot\":");
  const char *alert = strstr(json, "\"alert\":");
  assert_non_null(snap);
  assert_non_null(alert);
  assert_int_equal(num_after(snap, "\"n\":"), sent);
  assert_int_equal(num_after(snap, "\"unmatched\":"), 0);
  /* Snapshots every 500 ms: an event waits for the next flush (its median
   * above a millisecond) and, on a loaded machine, a few of them. */
  long long p50 = num_after(snap, "\"p50_ms\":"), max = num_after(snap, "\"max_ms\":");
  assert_true(p50 >= 1);
  assert_true(p50 <= num_after(snap, "\"p99_ms\":") && num_after(snap, "\"p99_ms\":") <= max);
  assert_true(max < 15000);
  /* Alerts: twin-sim's fleet raises some, each joined to its event. */
  assert_true(num_after(alert, "\"n\":") > 0);
  assert_int_equal(num_after(alert, "\"unmatched\":"), 0);
  assert_true(num_after(alert, "\"max_ms\":") < 15000);
  assert_true(num_after(json, "\"polls\":") > 10);
  assert_int_equal(num_after(json, "\"poll_errors\":"), 0);
  /* Reads start every 50 ms at the soonest, and each is followed by at
   * least twice its time at rest (fr_poll_rest_ms). */
  long long period = num_after(json, "\"poll_period_ms_mean\":"), read = num_after(json, "\"poll_ms_mean\":");
  assert_true(period >= 50);
  assert_true(period >= 3 * read);
  free(text);

  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  h_scenario_cleanup(&s);
}

/* twin-bench-tool create returns once the broker lists the new topics with
 * all their partitions, so what bench/run.sh starts right after it finds
 * them (count reads their metadata at once). */
static void test_create_then_use(void **state) {
  (void)state;
  const char *bin = getenv("TWIN_BIN_DIR"), *brokers = getenv("TWIN_KAFKA_BOOTSTRAP");
  assert_non_null(bin);
  if (!brokers) brokers = "127.0.0.1:9092";
  char cmd[1024], out[64] = "";
  int id = (int)getpid();
  snprintf(
      cmd, sizeof cmd,
      "'%s/twin-bench-tool' create %s it.bt%d.a:3 it.bt%d.b:5 && '%s/twin-bench-tool' count %s it.bt%d.a "
      "it.bt%d.b",
      bin, brokers, id, id, bin, brokers, id, id);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  if (!fgets(out, sizeof out, p)) out[0] = '\0';
  int rc = pclose(p);
  snprintf(cmd, sizeof cmd, "'%s/twin-bench-tool' delete %s it.bt%d.a it.bt%d.b", bin, brokers, id, id);
  assert_int_equal(system(cmd), 0);
  assert_int_equal(rc, 0);
  assert_string_equal(out, "0\n"); /* two new, empty topics */
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_freshness_tool),
                                     cmocka_unit_test(test_create_then_use)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
