/* bench_tool.c - small Kafka chores for bench/run.sh.
 *
 *   twin-bench-tool create BROKERS TOPIC:PARTITIONS...   create topics (existing ones are fine)
 *   twin-bench-tool delete BROKERS TOPIC...              delete topics
 *   twin-bench-tool count BROKERS TOPIC...               messages in the topics (sum of end - start)
 *   twin-bench-tool dropdb MONGO_URI DATABASE             drop a database
 *   twin-bench-tool server MONGO_URI DATABASE             "ferretdb" or "mongodb" (buildInfo)
 *   twin-bench-tool freshness BROKERS MONGO_URI DATABASE TELEMETRY LIFECYCLE ALERTS [POLL_MS [DRAIN_S]]
 *                                                         produced -> in a snapshot / alert read
 * (freshness_cmd.c)
 */
#include <librdkafka/rdkafka.h>
#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int fr_cmd(int argc, char **argv); /* freshness_cmd.c */

static rd_kafka_t *client(const char *brokers) {
  char err[512];
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  if (rd_kafka_conf_set(c, "bootstrap.servers", brokers, err, sizeof err) != RD_KAFKA_CONF_OK) {
    fprintf(stderr, "twin-bench-tool: %s\n", err);
    exit(2);
  }
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof err);
  if (!rk) {
    fprintf(stderr, "twin-bench-tool: %s\n", err);
    exit(1);
  }
  return rk;
}

/* A topic argument, TOPIC[:N]: its name into name, and N (1 if absent). */
static int topic_spec(const char *arg, char *name, size_t cap) {
  snprintf(name, cap, "%s", arg);
  char *colon = strrchr(name, ':');
  int parts = colon ? atoi(colon + 1) : 1;
  if (colon) *colon = '\0';
  return parts;
}

/* True when the broker's metadata lists every topic of names (TOPIC[:N]),
 * without error and with all its partitions: CreateTopics returns once the
 * controller made them, a little before every broker lists them, and an
 * engine started at once could find a topic missing and stop. */
static bool listed(rd_kafka_t *rk, int argc, char **argv) {
  const struct rd_kafka_metadata *md;
  if (rd_kafka_metadata(rk, 1, NULL, &md, 5000)) return false;
  int found = 0;
  for (int i = 0; i < argc; i++) {
    char name[256];
    int parts = topic_spec(argv[i], name, sizeof name);
    for (int t = 0; t < md->topic_cnt; t++) {
      const struct rd_kafka_metadata_topic *mt = &md->topics[t];
      if (strcmp(mt->topic, name) == 0 && !mt->err && mt->partition_cnt >= parts) {
        found++;
        break;
      }
    }
  }
  rd_kafka_metadata_destroy(md);
  return found == argc;
}

static int admin(rd_kafka_t *rk, int argc, char **argv, bool create) {
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  char err[512];
  int rc = 0;
  if (create) {
    rd_kafka_NewTopic_t **nt = calloc((size_t)argc, sizeof *nt);
    for (int i = 0; i < argc; i++) {
      char name[256];
      int parts = topic_spec(argv[i], name, sizeof name);
      nt[i] = rd_kafka_NewTopic_new(name, parts, 1, err, sizeof err);
      if (!nt[i]) {
        fprintf(stderr, "twin-bench-tool: %s: %s\n", argv[i], err);
        return 2;
      }
    }
    rd_kafka_CreateTopics(rk, nt, (size_t)argc, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 60000);
    size_t n = 0;
    const rd_kafka_topic_result_t **r =
        ev ? rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n) : NULL;
    for (size_t i = 0; i < n; i++) {
      rd_kafka_resp_err_t e = rd_kafka_topic_result_error(r[i]);
      if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        fprintf(stderr, "twin-bench-tool: create %s: %s\n", rd_kafka_topic_result_name(r[i]),
                rd_kafka_topic_result_error_string(r[i]));
        rc = 1;
      }
    }
    if (!ev) rc = 1;
    if (ev) rd_kafka_event_destroy(ev);
    for (int tries = 0; rc == 0 && !listed(rk, argc, argv); tries++) {
      if (tries == 300) {
        fprintf(stderr,
                "twin-bench-tool: the topics were created but the broker does not list them after 30 s\n");
        rc = 1;
        break;
      }
      usleep(100 * 1000);
    }
    for (int i = 0; i < argc; i++) rd_kafka_NewTopic_destroy(nt[i]);
    free(nt);
  } else {
    rd_kafka_DeleteTopic_t **dt = calloc((size_t)argc, sizeof *dt);
    for (int i = 0; i < argc; i++) dt[i] = rd_kafka_DeleteTopic_new(argv[i]);
    rd_kafka_DeleteTopics(rk, dt, (size_t)argc, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 60000);
    if (ev) rd_kafka_event_destroy(ev);
    for (int i = 0; i < argc; i++) rd_kafka_DeleteTopic_destroy(dt[i]);
    free(dt);
  }
  rd_kafka_queue_destroy(q);
  return rc;
}

static int count(rd_kafka_t *rk, int argc, char **argv) {
  long long total = 0;
  for (int i = 0; i < argc; i++) {
    const struct rd_kafka_metadata *md;
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, argv[i], NULL);
    if (rd_kafka_metadata(rk, 0, t, &md, 10000) || md->topic_cnt != 1 || md->topics[0].err) {
      fprintf(stderr, "twin-bench-tool: no topic %s\n", argv[i]);
      return 1;
    }
    for (int p = 0; p < md->topics[0].partition_cnt; p++) {
      int64_t lo, hi;
      if (rd_kafka_query_watermark_offsets(rk, argv[i], p, &lo, &hi, 10000) == 0) total += hi - lo;
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
  }
  printf("%lld\n", total);
  return 0;
}

static int mongo_cmd(const char *cmd, const char *uri, const char *db) {
  mongoc_init();
  mongoc_log_set_handler(NULL, NULL); /* FerretDB lacks endSessions: noise */
  bson_error_t err;
  mongoc_client_t *c = mongoc_client_new(uri);
  if (!c) {
    fprintf(stderr, "twin-bench-tool: bad MongoDB URI\n");
    return 2;
  }
  int rc = 0;
  if (strcmp(cmd, "server") == 0) {
    bson_t c_cmd = BSON_INITIALIZER, reply;
    BSON_APPEND_INT32(&c_cmd, "buildInfo", 1);
    if (mongoc_client_command_simple(c, db, &c_cmd, NULL, &reply, &err)) {
      bson_iter_t it;
      printf("%s\n", bson_iter_init_find(&it, &reply, "ferretdbVersion") ? "ferretdb" : "mongodb");
    } else {
      rc = 1;
    }
    bson_destroy(&c_cmd);
    bson_destroy(&reply);
  } else {
    mongoc_database_t *d = mongoc_client_get_database(c, db);
    if (!mongoc_database_drop(d, &err) && err.code != 26) rc = 1;
    mongoc_database_destroy(d);
  }
  if (rc) fprintf(stderr, "twin-bench-tool: %s\n", err.message);
  mongoc_client_destroy(c);
  mongoc_cleanup();
  return rc;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "freshness") == 0) return fr_cmd(argc - 2, argv + 2);
  if (argc == 4 && (strcmp(argv[1], "dropdb") == 0 || strcmp(argv[1], "server") == 0))
    return mongo_cmd(argv[1], argv[2], argv[3]);
  if (argc < 4) {
    fprintf(stderr, "usage: twin-bench-tool create|delete|count BROKERS TOPIC[:PARTITIONS]...\n"
                    "       twin-bench-tool dropdb|server MONGO_URI DATABASE\n"
                    "       twin-bench-tool freshness BROKERS MONGO_URI DATABASE TELEMETRY LIFECYCLE ALERTS "
                    "[POLL_MS [DRAIN_S]]\n");
    return 2;
  }
  rd_kafka_t *rk = client(argv[2]);
  int rc;
  if (strcmp(argv[1], "create") == 0)
    rc = admin(rk, argc - 3, argv + 3, true);
  else if (strcmp(argv[1], "delete") == 0)
    rc = admin(rk, argc - 3, argv + 3, false);
  else if (strcmp(argv[1], "count") == 0)
    rc = count(rk, argc - 3, argv + 3);
  else {
    fprintf(stderr, "twin-bench-tool: unknown command %s\n", argv[1]);
    rc = 2;
  }
  rd_kafka_destroy(rk);
  return rc;
}
