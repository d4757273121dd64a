/* twin-sim - deterministic fleet simulator and load generator.
 *
 * Wires the stream (stream.c, fleet.c) to its outputs: Kafka (kafka.c),
 * the record file (include/twin/record.h) and the truth file. One table
 * of options drives parsing, validation and --help. The only use of the
 * wall clock is pacing (--rate) and the speed report: the same options
 * give a byte-identical stream. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim.h"
#include "twin/log.h"
#include "twin/record.h"

#define DEFAULT_START_MS 1704067200000LL /* 2024-01-01T00:00:00Z */
#define DEFAULT_EVENTS 100000ULL
#define MAX_PRODUCTS 10000000ULL
#define MAX_SETS 64

/* ---- Options table ----------------------------------------------------------- */
enum {
  O_SEED = 0,
  O_PRODUCTS,
  O_EVENTS,
  O_RATE,
  O_DURATION,
  O_START_MS,
  O_YEARS,
  O_INTERVAL_H,
  O_BROKERS,
  O_TEL_TOPIC,
  O_LC_TOPIC,
  O_SET,
  O_NO_KAFKA,
  O_RECORD,
  O_TRUTH,
  O_DUPLICATES,
  O_REORDER,
  O_LATE,
  O_GARBAGE,
  O_INVALID,
  O_QUIET,
  O_HELP,
  O_COUNT
};

typedef struct {
  const char *name, *arg, *help;
} opt_t;

static const opt_t opt_table[O_COUNT] = {
    [O_SEED] = {"seed", "N", "PRNG seed; the same options give a byte-identical stream (default 1)"},
    [O_PRODUCTS] = {"products", "N", "fleet size, 1..10000000 (default 1000; ~0.5 KB of memory each)"},
    [O_EVENTS] =
        {"events", "N",
         "messages to produce in all, injected ones included (default 100000, or RATE*S with --duration)"},
    [O_RATE] = {"rate", "EVENTS_PER_S", "pace production with the wall clock (content stays deterministic)"},
    [O_DURATION] = {"duration", "S", "with --rate: produce RATE*S messages, i.e. run for S seconds"},
    [O_START_MS] =
        {"start-ms", "MS|ISO",
         "simulated clock start, ms since the epoch or 2024-01-01T00:00:00Z (default 1704067200000)"},
    [O_YEARS] =
        {"years", "Y",
         "simulated years over which products are ordered; the budget is spread over them (default 6)"},
    [O_INTERVAL_H] = {"interval-h", "H",
                      "mean hours between telemetry samples (default: derived from the budget)"},
    [O_BROKERS] = {"brokers", "LIST", "Kafka bootstrap servers (default 127.0.0.1:9092)"},
    [O_TEL_TOPIC] = {"telemetry-topic", "T", "topic for telemetry envelopes (default twin.telemetry)"},
    [O_LC_TOPIC] = {"lifecycle-topic", "T", "topic for lifecycle envelopes (default twin.lifecycle)"},
    [O_SET] = {"set", "kafka.K=V",
               "librdkafka producer property, repeatable. Defaults: enable.idempotence=true, linger.ms=5, "
               "compression.type=lz4, partitioner=murmur2_random (same partitions as Java producers)"},
    [O_NO_KAFKA] = {"no-kafka", NULL, "do not produce to Kafka (write --record/--truth only)"},
    [O_RECORD] = {"record", "FILE",
                  "write every message as produced, in order (TWINREC1 format, twin/record.h)"},
    [O_TRUTH] = {"truth", "FILE",
                 "write JSON lines: per product what the engine must end up with, then a summary line"},
    [O_DUPLICATES] = {"duplicates", "F",
                      "fraction of messages that resend an earlier event, 0..0.9 (default 0)"},
    [O_REORDER] =
        {"reorder", "F",
         "fraction of telemetry events held back behind up to 32 later seqs of their source (default 0)"},
    [O_LATE] = {"late", "F",
                "fraction of telemetry events held back until their source is >200 seqs ahead: the engine "
                "counts them too late (default 0)"},
    [O_GARBAGE] =
        {"garbage", "F",
         "fraction of messages that are garbage: random bytes, truncated envelope, empty product_id, "
         "key != product_id (default 0)"},
    [O_INVALID] =
        {"invalid", "F",
         "fraction of messages that are impossible lifecycle transitions the engine must reject (default 0)"},
    [O_QUIET] = {"quiet", NULL, "log warnings and errors only (no progress, no summary)"},
    [O_HELP] = {"help", NULL, "print this help"},
};

static void usage(FILE *out) {
  fprintf(out,
          "usage: twin-sim [options]\n\n"
          "Deterministic fleet simulator: orders, builds, ships and delivers products, then streams years\n"
          "of telemetry, service visits, warranty claims, recalls, ownership changes and decommissioning as\n"
          "protobuf twin.v1.Envelope messages (key = product_id) to Kafka and/or files.\n\n"
          "options:\n");
  for (int i = 0; i < O_COUNT; i++) {
    char lhs[48];
    snprintf(lhs, sizeof lhs, "--%s%s%s", opt_table[i].name, opt_table[i].arg ? " " : "",
             opt_table[i].arg ? opt_table[i].arg : "");
    fprintf(out, "  %-28s %s\n", lhs, opt_table[i].help);
  }
  fprintf(out, "\nexamples:\n"
               "  twin-sim --products 10000 --rate 50000 --duration 30\n"
               "  twin-sim --no-kafka --products 200 --events 20000 --duplicates 0.01 --garbage 0.01 \\\n"
               "           --record fleet.rec --truth fleet.truth.jsonl\n");
}

typedef struct {
  uint64_t seed, products, events;
  bool events_set;
  double rate, duration, years, interval_h;
  int64_t start_ms;
  const char *brokers, *topics[2], *record, *truth;
  const char *set_keys[MAX_SETS], *set_values[MAX_SETS];
  size_t n_set;
  bool no_kafka, quiet;
  double frac[5]; /* duplicates, reorder, late, garbage, invalid */
} cli_t;

static int bad(const char *opt, const char *val, const char *allowed) {
  fprintf(stderr, "twin-sim: --%s %s: %s\n", opt, val ? val : "", allowed);
  return 2;
}

static bool parse_u64(const char *s, uint64_t *out) {
  char *end;
  if (!*s || *s == '-') return false;
  unsigned long long v = strtoull(s, &end, 10);
  if (*end) return false;
  *out = v;
  return true;
}

static bool parse_double(const char *s, double *out) {
  char *end;
  double v = strtod(s, &end);
  if (!*s || *end || v != v) return false;
  *out = v;
  return true;
}

static bool parse_time(const char *s, int64_t *out) {
  uint64_t v;
  if (parse_u64(s, &v)) {
    *out = (int64_t)v;
    return true;
  }
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
  if (!end || (*end && strcmp(end, "Z") != 0)) return false;
  *out = (int64_t)timegm(&tm) * 1000;
  return true;
}

/* Returns 0 to go on, else the exit code. */
static int parse_cli(int argc, char **argv, cli_t *c) {
  struct option lo[O_COUNT + 1];
  for (int i = 0; i < O_COUNT; i++)
    lo[i] =
        (struct option){opt_table[i].name, opt_table[i].arg ? required_argument : no_argument, NULL, 256 + i};
  lo[O_COUNT] = (struct option){NULL, 0, NULL, 0};
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
    if (ch == 'h') ch = 256 + O_HELP;
    if (ch == '?' || ch == ':') {
      if (optopt >= 256) return bad(opt_table[optopt - 256].name, NULL, "needs a value");
      fprintf(stderr, "twin-sim: unknown option %s (see --help)\n", argv[optind - 1]);
      return 2;
    }
    int o = ch - 256;
    const char *v = optarg, *name = opt_table[o].name;
    double d;
    switch (o) {
    case O_SEED:
      if (!parse_u64(v, &c->seed)) return bad(name, v, "must be an unsigned integer");
      break;
    case O_PRODUCTS:
      if (!parse_u64(v, &c->products) || c->products < 1 || c->products > MAX_PRODUCTS)
        return bad(name, v, "must be an integer from 1 to 10000000");
      break;
    case O_EVENTS:
      if (!parse_u64(v, &c->events) || c->events < 1) return bad(name, v, "must be a positive integer");
      c->events_set = true;
      break;
    case O_RATE:
      if (!parse_double(v, &c->rate) || c->rate <= 0)
        return bad(name, v, "must be a positive number of events/s");
      break;
    case O_DURATION:
      if (!parse_double(v, &c->duration) || c->duration <= 0)
        return bad(name, v, "must be a positive number of seconds");
      break;
    case O_START_MS:
      if (!parse_time(v, &c->start_ms))
        return bad(name, v, "must be milliseconds since the epoch or YYYY-MM-DDTHH:MM:SSZ");
      break;
    case O_YEARS:
      if (!parse_double(v, &c->years) || c->years < 0.1 || c->years > 50)
        return bad(name, v, "must be from 0.1 to 50");
      break;
    case O_INTERVAL_H:
      if (!parse_double(v, &c->interval_h) || c->interval_h < 0.001 || c->interval_h > 24 * 365)
        return bad(name, v, "must be from 0.001 to 8760 hours");
      break;
    case O_BROKERS:
      if (!*v) return bad(name, v, "must not be empty");
      c->brokers = v;
      break;
    case O_TEL_TOPIC:
    case O_LC_TOPIC:
      if (!*v) return bad(name, v, "must not be empty");
      c->topics[o == O_TEL_TOPIC ? 0 : 1] = v;
      break;
    case O_SET: {
      const char *eq = strchr(v, '=');
      if (strncmp(v, "kafka.", 6) != 0 || !eq || eq == v + 6)
        return bad(name, v, "must be kafka.<librdkafka property>=<value>");
      if (c->n_set == MAX_SETS) return bad(name, v, "given too often (at most 64)");
      size_t kl = (size_t)(eq - v - 6);
      char *k = malloc(kl + 1); /* lives until exit */
      if (!k) return 1;
      memcpy(k, v + 6, kl);
      k[kl] = 0;
      c->set_keys[c->n_set] = k;
      c->set_values[c->n_set++] = eq + 1;
      break;
    }
    case O_NO_KAFKA: c->no_kafka = true; break;
    case O_RECORD: c->record = v; break;
    case O_TRUTH: c->truth = v; break;
    case O_DUPLICATES:
    case O_REORDER:
    case O_LATE:
    case O_GARBAGE:
    case O_INVALID:
      if (!parse_double(v, &d) || d < 0 || d > 0.9) return bad(name, v, "must be a fraction from 0 to 0.9");
      c->frac[o - O_DUPLICATES] = d;
      break;
    case O_QUIET: c->quiet = true; break;
    case O_HELP: usage(stdout); return -1;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "twin-sim: unexpected argument '%s' (see --help)\n", argv[optind]);
    return 2;
  }
  if (c->frac[0] + c->frac[3] + c->frac[4] > 0.9)
    return bad("duplicates", NULL, "--duplicates + --garbage + --invalid must be at most 0.9 together");
  if (c->frac[1] + c->frac[2] > 0.9)
    return bad("reorder", NULL, "--reorder + --late must be at most 0.9 together");
  if (c->duration > 0 && c->rate <= 0) return bad("duration", NULL, "needs --rate");
  if (c->duration > 0 && c->events_set)
    return bad("duration", NULL, "give either --events or --duration, not both");
  if (c->duration > 0) {
    double n = c->rate * c->duration;
    if (n < 1) return bad("duration", NULL, "RATE*S is less than one event");
    c->events = (uint64_t)(n + 0.5);
  }
  return 0;
}

/* ---- Running ------------------------------------------------------------------- */

static volatile sig_atomic_t g_stop = 0;
static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
  cli_t c = {.seed = 1,
             .products = 1000,
             .events = DEFAULT_EVENTS,
             .years = 6,
             .start_ms = DEFAULT_START_MS,
             .brokers = "127.0.0.1:9092",
             .topics = {"twin.telemetry", "twin.lifecycle"}};
  int rc = parse_cli(argc, argv, &c);
  if (rc) return rc < 0 ? 0 : rc;
  if (c.quiet) tw_log_set_level(TW_LOG_WARN);

  char err[512] = "";
  tw_sim_t *sim = NULL;
  tw_sim_kafka_t *kafka = NULL;
  tw_record_writer_t *rec = NULL;
  FILE *truth = NULL;
  rc = 1;

  tw_sim_opts_t so = {.seed = c.seed,
                      .products = (uint32_t)c.products,
                      .events = c.events,
                      .start_ms = c.start_ms,
                      .years = c.years,
                      .interval_h = c.interval_h,
                      .duplicates = c.frac[0],
                      .reorder = c.frac[1],
                      .late = c.frac[2],
                      .garbage = c.frac[3],
                      .invalid = c.frac[4]};
  sim = tw_sim_new(&so, err, sizeof err);
  if (!sim) goto out;
  if (c.truth) {
    truth = fopen(c.truth, "w");
    if (!truth) {
      snprintf(err, sizeof err, "--truth %s: cannot create the file", c.truth);
      goto out;
    }
  }
  if (c.record && !tw_record_writer_open(c.record, &rec, err, sizeof err)) goto out;
  if (!c.no_kafka) {
    tw_sim_kafka_opts_t ko = {.brokers = c.brokers,
                              .topics = {c.topics[0], c.topics[1]},
                              .set_keys = c.set_keys,
                              .set_values = c.set_values,
                              .n_set = c.n_set};
    if (!tw_sim_kafka_new(&ko, &kafka, err, sizeof err)) goto out;
  }
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);

  TW_INFO("sim",
          "seed %llu, %llu products, %llu events%s, telemetry every %.2f h (simulated), start %lld ms, "
          "%s%s%s%s",
          (unsigned long long)c.seed, (unsigned long long)c.products, (unsigned long long)c.events,
          c.rate > 0 ? " (paced)" : "", tw_sim_interval_h(sim), (long long)c.start_ms, kafka ? "kafka " : "",
          kafka ? c.brokers : "no kafka", c.record ? ", record " : "", c.record ? c.record : "");

  size_t tlen[2] = {strlen(c.topics[0]), strlen(c.topics[1])};
  double t0 = mono_s(), next_report = t0 + 5;
  tw_sim_msg_t m;
  uint64_t n = 0;
  while (!g_stop && tw_sim_next(sim, &m)) {
    n++;
    if (rec && !tw_record_writer_write(rec, c.topics[m.topic], tlen[m.topic], m.key, m.key_len, m.value,
                                       m.value_len, err, sizeof err))
      goto out;
    if (kafka) {
      if (!tw_sim_kafka_produce(kafka, m.topic, m.key, m.key_len, m.value, m.value_len, err, sizeof err))
        goto out;
      if ((n & 1023) == 0) tw_sim_kafka_poll(kafka);
    }
    if (c.rate > 0 && (n & 15) == 0) {
      double ahead = (double)n / c.rate - (mono_s() - t0);
      if (ahead > 0.001) sleep_s(ahead);
    }
    if ((n & 16383) == 0 || c.rate > 0) {
      double now = mono_s();
      if (now >= next_report) {
        TW_INFO("sim", "%llu / %llu messages, %.0f msg/s", (unsigned long long)n,
                (unsigned long long)c.events, (double)n / (now - t0));
        next_report = now + 5;
      }
    }
  }
  if (g_stop)
    TW_WARN("sim", "interrupted after %llu messages: record and truth cover what was sent",
            (unsigned long long)n);

  double gen_s = mono_s() - t0;
  uint64_t delivered = 0, failed = 0;
  if (kafka && !tw_sim_kafka_flush(kafka, 60000, &delivered, &failed, err, sizeof err)) goto out;
  if (rec) {
    bool ok = tw_record_writer_close(rec, err, sizeof err);
    rec = NULL;
    if (!ok) goto out;
  }
  if (truth) {
    bool ok = tw_sim_write_truth(sim, truth);
    ok = fclose(truth) == 0 && ok;
    truth = NULL;
    if (!ok) {
      snprintf(err, sizeof err, "--truth %s: write failed", c.truth);
      goto out;
    }
  }
  double el = mono_s() - t0;
  const tw_sim_stats_t *st = tw_sim_stats(sim);
  TW_INFO("sim",
          "done: %llu messages (telemetry %llu, lifecycle %llu, duplicates %llu, reordered %llu, late %llu, "
          "garbage %llu, invalid %llu; %llu accepted by a correct engine) in %.2f s, %.0f msg/s%s",
          (unsigned long long)st->sent, (unsigned long long)st->telemetry, (unsigned long long)st->lifecycle,
          (unsigned long long)st->duplicates, (unsigned long long)st->reordered, (unsigned long long)st->late,
          (unsigned long long)st->garbage, (unsigned long long)st->invalid, (unsigned long long)st->accepted,
          el, el > 0 ? (double)st->sent / el : 0.0, kafka ? " (delivered)" : "");
  if (kafka)
    TW_INFO("sim", "kafka: %llu delivered, %llu failed; generation took %.2f s",
            (unsigned long long)delivered, (unsigned long long)failed, gen_s);
  rc = g_stop ? 130 : 0;
out:
  if (rc == 1) fprintf(stderr, "twin-sim: %s\n", err[0] ? err : "failed");
  if (rec) tw_record_writer_close(rec, NULL, 0);
  if (truth) fclose(truth);
  tw_sim_kafka_destroy(kafka);
  tw_sim_destroy(sim);
  return rc;
}
