/* config.h - twin-engine settings: one table drives parsing, defaults,
 * validation and `twin-engine --help-config`.
 *
 * Sources, later wins: built-in defaults < YAML file < TWIN_* environment
 * variables < --set key=value. `kafka.*` keys pass through to librdkafka
 * (without the prefix) and are checked by librdkafka itself at start-up;
 * every other key must be in the table. Not thread-safe: load once at
 * start-up, then read only. */
#ifndef TWIN_CONFIG_H
#define TWIN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "twin/rules.h"

typedef struct {
  char *key; /* librdkafka property name, without "kafka." */
  char *value;
} tw_kv_pair_t;

typedef struct tw_config {
  char *topic_telemetry, *topic_lifecycle, *topic_dlq, *topic_alerts;
  char *mongo_uri, *mongo_database;
  int64_t shards;
  int64_t snapshot_interval_ms;
  int64_t snapshot_max_dirty;
  int64_t seq_window;
  int64_t message_max_bytes;
  int64_t load_batch;
  char *log_level, *log_format;
  char *alerts_defaults; /* "true" | "false" */
  /* http.*: the query API, metrics and probes (twin-engine/engine/http.c).
   * The strings are never NULL; "" = not set. */
  char *http_listen;      /* "host:port", "[v6]:port" or "off" */
  char *http_tokens;      /* comma-separated bearer tokens; "" = no auth */
  char *http_tokens_file; /* one token per line */
  char *http_tls_cert, *http_tls_key;
  int64_t http_max_limit;
  int64_t http_threads;
  int64_t http_rate_limit; /* requests per second per client address; 0: off */
  int64_t http_rate_burst; /* 0: twice http_rate_limit */
  tw_rule_spec_t *rules;   /* alerts.rules from the YAML file, in file order */
  size_t n_rules;
  tw_kv_pair_t *kafka; /* passthrough, in the order set; later entries win */
  size_t n_kafka;
} tw_config_t;

/* Fills defaults (shards = online CPUs). */
void tw_config_init(tw_config_t *c);
void tw_config_cleanup(tw_config_t *c);

/* Sets one key from text. On failure writes a message naming the key and
 * what is allowed into err and returns false. origin ("--set", a file
 * name, "environment") prefixes the message. */
bool tw_config_set(tw_config_t *c, const char *key, const char *value, const char *origin, char *err,
                   size_t err_cap);
/* Loads a YAML file: nested mappings flatten to dotted keys
 * (kafka: {bootstrap.servers: x} == kafka.bootstrap.servers: x). */
bool tw_config_load_yaml(tw_config_t *c, const char *path, char *err, size_t err_cap);
/* Applies TWIN_* environment variables (TWIN_SNAPSHOT_INTERVAL_MS ->
 * snapshot.interval.ms; TWIN_KAFKA_SASL_PASSWORD -> kafka.sasl.password). */
bool tw_config_load_env(tw_config_t *c, char *const *envp, char *err, size_t err_cap);
/* Compiles the alert rules the configuration asks for (the built-ins unless
 * alerts.defaults is false, overlaid by alerts.rules). */
tw_rules_t *tw_config_rules(const tw_config_t *c, char *err, size_t err_cap);
/* Cross-key checks after all sources are loaded (the rules included). */
bool tw_config_validate(const tw_config_t *c, char *err, size_t err_cap);
/* The kafka.* value for key (without prefix), or NULL. */
const char *tw_config_kafka(const tw_config_t *c, const char *key);
/* Prints the settings table (key, type, default, allowed, description). */
void tw_config_help(FILE *out);
/* Prints the effective configuration with secrets masked. */
void tw_config_dump(const tw_config_t *c, FILE *out);

#endif
