/* freshness_cmd.c - twin-bench-tool freshness: measures, from outside the
 * engine, how long an event takes from being produced until a MongoDB
 * reader finds it in its product's snapshot, and until its alert can be
 * read from the alerts topic (freshness.h).
 *
 *   twin-bench-tool freshness BROKERS MONGO_URI DATABASE TELEMETRY LIFECYCLE ALERTS [POLL_MS [DRAIN_S]]
 *
 * It reads the three topics from their beginning as a consumer group of
 * its own and prints "ready" once it has its partitions; start the load
 * after that. Meanwhile a second thread reads the twins collection every
 * POLL_MS (default 100), or less often when a read takes more than a third
 * of that (fr_poll_rest_ms): the snapshots written since the read before
 * (by their updated_at), only _id and sources. On SIGINT or SIGTERM (the load
 * is over) it reads the input topics up to their ends, then goes on
 * reading until every input event is in a snapshot or DRAIN_S (default
 * 60) seconds pass, and prints one JSON line with the distributions. A
 * latency is an upper bound: a snapshot is read at most one period after
 * it became readable (poll_period_ms_mean in the output), plus the read's
 * own time (poll_ms_mean). */
#include "freshness.h"
#include "util.h"

#include "twin/v1/alerts.pb-c.h"
#include "twin/v1/events.pb-c.h"

#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_load;
static void on_signal(int sig) {
  (void)sig;
  stop_load = 1;
}

typedef struct {
  fr_t *fr;
  const char *uri, *db;
  int poll_ms;
  atomic_bool stop;
  int64_t polls, poll_ms_sum, errors;
  int64_t periods, period_ms_sum; /* start to start, the rest included */
  char err[256];
} poller_t;

/* One read of the snapshots written since `since` (all of them if < 0). */
static bool poll_once(poller_t *pl, mongoc_collection_t *coll, int64_t since) {
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj, cond;
  if (since >= 0) {
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "updated_at", &cond);
    BSON_APPEND_DATE_TIME(&cond, "$gte", since);
    bson_append_document_end(&filter, &cond);
  }
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
  BSON_APPEND_INT32(&proj, "sources", 1);
  bson_append_document_end(&opts, &proj);
  mongoc_cursor_t *c = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
  const bson_t *doc;
  uint64_t missing[256];
  while (mongoc_cursor_next(c, &doc)) {
    int64_t seen = tw_now_ms();
    bson_iter_t it, arr, src, f;
    const char *id = NULL;
    if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_UTF8(&it)) id = bson_iter_utf8(&it, NULL);
    if (!id || !bson_iter_init_find(&it, doc, "sources") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &arr))
      continue;
    while (bson_iter_next(&arr)) {
      if (!BSON_ITER_HOLDS_DOCUMENT(&arr) || !bson_iter_recurse(&arr, &src)) continue;
      const char *name = NULL;
      uint64_t hwm = 0;
      size_t n_missing = 0;
      while (bson_iter_next(&src)) {
        const char *k = bson_iter_key(&src);
        if (strcmp(k, "name") == 0 && BSON_ITER_HOLDS_UTF8(&src)) {
          name = bson_iter_utf8(&src, NULL);
        } else if (strcmp(k, "hwm") == 0 && BSON_ITER_HOLDS_NUMBER(&src)) {
          hwm = (uint64_t)bson_iter_as_int64(&src);
        } else if (strcmp(k, "missing") == 0 && BSON_ITER_HOLDS_ARRAY(&src) && bson_iter_recurse(&src, &f)) {
          while (bson_iter_next(&f) && n_missing < sizeof missing / sizeof *missing)
            missing[n_missing++] = (uint64_t)bson_iter_as_int64(&f);
        }
      }
      if (name) fr_observe(pl->fr, id, name, hwm, missing, n_missing, seen);
    }
  }
  bson_error_t err;
  bool ok = !mongoc_cursor_error(c, &err);
  if (!ok) {
    snprintf(pl->err, sizeof pl->err, "%.200s", err.message);
    for (char *q = pl->err; *q; q++)
      if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20) *q = '\''; /* printed in JSON */
  }
  mongoc_cursor_destroy(c);
  bson_destroy(&filter);
  bson_destroy(&opts);
  return ok;
}

static void *poller(void *arg) {
  poller_t *pl = arg;
  mongoc_client_t *cl = mongoc_client_new(pl->uri);
  mongoc_collection_t *coll = mongoc_client_get_collection(cl, pl->db, "twins");
  /* The engine stamps updated_at before its write lands, so each read
   * looks 5 s further back than the start of the one before, and every
   * 20th read takes every snapshot: a write slower than that is read late,
   * not missed. */
  int64_t since = -1;
  while (!atomic_load(&pl->stop)) {
    int64_t t0 = tw_now_ms();
    if (poll_once(pl, coll, pl->polls % 20 ? since : -1)) {
      pl->polls++;
      pl->poll_ms_sum += tw_now_ms() - t0;
      since = t0 - 5000;
    } else {
      pl->errors++;
    }
    int64_t rest = fr_poll_rest_ms(pl->poll_ms, tw_now_ms() - t0);
    if (rest > 0) usleep((useconds_t)rest * 1000);
    pl->period_ms_sum += tw_now_ms() - t0;
    pl->periods++;
  }
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(cl);
  return NULL;
}

static void handle(fr_t *fr, const rd_kafka_message_t *m, const char *alerts) {
  if (m->err) return;
  if (strcmp(rd_kafka_topic_name(m->rkt), alerts) == 0) {
    Twin__V1__MaintenanceAlert *a = twin__v1__maintenance_alert__unpack(NULL, m->len, m->payload);
    if (a) {
      fr_alert(fr, a->product_id, a->event_time_ms, tw_now_ms());
      twin__v1__maintenance_alert__free_unpacked(a, NULL);
    }
    return;
  }
  Twin__V1__Envelope *e = twin__v1__envelope__unpack(NULL, m->len, m->payload);
  if (!e) return; /* garbage: the engine's dead-letter topic has it */
  rd_kafka_timestamp_type_t tt;
  int64_t ts = rd_kafka_message_timestamp(m, &tt);
  if (ts >= 0 && e->product_id[0]) fr_event(fr, e->product_id, e->source, e->seq, e->event_time_ms, ts);
  twin__v1__envelope__free_unpacked(e, NULL);
}

/* Waits up to timeout_ms for one message and takes it in; false if none came. */
static bool consume_one(rd_kafka_t *rk, fr_t *fr, const char *alerts, int timeout_ms) {
  rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, timeout_ms);
  if (!m) return false;
  handle(fr, m, alerts);
  rd_kafka_message_destroy(m);
  return true;
}

/* True when the consumer's position has reached the end (as of now) of
 * every partition of the input topics. */
static bool inputs_read(rd_kafka_t *rk, const char *alerts) {
  rd_kafka_topic_partition_list_t *as = NULL;
  if (rd_kafka_assignment(rk, &as) || !as) return false;
  bool done = as->cnt > 0 && !rd_kafka_position(rk, as);
  for (int i = 0; done && i < as->cnt; i++) {
    rd_kafka_topic_partition_t *p = &as->elems[i];
    if (strcmp(p->topic, alerts) == 0) continue;
    int64_t lo, hi;
    if (rd_kafka_query_watermark_offsets(rk, p->topic, p->partition, &lo, &hi, 5000))
      done = false;
    else if (hi > lo && (p->offset < 0 || p->offset < hi))
      done = false;
  }
  rd_kafka_topic_partition_list_destroy(as);
  return done;
}

static void dist_json(const char *name, const fr_dist_t *d) {
  printf("\"%s\":{\"n\":%zu,\"unmatched\":%zu,\"p50_ms\":%" PRId64 ",\"p99_ms\":%" PRId64
         ",\"max_ms\":%" PRId64 "}",
         name, d->n, d->unseen, d->p50, d->p99, d->max);
}

int fr_cmd(int argc, char **argv) {
  if (argc < 6 || argc > 8) {
    fprintf(stderr, "usage: twin-bench-tool freshness BROKERS MONGO_URI DATABASE TELEMETRY LIFECYCLE ALERTS "
                    "[POLL_MS [DRAIN_S]]\n");
    return 2;
  }
  const char *brokers = argv[0], *alerts = argv[5];
  int poll_ms = argc > 6 ? atoi(argv[6]) : 100, drain_s = argc > 7 ? atoi(argv[7]) : 60;
  if (poll_ms < 1 || poll_ms > 60000 || drain_s < 0) {
    fprintf(stderr, "twin-bench-tool freshness: POLL_MS must be 1..60000 and DRAIN_S >= 0\n");
    return 2;
  }
  char err[512], group[96];
  snprintf(group, sizeof group, "twin-bench-fresh-%ld-%" PRId64, (long)getpid(), tw_now_ms());
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  const char *kv[][2] = {{"bootstrap.servers", brokers},    {"group.id", group},
                         {"auto.offset.reset", "earliest"}, {"enable.auto.commit", "false"},
                         {"fetch.wait.max.ms", "10"},       {"enable.partition.eof", "false"}};
  for (size_t i = 0; i < sizeof kv / sizeof *kv; i++)
    if (rd_kafka_conf_set(c, kv[i][0], kv[i][1], err, sizeof err) != RD_KAFKA_CONF_OK) {
      fprintf(stderr, "twin-bench-tool freshness: %s\n", err);
      return 2;
    }
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
  if (!rk) {
    fprintf(stderr, "twin-bench-tool freshness: %s\n", err);
    return 1;
  }
  rd_kafka_poll_set_consumer(rk);
  rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(3);
  for (int i = 3; i < 6; i++) rd_kafka_topic_partition_list_add(topics, argv[i], RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, topics);
  rd_kafka_topic_partition_list_destroy(topics);
  if (e) {
    fprintf(stderr, "twin-bench-tool freshness: subscribe: %s\n", rd_kafka_err2str(e));
    rd_kafka_destroy(rk);
    return 1;
  }

  mongoc_init();
  mongoc_log_set_handler(NULL, NULL);
  fr_t *fr = fr_new();
  poller_t pl = {.fr = fr, .uri = argv[1], .db = argv[2], .poll_ms = poll_ms};
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);

  /* Ready once the group has given us partitions. */
  bool ready = false;
  int64_t t0 = tw_now_ms();
  while (!ready && !stop_load && tw_now_ms() - t0 < 60000) {
    consume_one(rk, fr, alerts, 100);
    rd_kafka_topic_partition_list_t *as = NULL;
    ready = !rd_kafka_assignment(rk, &as) && as && as->cnt > 0;
    if (as) rd_kafka_topic_partition_list_destroy(as);
  }
  int rc = 0;
  if (!ready) {
    fprintf(stderr, "twin-bench-tool freshness: no partitions assigned within 60 s\n");
    rc = 1;
    goto out;
  }
  pthread_t th;
  pthread_create(&th, NULL, poller, &pl);
  printf("ready\n");
  fflush(stdout);

  while (!stop_load) {
    consume_one(rk, fr, alerts, 100);
  }
  /* The load is over: read the inputs to their ends, then wait for the
   * snapshots to show every event (alerts keep being read meanwhile). */
  int64_t deadline = tw_now_ms() + (int64_t)drain_s * 1000, last_check = 0;
  bool all_read = false, all_seen = false;
  while (tw_now_ms() < deadline && !all_seen) {
    if (consume_one(rk, fr, alerts, 50)) continue;
    if (tw_now_ms() - last_check < 1000) continue;
    last_check = tw_now_ms();
    if (!all_read) all_read = inputs_read(rk, alerts);
    if (all_read) all_seen = fr_unseen(fr) == 0;
  }
  /* Alerts of the last events: one more poll period and a second. */
  for (int64_t end = tw_now_ms() + poll_ms + 1000; tw_now_ms() < end;) {
    consume_one(rk, fr, alerts, 50);
  }
  atomic_store(&pl.stop, true);
  pthread_join(th, NULL);

  fr_dist_t snap, al;
  fr_result(fr, &snap, &al);
  printf("{\"bench\":\"freshness\",\"events\":%zu,\"inputs_read_to_end\":%s,", fr_events(fr),
         all_read ? "true" : "false");
  dist_json("snapshot", &snap);
  putchar(',');
  dist_json("alert", &al);
  printf(",\"poll_ms\":%d,\"polls\":%" PRId64 ",\"poll_ms_mean\":%.1f,\"poll_period_ms_mean\":%.1f,"
         "\"poll_errors\":%" PRId64 ",\"last_poll_error\":\"%s\"}\n",
         poll_ms, pl.polls, pl.polls ? (double)pl.poll_ms_sum / (double)pl.polls : 0.0,
         pl.periods ? (double)pl.period_ms_sum / (double)pl.periods : 0.0, pl.errors,
         pl.errors ? pl.err : "");
  if (!all_read || snap.unseen) rc = 3;
out:
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  fr_free(fr);
  mongoc_cleanup();
  return rc;
}
