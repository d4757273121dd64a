/* alerts.c - `twinctl alerts`: the maintenance alerts on the alerts topic,
 * decoded (twin.v1.MaintenanceAlert), oldest first per product. Reads
 * Kafka, not MongoDB: what consumers of the topic see. With --dedupe it
 * keeps the first copy of each (alert_id, state), as a consumer should. */
#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "twin/v1/alerts.pb-c.h"

static const char alerts_help[] =
    "usage: twinctl alerts [--brokers LIST] [--topic T] [--product ID] [--limit N] [--dedupe] [--json]\n"
    "\n"
    "Reads the maintenance alerts topic from its beginning to its current end and prints each alert:\n"
    "event time, product, rule, severity, RAISED/CLEARED, value and threshold with unit, predicted\n"
    "date (predictive rules) and the message. Alerts of one product are in order (one partition).\n"
    "\n"
    "  --brokers LIST       Kafka bootstrap servers (default $TWIN_KAFKA_BOOTSTRAP, else 127.0.0.1:9092)\n"
    "  --topic T            alerts topic (default twin.alerts)\n"
    "  --product ID         only this product's alerts\n"
    "  --limit N            print at most the last N alerts, 1..10000000 (default all)\n"
    "  --dedupe             drop repeated (alert_id, state) pairs, as a consumer does after a restart\n"
    "  --json               one JSON object per alert with the proto field names\n"
    "\n"
    "Exit status: 0 done, 1 a Kafka error, 2 bad usage.\n";

typedef struct {
  Twin__V1__MaintenanceAlert **v;
  size_t n, cap;
} list_t;

/* (alert_id, state) pairs seen: open addressing on an FNV-1a hash. */
typedef struct {
  char **keys;
  size_t n, cap;
} seen_t;

static uint64_t fnv(const char *s) {
  uint64_t h = UINT64_C(1469598103934665603);
  for (; *s; s++) h = (h ^ (unsigned char)*s) * UINT64_C(1099511628211);
  return h;
}

/* Adds the pair; false when it was there already. */
static bool seen_add(seen_t *t, const Twin__V1__MaintenanceAlert *a) {
  if (2 * (t->n + 1) > t->cap) {
    seen_t g = {calloc(t->cap ? t->cap * 2 : 1024, sizeof(char *)), 0, t->cap ? t->cap * 2 : 1024};
    for (size_t i = 0; i < t->cap; i++) {
      if (!t->keys[i]) continue;
      size_t j = fnv(t->keys[i]) & (g.cap - 1);
      while (g.keys[j]) j = (j + 1) & (g.cap - 1);
      g.keys[j] = t->keys[i];
      g.n++;
    }
    free(t->keys);
    *t = g;
  }
  size_t len = strlen(a->alert_id) + 4;
  char *k = malloc(len);
  snprintf(k, len, "%s|%d", a->alert_id, (int)a->state);
  size_t j = fnv(k) & (t->cap - 1);
  for (; t->keys[j]; j = (j + 1) & (t->cap - 1)) {
    if (strcmp(t->keys[j], k) == 0) {
      free(k);
      return false;
    }
  }
  t->keys[j] = k;
  t->n++;
  return true;
}

static const char *enum_name(const ProtobufCEnumDescriptor *d, int v) {
  const ProtobufCEnumValue *e = protobuf_c_enum_descriptor_get_value(d, v);
  return e ? e->name : "?";
}

static void print_json(const Twin__V1__MaintenanceAlert *a) {
  bson_t d = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&d, "alert_id", a->alert_id);
  BSON_APPEND_UTF8(&d, "product_id", a->product_id);
  BSON_APPEND_UTF8(&d, "rule_id", a->rule_id);
  BSON_APPEND_UTF8(&d, "severity", enum_name(&twin__v1__severity__descriptor, a->severity));
  BSON_APPEND_UTF8(&d, "state", enum_name(&twin__v1__alert_state__descriptor, a->state));
  BSON_APPEND_UTF8(&d, "message", a->message);
  BSON_APPEND_DOUBLE(&d, "value", a->value);
  BSON_APPEND_DOUBLE(&d, "threshold", a->threshold);
  BSON_APPEND_UTF8(&d, "unit", a->unit);
  if (a->_predicted_at_ms_case) BSON_APPEND_INT64(&d, "predicted_at_ms", a->predicted_at_ms);
  BSON_APPEND_INT64(&d, "event_time_ms", a->event_time_ms);
  BSON_APPEND_INT64(&d, "raised_at_ms", a->raised_at_ms);
  char *j = bson_as_relaxed_extended_json(&d, NULL);
  printf("%s\n", j);
  bson_free(j);
  bson_destroy(&d);
}

/* Values for people: at most two decimals (JSON output keeps every digit). */
static void fmt_value(char *buf, size_t cap, double v, const char *unit) {
  snprintf(buf, cap, "%.2f", v);
  char *dot = strchr(buf, '.');
  if (dot) {
    char *e = buf + strlen(buf) - 1;
    while (e > dot && *e == '0') *e-- = '\0';
    if (e == dot) *e = '\0';
  }
  if (unit[0]) {
    size_t n = strlen(buf);
    snprintf(buf + n, cap - n, " %s", unit);
  }
}

int ctl_cmd_alerts(ctl_db_t *db, int argc, char **argv) {
  (void)db;
  const char *brokers = getenv("TWIN_KAFKA_BOOTSTRAP");
  const char *topic = "twin.alerts", *product = NULL;
  int64_t limit = 0;
  bool json = false, dedupe = false;
  if (!brokers || !*brokers) brokers = "127.0.0.1:9092";
  ctl_opts_t o = {0};
  ctl_opt(&o, "--brokers", CTL_OPT_STR, &brokers, 0, 0, NULL);
  ctl_opt(&o, "--topic", CTL_OPT_STR, &topic, 0, 0, NULL);
  ctl_opt(&o, "--product", CTL_OPT_STR, &product, 0, 0, NULL);
  ctl_opt(&o, "--limit", CTL_OPT_INT, &limit, 1, 10000000, NULL);
  ctl_opt(&o, "--dedupe", CTL_OPT_FLAG, &dedupe, 0, 0, NULL);
  ctl_opt(&o, "--json", CTL_OPT_FLAG, &json, 0, 0, NULL);
  int n_pos;
  switch (ctl_parse("alerts", argc, argv, &o, NULL, 0, &n_pos)) {
  case CTL_PARSE_HELP: fputs(alerts_help, stdout); return CTL_OK;
  case CTL_PARSE_ERROR: return CTL_USAGE;
  default: break;
  }

  char err[512];
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  if (rd_kafka_conf_set(c, "bootstrap.servers", brokers, err, sizeof err) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(c, "enable.partition.eof", "true", err, sizeof err) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(c, "group.id", "twinctl-alerts", err, sizeof err) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(c, "enable.auto.commit", "false", err, sizeof err) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(c, "log_level", "0", err, sizeof err) != RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(c);
    return ctl_usage_error("alerts", "%s", err);
  }
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
  if (!rk) return ctl_fail("cannot create a Kafka consumer: %s", err);
  const struct rd_kafka_metadata *md = NULL;
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
  rd_kafka_topic_destroy(rkt);
  if (kerr || md->topic_cnt != 1 || md->topics[0].err) {
    int rc = ctl_fail("cannot read topic %s from %s: %s", topic, brokers,
                      kerr ? rd_kafka_err2str(kerr) : rd_kafka_err2str(md->topics[0].err));
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return rc;
  }
  int parts = md->topics[0].partition_cnt;
  rd_kafka_metadata_destroy(md);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
  for (int p = 0; p < parts; p++)
    rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_assign(rk, l);
  rd_kafka_topic_partition_list_destroy(l);

  list_t all = {0};
  seen_t seen = {0};
  size_t undecodable = 0;
  int eofs = 0;
  time_t deadline = time(NULL) + 30;
  while (eofs < parts && time(NULL) < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
    if (!m) continue;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      eofs++;
    } else if (!m->err) {
      Twin__V1__MaintenanceAlert *a = twin__v1__maintenance_alert__unpack(NULL, m->len, m->payload);
      if (!a) {
        undecodable++;
      } else if ((product && strcmp(a->product_id, product) != 0) || (dedupe && !seen_add(&seen, a))) {
        twin__v1__maintenance_alert__free_unpacked(a, NULL);
      } else {
        if (all.n == all.cap) {
          all.cap = all.cap ? all.cap * 2 : 256;
          all.v = realloc(all.v, all.cap * sizeof *all.v);
        }
        all.v[all.n++] = a;
      }
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  if (eofs < parts) fprintf(stderr, "twinctl alerts: stopped after 30 s before the end of every partition\n");
  if (undecodable)
    fprintf(stderr, "twinctl alerts: %zu messages are not twin.v1.MaintenanceAlert\n", undecodable);

  size_t from = limit && (size_t)limit < all.n ? all.n - (size_t)limit : 0;
  static const char *const heads[] = {"event time", "product",   "rule",      "severity", "state",
                                      "value",      "threshold", "predicted", "message"};
  ctl_table_t t;
  ctl_table_init(&t, 9, heads, (1u << 5) | (1u << 6));
  for (size_t i = from; i < all.n; i++) {
    const Twin__V1__MaintenanceAlert *a = all.v[i];
    if (json) {
      print_json(a);
      continue;
    }
    char when[40], val[48], thr[48], pred[40] = "";
    ctl_fmt_time(when, sizeof when, a->event_time_ms, false);
    fmt_value(val, sizeof val, a->value, a->unit);
    fmt_value(thr, sizeof thr, a->threshold, a->unit);
    if (a->_predicted_at_ms_case) ctl_fmt_time(pred, sizeof pred, a->predicted_at_ms, false);
    ctl_table_add(&t, (const char *[]){when, a->product_id, a->rule_id,
                                       enum_name(&twin__v1__severity__descriptor, a->severity),
                                       enum_name(&twin__v1__alert_state__descriptor, a->state), val, thr,
                                       pred, a->message});
  }
  if (!json) {
    ctl_table_print(&t, stdout);
    printf("%zu alerts\n", all.n - from);
  }
  ctl_table_cleanup(&t);
  for (size_t i = 0; i < all.n; i++) twin__v1__maintenance_alert__free_unpacked(all.v[i], NULL);
  free(all.v);
  for (size_t i = 0; i < seen.cap; i++) free(seen.keys[i]);
  free(seen.keys);
  return CTL_OK;
}
