/* engine.c - Kafka consumer group -> shard threads -> MongoDB.
 *
 * Threads:
 *  - the main thread runs the consumer's rebalance callback and polls the
 *    DLQ producer; it never touches a twin;
 *  - shard k owns every input partition p with p mod shards == k: librdkafka
 *    forwards those partitions' fetch queues straight into the shard's
 *    queue (no dispatcher copies messages), and only shard k's thread reads
 *    or writes those twins.
 *
 * Durability order, per shard: twins applied in memory -> snapshots
 * acknowledged by MongoDB -> DLQ messages acknowledged by Kafka -> the
 * partitions' next offsets written to `checkpoints` -> offsets committed to
 * Kafka. A restart resumes from `checkpoints`; messages at or below the
 * offsets a twin already incorporated are skipped, so after kill -9 the
 * stored state converges to what an uninterrupted run gives. */
#include "engine.h"

#include <dlfcn.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "http.h"
#include "map.h"
#include "store.h"
#include "twin/log.h"
#include "twin/rules.h"
#include "twin/twin.h"
#include "util.h"

#define BATCH_MAX 8192
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

/* Set by the signal handler, read by every thread: lock-free atomics (both
 * async-signal-safe and race-free; volatile sig_atomic_t is only the former). */
static atomic_int g_stop = 0;
static atomic_int g_abort = 0;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "atomic_int is lock-free, so a signal handler may set it");

void tw_engine_request_stop(void) {
  if (g_stop) g_abort = 1;
  g_stop = 1;
}

/* ---- Types ----------------------------------------------------------------- */

typedef struct {
  int topic_idx; /* TW_TOPIC_TELEMETRY / TW_TOPIC_LIFECYCLE */
  int32_t partition;
  bool owned;
  int64_t next; /* next offset to process (-1 = nothing processed yet) */
  int64_t ckpt; /* next offset last checkpointed */
} part_t;

typedef enum { CMD_ASSIGN, CMD_REVOKE, CMD_QUERY } cmd_kind_t;

/* A look-up of one twin for the HTTP API, answered by the shard that holds
 * it. The asking thread may give up waiting (ABANDONED); the shard then
 * frees the query. state is guarded by the shard's mutex. */
typedef enum { Q_PENDING, Q_DONE, Q_ABANDONED } query_state_t;
typedef struct {
  char *product_id;
  bson_t *doc; /* heap: bson_t wants 128-byte alignment, which a malloc'd struct does not give */
  bool found;
  tw_http_twin_meta_t meta;
  query_state_t state;
} query_t;

typedef struct cmd {
  cmd_kind_t kind;
  int topic_idx;
  int32_t partition;
  int64_t offset; /* CMD_ASSIGN: where consumption starts (checkpoint) */
  query_t *query; /* CMD_QUERY */
  struct cmd *next;
} cmd_t;

typedef struct engine engine_t;

/* Flush histograms: twins per flush and seconds per flush. */
#define FLUSH_SIZE_BUCKETS 7
#define FLUSH_TIME_BUCKETS 9
static const double flush_size_le[FLUSH_SIZE_BUCKETS] = {1, 10, 100, 1000, 10000, 100000, 1000000};
static const double flush_time_le[FLUSH_TIME_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5, 10};
/* Freshness: consumed -> snapshot written, consumed -> alert acknowledged.
 * Fine around the default snapshot interval (1 s), so 1.5 and 2 intervals
 * can be read off (and alerted on) without interpolating. */
#define DELAY_BUCKETS 17
static const double delay_le[DELAY_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                               0.75,  1,      1.5,   2,    2.5,   5,    10,  30};
typedef struct {
  _Atomic uint64_t bucket[DELAY_BUCKETS], count, sum_us;
} delay_hist_t;

static void delay_observe(delay_hist_t *h, double secs) {
  if (secs < 0) secs = 0;
  for (int b = 0; b < DELAY_BUCKETS; b++)
    if (secs <= delay_le[b]) atomic_fetch_add(&h->bucket[b], 1);
  atomic_fetch_add(&h->count, 1);
  atomic_fetch_add(&h->sum_us, (uint64_t)(secs * 1e6));
}

/* Counters read by the stats log and /metrics; [topic] = TW_TOPIC_*. */
typedef struct {
  _Atomic uint64_t consumed[2], applied[2], stale[2], duplicate[2], too_late[2], rejected[2], replayed[2],
      dlq[2];
  _Atomic uint64_t flushes, flushed_twins, alerts_raised, alerts_cleared;
  _Atomic uint64_t flush_size_bucket[FLUSH_SIZE_BUCKETS], flush_time_bucket[FLUSH_TIME_BUCKETS];
  _Atomic uint64_t flush_time_us;      /* sum */
  _Atomic int64_t last_flush_wall_ms;  /* 0 = none yet */
  _Atomic int64_t dirty_since_wall_ms; /* oldest unflushed change, 0 = none */
  _Atomic uint64_t twins_in_memory;
  _Atomic bool outage;
  delay_hist_t snapshot_delay; /* per twin written: flush done - became dirty */
} stats_t;

/* Adds one to a counter that only its shard's thread writes: a relaxed
 * load and store, not a locked read-modify-write (one per message each was
 * a measurable share of a shard's time). Readers still see whole values. */
static inline void stat_inc(_Atomic uint64_t *c) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

typedef struct {
  int id;
  engine_t *e;
  pthread_t thread;
  rd_kafka_queue_t *q;
  tw_store_t *store;
  tw_map_t twins;
  tw_twin_t **dirty;
  size_t n_dirty, cap_dirty;
  part_t *parts;
  size_t n_parts;
  int64_t last_flush_ms;
  bool outage; /* MongoDB or Kafka unavailable: the shard reads nothing */
  int64_t outage_since;
  bool kafka_paused;     /* main thread only: its partitions are paused (sync_pauses) */
  tw_arena_t arena;      /* the batch's decoded envelopes; reset after each batch */
  int64_t batch_wall_ms; /* when the batch being applied was consumed */
  bool fenced;           /* the last flush waited for an export (store.h fence) */
  bool behind;           /* the last consume filled its batch: a backlog */
  uint64_t flush_seq;    /* flush ids for the export fence */
  bool dlq_pending;      /* DLQ messages produced since the last flush */
  bool alerts_pending;   /* alerts produced since the last flush */

  pthread_mutex_t mu;
  pthread_cond_t cv;
  cmd_t *cmds; /* pending, FIFO */
  uint64_t cmd_seq, cmd_done;

  stats_t st;
} shard_t;

struct engine {
  const tw_config_t *cfg;
  const char *group;
  const char *topics[2];
  rd_kafka_t *consumer, *producer;
  /* topics.alerts' handle, made once: producev by topic name looks the
   * topic up under the producer's write lock for every message. */
  rd_kafka_topic_t *alerts_rkt;
  tw_rules_t *rules; /* compiled once, read by every shard */
  tw_store_t *store; /* main thread's */
  shard_t *shards;
  int n_shards;
  int32_t n_partitions;
  _Atomic uint64_t dlq_failed;
  _Atomic uint64_t fetch_wakeups; /* fetch_wake() requests sent */
  _Atomic bool shards_exit;
  _Atomic bool producer_exit; /* stops producer_main */
  /* For /metrics and /readyz, written by the threads that know. */
  _Atomic int64_t *processed; /* [topic * n_partitions + p]: next offset applied, -1 = none */
  _Atomic int assigned;       /* input partitions assigned to this instance */
  _Atomic bool mongo_ok;      /* the main thread's last ping */
  tw_http_t *http;
  delay_hist_t alert_delay; /* consumed -> acknowledged by Kafka, per alert */
  char instance[96];        /* host:pid, names this instance's flushes in the export fence */
};

/* ---- Small helpers --------------------------------------------------------- */

static void sleep_ms(int64_t ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

static int topic_index(const engine_t *e, const char *topic) {
  if (strcmp(topic, e->topics[TW_TOPIC_TELEMETRY]) == 0) return TW_TOPIC_TELEMETRY;
  if (strcmp(topic, e->topics[TW_TOPIC_LIFECYCLE]) == 0) return TW_TOPIC_LIFECYCLE;
  return -1;
}

static part_t *shard_part(shard_t *s, int topic_idx, int32_t partition, bool create) {
  for (size_t i = 0; i < s->n_parts; i++)
    if (s->parts[i].topic_idx == topic_idx && s->parts[i].partition == partition) return &s->parts[i];
  if (!create) return NULL;
  s->parts = tw_xrealloc(s->parts, (s->n_parts + 1) * sizeof *s->parts);
  part_t *p = &s->parts[s->n_parts++];
  *p = (part_t){.topic_idx = topic_idx, .partition = partition, .owned = false, .next = -1, .ckpt = -1};
  return p;
}

static void mark_dirty(shard_t *s, tw_twin_t *t) {
  if (t->dirty) return;
  t->dirty = true;
  t->dirty_ms = tw_now_ms();
  if (s->n_dirty == 0) atomic_store(&s->st.dirty_since_wall_ms, tw_now_ms());
  if (s->n_dirty == s->cap_dirty) {
    s->cap_dirty = s->cap_dirty ? s->cap_dirty * 2 : 1024;
    s->dirty = tw_xrealloc(s->dirty, s->cap_dirty * sizeof *s->dirty);
  }
  s->dirty[s->n_dirty++] = t;
}

/* True when the group rebalances incrementally. librdkafka answers NULL
 * while the consumer is closing, and an assignment can still arrive then (a
 * SIGTERM just after start): that was a NULL strcmp and a crash. */
static bool cooperative(rd_kafka_t *consumer) {
  const char *p = rd_kafka_rebalance_protocol(consumer);
  return p && strcmp(p, "COOPERATIVE") == 0;
}

/* The malloc in use: jemalloc when the build linked it (CMakeLists.txt,
 * TWIN_JEMALLOC), else the C library's. Found by jemalloc's mallctl(); with
 * jemalloc, also the oversize threshold in effect (main.c, malloc_conf). */
static void log_allocator(void) {
  int (*mallctl)(const char *, void *, size_t *, void *, size_t) =
      (int (*)(const char *, void *, size_t *, void *, size_t))dlsym(RTLD_DEFAULT, "mallctl");
  const char *version = NULL;
  size_t len = sizeof version, oversize = 0, olen = sizeof oversize;
  if (mallctl && mallctl("version", &version, &len, NULL, 0) == 0 && version) {
    if (mallctl("opt.oversize_threshold", &oversize, &olen, NULL, 0) == 0)
      TW_INFO("engine", "memory allocator: jemalloc %s (oversize_threshold %zu)", version, oversize);
    else
      TW_INFO("engine", "memory allocator: jemalloc %s", version);
  } else {
    TW_INFO("engine", "memory allocator: libc malloc");
  }
}

/* ---- Kafka configuration --------------------------------------------------- */

static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
  (void)rk;
  tw_log_level_t l = level <= 3   ? TW_LOG_ERROR
                     : level <= 4 ? TW_LOG_WARN
                     : level <= 6 ? TW_LOG_INFO
                                  : TW_LOG_DEBUG;
  char comp[64];
  snprintf(comp, sizeof comp, "kafka.%s", fac);
  TW_LOG(l, comp, "%s", buf);
}

static bool kconf_set(rd_kafka_conf_t *kc, const char *k, const char *v, const char *origin) {
  char err[512];
  if (rd_kafka_conf_set(kc, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
    TW_ERROR("config", "%s kafka.%s: %s", origin, k, err);
    return false;
  }
  return true;
}

/* librdkafka before 2.6.1 (Debian 12 has 2.0.2) repeats the client nonce in
 * its SCRAM proof; Kafka 4.x brokers check the nonce strictly (RFC 5802) and
 * refuse every such login as "invalid credentials", while 3.x brokers accept
 * it (librdkafka PR 4895). Said once at start, before the confusing error. */
static void scram_warning(const tw_config_t *cfg) {
  const char *m = tw_config_kafka(cfg, "sasl.mechanisms");
  if (!m) m = tw_config_kafka(cfg, "sasl.mechanism");
  if (!m || strncasecmp(m, "SCRAM", 5) != 0 || rd_kafka_version() >= 0x020601ff) return;
  TW_WARN(
      "kafka",
      "kafka.sasl.mechanisms=%s: librdkafka %s cannot log in with SCRAM to Apache Kafka 4.x brokers "
      "(they refuse it as invalid credentials; fixed in librdkafka 2.6.1), only to 3.x; with Kafka 4.x use "
      "PLAIN over SASL_SSL, mutual TLS or OAUTHBEARER, or build twin-engine with librdkafka 2.6.1 or later",
      m, rd_kafka_version_str());
}

/* Builds a librdkafka config: the engine's fixed settings, then the user's
 * kafka.* passthrough, which may not override what correctness needs. */
static rd_kafka_conf_t *kafka_conf(const tw_config_t *cfg, bool consumer) {
  rd_kafka_conf_t *kc = rd_kafka_conf_new();
  rd_kafka_conf_set_log_cb(kc, kafka_log_cb);
  bool ok = true;
  for (size_t i = 0; i < cfg->n_kafka && ok; i++) {
    const char *k = cfg->kafka[i].key;
    /* Consumer-only keys must not reach the producer and vice versa; both
     * clients accept the common ones (brokers, TLS, SASL). */
    if (!consumer && (strcmp(k, "group.id") == 0 || strncmp(k, "auto.", 5) == 0 ||
                      strcmp(k, "partition.assignment.strategy") == 0 || strncmp(k, "session.", 8) == 0 ||
                      strncmp(k, "heartbeat.", 10) == 0 || strncmp(k, "max.poll", 8) == 0 ||
                      strncmp(k, "fetch.", 6) == 0 || strncmp(k, "queued.", 7) == 0 ||
                      strcmp(k, "enable.auto.commit") == 0 || strcmp(k, "isolation.level") == 0))
      continue;
    ok = kconf_set(kc, k, cfg->kafka[i].value, "config");
  }
  if (ok && consumer) {
    scram_warning(cfg);
    ok = kconf_set(kc, "enable.auto.commit", "false", "engine") &&
         kconf_set(kc, "enable.auto.offset.store", "false", "engine") &&
         kconf_set(kc, "enable.partition.eof", "false", "engine");
    /* range, not cooperative-sticky: range gives partition p of every input
     * topic to the same member, so one instance owns all of a product's
     * events. Sticky assignors may split telemetry[p] and lifecycle[p]
     * between instances, and then two instances would write one twin. */
    if (ok && !tw_config_kafka(cfg, "partition.assignment.strategy"))
      ok = kconf_set(kc, "partition.assignment.strategy", "range", "engine");
    if (ok && !tw_config_kafka(cfg, "auto.offset.reset"))
      ok = kconf_set(kc, "auto.offset.reset", "earliest", "engine");
    /* Also the rebalance timeout: how long the group waits for a member that
     * died mid-rebalance. The main thread polls every 20 ms, so only a
     * rebalance callback's flush counts against it. */
    if (ok && !tw_config_kafka(cfg, "max.poll.interval.ms"))
      ok = kconf_set(kc, "max.poll.interval.ms", "60000", "engine");
    /* Prefetch: every partition queue is forwarded to its shard's queue,
     * and librdkafka checks these limits against that queue. Once it is
     * over either, librdkafka 2.0.2 waits a fixed second before it fetches
     * those partitions again (fetch.queue.backoff.ms, settable from 2.3),
     * so a shard with less than a second of input queued sits idle for the
     * rest of that second: with librdkafka's 100,000 messages per shard one
     * shard took 58 s for 10 M events here, with 500,000 it took 22 s
     * (README, Benchmarks). 128 MiB / 500,000 messages in all, split
     * between the shards, never below 100,000 messages / 16 MiB each. */
    char buf[32];
    long sh = cfg->shards > 0 ? cfg->shards : 1;
    if (ok && !tw_config_kafka(cfg, "queued.min.messages")) {
      snprintf(buf, sizeof buf, "%ld", 500000 / sh > 100000 ? 500000 / sh : 100000);
      ok = kconf_set(kc, "queued.min.messages", buf, "engine");
    }
    if (ok && !tw_config_kafka(cfg, "queued.max.messages.kbytes")) {
      snprintf(buf, sizeof buf, "%ld", 131072 / sh > 16384 ? 131072 / sh : 16384);
      ok = kconf_set(kc, "queued.max.messages.kbytes", buf, "engine");
    }
    /* Up to 4 MiB per partition in a fetch response instead of librdkafka's
     * 1 MiB: on a backlog the same 10 M events took 12-21 % less time and
     * the shards 15 % less CPU (README, Benchmarks), for a larger peak RSS
     * while catching up. fetch.message.max.bytes is librdkafka's own name
     * for it. */
    if (ok && !tw_config_kafka(cfg, "max.partition.fetch.bytes") &&
        !tw_config_kafka(cfg, "fetch.message.max.bytes"))
      ok = kconf_set(kc, "max.partition.fetch.bytes", "4194304", "engine");
  } else if (ok) {
    /* Alerts and dead letters: idempotent (no duplicates from retries) and
     * never expiring; a flush waits for them before the snapshots that
     * depend on them are written. */
    ok = kconf_set(kc, "enable.idempotence", "true", "engine") &&
         kconf_set(kc, "message.timeout.ms", "0", "engine");
    if (ok && !tw_config_kafka(cfg, "linger.ms")) ok = kconf_set(kc, "linger.ms", "5", "engine");
    /* Keyed messages land where Java clients would put them. */
    if (ok && !tw_config_kafka(cfg, "partitioner"))
      ok = kconf_set(kc, "partitioner", "murmur2_random", "engine");
  }
  if (!ok) {
    rd_kafka_conf_destroy(kc);
    return NULL;
  }
  return kc;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  engine_t *e = opaque;
  if (m->err) {
    atomic_fetch_add(&e->dlq_failed, 1);
    TW_ERROR("producer", "delivery to %s failed: %s", rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
  } else if (m->_private && strcmp(rd_kafka_topic_name(m->rkt), e->cfg->topic_alerts) == 0) {
    /* The alert's opaque is the wall-clock ms when its event was consumed. */
    delay_observe(&e->alert_delay, (double)(tw_now_ms() - (int64_t)(intptr_t)m->_private) / 1000.0);
  }
}

/* ---- Dead-letter topic ----------------------------------------------------- */

static void dlq_send(shard_t *s, const rd_kafka_message_t *m, const char *reason) {
  engine_t *e = s->e;
  char part[16], off[24];
  snprintf(part, sizeof part, "%d", m->partition);
  snprintf(off, sizeof off, "%lld", (long long)m->offset);
  rd_kafka_headers_t *h = NULL;
  rd_kafka_headers_t *orig = NULL;
  if (rd_kafka_message_headers(m, &orig) == RD_KAFKA_RESP_ERR_NO_ERROR && orig)
    h = rd_kafka_headers_copy(orig);
  else
    h = rd_kafka_headers_new(4);
  const char *topic = rd_kafka_topic_name(m->rkt);
  rd_kafka_header_add(h, "twin.error", -1, reason, -1);
  rd_kafka_header_add(h, "twin.origin.topic", -1, topic, -1);
  rd_kafka_header_add(h, "twin.origin.partition", -1, part, -1);
  rd_kafka_header_add(h, "twin.origin.offset", -1, off, -1);
  for (;;) {
    rd_kafka_resp_err_t err =
        rd_kafka_producev(e->producer, RD_KAFKA_V_TOPIC(e->cfg->topic_dlq),
                          RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_VALUE(m->payload, m->len),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && !g_abort) {
      sleep_ms(10);
      continue;
    }
    TW_ERROR("dlq", "cannot produce to %s: %s (origin %s/%d@%lld)", e->cfg->topic_dlq, rd_kafka_err2str(err),
             topic, m->partition, (long long)m->offset);
    atomic_fetch_add(&e->dlq_failed, 1);
    rd_kafka_headers_destroy(h);
    break;
  }
  s->dlq_pending = true;
  int ti = topic_index(e, topic);
  atomic_fetch_add(&s->st.dlq[ti < 0 ? 0 : ti], 1);
  TW_DEBUG("dlq", "%s/%d@%lld -> %s: %s", topic, m->partition, (long long)m->offset, e->cfg->topic_dlq,
           reason);
}

/* ---- Alerts ---------------------------------------------------------------- */

static void alert_cb(void *ud, const Twin__V1__MaintenanceAlert *al) {
  shard_t *s = ud;
  engine_t *e = s->e;
  uint8_t stackbuf[2048];
  size_t len = twin__v1__maintenance_alert__get_packed_size(al);
  uint8_t *buf = len <= sizeof stackbuf ? stackbuf : tw_xmalloc(len);
  twin__v1__maintenance_alert__pack(al, buf);
  for (;;) {
    rd_kafka_resp_err_t err = rd_kafka_producev(
        e->producer, RD_KAFKA_V_RKT(e->alerts_rkt), RD_KAFKA_V_KEY(al->product_id, strlen(al->product_id)),
        RD_KAFKA_V_VALUE(buf, len), RD_KAFKA_V_OPAQUE((void *)(intptr_t)s->batch_wall_ms),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && !g_abort) {
      sleep_ms(5);
      continue;
    }
    TW_ERROR("alerts", "cannot produce to %s: %s (%s %s)", e->cfg->topic_alerts, rd_kafka_err2str(err),
             al->product_id, al->rule_id);
    atomic_fetch_add(&e->dlq_failed, 1);
    break;
  }
  if (buf != stackbuf) free(buf);
  s->alerts_pending = true;
  stat_inc(al->state == TWIN__V1__ALERT_STATE__RAISED ? &s->st.alerts_raised : &s->st.alerts_cleared);
  TW_DEBUG("alerts", "%s %s %s: %s", al->product_id, al->rule_id,
           al->state == TWIN__V1__ALERT_STATE__RAISED ? "RAISED" : "CLEARED", al->message);
}

/* ---- Outage handling ------------------------------------------------------- */

/* A shard in an outage reads nothing from its queue and says so in
 * st.outage; the main thread then pauses its partitions (sync_pauses), and
 * resumes them when the outage ends. Only the main thread pauses and resumes
 * partitions, in its loop and in the rebalance callbacks, which it also
 * runs: librdkafka 2.0.2 orders a partition's pause, resume, fetch start and
 * fetch stop by a version taken when each request is made and drops one
 * that arrives after a newer one, so two threads making them at once could
 * lose a resume or a fetch start, and the partition was never read again
 * (test_fault_group, test_fault_churn; README, Failure behaviour). */
static void outage_begin(shard_t *s, const char *what, const char *why) {
  if (s->outage) return;
  s->outage = true;
  atomic_store(&s->st.outage, true);
  s->outage_since = tw_mono_ms();
  TW_WARN("shard", "shard %d: %s unavailable (%s); reading nothing more until it is back, retrying", s->id,
          what, why);
}

static void outage_end(shard_t *s) {
  if (!s->outage) return;
  s->outage = false;
  atomic_store(&s->st.outage, false);
  TW_INFO("shard", "shard %d: available again after %.1f s; resuming", s->id,
          (double)(tw_mono_ms() - s->outage_since) / 1000.0);
}

/* ---- Flush: snapshots, then DLQ, then checkpoints, then Kafka commit ------- */

/* Snapshots of the dirty twins, then the checkpoints that they cover;
 * fills commit with the offsets for Kafka. False with err on failure. */
static bool write_snapshots_and_checkpoints(shard_t *s, size_t n, rd_kafka_topic_partition_list_t *commit,
                                            bson_error_t *err) {
  engine_t *e = s->e;
  if (n) {
    size_t stale = 0;
    if (!tw_store_write_twins(s->store, s->dirty, n, tw_now_ms(), &stale, err)) return false;
    if (stale) TW_DEBUG("shard", "shard %d: %zu snapshots already newer in MongoDB", s->id, stale);
    int64_t done = tw_now_ms();
    for (size_t i = 0; i < n; i++) {
      s->dirty[i]->dirty = false;
      s->dirty[i]->stored = true;
      delay_observe(&s->st.snapshot_delay, (double)(done - s->dirty[i]->dirty_ms) / 1000.0);
    }
    s->n_dirty = 0;
  }
  tw_checkpoint_t cps[64];
  size_t nc = 0;
  for (size_t i = 0; i < s->n_parts; i++) {
    part_t *p = &s->parts[i];
    if (p->next < 0 || p->next <= p->ckpt) continue;
    cps[nc++] = (tw_checkpoint_t){e->topics[p->topic_idx], p->partition, p->next};
    if (p->owned)
      rd_kafka_topic_partition_list_add(commit, e->topics[p->topic_idx], p->partition)->offset = p->next;
    if (nc == 64) {
      if (!tw_store_write_checkpoints(s->store, e->group, cps, nc, tw_now_ms(), err)) return false;
      nc = 0;
    }
  }
  if (nc && !tw_store_write_checkpoints(s->store, e->group, cps, nc, tw_now_ms(), err)) return false;
  for (size_t i = 0; i < s->n_parts; i++)
    if (s->parts[i].next > s->parts[i].ckpt) s->parts[i].ckpt = s->parts[i].next;
  return true;
}

static bool flush(shard_t *s) {
  engine_t *e = s->e;
  bson_error_t err;
  int64_t t0 = tw_mono_ms();
  size_t n = s->n_dirty;
  /* Alerts and dead letters first: a snapshot that says an alert is active
   * (or a checkpoint past a bad message) is only written once Kafka has
   * them, so a crash can repeat them but never lose them. */
  if (s->dlq_pending || s->alerts_pending) {
    rd_kafka_resp_err_t ferr = rd_kafka_flush(e->producer, 10000);
    if (ferr) {
      outage_begin(s, "Kafka (alerts and dead-letter producer)", rd_kafka_err2str(ferr));
      return false;
    }
    s->dlq_pending = s->alerts_pending = false;
  }
  /* An alert or dead letter Kafka refused for good (messages never expire
   * here, so only a permanent error does that: a fatal idempotent-producer
   * error, authorization, size) would be lost by the checkpoint below.
   * Stop at once instead, as kill -9 would: the restart replays from the
   * last checkpoint and sends them again, with the same alert ids. */
  if (atomic_load(&e->dlq_failed)) {
    char why[512] = "";
    if (rd_kafka_fatal_error(e->producer, why, sizeof why) == RD_KAFKA_RESP_ERR_NO_ERROR)
      snprintf(why, sizeof why, "see the errors above");
    TW_ERROR(
        "engine",
        "%llu alert or dead-letter message(s) could not be delivered (%s); stopping without a checkpoint, "
        "so a restart sends them again",
        (unsigned long long)atomic_load(&e->dlq_failed), why);
    _exit(3);
  }
  bool due = n > 0;
  for (size_t i = 0; i < s->n_parts && !due; i++)
    due = s->parts[i].next >= 0 && s->parts[i].next > s->parts[i].ckpt;
  if (due) {
    /* The export fence (store.h): no snapshot write while an export reads. */
    char fid[160];
    tw_fence_ticket_t ticket;
    bool entered = false;
    snprintf(fid, sizeof fid, "%s/%d/%llu", e->instance, s->id, (unsigned long long)++s->flush_seq);
    if (!tw_store_fence_enter(s->store, fid, tw_now_ms(), &ticket, &entered, &err)) {
      outage_begin(s, "MongoDB", err.message);
      return false;
    }
    if (!entered) {
      if (!s->fenced)
        TW_INFO("shard", "shard %d: an export is reading MongoDB; snapshots wait for it", s->id);
      s->fenced = true;
      if ((int64_t)s->n_dirty >= e->cfg->snapshot_max_dirty)
        outage_begin(s, "the snapshot store (an export holds the fence)", "memory bound reached");
      return false;
    }
    if (s->fenced) TW_INFO("shard", "shard %d: export done; snapshots resume", s->id);
    s->fenced = false;
    rd_kafka_topic_partition_list_t *commit = rd_kafka_topic_partition_list_new(4);
    bool ok = write_snapshots_and_checkpoints(s, n, commit, &err);
    bson_error_t lerr;
    if (!tw_store_fence_leave(s->store, &ticket, &lerr))
      TW_WARN("shard", "shard %d: cannot leave the export fence (%s); it expires by itself", s->id,
              lerr.message);
    /* Kafka's committed offsets trail the checkpoints; they serve lag tools. */
    if (ok && commit->cnt) rd_kafka_commit(e->consumer, commit, 1);
    rd_kafka_topic_partition_list_destroy(commit);
    if (!ok) {
      outage_begin(s, "MongoDB", err.message);
      return false;
    }
  }
  /* A shard that keeps up flushes again snapshot.interval.ms after this
   * flush started, so a twin is written at most an interval and one flush
   * after it changed (counted from the end, it was an interval and two
   * flushes), but not sooner than a quarter interval after this one ended,
   * not to press a slow database. A shard behind (its last batch was full)
   * counts from the end: a backlog gets a whole interval of consuming
   * between flushes. */
  int64_t end = tw_mono_ms(), iv = e->cfg->snapshot_interval_ms, soonest = end - iv + iv / 4;
  s->last_flush_ms = s->behind ? end : t0 > soonest ? t0 : soonest;
  atomic_store(&s->st.last_flush_wall_ms, tw_now_ms());
  atomic_store(&s->st.dirty_since_wall_ms, 0);
  if (n) {
    double secs = (double)(tw_mono_ms() - t0) / 1000.0;
    atomic_fetch_add(&s->st.flushes, 1);
    atomic_fetch_add(&s->st.flushed_twins, n);
    atomic_fetch_add(&s->st.flush_time_us, (uint64_t)(secs * 1e6));
    for (int b = 0; b < FLUSH_SIZE_BUCKETS; b++)
      if ((double)n <= flush_size_le[b]) atomic_fetch_add(&s->st.flush_size_bucket[b], 1);
    for (int b = 0; b < FLUSH_TIME_BUCKETS; b++)
      if (secs <= flush_time_le[b]) atomic_fetch_add(&s->st.flush_time_bucket[b], 1);
    TW_DEBUG("shard", "shard %d: flushed %zu twins in %lld ms", s->id, n, (long long)(tw_mono_ms() - t0));
  }
  outage_end(s);
  return true;
}

/* Retries flush with backoff until it succeeds or the engine gives up. */
static bool flush_until_done(shard_t *s) {
  int64_t backoff = BACKOFF_MIN_MS;
  while (!flush(s)) {
    if (g_abort) return false;
    sleep_ms(backoff);
    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
  }
  return true;
}

/* ---- Commands from the rebalance callback ---------------------------------- */

static void drop_partition_twins(shard_t *s, int32_t partition) {
  tw_map_t *m = &s->twins;
  /* Collect first: deleting while scanning would shift entries under us. */
  tw_twin_t **victims = NULL;
  size_t nv = 0;
  for (size_t i = 0; i < m->cap; i++) {
    if (m->slots[i] && m->slots[i]->partition == partition) {
      victims = tw_xrealloc(victims, (nv + 1) * sizeof *victims);
      victims[nv++] = m->slots[i];
    }
  }
  for (size_t i = 0; i < nv; i++) {
    tw_map_del(m, victims[i]->product_id);
    tw_twin_destroy(victims[i]);
  }
  free(victims);
  atomic_store(&s->st.twins_in_memory, m->len);
}

static void answer_query(shard_t *s, query_t *q) {
  tw_twin_t *t = tw_map_get(&s->twins, q->product_id);
  part_t *p = t && t->partition >= 0 ? shard_part(s, TW_TOPIC_TELEMETRY, t->partition, false) : NULL;
  part_t *p2 = t && t->partition >= 0 ? shard_part(s, TW_TOPIC_LIFECYCLE, t->partition, false) : NULL;
  bool owned = (p && p->owned) || (p2 && p2->owned);
  bson_t *doc = bson_new();
  if (t && owned) tw_twin_to_bson(t, tw_now_ms(), doc);
  pthread_mutex_lock(&s->mu);
  if (q->state == Q_ABANDONED) {
    pthread_mutex_unlock(&s->mu);
    bson_destroy(doc);
    bson_destroy(q->doc);
    free(q->product_id);
    free(q);
    return;
  }
  if (t && owned) {
    bson_destroy(q->doc);
    q->doc = doc;
    q->found = true;
    q->meta = (tw_http_twin_meta_t){.partition = t->partition,
                                    .shard = s->id,
                                    .dirty = t->dirty,
                                    .last_event_ms = t->last_event_ms,
                                    .flushed_ms = atomic_load(&s->st.last_flush_wall_ms)};
  } else {
    bson_destroy(doc);
  }
  q->state = Q_DONE;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void run_commands(shard_t *s) {
  pthread_mutex_lock(&s->mu);
  cmd_t *c = s->cmds;
  s->cmds = NULL;
  uint64_t upto = s->cmd_seq;
  pthread_mutex_unlock(&s->mu);
  if (!c) return;

  bool revoked = false;
  for (cmd_t *i = c; i; i = i->next) {
    if (i->kind == CMD_QUERY) {
      answer_query(s, i->query);
      continue;
    }
    part_t *p = shard_part(s, i->topic_idx, i->partition, true);
    if (i->kind == CMD_ASSIGN) {
      p->owned = true;
      p->next = i->offset >= 0 ? i->offset : -1;
      p->ckpt = p->next;
    } else {
      p->owned = false;
      revoked = true;
    }
  }
  if (revoked) {
    /* Everything applied so far becomes durable and checkpointed before the
     * partitions go to their next owner. */
    flush_until_done(s);
    for (cmd_t *i = c; i; i = i->next) {
      if (i->kind != CMD_REVOKE) continue;
      part_t *other = shard_part(s, 1 - i->topic_idx, i->partition, false);
      if (!other || !other->owned) drop_partition_twins(s, i->partition);
    }
  }
  while (c) {
    cmd_t *n = c->next;
    free(c);
    c = n;
  }
  pthread_mutex_lock(&s->mu);
  s->cmd_done = upto;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

/* Called by the main thread; returns the sequence number to wait for. */
static uint64_t shard_send(shard_t *s, cmd_kind_t kind, int topic_idx, int32_t partition, int64_t offset,
                           query_t *query) {
  cmd_t *c = tw_xcalloc(1, sizeof *c);
  *c = (cmd_t){kind, topic_idx, partition, offset, query, NULL};
  pthread_mutex_lock(&s->mu);
  cmd_t **tail = &s->cmds;
  while (*tail) tail = &(*tail)->next;
  *tail = c;
  uint64_t seq = ++s->cmd_seq;
  pthread_mutex_unlock(&s->mu);
  rd_kafka_queue_yield(s->q);
  return seq;
}

static void shard_wait(shard_t *s, uint64_t seq) {
  pthread_mutex_lock(&s->mu);
  while (s->cmd_done < seq) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    if (s->cmd_done < seq) rd_kafka_queue_yield(s->q);
  }
  pthread_mutex_unlock(&s->mu);
}

/* ---- Applying a batch ------------------------------------------------------ */

typedef struct {
  rd_kafka_message_t *m;
  Twin__V1__Envelope *env;
  part_t *part;
} pending_t;

static void load_cb(void *ud, const bson_t *doc) {
  shard_t *s = ud;
  char err[256];
  tw_twin_t *t = tw_twin_from_bson(doc, (uint32_t)s->e->cfg->seq_window, err, sizeof err);
  if (!t) {
    TW_ERROR("shard", "shard %d: cannot read stored snapshot: %s", s->id, err);
    return;
  }
  if (tw_map_get(&s->twins, t->product_id)) {
    tw_twin_destroy(t);
    return;
  }
  tw_map_put(&s->twins, t);
}

static int cmp_cstr(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Finds the twin of every event in the batch, tw[i] for pend[i]: the ones
 * in memory with one interleaved look-up (tw_map_find_batch), stored ones
 * loaded in batches of load.batch, the rest new and empty. */
static void ensure_twins(shard_t *s, pending_t *pend, tw_twin_t **tw, size_t n) {
  const char **ids = tw_xmalloc((n ? n : 1) * sizeof *ids);
  for (size_t i = 0; i < n; i++) ids[i] = pend[i].env->product_id;
  tw_map_find_batch(&s->twins, ids, tw, n);
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (!tw[i]) ids[k++] = pend[i].env->product_id;
  if (k) {
    qsort(ids, k, sizeof *ids, cmp_cstr);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
      if (u == 0 || strcmp(ids[u - 1], ids[i]) != 0) ids[u++] = ids[i];
    k = u;
    size_t chunk = (size_t)s->e->cfg->load_batch;
    for (size_t off = 0; off < k; off += chunk) {
      size_t m = k - off < chunk ? k - off : chunk;
      bson_error_t err;
      int64_t backoff = BACKOFF_MIN_MS;
      while (!tw_store_load(s->store, ids + off, m, load_cb, s, &err)) {
        outage_begin(s, "MongoDB", err.message);
        if (g_abort) break;
        sleep_ms(backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
      }
    }
    for (size_t i = 0; i < k; i++)
      if (!tw_map_get(&s->twins, ids[i]))
        tw_map_put(&s->twins, tw_twin_new(ids[i], (uint32_t)s->e->cfg->seq_window));
    for (size_t i = 0; i < n; i++)
      if (!tw[i]) tw[i] = tw_map_get(&s->twins, pend[i].env->product_id);
  }
  free(ids);
}

static void process_batch(shard_t *s, rd_kafka_message_t **msgs, size_t n) {
  s->batch_wall_ms = tw_now_ms();
  engine_t *e = s->e;
  pending_t *pend = tw_xmalloc((n ? n : 1) * sizeof *pend);
  size_t np = 0;
  char reason[512];

  for (size_t i = 0; i < n; i++) {
    rd_kafka_message_t *m = msgs[i];
    if (m->err) {
      if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
        TW_WARN("shard", "shard %d: consume error: %s", s->id, rd_kafka_message_errstr(m));
      rd_kafka_message_destroy(m);
      continue;
    }
    int ti = topic_index(e, rd_kafka_topic_name(m->rkt));
    part_t *p = ti < 0 ? NULL : shard_part(s, ti, m->partition, false);
    if (!p || !p->owned) { /* revoked meanwhile: the next owner reads it */
      rd_kafka_message_destroy(m);
      continue;
    }
    stat_inc(&s->st.consumed[ti]);
    p->next = m->offset + 1;
    atomic_store_explicit(&e->processed[ti * e->n_partitions + m->partition], p->next, memory_order_relaxed);
    /* On failure its memory goes with the arena. */
    Twin__V1__Envelope *env = tw_envelope_decode(&s->arena.pb, m->payload, m->len, m->key, m->key_len,
                                                 (size_t)e->cfg->message_max_bytes, reason, sizeof reason);
    if (!env) {
      dlq_send(s, m, reason);
      rd_kafka_message_destroy(m);
      continue;
    }
    pend[np++] = (pending_t){m, env, p};
  }

  tw_twin_t **tw = tw_xmalloc((np ? np : 1) * sizeof *tw);
  ensure_twins(s, pend, tw, np);

  for (size_t i = 0; i < np; i++) {
    pending_t *pd = &pend[i];
    tw_twin_t *t = tw[i];
    tw_twin_prefetch_ahead(tw, i, np);
    int ti = pd->part->topic_idx;
    t->partition = pd->m->partition;
    if (pd->m->offset <= t->offsets[ti]) {
      stat_inc(&s->st.replayed[ti]); /* already in the stored snapshot */
    } else {
      const char *why = NULL;
      tw_outcome_t o = tw_apply_event(e->rules, t, pd->env, &why, alert_cb, s);
      t->offsets[ti] = pd->m->offset;
      mark_dirty(s, t);
      switch (o) {
      case TW_OUT_APPLIED: stat_inc(&s->st.applied[ti]); break;
      case TW_OUT_STALE: stat_inc(&s->st.stale[ti]); break;
      case TW_OUT_DUPLICATE: stat_inc(&s->st.duplicate[ti]); break;
      case TW_OUT_TOO_LATE:
        stat_inc(&s->st.too_late[ti]);
        TW_DEBUG("reducer", "%s: seq %llu from %s is older than the window: counted, not applied",
                 t->product_id, (unsigned long long)pd->env->seq, pd->env->source);
        break;
      case TW_OUT_REJECTED:
        stat_inc(&s->st.rejected[ti]);
        TW_DEBUG("reducer", "%s: %s rejected: %s", t->product_id,
                 tw_lifecycle_kind_name((int)pd->env->lifecycle->kind), why);
        break;
      default: break;
      }
    }
    rd_kafka_message_destroy(pd->m);
  }
  free(tw);
  free(pend);
  tw_arena_reset(&s->arena);
  atomic_store(&s->st.twins_in_memory, s->twins.len);
}

/* ---- Shard thread ---------------------------------------------------------- */

static void *shard_main(void *arg) {
  shard_t *s = arg;
  engine_t *e = s->e;
  rd_kafka_message_t **msgs = tw_xmalloc(BATCH_MAX * sizeof *msgs);
  int64_t backoff = BACKOFF_MIN_MS;
  /* The shards' flushes are spread over the interval (shard k's first one
   * k/n of an interval early; a shard that keeps up keeps its place), so
   * the database takes one shard's writes at a time, not all at once. */
  s->last_flush_ms = tw_mono_ms() - (int64_t)s->id * e->cfg->snapshot_interval_ms / e->n_shards;

  while (!atomic_load(&e->shards_exit)) {
    run_commands(s);
    if (s->outage) {
      /* In an outage: retry the flush (which also proves MongoDB is back). */
      if (flush(s)) {
        backoff = BACKOFF_MIN_MS;
      } else {
        sleep_ms(backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
      }
      continue;
    }
    /* Returns when BATCH_MAX messages are there or after the timeout: a
     * backlog fills the batch at once, and under a light load the first
     * message of a batch waits at most 10 ms for the rest. That wait comes
     * before the "consumed" time alert latency is measured from, so it is
     * kept short (it was 100 ms). */
    ssize_t n = rd_kafka_consume_batch_queue(s->q, 10, msgs, BATCH_MAX);
    if (n < 0) {
      TW_ERROR("shard", "shard %d: consume failed: %s", s->id, rd_kafka_err2str(rd_kafka_last_error()));
      sleep_ms(100);
      continue;
    }
    s->behind = n == BATCH_MAX;
    if (n > 0) {
      run_commands(s); /* an assignment queued just before these messages */
      process_batch(s, msgs, (size_t)n);
    }
    if ((int64_t)s->n_dirty >= e->cfg->snapshot_max_dirty ||
        tw_mono_ms() - s->last_flush_ms >= e->cfg->snapshot_interval_ms) {
      /* Deferred by an export: try again in a quarter second, not at once. */
      if (!flush(s) && s->fenced && !s->outage)
        s->last_flush_ms = tw_mono_ms() - e->cfg->snapshot_interval_ms + 250;
    }
  }
  flush_until_done(s);
  free(msgs);
  return NULL;
}

/* A fatal consumer error ends the consumer for good: librdkafka fetches and
 * commits nothing more, so the engine would sit there consuming nothing.
 * The one a configuration causes is FENCED_INSTANCE_ID: another instance
 * joined the group with this one's kafka.group.instance.id and took over
 * its partitions. Stop at once, as kill -9 would, without a flush: the
 * partitions' owner resumes from the checkpoints, and this instance no
 * longer owns what it would write. */
static void consumer_fatal(engine_t *e) {
  char why[512] = "";
  rd_kafka_resp_err_t err = rd_kafka_fatal_error(e->consumer, why, sizeof why);
  const char *id = tw_config_kafka(e->cfg, "group.instance.id");
  if (err == RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID)
    TW_ERROR("engine",
             "another instance joined group %s with this instance's kafka.group.instance.id (%s) and Kafka "
             "fenced this one (%s); stopping without a checkpoint. kafka.group.instance.id must be unique "
             "per instance",
             e->group, id ? id : "?", why);
  else
    TW_ERROR("engine", "the Kafka consumer failed for good (%s: %s); stopping without a checkpoint",
             rd_kafka_err2name(err), why);
  _exit(3);
}

/* ---- Rebalance ------------------------------------------------------------- */

static void on_assign(engine_t *e, rd_kafka_topic_partition_list_t *parts) {
  /* Snapshot writes a crash cut short are finished before any twin of these
   * partitions is loaded. */
  int32_t *nums = tw_xcalloc((size_t)parts->cnt + 1, sizeof *nums);
  size_t nn = 0;
  for (int i = 0; i < parts->cnt; i++) {
    bool dup = false;
    for (size_t k = 0; k < nn; k++) dup |= nums[k] == parts->elems[i].partition;
    if (!dup) nums[nn++] = parts->elems[i].partition;
  }
  size_t repaired = 0;
  bson_error_t rerr;
  int64_t rbackoff = BACKOFF_MIN_MS;
  /* The repair writes snapshots, so it also waits for an export to finish. */
  char fid[160];
  tw_fence_ticket_t ticket;
  bool entered = false;
  snprintf(fid, sizeof fid, "%s/repair", e->instance);
  for (;;) {
    bool ok = tw_store_fence_enter(e->store, fid, tw_now_ms(), &ticket, &entered, &rerr) && entered &&
              tw_store_repair(e->store, nums, nn, &repaired, &rerr);
    if (entered) tw_store_fence_leave(e->store, &ticket, &rerr);
    if (ok || g_abort) break;
    if (!entered)
      TW_INFO("engine", "an export is reading MongoDB; the snapshot journal repair waits for it");
    else
      TW_WARN("engine", "cannot repair the snapshot journal (%s); retrying", rerr.message);
    entered = false;
    sleep_ms(rbackoff);
    rbackoff = rbackoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : rbackoff * 2;
  }
  if (repaired) TW_INFO("engine", "finished %zu snapshot writes interrupted by a crash", repaired);
  free(nums);
  /* Each partition is paused or resumed as its shard's others are (a pause
   * outlives an unassign in librdkafka), before its queue is forwarded and
   * before the assignment: the request is also a barrier. librdkafka handles
   * a partition's fetch stop (from its last revoke) later, in the broker's
   * thread, and that stop clears the queue's forwarding; forwarded first and
   * stopped after, the queue would lead nowhere. The request is queued
   * behind that stop, and the call returns once it is handled. */
  rd_kafka_topic_partition_list_t *to[2] = {rd_kafka_topic_partition_list_new(parts->cnt),
                                            rd_kafka_topic_partition_list_new(parts->cnt)};
  for (int i = 0; i < parts->cnt; i++) {
    const rd_kafka_topic_partition_t *tp = &parts->elems[i];
    rd_kafka_topic_partition_list_add(to[e->shards[tp->partition % e->n_shards].kafka_paused], tp->topic,
                                      tp->partition);
  }
  if (to[0]->cnt) rd_kafka_resume_partitions(e->consumer, to[0]);
  if (to[1]->cnt) rd_kafka_pause_partitions(e->consumer, to[1]);
  rd_kafka_topic_partition_list_destroy(to[0]);
  rd_kafka_topic_partition_list_destroy(to[1]);
  for (int i = 0; i < parts->cnt; i++) {
    rd_kafka_topic_partition_t *tp = &parts->elems[i];
    int ti = topic_index(e, tp->topic);
    int64_t off = -1;
    bson_error_t err;
    int64_t backoff = BACKOFF_MIN_MS;
    bool warned = false;
    while (!tw_store_read_checkpoint(e->store, e->group, tp->topic, tp->partition, &off, &err)) {
      if (!warned) TW_WARN("engine", "cannot read checkpoints (%s); retrying", err.message);
      warned = true;
      if (g_abort) break;
      sleep_ms(backoff);
      backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    /* The checkpoint is the truth; without one, the partition is new to
     * this store and is read from its beginning. */
    tp->offset = off >= 0 ? off : RD_KAFKA_OFFSET_BEGINNING;
    shard_t *s = &e->shards[tp->partition % e->n_shards];
    shard_send(s, CMD_ASSIGN, ti, tp->partition, off, NULL);
    rd_kafka_queue_t *pq = rd_kafka_queue_get_partition(e->consumer, tp->topic, tp->partition);
    if (pq) {
      rd_kafka_queue_forward(pq, s->q);
      rd_kafka_queue_destroy(pq);
    }
    TW_INFO("engine", "assigned %s[%d] to shard %d from offset %lld%s", tp->topic, tp->partition, s->id,
            (long long)(off >= 0 ? off : 0), off >= 0 ? " (checkpoint)" : " (no checkpoint: beginning)");
  }
  atomic_fetch_add(&e->assigned, parts->cnt);
  if (cooperative(e->consumer)) {
    rd_kafka_error_t *err = rd_kafka_incremental_assign(e->consumer, parts);
    if (err) {
      TW_ERROR("engine", "incremental assign failed: %s", rd_kafka_error_string(err));
      rd_kafka_error_destroy(err);
    }
  } else {
    rd_kafka_resp_err_t err = rd_kafka_assign(e->consumer, parts);
    if (err) TW_ERROR("engine", "assign failed: %s", rd_kafka_err2str(err));
  }
}

static void on_revoke(engine_t *e, rd_kafka_topic_partition_list_t *parts, bool lost) {
  /* Flush and checkpoint before giving the partitions up. librdkafka rejoins
   * the group as soon as the assignment is released, so releasing first let
   * the next owner start from the old checkpoint while this instance was
   * still flushing: two writers of the same twins, and events lost when the
   * snapshot of the one behind won (test_rebalance, test_fault_group).
   * librdkafka paused their fetches when the rebalance began; what is still
   * queued for them, the shards drop as no longer owned, and the release
   * below retires the fetch version, so no message of this assignment
   * reaches the next one. */
  atomic_fetch_sub(&e->assigned, parts->cnt);
  uint64_t *wait = tw_xcalloc((size_t)e->n_shards, sizeof *wait);
  for (int i = 0; i < parts->cnt; i++) {
    rd_kafka_topic_partition_t *tp = &parts->elems[i];
    int ti = topic_index(e, tp->topic);
    shard_t *s = &e->shards[tp->partition % e->n_shards];
    wait[s->id] = shard_send(s, CMD_REVOKE, ti, tp->partition, -1, NULL);
  }
  for (int k = 0; k < e->n_shards; k++)
    if (wait[k]) shard_wait(&e->shards[k], wait[k]);
  free(wait);
  if (cooperative(e->consumer)) {
    rd_kafka_error_t *err = rd_kafka_incremental_unassign(e->consumer, parts);
    if (err) {
      TW_ERROR("engine", "incremental unassign failed: %s", rd_kafka_error_string(err));
      rd_kafka_error_destroy(err);
    }
  } else {
    rd_kafka_assign(e->consumer, NULL); /* eager: the whole assignment goes */
  }
  TW_INFO("engine", "%s %d partitions (flushed and checkpointed)", lost ? "lost" : "revoked", parts->cnt);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
  engine_t *e = opaque;
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
    on_assign(e, parts);
  else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
    on_revoke(e, parts, rd_kafka_assignment_lost(rk));
  else
    TW_ERROR("engine", "rebalance error: %s", rd_kafka_err2str(err));
}

/* ---- For the HTTP server: twins in memory, metrics, readiness --------------- */

/* Asks every shard for the twin (only its owner holds it); waits at most
 * 2 s, e.g. behind a slow flush, after which the caller reads MongoDB. */
static bool http_twin(void *ud, const char *product_id, bson_t *doc, tw_http_twin_meta_t *meta) {
  engine_t *e = ud;
  if (atomic_load(&e->shards_exit)) return false;
  query_t **qs = tw_xcalloc((size_t)e->n_shards, sizeof *qs);
  for (int k = 0; k < e->n_shards; k++) {
    qs[k] = tw_xcalloc(1, sizeof *qs[k]);
    qs[k]->product_id = tw_xstrdup(product_id);
    qs[k]->doc = bson_new();
    shard_send(&e->shards[k], CMD_QUERY, 0, -1, -1, qs[k]);
  }
  int64_t deadline = tw_mono_ms() + 2000;
  bool found = false;
  for (int k = 0; k < e->n_shards; k++) {
    shard_t *s = &e->shards[k];
    query_t *q = qs[k];
    pthread_mutex_lock(&s->mu);
    while (q->state == Q_PENDING && tw_mono_ms() < deadline) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 50000000;
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
      }
      pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    if (q->state == Q_PENDING) { /* the shard frees it when it gets to it */
      q->state = Q_ABANDONED;
      pthread_mutex_unlock(&s->mu);
      continue;
    }
    pthread_mutex_unlock(&s->mu);
    if (q->found && !found) {
      bson_concat(doc, q->doc);
      *meta = q->meta;
      found = true;
    }
    bson_destroy(q->doc);
    free(q->product_id);
    free(q);
  }
  free(qs);
  return found;
}

static void metric_head(bson_string_t *o, const char *name, const char *type, const char *help) {
  bson_string_append_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void delay_write(bson_string_t *o, const char *name, int shard, delay_hist_t *h) {
  char lab[32] = "";
  if (shard >= 0) snprintf(lab, sizeof lab, "shard=\"%d\",", shard);
  for (int b = 0; b < DELAY_BUCKETS; b++)
    bson_string_append_printf(o, "%s_bucket{%sle=\"%g\"} %llu\n", name, lab, delay_le[b],
                              (unsigned long long)h->bucket[b]);
  bson_string_append_printf(o, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, lab, (unsigned long long)h->count);
  if (lab[0]) lab[strlen(lab) - 1] = '\0';
  bson_string_append_printf(o, "%s_sum%s%s%s %.6f\n", name, lab[0] ? "{" : "", lab, lab[0] ? "}" : "",
                            (double)h->sum_us / 1e6);
  bson_string_append_printf(o, "%s_count%s%s%s %llu\n", name, lab[0] ? "{" : "", lab, lab[0] ? "}" : "",
                            (unsigned long long)h->count);
}

static void http_metrics(void *ud, bson_string_t *o) {
  engine_t *e = ud;
  static const char *outcomes[] = {"consumed", "applied",  "stale",    "duplicate",
                                   "too_late", "rejected", "replayed", "dlq"};
  metric_head(o, "twin_events_total", "counter",
              "Input messages by topic, shard and outcome (consumed = all; replayed = already in the stored "
              "snapshot after a restart; dlq = sent to the dead-letter topic).");
  for (int k = 0; k < e->n_shards; k++) {
    stats_t *st = &e->shards[k].st;
    for (int t = 0; t < 2; t++) {
      uint64_t v[8] = {st->consumed[t], st->applied[t],  st->stale[t],    st->duplicate[t],
                       st->too_late[t], st->rejected[t], st->replayed[t], st->dlq[t]};
      for (int i = 0; i < 8; i++)
        bson_string_append_printf(o, "twin_events_total{topic=\"%s\",shard=\"%d\",outcome=\"%s\"} %llu\n",
                                  e->topics[t], k, outcomes[i], (unsigned long long)v[i]);
    }
  }
  metric_head(o, "twin_consumer_lag", "gauge",
              "Messages in an assigned input partition not yet applied (high watermark - next offset).");
  rd_kafka_topic_partition_list_t *asg = NULL;
  if (rd_kafka_assignment(e->consumer, &asg) == RD_KAFKA_RESP_ERR_NO_ERROR && asg) {
    for (int i = 0; i < asg->cnt; i++) {
      rd_kafka_topic_partition_t *tp = &asg->elems[i];
      int t = topic_index(e, tp->topic);
      int64_t lo = -1, hi = -1;
      if (t < 0 || tp->partition >= e->n_partitions ||
          rd_kafka_get_watermark_offsets(e->consumer, tp->topic, tp->partition, &lo, &hi) || hi < 0)
        continue;
      int64_t next = atomic_load(&e->processed[t * e->n_partitions + tp->partition]);
      if (next < lo) next = lo;
      bson_string_append_printf(o, "twin_consumer_lag{topic=\"%s\",partition=\"%d\"} %lld\n", tp->topic,
                                tp->partition, (long long)(hi > next ? hi - next : 0));
    }
    rd_kafka_topic_partition_list_destroy(asg);
  }
  metric_head(o, "twin_flush_twins", "histogram", "Twins written per snapshot flush, by shard.");
  for (int k = 0; k < e->n_shards; k++) {
    stats_t *st = &e->shards[k].st;
    for (int b = 0; b < FLUSH_SIZE_BUCKETS; b++)
      bson_string_append_printf(o, "twin_flush_twins_bucket{shard=\"%d\",le=\"%g\"} %llu\n", k,
                                flush_size_le[b], (unsigned long long)st->flush_size_bucket[b]);
    bson_string_append_printf(o, "twin_flush_twins_bucket{shard=\"%d\",le=\"+Inf\"} %llu\n", k,
                              (unsigned long long)st->flushes);
    bson_string_append_printf(o, "twin_flush_twins_sum{shard=\"%d\"} %llu\n", k,
                              (unsigned long long)st->flushed_twins);
    bson_string_append_printf(o, "twin_flush_twins_count{shard=\"%d\"} %llu\n", k,
                              (unsigned long long)st->flushes);
  }
  metric_head(o, "twin_flush_duration_seconds", "histogram",
              "Duration of snapshot flushes that wrote twins (alerts, snapshots, checkpoints), by shard.");
  for (int k = 0; k < e->n_shards; k++) {
    stats_t *st = &e->shards[k].st;
    for (int b = 0; b < FLUSH_TIME_BUCKETS; b++)
      bson_string_append_printf(o, "twin_flush_duration_seconds_bucket{shard=\"%d\",le=\"%g\"} %llu\n", k,
                                flush_time_le[b], (unsigned long long)st->flush_time_bucket[b]);
    bson_string_append_printf(o, "twin_flush_duration_seconds_bucket{shard=\"%d\",le=\"+Inf\"} %llu\n", k,
                              (unsigned long long)st->flushes);
    bson_string_append_printf(o, "twin_flush_duration_seconds_sum{shard=\"%d\"} %.6f\n", k,
                              (double)st->flush_time_us / 1e6);
    bson_string_append_printf(o, "twin_flush_duration_seconds_count{shard=\"%d\"} %llu\n", k,
                              (unsigned long long)st->flushes);
  }
  int64_t now = tw_now_ms();
  metric_head(o, "twin_snapshot_staleness_seconds", "gauge",
              "Age of the oldest change not yet in MongoDB, by shard (0 = everything written).");
  for (int k = 0; k < e->n_shards; k++) {
    int64_t since = atomic_load(&e->shards[k].st.dirty_since_wall_ms);
    bson_string_append_printf(o, "twin_snapshot_staleness_seconds{shard=\"%d\"} %.3f\n", k,
                              since > 0 && now > since ? (double)(now - since) / 1000.0 : 0.0);
  }
  metric_head(o, "twin_snapshot_delay_seconds", "histogram",
              "Per twin written: from the event that made it dirty being applied to its snapshot being "
              "acknowledged by MongoDB, by shard.");
  for (int k = 0; k < e->n_shards; k++)
    delay_write(o, "twin_snapshot_delay_seconds", k, &e->shards[k].st.snapshot_delay);
  metric_head(o, "twin_alert_delay_seconds", "histogram",
              "Per alert: from its event being consumed to Kafka acknowledging the alert.");
  delay_write(o, "twin_alert_delay_seconds", -1, &e->alert_delay);
  metric_head(o, "twin_alerts_total", "counter", "Maintenance alerts sent, by shard and state.");
  for (int k = 0; k < e->n_shards; k++) {
    stats_t *st = &e->shards[k].st;
    bson_string_append_printf(o, "twin_alerts_total{shard=\"%d\",state=\"raised\"} %llu\n", k,
                              (unsigned long long)st->alerts_raised);
    bson_string_append_printf(o, "twin_alerts_total{shard=\"%d\",state=\"cleared\"} %llu\n", k,
                              (unsigned long long)st->alerts_cleared);
  }
  metric_head(o, "twin_twins_in_memory", "gauge", "Twins held in memory, by shard.");
  for (int k = 0; k < e->n_shards; k++)
    bson_string_append_printf(o, "twin_twins_in_memory{shard=\"%d\"} %llu\n", k,
                              (unsigned long long)e->shards[k].st.twins_in_memory);
  metric_head(o, "twin_shard_paused", "gauge",
              "1 while a shard waits for MongoDB or Kafka (partitions paused).");
  for (int k = 0; k < e->n_shards; k++)
    bson_string_append_printf(o, "twin_shard_paused{shard=\"%d\"} %d\n", k,
                              atomic_load(&e->shards[k].st.outage) ? 1 : 0);
  metric_head(o, "twin_assigned_partitions", "gauge", "Input partitions assigned to this instance.");
  bson_string_append_printf(o, "twin_assigned_partitions %d\n", atomic_load(&e->assigned));
  metric_head(o, "twin_mongodb_up", "gauge", "1 when the last MongoDB ping (every 5 s) answered.");
  bson_string_append_printf(o, "twin_mongodb_up %d\n", atomic_load(&e->mongo_ok) ? 1 : 0);
  metric_head(o, "twin_producer_delivery_failures_total", "counter",
              "Alerts and dead letters Kafka refused for good (logged each).");
  bson_string_append_printf(o, "twin_producer_delivery_failures_total %llu\n",
                            (unsigned long long)atomic_load(&e->dlq_failed));
  metric_head(o, "twin_kafka_fetch_wakeups_total", "counter",
              "Requests sent to wake librdkafka's fetcher when a shard's queue ran low after being half "
              "full (a backlog).");
  bson_string_append_printf(o, "twin_kafka_fetch_wakeups_total %llu\n",
                            (unsigned long long)atomic_load(&e->fetch_wakeups));
}

static bool http_ready(void *ud, char *why, size_t cap) {
  engine_t *e = ud;
  if (atomic_load(&e->assigned) <= 0) return tw_fail(why, cap, "no partitions assigned yet");
  if (!atomic_load(&e->mongo_ok)) return tw_fail(why, cap, "MongoDB is not reachable");
  for (int k = 0; k < e->n_shards; k++)
    if (atomic_load(&e->shards[k].st.outage))
      return tw_fail(why, cap, "shard %d is paused: MongoDB or Kafka unavailable", k);
  return true;
}

/* Pings MongoDB every 5 s for /readyz and twin_mongodb_up, on its own
 * thread and connection so a slow server never delays the consumer. */
static void *health_main(void *arg) {
  engine_t *e = arg;
  bson_error_t serr;
  tw_store_t *st = tw_store_new(e->cfg->mongo_uri, e->cfg->mongo_database, "twin-engine-health", &serr);
  while (!atomic_load(&e->shards_exit) && !g_stop) {
    bson_error_t err;
    atomic_store(&e->mongo_ok, st && tw_store_ping(st, &err));
    for (int i = 0; i < 50 && !atomic_load(&e->shards_exit) && !g_stop; i++) sleep_ms(100);
  }
  tw_store_destroy(st);
  return NULL;
}

/* Serves the producer's delivery reports as they arrive, so that an
 * alert's twin_alert_delay_seconds ends when Kafka acknowledged it, not
 * when the main loop next looked (it waits up to 20 ms on the consumer,
 * longer while it wakes the fetcher or serves a rebalance). The shards'
 * rd_kafka_flush() serves them too; dr_cb only touches atomics and the log. */
static void *producer_main(void *arg) {
  engine_t *e = arg;
  while (!atomic_load(&e->producer_exit)) rd_kafka_poll(e->producer, 100);
  return NULL;
}

/* ---- Pausing the partitions of a shard in an outage ------------------------ */

/* Called by the main thread every 20 ms: pauses the partitions of a shard
 * that reports an outage, resumes them when it is over (see outage_begin). */
static void sync_pauses(engine_t *e) {
  for (int k = 0; k < e->n_shards; k++) {
    shard_t *s = &e->shards[k];
    bool want = atomic_load(&s->st.outage);
    if (want == s->kafka_paused) continue;
    rd_kafka_topic_partition_list_t *asg = NULL;
    if (rd_kafka_assignment(e->consumer, &asg) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (asg) rd_kafka_topic_partition_list_destroy(asg);
      continue; /* tried again in 20 ms */
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(asg->cnt);
    for (int i = 0; i < asg->cnt; i++)
      if (asg->elems[i].partition % e->n_shards == k)
        rd_kafka_topic_partition_list_add(l, asg->elems[i].topic, asg->elems[i].partition);
    if (l->cnt && want)
      rd_kafka_pause_partitions(e->consumer, l);
    else if (l->cnt)
      rd_kafka_resume_partitions(e->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_topic_partition_list_destroy(asg);
    s->kafka_paused = want;
  }
}

/* ---- Waking the fetcher ---------------------------------------------------- */

typedef struct {
  long min_msgs; /* queued.min.messages in effect (per shard queue) */
  bool *armed;   /* per shard: its queue has been at least half full */
} fetch_wake_t;

/* librdkafka 2.0.2 stops fetching a partition while the queue it feeds (here
 * its shard's queue) holds queued.min.messages, and decides again only when
 * the thread of the partition's broker wakes up: on a response, on a request
 * to send, or after a second with neither. Once every partition a broker
 * leads is stopped, nothing wakes that thread, so a shard that applies its
 * queue in a quarter of a second sits idle for the rest of the second
 * (librdkafka 2.3 made that wait settable, fetch.queue.backoff.ms). Called by
 * the main thread every 20 ms: when a shard's queue, after being at least
 * half full, is down to a quarter, one ListOffsets request per leader broker
 * of the assignment (rd_kafka_offsets_for_times) wakes those threads, and
 * they fetch again before the shard runs dry. A shard that keeps up never
 * has a half-full queue, so this sends nothing then. Only the message count
 * is watched (librdkafka does not tell the bytes queued): where
 * queued.max.messages.kbytes is reached first, the second's wait remains. */
static void fetch_wake(engine_t *e, fetch_wake_t *w) {
  bool wake = false;
  for (int k = 0; k < e->n_shards; k++) {
    long len = (long)rd_kafka_queue_length(e->shards[k].q);
    if (len >= w->min_msgs / 2) {
      w->armed[k] = true;
    } else if (w->armed[k] && len < w->min_msgs / 4) {
      w->armed[k] = false;
      wake = true;
    }
  }
  if (!wake) return;
  rd_kafka_topic_partition_list_t *asg = NULL;
  if (rd_kafka_assignment(e->consumer, &asg) == RD_KAFKA_RESP_ERR_NO_ERROR && asg && asg->cnt > 0) {
    for (int i = 0; i < asg->cnt; i++) asg->elems[i].offset = RD_KAFKA_OFFSET_END; /* latest */
    rd_kafka_resp_err_t err = rd_kafka_offsets_for_times(e->consumer, asg, 1000);
    atomic_fetch_add(&e->fetch_wakeups, 1);
    if (err) TW_DEBUG("engine", "fetch wake-up: %s", rd_kafka_err2str(err));
  }
  if (asg) rd_kafka_topic_partition_list_destroy(asg);
}

/* ---- Start-up checks ------------------------------------------------------- */

static bool check_topics(engine_t *e) {
  const struct rd_kafka_metadata *md = NULL;
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
  for (int attempt = 0; attempt < 3; attempt++) {
    err = rd_kafka_metadata(e->consumer, 1, NULL, &md, 10000);
    if (!err) break;
  }
  if (err) {
    TW_ERROR("engine", "cannot read Kafka metadata from %s: %s", tw_config_kafka(e->cfg, "bootstrap.servers"),
             rd_kafka_err2str(err));
    return false;
  }
  int counts[2] = {-1, -1};
  bool dlq = false, alerts = false;
  for (int i = 0; i < md->topic_cnt; i++) {
    int ti = topic_index(e, md->topics[i].topic);
    if (ti >= 0 && !md->topics[i].err) counts[ti] = md->topics[i].partition_cnt;
    if (strcmp(md->topics[i].topic, e->cfg->topic_dlq) == 0) dlq = true;
    if (strcmp(md->topics[i].topic, e->cfg->topic_alerts) == 0 && !md->topics[i].err) alerts = true;
  }
  rd_kafka_metadata_destroy(md);
  for (int ti = 0; ti < 2; ti++) {
    if (counts[ti] < 0) {
      TW_ERROR("engine", "topic %s does not exist (create it, e.g. with deploy/local/stack.sh up)",
               e->topics[ti]);
      return false;
    }
  }
  if (counts[0] != counts[1]) {
    TW_ERROR(
        "engine",
        "topics are not co-partitioned: %s has %d partitions, %s has %d; a product's events must land in the "
        "same partition number of both, so give them the same count",
        e->topics[0], counts[0], e->topics[1], counts[1]);
    return false;
  }
  if (!dlq)
    TW_WARN("engine", "dead-letter topic %s does not exist; bad messages cannot be kept", e->cfg->topic_dlq);
  if (!alerts && tw_rules_count(e->rules) > 0) {
    TW_ERROR("engine",
             "alerts topic %s (topics.alerts) does not exist; create it, or turn alerts off with "
             "alerts.defaults=false and no alerts.rules",
             e->cfg->topic_alerts);
    return false;
  }
  e->n_partitions = counts[0];
  return true;
}

/* ---- Run ------------------------------------------------------------------- */

static void log_stats(engine_t *e, uint64_t *last, int64_t *last_ms, bool final) {
  uint64_t c = 0, a = 0, st = 0, d = 0, tl = 0, r = 0, q = 0, rp = 0, f = 0, ft = 0, ar = 0, ac = 0;
  for (int i = 0; i < e->n_shards; i++) {
    stats_t *s = &e->shards[i].st;
    for (int t = 0; t < 2; t++) {
      c += s->consumed[t];
      a += s->applied[t];
      st += s->stale[t];
      d += s->duplicate[t];
      tl += s->too_late[t];
      r += s->rejected[t];
      q += s->dlq[t];
      rp += s->replayed[t];
    }
    f += s->flushes;
    ft += s->flushed_twins;
    ar += s->alerts_raised;
    ac += s->alerts_cleared;
  }
  int64_t now = tw_mono_ms();
  double rate = now > *last_ms ? (double)(c - *last) * 1000.0 / (double)(now - *last_ms) : 0;
  if (c != *last || final)
    TW_INFO("stats",
            "%sconsumed=%llu (%.0f/s) applied=%llu stale=%llu duplicate=%llu too_late=%llu rejected=%llu "
            "dlq=%llu replayed=%llu flushes=%llu snapshots=%llu alerts_raised=%llu alerts_cleared=%llu",
            final ? "final " : "", (unsigned long long)c, rate, (unsigned long long)a, (unsigned long long)st,
            (unsigned long long)d, (unsigned long long)tl, (unsigned long long)r, (unsigned long long)q,
            (unsigned long long)rp, (unsigned long long)f, (unsigned long long)ft, (unsigned long long)ar,
            (unsigned long long)ac);
  *last = c;
  *last_ms = now;
}

int tw_engine_run(const tw_config_t *cfg) {
  engine_t e = {0};
  int rc = 1;
  bson_error_t berr;
  char errstr[512];
  e.cfg = cfg;
  e.group = tw_config_kafka(cfg, "group.id");
  e.topics[TW_TOPIC_TELEMETRY] = cfg->topic_telemetry;
  e.topics[TW_TOPIC_LIFECYCLE] = cfg->topic_lifecycle;
  e.n_shards = (int)cfg->shards;
  {
    char rerr[512];
    e.rules = tw_config_rules(cfg, rerr, sizeof rerr);
    if (!e.rules) {
      TW_ERROR("config", "%s", rerr);
      return 1;
    }
    TW_INFO("engine", "%zu alert rules -> %s", tw_rules_count(e.rules), cfg->topic_alerts);
  }
  log_allocator();

  e.store = tw_store_new(cfg->mongo_uri, cfg->mongo_database, "twin-engine", &berr);
  if (!e.store) {
    TW_ERROR("engine", "mongo.uri: %s", berr.message);
    goto out_store;
  }
  int64_t backoff = BACKOFF_MIN_MS;
  bool warned = false;
  while (!tw_store_ping(e.store, &berr)) {
    if (!warned) TW_WARN("engine", "MongoDB at mongo.uri is not reachable (%s); waiting", berr.message);
    warned = true;
    if (g_stop) goto out_store;
    sleep_ms(backoff);
    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
  }

  {
    char host[64] = "?";
    gethostname(host, sizeof host - 1);
    snprintf(e.instance, sizeof e.instance, "%s:%d", host, (int)getpid());
  }
  backoff = BACKOFF_MIN_MS;
  while (!tw_store_fence_init(e.store, &berr)) {
    TW_WARN("engine", "cannot set up the export fence in MongoDB (%s); retrying", berr.message);
    if (g_stop) goto out_store;
    sleep_ms(backoff);
    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
  }

  rd_kafka_conf_t *pc = kafka_conf(cfg, false);
  if (!pc) goto out_store;
  rd_kafka_conf_set_dr_msg_cb(pc, dr_cb);
  rd_kafka_conf_set_opaque(pc, &e);
  e.producer = rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, sizeof errstr);
  if (!e.producer) {
    TW_ERROR("engine", "cannot create Kafka producer: %s", errstr);
    goto out_store;
  }
  e.alerts_rkt = rd_kafka_topic_new(e.producer, cfg->topic_alerts, NULL);
  if (!e.alerts_rkt) {
    TW_ERROR("engine", "cannot use topics.alerts %s: %s", cfg->topic_alerts,
             rd_kafka_err2str(rd_kafka_last_error()));
    goto out_producer;
  }
  rd_kafka_conf_t *cc = kafka_conf(cfg, true);
  if (!cc) goto out_producer;
  rd_kafka_conf_set_rebalance_cb(cc, rebalance_cb);
  rd_kafka_conf_set_opaque(cc, &e);
  e.consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cc, errstr, sizeof errstr);
  if (!e.consumer) {
    TW_ERROR("engine", "cannot create Kafka consumer: %s", errstr);
    goto out_producer;
  }
  rd_kafka_poll_set_consumer(e.consumer);
  long queued_min = 0; /* for fetch_wake() */
  {
    /* The limits in effect, read back from the consumer: they decide how
     * fast a shard catches up and how much memory that takes. */
    char qmin[32] = "?", qkb[32] = "?", fetch[32] = "?";
    size_t n1 = sizeof qmin, n2 = sizeof qkb, n3 = sizeof fetch;
    const rd_kafka_conf_t *ec = rd_kafka_conf(e.consumer);
    rd_kafka_conf_get(ec, "queued.min.messages", qmin, &n1);
    rd_kafka_conf_get(ec, "queued.max.messages.kbytes", qkb, &n2);
    rd_kafka_conf_get(ec, "fetch.message.max.bytes", fetch, &n3);
    queued_min = atol(qmin);
    bool set_min = tw_config_kafka(cfg, "queued.min.messages"),
         set_kb = tw_config_kafka(cfg, "queued.max.messages.kbytes"),
         set_fetch = tw_config_kafka(cfg, "max.partition.fetch.bytes") ||
                     tw_config_kafka(cfg, "fetch.message.max.bytes");
    TW_INFO("engine",
            "Kafka prefetch per shard: queued.min.messages=%s (%s), queued.max.messages.kbytes=%s (%s); "
            "max.partition.fetch.bytes=%s (%s)",
            qmin, set_min ? "config" : "engine default", qkb, set_kb ? "config" : "engine default", fetch,
            set_fetch ? "config" : "engine default");
  }
  if (!check_topics(&e)) goto out_consumer;

  e.processed = tw_xcalloc((size_t)e.n_partitions * 2, sizeof *e.processed);
  for (int i = 0; i < e.n_partitions * 2; i++) atomic_store(&e.processed[i], -1);
  atomic_store(&e.mongo_ok, true); /* the ping above answered */
  e.shards = tw_xcalloc((size_t)e.n_shards, sizeof *e.shards);
  for (int i = 0; i < e.n_shards; i++) {
    shard_t *s = &e.shards[i];
    char app[64];
    snprintf(app, sizeof app, "twin-engine-shard-%d", i);
    s->id = i;
    s->e = &e;
    s->q = rd_kafka_queue_new(e.consumer);
    s->store = tw_store_new(cfg->mongo_uri, cfg->mongo_database, app, &berr);
    tw_map_init(&s->twins);
    tw_arena_init(&s->arena, 1 << 20);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
  }
  for (int i = 0; i < e.n_shards; i++) pthread_create(&e.shards[i].thread, NULL, shard_main, &e.shards[i]);
  pthread_t health;
  pthread_create(&health, NULL, health_main, &e);
  pthread_t producer_poller;
  pthread_create(&producer_poller, NULL, producer_main, &e);
  tw_http_engine_t cb = {&e, http_twin, http_metrics, http_ready};
  char herr[512] = "";
  e.http = tw_http_start(cfg, &cb, herr, sizeof herr);
  bool http_failed = !e.http && herr[0];
  if (http_failed) TW_ERROR("http", "%s", herr);

  rd_kafka_resp_err_t serr = RD_KAFKA_RESP_ERR_NO_ERROR;
  if (!http_failed) {
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(2);
    rd_kafka_topic_partition_list_add(subs, cfg->topic_telemetry, RD_KAFKA_PARTITION_UA);
    rd_kafka_topic_partition_list_add(subs, cfg->topic_lifecycle, RD_KAFKA_PARTITION_UA);
    serr = rd_kafka_subscribe(e.consumer, subs);
    rd_kafka_topic_partition_list_destroy(subs);
  }
  if (http_failed) {
    rc = 2; /* a setting (http.*) that cannot work: nothing was consumed */
  } else if (serr) {
    TW_ERROR("engine", "cannot subscribe: %s", rd_kafka_err2str(serr));
  } else {
    const char *instance_id = tw_config_kafka(cfg, "group.instance.id");
    TW_INFO("engine", "running: %d shards, %d partitions per topic, group %s%s%s, MongoDB database %s",
            e.n_shards, e.n_partitions, e.group, instance_id ? " as static member " : "",
            instance_id ? instance_id : "", cfg->mongo_database);
    uint64_t last = 0;
    int64_t last_ms = tw_mono_ms(), last_log = last_ms;
    fetch_wake_t wake = {.min_msgs = queued_min, .armed = tw_xcalloc((size_t)e.n_shards, sizeof(bool))};
    while (!g_stop) {
      rd_kafka_message_t *m = rd_kafka_consumer_poll(e.consumer, 20);
      fetch_wake(&e, &wake);
      sync_pauses(&e);
      if (m) {
        if (m->err == RD_KAFKA_RESP_ERR__FATAL) consumer_fatal(&e);
        if (m->err)
          TW_WARN("engine", "consumer: %s", rd_kafka_message_errstr(m));
        else
          TW_ERROR("engine",
                   "message from %s[%d] reached the main queue instead of its shard; it is not lost "
                   "(its offset is not checkpointed) but this is a bug",
                   rd_kafka_topic_name(m->rkt), m->partition);
        rd_kafka_message_destroy(m);
      }
      if (tw_mono_ms() - last_log >= 5000) {
        log_stats(&e, &last, &last_ms, false);
        last_log = tw_mono_ms();
      }
    }
    free(wake.armed);
    TW_INFO("engine", "stopping: flushing every shard");
    rc = 0;
  }
  /* No new HTTP requests reach a shard from here on. */
  tw_http_stop(e.http);
  /* Closing the consumer revokes every partition through rebalance_cb,
   * which makes each shard flush and checkpoint. */
  rd_kafka_consumer_close(e.consumer);
  atomic_store(&e.shards_exit, true);
  pthread_join(health, NULL);
  for (int i = 0; i < e.n_shards; i++) {
    rd_kafka_queue_yield(e.shards[i].q);
    pthread_join(e.shards[i].thread, NULL);
  }
  {
    uint64_t last = 0;
    int64_t last_ms = tw_mono_ms();
    log_stats(&e, &last, &last_ms, true);
  }
  atomic_store(&e.producer_exit, true);
  pthread_join(producer_poller, NULL);
  rd_kafka_flush(e.producer, g_abort ? 0 : 10000);
  for (int i = 0; i < e.n_shards; i++) {
    shard_t *s = &e.shards[i];
    rd_kafka_queue_destroy(s->q);
    tw_store_destroy(s->store);
    tw_map_cleanup(&s->twins, true);
    tw_arena_cleanup(&s->arena);
    free(s->dirty);
    free(s->parts);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
  }
  free(e.shards);
  free(e.processed);
out_consumer:
  rd_kafka_destroy(e.consumer);
out_producer:
  if (e.alerts_rkt) rd_kafka_topic_destroy(e.alerts_rkt);
  rd_kafka_destroy(e.producer);
out_store:
  tw_store_destroy(e.store);
  tw_rules_destroy(e.rules);
  return rc;
}
