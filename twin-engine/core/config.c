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

typedef enum { T_STR, T_INT, T_ENUM } stype_t;

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

void tw_config_cleanup(tw_config_t *c) {
  for (size_t i = 0; i < N_SETTINGS; i++)
    if (SETTINGS[i].type != T_INT) free(*str_field(c, &SETTINGS[i]));
  for (size_t i = 0; i < c->n_kafka; i++) {
    free(c->kafka[i].key);
    free(c->kafka[i].value);
  }
  free(c->kafka);
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

bool tw_config_set(tw_config_t *c, const char *key, const char *value, const char *origin, char *err,
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
                       origin, key, value, (long long)s->min, (long long)s->max);
      *int_field(c, s) = x;
      return true;
    }
    case T_ENUM:
      if (!enum_allows(s->allowed, value))
        return tw_fail(err, cap, "%s: %s = '%s' is not allowed: expected one of %s", origin, key, value,
                       s->allowed);
      break;
    case T_STR:
      if (!*value) return tw_fail(err, cap, "%s: %s is empty: expected a non-empty string", origin, key);
      break;
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

bool tw_config_validate(const tw_config_t *c, char *err, size_t cap) {
  if (strcmp(c->topic_telemetry, c->topic_lifecycle) == 0)
    return tw_fail(err, cap, "topics.telemetry and topics.lifecycle must differ (both are '%s')",
                   c->topic_telemetry);
  if (strcmp(c->topic_dlq, c->topic_telemetry) == 0 || strcmp(c->topic_dlq, c->topic_lifecycle) == 0)
    return tw_fail(err, cap, "topics.dlq must not be an input topic ('%s')", c->topic_dlq);
  if (strncmp(c->mongo_uri, "mongodb://", 10) != 0 && strncmp(c->mongo_uri, "mongodb+srv://", 14) != 0)
    return tw_fail(err, cap, "mongo.uri = '%s' is not allowed: expected mongodb://... or mongodb+srv://...",
                   c->mongo_uri);
  const char *strategy = tw_config_kafka(c, "partition.assignment.strategy");
  if (strategy && strcmp(strategy, "range") != 0)
    return tw_fail(
        err, cap,
        "kafka.partition.assignment.strategy = '%s' is not allowed: expected range. Only range gives "
        "partition p of both input topics to the same instance; other assignors can split a product's "
        "telemetry and lifecycle events between two instances, which would both write its twin",
        strategy);
  const char *mode = tw_config_kafka(c, "enable.auto.commit");
  if (mode && strcmp(mode, "false") != 0)
    return tw_fail(err, cap,
                   "kafka.enable.auto.commit must stay false: offsets are committed after the "
                   "snapshots they cover are in MongoDB");
  return true;
}

/* ---- YAML ------------------------------------------------------------------ */

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
      ok = tw_fail(err, cap, "config file %s:%zu: %s: lists are not allowed here", path,
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
    if (skip || strncmp(name, "test_", 5) == 0) continue;
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
}

static bool is_secret(const char *key) {
  return strstr(key, "password") || strstr(key, "secret") || strstr(key, "sasl.oauthbearer.config") ||
         strstr(key, "key.pem") || strstr(key, "token");
}

void tw_config_dump(const tw_config_t *c, FILE *out) {
  tw_config_t *m = (tw_config_t *)c;
  for (size_t i = 0; i < N_SETTINGS; i++) {
    const setting_t *s = &SETTINGS[i];
    if (s->type == T_INT)
      fprintf(out, "%s=%lld\n", s->key, (long long)*int_field(m, s));
    else if (strcmp(s->key, "mongo.uri") == 0 && strchr(*str_field(m, s), '@'))
      fprintf(out, "%s=(contains credentials, not shown)\n", s->key);
    else
      fprintf(out, "%s=%s\n", s->key, *str_field(m, s));
  }
  for (size_t i = 0; i < c->n_kafka; i++)
    fprintf(out, "kafka.%s=%s\n", c->kafka[i].key,
            is_secret(c->kafka[i].key) ? "(secret)" : c->kafka[i].value);
}
