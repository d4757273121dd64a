/* config.c - the settings table and its loaders (see include/twin/config.h).
 *
 * To add a setting: add a field to tw_config_t and one row to SETTINGS.
 * Nothing else parses, defaults or documents settings. */
#include "twin/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "twin/twin.h"
#include "util.h"

typedef enum { T_STR, T_INT, T_ENUM, T_OPT } stype_t; /* T_OPT: a string that may be empty (= not set) */

typedef struct {
  const char *key;
  stype_t type;
  size_t off;
  const char *def; /* NULL: computed (shards) */
  int64_t min, max;
  const char *allowed; /* T_ENUM: "a|b|c"; T_STR: NULL = any non-empty */
  const char *help;
} setting_t;

#define F(field) offsetof(tw_config_t, field)

static const setting_t SETTINGS[] = {
    {"topics.telemetry", T_STR, F(topic_telemetry), "twin.telemetry", 0, 0, NULL, "Telemetry input topic"},
    {"topics.lifecycle", T_STR, F(topic_lifecycle), "twin.lifecycle", 0, 0, NULL,
     "Lifecycle input topic; must have as many partitions as topics.telemetry"},
    {"topics.dlq", T_STR, F(topic_dlq), "twin.dlq", 0, 0, NULL,
     "Dead-letter topic: undecodable or invalid messages, with the reason in headers"},
    {"topics.alerts", T_STR, F(topic_alerts), "twin.alerts", 0, 0, NULL,
     "Maintenance alerts output topic (twin.v1.MaintenanceAlert, keyed by product_id)"},
    {"alerts.defaults", T_ENUM, F(alerts_defaults), "true", 0, 0, "true|false",
     "Evaluate the built-in alert rules (README \"Maintenance alerts\"); alerts.rules in the config file "
     "adds rules, overrides built-ins by id, or turns one off with enabled: false"},
    {"mongo.uri", T_STR, F(mongo_uri), "mongodb://127.0.0.1:27017", 0, 0, NULL,
     "MongoDB connection string (TLS and auth options go here)"},
    {"mongo.database", T_STR, F(mongo_database), "twin", 0, 0, NULL,
     "Database holding the twins and checkpoints collections"},
    {"shards", T_INT, F(shards), NULL, 1, 256, NULL,
     "Shard threads; partition p belongs to shard p mod shards (default: online CPUs)"},
    {"snapshot.interval.ms", T_INT, F(snapshot_interval_ms), "1000", 10, 600000, NULL,
     "Flush dirty twins at least this often (ms)"},
    {"snapshot.max.dirty", T_INT, F(snapshot_max_dirty), "20000", 1, 10000000, NULL,
     "Flush a shard as soon as it holds this many dirty twins"},
    {"reducer.seq.window", T_INT, F(seq_window), "64", 1, TW_SEQ_WINDOW_MAX, NULL,
     "Late seqs accepted behind a source's highest seq; older ones count as too late"},
    {"message.max.bytes", T_INT, F(message_max_bytes), "1048576", 64, 67108864, NULL,
     "Input messages larger than this go to the dead-letter topic"},
    {"load.batch", T_INT, F(load_batch), "1000", 1, 100000, NULL,
     "Twins loaded from MongoDB per query when their products first appear"},
    {"log.level", T_ENUM, F(log_level), "info", 0, 0, "debug|info|warn|error", "Log level"},
    {"log.format", T_ENUM, F(log_format), "text", 0, 0, "text|json", "Log line format"},
    {"http.listen", T_STR, F(http_listen), "127.0.0.1:8080", 0, 0, NULL,
     "HTTP API, /metrics and probes: host:port, [ipv6]:port (0.0.0.0:8080 for every interface), or off"},
    {"http.tokens", T_OPT, F(http_tokens), "", 0, 0, NULL,
     "Comma-separated bearer tokens that open every HTTP route but /healthz and /readyz (secret; empty: "
     "no authentication)"},
    {"http.tokens.file", T_OPT, F(http_tokens_file), "", 0, 0, NULL,
     "File with one bearer token per line ('#' comments), instead of or besides http.tokens"},
    {"http.tls.cert", T_OPT, F(http_tls_cert), "", 0, 0, NULL,
     "PEM certificate (chain) file; with http.tls.key the server speaks HTTPS only"},
    {"http.tls.key", T_OPT, F(http_tls_key), "", 0, 0, NULL, "PEM private key file for http.tls.cert"},
    {"http.max.limit", T_INT, F(http_max_limit), "1000", 1, 100000, NULL,
     "Largest page size GET /v1/twins accepts (limit=)"},
    {"http.threads", T_INT, F(http_threads), "2", 1, 64, NULL,
     "HTTP worker threads (each holds at most one MongoDB connection)"},
    {"http.rate.limit", T_INT, F(http_rate_limit), "200", 0, 1000000, NULL,
     "Requests per second each client address may make (429 with Retry-After beyond; /healthz and "
     "/readyz exempt; 0: no limit)"},
    {"http.rate.burst", T_INT, F(http_rate_burst), "0", 0, 10000000, NULL,
     "Requests a client address may make at once before http.rate.limit applies (0: twice the limit)"},
};
#define N_SETTINGS (sizeof SETTINGS / sizeof SETTINGS[0])

/* kafka.* keys that have a default here (everything else: librdkafka's). */
static const struct {
  const char *key, *def, *help;
} KAFKA_DEFAULTS[] = {
    {"bootstrap.servers", "127.0.0.1:9092", "Kafka brokers"},
    {"group.id", "twin-engine", "Consumer group; instances with the same id share the partitions"},
};

static char **str_field(tw_config_t *c, const setting_t *s) { return (char **)((char *)c + s->off); }
static int64_t *int_field(tw_config_t *c, const setting_t *s) { return (int64_t *)((char *)c + s->off); }

static void kafka_put(tw_config_t *c, const char *key, const char *value) {
  for (size_t i = 0; i < c->n_kafka; i++) {
    if (strcmp(c->kafka[i].key, key) == 0) {
      free(c->kafka[i].value);
      c->kafka[i].value = tw_xstrdup(value);
      return;
    }
  }
  c->kafka = tw_xrealloc(c->kafka, (c->n_kafka + 1) * sizeof *c->kafka);
  c->kafka[c->n_kafka].key = tw_xstrdup(key);
  c->kafka[c->n_kafka].value = tw_xstrdup(value);
  c->n_kafka++;
}

void tw_config_init(tw_config_t *c) {
  memset(c, 0, sizeof *c);
  char err[256];
  for (size_t i = 0; i < N_SETTINGS; i++)
    if (SETTINGS[i].def) tw_config_set(c, SETTINGS[i].key, SETTINGS[i].def, "default", err, sizeof err);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  c->shards = n < 1 ? 1 : n > 256 ? 256 : n;
  for (size_t i = 0; i < sizeof KAFKA_DEFAULTS / sizeof KAFKA_DEFAULTS[0]; i++)
    kafka_put(c, KAFKA_DEFAULTS[i].key, KAFKA_DEFAULTS[i].def);
}

static void rule_spec_free(tw_rule_spec_t *r) {
  free(r->id);
  free(r->severity);
  free(r->condition);
  free(r->clear);
  free(r->message);
  free(r->clear_message);
  free(r->limit);
  free(r->enabled);
  free(r->origin);
}

void tw_config_cleanup(tw_config_t *c) {
  for (size_t i = 0; i < N_SETTINGS; i++)
    if (SETTINGS[i].type != T_INT) free(*str_field(c, &SETTINGS[i]));
  for (size_t i = 0; i < c->n_kafka; i++) {
    free(c->kafka[i].key);
    free(c->kafka[i].value);
  }
  free(c->kafka);
  for (size_t i = 0; i < c->n_rules; i++) rule_spec_free(&c->rules[i]);
  free(c->rules);
  memset(c, 0, sizeof *c);
}

static bool parse_int(const char *v, int64_t *out) {
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (errno || end == v || *end) return false;
  *out = x;
  return true;
}

static bool enum_allows(const char *allowed, const char *v) {
  size_t n = strlen(v);
  for (const char *p = allowed; *p;) {
    const char *bar = strchr(p, '|');
    size_t len = bar ? (size_t)(bar - p) : strlen(p);
    if (len == n && strncmp(p, v, n) == 0) return true;
    p += len + (bar ? 1 : 0);
  }
  return false;
}

/* A value written ${file:PATH} or ${env:NAME} is read from that file (one
 * trailing newline dropped) or environment variable, so secrets need not sit
 * in the config file or on a command line. Sets *out (owned) to the value
 * to use; errors name the key and the file or variable, never the content. */
#define SECRET_FILE_MAX (64 * 1024)
static bool resolve_ref(const char *key, const char *value, const char *origin, char **out, char *err,
                        size_t cap) {
  size_t n = strlen(value);
  bool is_file = strncmp(value, "${file:", 7) == 0, is_env = strncmp(value, "${env:", 6) == 0;
  if ((!is_file && !is_env) || value[n - 1] != '}') {
    *out = tw_xstrdup(value);
    return true;
  }
  size_t skip = is_file ? 7 : 6;
  char *name = tw_xstrndup(value + skip, n - skip - 1);
  if (!*name) {
    free(name);
    return tw_fail(err, cap, "%s: %s = '%s' names no %s", origin, key, value, is_file ? "file" : "variable");
  }
  if (is_env) {
    const char *v = getenv(name);
    if (!v) {
      tw_fail(err, cap, "%s: %s: environment variable %s (from ${env:%s}) is not set", origin, key, name,
              name);
      free(name);
      return false;
    }
    *out = tw_xstrdup(v);
    free(name);
    return true;
  }
  FILE *f = fopen(name, "rb");
  if (!f) {
    tw_fail(err, cap, "%s: %s: cannot read %s (from ${file:...}): %s", origin, key, name, strerror(errno));
    free(name);
    return false;
  }
  char *buf = tw_xmalloc(SECRET_FILE_MAX + 1);
  size_t len = fread(buf, 1, SECRET_FILE_MAX + 1, f);
  bool too_big = len > SECRET_FILE_MAX, bad = ferror(f) != 0;
  fclose(f);
  if (too_big || bad || memchr(buf, '\0', len)) {
    tw_fail(err, cap, "%s: %s: %s (from ${file:...}) %s", origin, key, name,
            too_big ? "is larger than 64 KiB"
            : bad   ? "could not be read"
                    : "contains a NUL byte");
    free(buf);
    free(name);
    return false;
  }
  if (len && buf[len - 1] == '\n') len--;
  if (len && buf[len - 1] == '\r') len--;
  buf[len] = '\0';
  free(name);
  *out = buf;
  return true;
}

static bool set_resolved(tw_config_t *c, const char *key, const char *value, const char *origin, char *err,
                         size_t cap);

bool tw_config_set(tw_config_t *c, const char *key, const char *value, const char *origin, char *err,
                   size_t cap) {
  char *v = NULL;
  if (!resolve_ref(key, value, origin, &v, err, cap)) return false;
  bool ok = set_resolved(c, key, v, origin, err, cap);
  free(v);
  return ok;
}

/* What an error message may show of a value: nothing of a secret. */
static const char *shown(const char *key, const char *value);

static bool set_resolved(tw_config_t *c, const char *key, const char *value, const char *origin, char *err,
                         size_t cap) {
  if (strncmp(key, "kafka.", 6) == 0) {
    if (!key[6]) return tw_fail(err, cap, "%s: config key 'kafka.' names no librdkafka property", origin);
    kafka_put(c, key + 6, value);
    return true;
  }
  for (size_t i = 0; i < N_SETTINGS; i++) {
    const setting_t *s = &SETTINGS[i];
    if (strcmp(s->key, key) != 0) continue;
    switch (s->type) {
    case T_INT: {
      int64_t x;
      if (!parse_int(value, &x) || x < s->min || x > s->max)
        return tw_fail(err, cap, "%s: %s = '%s' is not allowed: expected an integer from %lld to %lld",
                       origin, key, shown(key, value), (long long)s->min, (long long)s->max);
      *int_field(c, s) = x;
      return true;
    }
    case T_ENUM:
      if (!enum_allows(s->allowed, value))
        return tw_fail(err, cap, "%s: %s = '%s' is not allowed: expected one of %s", origin, key,
                       shown(key, value), s->allowed);
      break;
    case T_STR:
      if (!*value) return tw_fail(err, cap, "%s: %s is empty: expected a non-empty string", origin, key);
      break;
    case T_OPT: break;
    }
    char **f = str_field(c, s);
    free(*f);
    *f = tw_xstrdup(value);
    return true;
  }
  return tw_fail(err, cap,
                 "%s: unknown config key '%s' (run `twin-engine --help-config` for the list; "
                 "librdkafka properties take the prefix 'kafka.')",
                 origin, key);
}

const char *tw_config_kafka(const tw_config_t *c, const char *key) {
  for (size_t i = 0; i < c->n_kafka; i++)
    if (strcmp(c->kafka[i].key, key) == 0) return c->kafka[i].value;
  return NULL;
}

tw_rules_t *tw_config_rules(const tw_config_t *c, char *err, size_t cap) {
  return tw_rules_compile(strcmp(c->alerts_defaults, "true") == 0, c->rules, c->n_rules, err, cap);
}

/* http.listen: "off", "host:port" or "[v6]:port" with port 0..65535 (0: any
 * free port, logged at start). The server resolves the host. */
static bool http_validate(const tw_config_t *c, char *err, size_t cap) {
  const char *l = c->http_listen, *colon = strrchr(l, ':');
  if (strcmp(l, "off") != 0) {
    bool ok = colon && colon > l && colon[1];
    if (ok && l[0] == '[') ok = colon > l + 2 && colon[-1] == ']';
    if (ok && l[0] != '[') ok = memchr(l, ':', (size_t)(colon - l)) == NULL; /* bare IPv6 needs [] */
    for (const char *p = colon ? colon + 1 : ""; ok && *p; p++) ok = isdigit((unsigned char)*p);
    if (ok) ok = strlen(colon + 1) <= 5 && atol(colon + 1) <= 65535;
    if (!ok)
      return tw_fail(err, cap,
                     "http.listen = '%s' is not allowed: expected host:port (127.0.0.1:8080, 0.0.0.0:8080), "
                     "[ipv6]:port ([::1]:8080) or off",
                     l);
  }
  if (!*c->http_tls_cert != !*c->http_tls_key)
    return tw_fail(err, cap, "http.tls.%s is set but http.tls.%s is not: HTTPS needs both (PEM files)",
                   *c->http_tls_cert ? "cert" : "key", *c->http_tls_cert ? "key" : "cert");
  /* Tokens: separated by commas (spaces around them ignored), each non-empty
   * printable ASCII without spaces, as an Authorization header carries it. */
  if (*c->http_tokens) {
    const char *p = c->http_tokens;
    for (;;) {
      while (*p == ' ' || *p == '\t') p++;
      size_t n = strcspn(p, ","), len = n;
      while (len && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
      if (!len) return tw_fail(err, cap, "http.tokens: an empty token (two commas, or a comma at an end)");
      for (size_t i = 0; i < len; i++)
        if ((unsigned char)p[i] <= ' ' || (unsigned char)p[i] >= 0x7f)
          return tw_fail(err, cap,
                         "http.tokens: a token contains a space or a character that is not printable ASCII");
      if (!p[n]) break;
      p += n + 1;
    }
  }
  return true;
}

bool tw_config_validate(const tw_config_t *c, char *err, size_t cap) {
  tw_rules_t *rules = tw_config_rules(c, err, cap);
  if (!rules) return false;
  tw_rules_destroy(rules);
  if (strcmp(c->topic_alerts, c->topic_telemetry) == 0 || strcmp(c->topic_alerts, c->topic_lifecycle) == 0 ||
      strcmp(c->topic_alerts, c->topic_dlq) == 0)
    return tw_fail(err, cap, "topics.alerts must differ from the input and dead-letter topics ('%s')",
                   c->topic_alerts);
  if (strcmp(c->topic_telemetry, c->topic_lifecycle) == 0)
    return tw_fail(err, cap, "topics.telemetry and topics.lifecycle must differ (both are '%s')",
                   c->topic_telemetry);
  if (strcmp(c->topic_dlq, c->topic_telemetry) == 0 || strcmp(c->topic_dlq, c->topic_lifecycle) == 0)
    return tw_fail(err, cap, "topics.dlq must not be an input topic ('%s')", c->topic_dlq);
  if (strncmp(c->mongo_uri, "mongodb://", 10) != 0 && strncmp(c->mongo_uri, "mongodb+srv://", 14) != 0)
    return tw_fail(err, cap, "mongo.uri = '%s' is not allowed: expected mongodb://... or mongodb+srv://...",
                   shown("mongo.uri", c->mongo_uri));
  const char *strategy = tw_config_kafka(c, "partition.assignment.strategy");
  if (strategy && strcmp(strategy, "range") != 0)
    return tw_fail(
        err, cap,
        "kafka.partition.assignment.strategy = '%s' is not allowed: expected range. Only range gives "
        "partition p of both input topics to the same instance; other assignors can split a product's "
        "telemetry and lifecycle events between two instances, which would both write its twin",
        strategy);
  if (!http_validate(c, err, cap)) return false;
  const char *mode = tw_config_kafka(c, "enable.auto.commit");
  if (mode && strcmp(mode, "false") != 0)
    return tw_fail(err, cap,
                   "kafka.enable.auto.commit must stay false: offsets are committed after the "
                   "snapshots they cover are in MongoDB");
  return true;
}

/* ---- YAML ------------------------------------------------------------------ */

/* alerts.rules: a list of mappings with scalar values. */
static bool parse_rule_list(yaml_parser_t *p, tw_config_t *c, const char *path, char *err, size_t cap) {
  static const char *const keys[] = {"id",      "severity",      "condition", "clear",
                                     "message", "clear_message", "limit",     "enabled"};
  yaml_event_t ev;
  tw_rule_spec_t *cur = NULL;
  char key[64] = "";
  bool ok = true, done = false;
  while (ok && !done) {
    if (!yaml_parser_parse(p, &ev))
      return tw_fail(err, cap, "config file %s:%zu: %s", path, p->problem_mark.line + 1,
                     p->problem ? p->problem : "YAML syntax error");
    size_t line = ev.start_mark.line + 1;
    switch (ev.type) {
    case YAML_SEQUENCE_END_EVENT: done = true; break;
    case YAML_MAPPING_START_EVENT:
      if (cur) {
        ok = tw_fail(err, cap, "config file %s:%zu: alerts.rules: rule values must be text, not mappings",
                     path, line);
        break;
      }
      c->rules = tw_xrealloc(c->rules, (c->n_rules + 1) * sizeof *c->rules);
      cur = &c->rules[c->n_rules++];
      memset(cur, 0, sizeof *cur);
      {
        char origin[512];
        snprintf(origin, sizeof origin, "config file %s:%zu", path, line);
        cur->origin = tw_xstrdup(origin);
      }
      key[0] = '\0';
      break;
    case YAML_MAPPING_END_EVENT: cur = NULL; break;
    case YAML_SCALAR_EVENT: {
      const char *v = (const char *)ev.data.scalar.value;
      if (!cur) {
        ok = tw_fail(err, cap,
                     "config file %s:%zu: alerts.rules: each rule is a mapping (id:, severity:, condition:, "
                     "...), not '%s'",
                     path, line, v);
      } else if (!key[0]) {
        size_t k = 0;
        while (k < sizeof keys / sizeof keys[0] && strcmp(keys[k], v) != 0) k++;
        if (k == sizeof keys / sizeof keys[0])
          ok = tw_fail(err, cap,
                       "config file %s:%zu: alerts.rules: unknown rule key '%s': expected id, severity, "
                       "condition, clear, message, clear_message, limit or enabled",
                       path, line, v);
        else
          snprintf(key, sizeof key, "%s", v);
      } else {
        char **f = strcmp(key, "id") == 0              ? &cur->id
                   : strcmp(key, "severity") == 0      ? &cur->severity
                   : strcmp(key, "condition") == 0     ? &cur->condition
                   : strcmp(key, "clear") == 0         ? &cur->clear
                   : strcmp(key, "message") == 0       ? &cur->message
                   : strcmp(key, "clear_message") == 0 ? &cur->clear_message
                   : strcmp(key, "limit") == 0         ? &cur->limit
                                                       : &cur->enabled;
        free(*f);
        *f = tw_xstrdup(v);
        key[0] = '\0';
      }
      break;
    }
    case YAML_SEQUENCE_START_EVENT:
      ok = tw_fail(err, cap, "config file %s:%zu: alerts.rules: %s: lists are not allowed here", path, line,
                   key[0] ? key : "?");
      break;
    case YAML_ALIAS_EVENT:
      ok = tw_fail(err, cap, "config file %s:%zu: YAML aliases are not supported", path, line);
      break;
    default: break;
    }
    yaml_event_delete(&ev);
  }
  return ok;
}

bool tw_config_load_yaml(tw_config_t *c, const char *path, char *err, size_t cap) {
  FILE *f = fopen(path, "rb");
  if (!f) return tw_fail(err, cap, "config file %s: %s", path, strerror(errno));
  yaml_parser_t p;
  yaml_event_t ev;
  yaml_parser_initialize(&p);
  yaml_parser_set_input_file(&p, f);

  /* A stack of key prefixes, one per open mapping. */
  char prefix[16][256];
  int depth = -1;
  char key[256] = "";
  bool have_key = false, ok = true, done = false;

  while (ok && !done) {
    if (!yaml_parser_parse(&p, &ev)) {
      ok = tw_fail(err, cap, "config file %s:%zu:%zu: %s", path, p.problem_mark.line + 1,
                   p.problem_mark.column + 1, p.problem ? p.problem : "YAML syntax error");
      break;
    }
    switch (ev.type) {
    case YAML_MAPPING_START_EVENT:
      if (depth + 1 >= 16) {
        ok = tw_fail(err, cap, "config file %s: nested too deeply", path);
        break;
      }
      if (depth < 0) {
        prefix[0][0] = '\0';
      } else if (have_key) {
        snprintf(prefix[depth + 1], sizeof prefix[0], "%s", key);
      } else {
        ok = tw_fail(err, cap, "config file %s:%zu: a mapping needs a key", path, ev.start_mark.line + 1);
        break;
      }
      depth++;
      have_key = false;
      break;
    case YAML_MAPPING_END_EVENT:
      depth--;
      have_key = false;
      break;
    case YAML_SCALAR_EVENT: {
      const char *v = (const char *)ev.data.scalar.value;
      if (depth < 0) {
        ok = tw_fail(err, cap, "config file %s: expected a mapping of settings at the top", path);
      } else if (!have_key) {
        if (prefix[depth][0])
          snprintf(key, sizeof key, "%s.%s", prefix[depth], v);
        else
          snprintf(key, sizeof key, "%s", v);
        have_key = true;
      } else {
        char origin[512];
        snprintf(origin, sizeof origin, "config file %s:%zu", path, ev.start_mark.line + 1);
        ok = tw_config_set(c, key, v, origin, err, cap);
        have_key = false;
      }
      break;
    }
    case YAML_SEQUENCE_START_EVENT:
      if (have_key && strcmp(key, "alerts.rules") == 0) {
        ok = parse_rule_list(&p, c, path, err, cap);
        have_key = false;
        break;
      }
      ok = tw_fail(err, cap,
                   "config file %s:%zu: %s: lists are not allowed here (only alerts.rules is a list)", path,
                   ev.start_mark.line + 1, have_key ? key : "?");
      break;
    case YAML_ALIAS_EVENT:
      ok = tw_fail(err, cap, "config file %s:%zu: YAML aliases are not supported", path,
                   ev.start_mark.line + 1);
      break;
    case YAML_STREAM_END_EVENT: done = true; break;
    default: break;
    }
    yaml_event_delete(&ev);
  }
  yaml_parser_delete(&p);
  fclose(f);
  return ok;
}

/* ---- Environment ----------------------------------------------------------- */

/* Kubernetes injects <SERVICE>_SERVICE_HOST, _SERVICE_PORT[_NAME], _PORT and
 * _PORT_<n>_<PROTO>[_PROTO|_PORT|_ADDR] for every Service in the namespace;
 * a Service named twin-... gives TWIN_... names that are no settings. */
static bool k8s_service_link(const char *name) {
  if (strstr(name, "_service_host") || strstr(name, "_service_port")) return true;
  const char *p = strstr(name, "_port");
  if (!p) return false;
  p += 5;
  if (!*p) return true; /* <svc>_port=tcp://... */
  if (*p++ != '_' || !isdigit((unsigned char)*p)) return false;
  while (isdigit((unsigned char)*p)) p++;
  return strncmp(p, "_tcp", 4) == 0 || strncmp(p, "_udp", 4) == 0 || strncmp(p, "_sctp", 5) == 0;
}

bool tw_config_load_env(tw_config_t *c, char *const *envp, char *err, size_t cap) {
  for (; envp && *envp; envp++) {
    const char *e = *envp;
    if (strncmp(e, "TWIN_", 5) != 0) continue;
    const char *eq = strchr(e, '=');
    if (!eq) continue;
    char name[256];
    size_t n = (size_t)(eq - e) - 5;
    if (n == 0 || n >= sizeof name) continue;
    for (size_t i = 0; i < n; i++) name[i] = (char)tolower((unsigned char)e[5 + i]);
    name[n] = '\0';
    /* Variables of the local stack, the tests and the tools, not settings. */
    static const char *ignored[] = {
        "source_dir",      "bin_dir",    "stack_dir",      "kafka_port",    "kafka_controller_port",
        "mongo_port",      "partitions", "dlq_partitions", "stack_timeout", "skip_sanitizers",
        "kafka_bootstrap", "config"};
    bool skip = false;
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++)
      if (strcmp(name, ignored[i]) == 0) skip = true;
    if (skip || strncmp(name, "test_", 5) == 0 || k8s_service_link(name)) continue;
    char key[300] = "";
    if (strncmp(name, "kafka_", 6) == 0) {
      /* librdkafka property names use dots only. */
      for (size_t i = 0; i < n; i++) key[i] = name[i] == '_' ? '.' : name[i];
      key[n] = '\0';
    } else {
      /* Match a table key whose dots and underscores both read as '_'. */
      for (size_t i = 0; i < N_SETTINGS && !key[0]; i++) {
        const char *k = SETTINGS[i].key;
        size_t j = 0;
        for (; k[j] && name[j]; j++) {
          char a = k[j] == '.' ? '_' : k[j];
          if (a != name[j]) break;
        }
        if (!k[j] && !name[j]) snprintf(key, sizeof key, "%s", k);
      }
      if (!key[0]) {
        char origin[300];
        snprintf(origin, sizeof origin, "environment variable %.*s", (int)(eq - e), e);
        return tw_fail(err, cap, "%s: names no setting (run `twin-engine --help-config`)", origin);
      }
    }
    char origin[300];
    snprintf(origin, sizeof origin, "environment variable %.*s", (int)(eq - e), e);
    if (!tw_config_set(c, key, eq + 1, origin, err, cap)) return false;
  }
  return true;
}

/* ---- Help and dump --------------------------------------------------------- */

void tw_config_help(FILE *out) {
  fprintf(out, "twin-engine settings (YAML file, TWIN_<KEY> environment variables, or --set key=value):\n\n");
  for (size_t i = 0; i < N_SETTINGS; i++) {
    const setting_t *s = &SETTINGS[i];
    fprintf(out, "  %-22s %s\n", s->key, s->help);
    if (s->type == T_INT)
      fprintf(out, "  %-22s   integer %lld..%lld, default %s\n", "", (long long)s->min, (long long)s->max,
              s->def ? s->def : "number of online CPUs");
    else if (s->type == T_ENUM)
      fprintf(out, "  %-22s   one of %s, default %s\n", "", s->allowed, s->def);
    else if (s->type == T_OPT)
      fprintf(out, "  %-22s   string, default empty (not set)\n", "");
    else
      fprintf(out, "  %-22s   string, default %s\n", "", s->def);
  }
  for (size_t i = 0; i < sizeof KAFKA_DEFAULTS / sizeof KAFKA_DEFAULTS[0]; i++)
    fprintf(out, "  kafka.%-16s %s\n  %-22s   string, default %s\n", KAFKA_DEFAULTS[i].key,
            KAFKA_DEFAULTS[i].help, "", KAFKA_DEFAULTS[i].def);
  fprintf(
      out,
      "  kafka.<property>       any librdkafka property (TLS: kafka.security.protocol, kafka.ssl.*;\n"
      "                         SASL: kafka.sasl.mechanisms, kafka.sasl.username, kafka.sasl.password)\n");
  fprintf(
      out,
      "\nalerts.rules (config file only): a list of rules, each with id, severity (INFO|WARNING|CRITICAL),\n"
      "condition, and optionally clear, message, clear_message, limit, enabled. Built-in rules:\n");
  const tw_rule_spec_t *d;
  size_t n = tw_rules_default_specs(&d);
  for (size_t i = 0; i < n; i++)
    fprintf(out, "  %-22s %-8s %s%s%s\n", d[i].id, d[i].severity, d[i].condition,
            d[i].clear ? "  clear: " : "", d[i].clear ? d[i].clear : "");
}

static bool is_secret(const char *key) {
  return strstr(key, "password") || strstr(key, "secret") || strstr(key, "sasl.oauthbearer.config") ||
         strstr(key, "key.pem") || strstr(key, "token");
}

static const char *shown(const char *key, const char *value) {
  if (strcmp(key, "mongo.uri") == 0 && strchr(value, '@')) return "(contains credentials, not shown)";
  if (is_secret(key) && !strstr(key, ".file") && *value) return "(secret)";
  return value;
}

void tw_config_dump(const tw_config_t *c, FILE *out) {
  tw_config_t *m = (tw_config_t *)c;
  for (size_t i = 0; i < N_SETTINGS; i++) {
    const setting_t *s = &SETTINGS[i];
    if (s->type == T_INT)
      fprintf(out, "%s=%lld\n", s->key, (long long)*int_field(m, s));
    else
      fprintf(out, "%s=%s\n", s->key, shown(s->key, *str_field(m, s)));
  }
  for (size_t i = 0; i < c->n_rules; i++)
    fprintf(out, "alerts.rules[%zu]=%s: %s\n", i, c->rules[i].id ? c->rules[i].id : "?",
            c->rules[i].condition ? c->rules[i].condition : "(built-in condition)");
  for (size_t i = 0; i < c->n_kafka; i++)
    fprintf(out, "kafka.%s=%s\n", c->kafka[i].key, shown(c->kafka[i].key, c->kafka[i].value));
}
