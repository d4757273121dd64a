/* test_export.c - twinctl export while the engine consumes: the export
 * equals the state as of the checkpoints it records.
 *
 * A seeded fleet streams at a fixed rate; twinctl exports twice mid-stream.
 * For each export the expected state is computed independently: every
 * input message below the recorded checkpoint offsets, read back from
 * Kafka and applied with the reducer and the alert rules. Each exported
 * twin must equal its expected twin, and no twin may be missing or extra:
 * no twin from before or after the recorded point. */
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

#include "harness.h"
#include "twin/rules.h"

static void msleep(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

typedef struct {
  int64_t next[2][64]; /* [topic][partition]: the export's checkpoint (next offset), 0 = none */
  int64_t count;       /* twins the export says it wrote */
} meta_t;

static void read_meta(const h_scenario_t *s, const char *path, meta_t *m) {
  memset(m, 0, sizeof *m);
  bson_error_t err;
  FILE *f = fopen(path, "r");
  if (!f) fail_msg("no meta file %s", path);
  char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  bson_t *doc = bson_new_from_json((const uint8_t *)buf, (ssize_t)n, &err);
  if (!doc) fail_msg("%s: %s", path, err.message);
  bson_iter_t it, cps, cp;
  if (bson_iter_init_find(&it, doc, "count")) m->count = bson_iter_as_int64(&it);
  assert_true(bson_iter_init_find(&it, doc, "checkpoints") && bson_iter_recurse(&it, &cps));
  while (bson_iter_next(&cps)) {
    const char *group = NULL, *topic = NULL;
    int64_t part = -1, off = -1;
    bson_iter_recurse(&cps, &cp);
    while (bson_iter_next(&cp)) {
      const char *k = bson_iter_key(&cp);
      if (strcmp(k, "group") == 0) group = bson_iter_utf8(&cp, NULL);
      if (strcmp(k, "topic") == 0) topic = bson_iter_utf8(&cp, NULL);
      if (strcmp(k, "partition") == 0) part = bson_iter_as_int64(&cp);
      if (strcmp(k, "offset") == 0) off = bson_iter_as_int64(&cp);
    }
    if (!group || strcmp(group, s->group) != 0 || !topic || part < 0 || part >= 64) continue;
    int t = strcmp(topic, s->telemetry) == 0 ? 0 : strcmp(topic, s->lifecycle) == 0 ? 1 : -1;
    if (t >= 0) m->next[t][part] = off;
  }
  bson_destroy(doc);
}

/* The twins as of m: every input message below its checkpoint, from Kafka. */
static void expected_at(const h_scenario_t *s, const meta_t *m, tw_map_t *twins) {
  char err[512];
  tw_rules_t *rules = tw_rules_compile(true, NULL, 0, err, sizeof err);
  assert_non_null(rules);
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  rd_kafka_conf_set(c, "bootstrap.servers", s->bootstrap, err, sizeof err);
  rd_kafka_conf_set(c, "group.id", "export-check", err, sizeof err);
  rd_kafka_conf_set(c, "enable.auto.commit", "false", err, sizeof err);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
  assert_non_null(rk);
  const char *topics[2] = {s->telemetry, s->lifecycle};
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(2 * s->partitions);
  int open = 0;
  for (int t = 0; t < 2; t++)
    for (int p = 0; p < s->partitions; p++)
      if (m->next[t][p] > 0) {
        rd_kafka_topic_partition_list_add(l, topics[t], p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        open++;
      }
  rd_kafka_assign(rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  bool done[2][64] = {{false}};
  time_t deadline = time(NULL) + 120;
  while (open > 0 && time(NULL) < deadline) {
    rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 200);
    if (!msg) continue;
    int t = msg->err ? -1 : strcmp(rd_kafka_topic_name(msg->rkt), s->telemetry) == 0 ? 0 : 1;
    if (t >= 0 && !done[t][msg->partition] && msg->offset < m->next[t][msg->partition]) {
      Twin__V1__Envelope *env = twin__v1__envelope__unpack(NULL, msg->len, msg->payload);
      if (env && tw_envelope_validate(env, msg->key, msg->key_len, err, sizeof err)) {
        tw_apply_event(rules, tw_map_get_or_new(twins, env->product_id, 64), env, NULL, NULL, NULL);
      }
      if (env) twin__v1__envelope__free_unpacked(env, NULL);
      if (msg->offset + 1 >= m->next[t][msg->partition]) {
        done[t][msg->partition] = true;
        open--;
      }
    }
    rd_kafka_message_destroy(msg);
  }
  if (open > 0) fail_msg("could not read the input topics up to the export's checkpoints");
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  tw_rules_destroy(rules);
  for (size_t i = 0; i < twins->cap; i++)
    if (twins->slots[i]) h_strip_interleaved_alerts(twins->slots[i]);
}

/* Compares the NDJSON export with the expected twins; returns differences. */
static int compare_export(const char *path, tw_map_t *want, int64_t *lines) {
  FILE *f = fopen(path, "r");
  if (!f) fail_msg("no export %s", path);
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  int diffs = 0;
  *lines = 0;
  while ((len = getline(&line, &cap, f)) > 0) {
    (*lines)++;
    bson_error_t berr;
    bson_t *doc = bson_new_from_json((const uint8_t *)line, len, &berr);
    if (!doc) fail_msg("%s line %lld: %s", path, (long long)*lines, berr.message);
    char err[256];
    tw_twin_t *got = tw_twin_from_bson(doc, 64, err, sizeof err);
    bson_destroy(doc);
    if (!got) fail_msg("%s line %lld: %s", path, (long long)*lines, err);
    got->offsets[0] = got->offsets[1] = -1;
    h_strip_interleaved_alerts(got);
    tw_twin_t *w = tw_map_get(want, got->product_id);
    if (!w) {
      if (diffs++ < 3)
        fprintf(stderr, "[test] %s: %s is in the export but has no event before its checkpoints\n", path,
                got->product_id);
    } else if (tw_twin_state_hash(got) != tw_twin_state_hash(w)) {
      if (diffs++ < 3)
        fprintf(stderr, "[test] %s: %s differs from its state at the checkpoints (rev %llu, expected %llu)\n",
                path, got->product_id, (unsigned long long)got->rev, (unsigned long long)w->rev);
    }
    tw_twin_destroy(got);
  }
  free(line);
  fclose(f);
  if ((size_t)*lines != want->len) {
    fprintf(stderr, "[test] %s: %lld twins exported, %zu expected\n", path, (long long)*lines, want->len);
    diffs++;
  }
  return diffs;
}

static void test_export_while_consuming(void **state) {
  (void)state;
  h_scenario_t s;
  h_scenario_init(&s, "export", 4);
  pid_t e = h_engine_start(&s, 2, NULL);
  assert_true(h_wait_engine_log("assigned", 60));
  /* 75 s of stream: both exports must fall inside it, also on a loaded
   * machine or under a sanitizer, where an export waiting for in-flight
   * flushes took over 20 s (a 25 s stream had ended by then). */
  const char *sim[] = {"--seed",       "31",   "--products", "200",  "--events",  "75000", "--rate",  "1000",
                       "--duplicates", "0.01", "--reorder",  "0.01", "--invalid", "0.01",  "--quiet", NULL};
  pid_t sp = h_sim_start(&s, sim);
  int64_t first = -1;
  for (int round = 0; round < 2; round++) {
    msleep(round == 0 ? 4000 : 3000);
    char out[400], cmd[1600];
    snprintf(out, sizeof out, "%s/export-%d.ndjson", s.logdir, round);
    snprintf(cmd, sizeof cmd, "%s/twinctl --mongo-uri '%s' --database %s export --format ndjson --out %s",
             s.bin_dir, s.mongo_uri, s.database, out);
    if (system(cmd) != 0) fail_msg("export failed: %s", cmd);
    meta_t m;
    char meta[420];
    snprintf(meta, sizeof meta, "%s.meta.json", out);
    read_meta(&s, meta, &m);
    int64_t at = 0;
    for (int t = 0; t < 2; t++)
      for (int p = 0; p < s.partitions; p++) at += m.next[t][p];
    tw_map_t want;
    tw_map_init(&want);
    expected_at(&s, &m, &want);
    int64_t lines;
    int diffs = compare_export(out, &want, &lines);
    fprintf(stderr, "[test] export %d: at %lld input messages (engine busy), %lld twins, %d differences\n",
            round, (long long)at, (long long)lines, diffs);
    assert_int_equal(diffs, 0);
    assert_true(lines == m.count);
    assert_true(at > 0);
    if (first < 0) first = at;
    tw_map_cleanup(&want, true);
  }
  h_sim_wait(&s, sp);
  /* The first export was taken mid-stream, not after it (on a loaded
   * machine under a sanitizer the second can end after the stream). */
  assert_true(first < h_end_offsets_total(&s));
  assert_true(h_wait_caught_up(&s, 120));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  h_scenario_cleanup(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_export_while_consuming)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
