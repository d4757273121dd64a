/* kafka.c - twin-sim's librdkafka producer.
 *
 * Idempotent (no duplicates or reordering from retries: the duplicates
 * in the stream are the ones the injector chose), linger 5 ms, lz4, and
 * partitioner murmur2_random so a product lands on the same partition as
 * it would from a Java producer. Every delivery report is checked; the
 * caller learns about any failure at flush time. kafka.* settings from
 * the command line are applied last and override these defaults.
 * Single-threaded: one producer per process, used from main(). */
#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"
#include "twin/log.h"
#include "util.h"

struct tw_sim_kafka {
  rd_kafka_t *rk;
  rd_kafka_topic_t *rkt[2];
  uint64_t delivered, failed;
  char first_error[256];
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  tw_sim_kafka_t *k = opaque;
  if (!m->err) {
    k->delivered++;
    return;
  }
  if (k->failed++ == 0) {
    snprintf(k->first_error, sizeof k->first_error, "%s [%d]: %s", rd_kafka_topic_name(m->rkt),
             (int)m->partition, rd_kafka_err2str(m->err));
    TW_ERROR("sim", "kafka delivery failed: %s", k->first_error);
  }
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
  (void)rk;
  tw_log_level_t l = level <= 3   ? TW_LOG_ERROR
                     : level == 4 ? TW_LOG_WARN
                     : level <= 6 ? TW_LOG_INFO
                                  : TW_LOG_DEBUG;
  TW_LOG(l, "rdkafka", "%s: %s", fac, buf);
}

static bool conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char *err, size_t cap) {
  char e[512];
  if (rd_kafka_conf_set(conf, k, v, e, sizeof e) != RD_KAFKA_CONF_OK)
    return tw_fail(err, cap, "kafka.%s=%s: %s", k, v, e);
  return true;
}

/* Fails fast (10 s) when the brokers cannot be reached or a topic is
 * missing, instead of failing every message after message.timeout.ms. */
static bool check_topics(tw_sim_kafka_t *k, const tw_sim_kafka_opts_t *o, char *err, size_t err_cap) {
  int parts[2] = {0, 0};
  for (int i = 0; i < 2; i++) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(k->rk, 0, k->rkt[i], &md, 10000);
    if (e)
      return tw_fail(err, err_cap, "cannot get metadata of topic %s from %s within 10 s: %s", o->topics[i],
                     o->brokers, rd_kafka_err2str(e));
    e = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
    parts[i] = md->topic_cnt == 1 ? md->topics[0].partition_cnt : 0;
    rd_kafka_metadata_destroy(md);
    if (e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || e == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC)
      return tw_fail(err, err_cap,
                     "topic %s does not exist on %s (deploy/local/stack.sh up creates the twin topics)",
                     o->topics[i], o->brokers);
    if (e) return tw_fail(err, err_cap, "topic %s: %s", o->topics[i], rd_kafka_err2str(e));
  }
  if (parts[0] != parts[1])
    TW_WARN(
        "sim",
        "topics %s (%d partitions) and %s (%d partitions) are not co-partitioned: the engine refuses them",
        o->topics[0], parts[0], o->topics[1], parts[1]);
  TW_INFO("sim", "kafka %s: %s and %s, %d partitions each", o->brokers, o->topics[0], o->topics[1], parts[0]);
  return true;
}

bool tw_sim_kafka_new(const tw_sim_kafka_opts_t *o, tw_sim_kafka_t **out, char *err, size_t err_cap) {
  *out = NULL;
  char e[512];
  tw_sim_kafka_t *k = calloc(1, sizeof *k);
  if (!k) return tw_fail(err, err_cap, "out of memory");
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if (!conf_set(conf, "bootstrap.servers", o->brokers, err, err_cap) ||
      !conf_set(conf, "client.id", "twin-sim", err, err_cap) ||
      !conf_set(conf, "enable.idempotence", "true", err, err_cap) ||
      !conf_set(conf, "linger.ms", "5", err, err_cap) ||
      !conf_set(conf, "compression.type", "lz4", err, err_cap) ||
      !conf_set(conf, "partitioner", "murmur2_random", err, err_cap))
    goto fail_conf;
  for (size_t i = 0; i < o->n_set; i++)
    if (!conf_set(conf, o->set_keys[i], o->set_values[i], err, err_cap)) goto fail_conf;
  rd_kafka_conf_set_opaque(conf, k);
  rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
  rd_kafka_conf_set_log_cb(conf, log_cb);
  k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
  if (!k->rk) {
    tw_fail(err, err_cap, "cannot create the Kafka producer: %s", e);
    goto fail_conf;
  }
  for (int i = 0; i < 2; i++) {
    k->rkt[i] = rd_kafka_topic_new(k->rk, o->topics[i], NULL);
    if (!k->rkt[i]) {
      tw_fail(err, err_cap, "topic %s: %s", o->topics[i], rd_kafka_err2str(rd_kafka_last_error()));
      tw_sim_kafka_destroy(k);
      return false;
    }
  }
  if (!check_topics(k, o, err, err_cap)) {
    tw_sim_kafka_destroy(k);
    return false;
  }
  *out = k;
  return true;
fail_conf:
  rd_kafka_conf_destroy(conf);
  free(k);
  return false;
}

bool tw_sim_kafka_produce(tw_sim_kafka_t *k, int topic, const void *key, size_t key_len, const void *value,
                          size_t value_len, char *err, size_t err_cap) {
  for (;;) {
    if (rd_kafka_produce(k->rkt[topic], RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, (void *)value, value_len,
                         key, key_len, NULL) == 0)
      return true;
    rd_kafka_resp_err_t e = rd_kafka_last_error();
    if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
      return tw_fail(err, err_cap, "cannot produce to %s: %s", rd_kafka_topic_name(k->rkt[topic]),
                     rd_kafka_err2str(e));
    rd_kafka_poll(k->rk, 20); /* local queue full: let deliveries drain it */
    if (k->failed) return tw_fail(err, err_cap, "kafka delivery failed: %s", k->first_error);
  }
}

void tw_sim_kafka_poll(tw_sim_kafka_t *k) { rd_kafka_poll(k->rk, 0); }

bool tw_sim_kafka_flush(tw_sim_kafka_t *k, int timeout_ms, uint64_t *delivered, uint64_t *failed, char *err,
                        size_t err_cap) {
  rd_kafka_resp_err_t e = rd_kafka_flush(k->rk, timeout_ms);
  *delivered = k->delivered;
  *failed = k->failed;
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
    return tw_fail(err, err_cap,
                   "%d message(s) not delivered within %d ms (is the broker at bootstrap.servers up?)",
                   rd_kafka_outq_len(k->rk), timeout_ms);
  if (k->failed)
    return tw_fail(err, err_cap, "%llu message(s) failed, first: %s", (unsigned long long)k->failed,
                   k->first_error);
  return true;
}

void tw_sim_kafka_destroy(tw_sim_kafka_t *k) {
  if (!k) return;
  for (int i = 0; i < 2; i++)
    if (k->rkt[i]) rd_kafka_topic_destroy(k->rkt[i]);
  if (k->rk) rd_kafka_destroy(k->rk);
  free(k);
}
