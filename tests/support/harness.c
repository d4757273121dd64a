/* harness.c - see harness.h. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <mongoc/mongoc.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "fixture.h"
#include "twin/record.h"
#include "twin/rules.h"
#include "twin/twin.h"
#include "twin_int.h"

extern char **environ;

static void kill_children(void);

static const char *env_or(const char *k, const char *def) {
  const char *v = getenv(k);
  return v && *v ? v : def;
}

static void msleep(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* ---- Topics ---------------------------------------------------------------- */

static rd_kafka_t *kafka_client_at(const char *bootstrap) {
  char err[512];
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, err, sizeof err);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof err);
  if (!rk) fail_msg("kafka client: %s", err);
  return rk;
}

static rd_kafka_t *kafka_client(const h_scenario_t *s) { return kafka_client_at(s->bootstrap); }

static void create_topics(const h_scenario_t *s) {
  rd_kafka_t *rk = kafka_client(s);
  const char *names[4] = {s->telemetry, s->lifecycle, s->dlq, s->alerts};
  int parts[4] = {s->partitions, s->partitions, 2, s->partitions};
  rd_kafka_NewTopic_t *nt[4];
  char err[512];
  for (int i = 0; i < 4; i++) nt[i] = rd_kafka_NewTopic_new(names[i], parts[i], 1, err, sizeof err);
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, nt, 4, NULL, q);
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
  if (!ev) fail_msg("CreateTopics timed out");
  const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
  size_t n;
  const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &n);
  for (size_t i = 0; i < n; i++)
    if (rd_kafka_topic_result_error(tr[i]) &&
        rd_kafka_topic_result_error(tr[i]) != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
      fail_msg("create topic %s: %s", rd_kafka_topic_result_name(tr[i]),
               rd_kafka_topic_result_error_string(tr[i]));
  rd_kafka_event_destroy(ev);
  for (int i = 0; i < 4; i++) rd_kafka_NewTopic_destroy(nt[i]);
  rd_kafka_queue_destroy(q);
  /* Wait until the broker reports every partition with a leader. */
  for (int attempt = 0; attempt < 100; attempt++) {
    const struct rd_kafka_metadata *md;
    int ready = 0;
    if (rd_kafka_metadata(rk, 1, NULL, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      for (int i = 0; i < md->topic_cnt; i++)
        for (int k = 0; k < 4; k++)
          if (strcmp(md->topics[i].topic, names[k]) == 0 && md->topics[i].partition_cnt == parts[k]) ready++;
      rd_kafka_metadata_destroy(md);
    }
    if (ready == 4) break;
    msleep(100);
  }
  rd_kafka_destroy(rk);
}

void h_scenario_init(h_scenario_t *s, const char *name, int partitions) {
  kill_children(); /* left over from a failed scenario */
  memset(s, 0, sizeof *s);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(s->name, sizeof s->name, "%s_%d_%ld", name, (int)getpid(), (long)(ts.tv_sec % 100000000));
  snprintf(s->telemetry, sizeof s->telemetry, "it.%s.telemetry", s->name);
  snprintf(s->lifecycle, sizeof s->lifecycle, "it.%s.lifecycle", s->name);
  snprintf(s->dlq, sizeof s->dlq, "it.%s.dlq", s->name);
  snprintf(s->alerts, sizeof s->alerts, "it.%s.alerts", s->name);
  snprintf(s->group, sizeof s->group, "it-%s", s->name);
  snprintf(s->database, sizeof s->database, "it_%s", s->name);
  s->partitions = partitions;
  s->bootstrap = s->topics_bootstrap = env_or("TWIN_KAFKA_BOOTSTRAP", "127.0.0.1:9092");
  s->mongo_uri = env_or("TWIN_MONGO_URI", "mongodb://127.0.0.1:27017");
  s->bin_dir = env_or("TWIN_BIN_DIR", "build/bin");
  s->source_dir = env_or("TWIN_SOURCE_DIR", ".");
  snprintf(s->logdir, sizeof s->logdir, "/tmp/twin-it/%s", s->name);
  mkdir("/tmp/twin-it", 0755);
  mkdir(s->logdir, 0755);
  snprintf(s->record, sizeof s->record, "%s/fleet.rec", s->logdir);
  snprintf(s->truth, sizeof s->truth, "%s/fleet.truth.jsonl", s->logdir);
  create_topics(s);
  fprintf(stderr, "[harness] scenario %s: topics it.%s.*, database %s, logs %s\n", name, s->name, s->database,
          s->logdir);
}

static mongoc_client_t *mongo(const h_scenario_t *s) {
  bson_error_t err;
  mongoc_client_t *c = mongoc_client_new(s->mongo_uri);
  (void)err;
  if (!c) fail_msg("bad mongo uri %s", s->mongo_uri);
  return c;
}

/* Sanitized builds (build-asan/, build-tsan/) run the programs with
 * halt_on_error: a report ends the process, which the exit status checks
 * catch; a process stopped with SIGKILL has none, so the reports in the
 * scenario's logs (engine, twin-sim) fail the test too. */
static void sanitizer_check(const h_scenario_t *s) {
  char cmd[600];
  snprintf(
      cmd, sizeof cmd,
      "grep -l -E '^==[0-9]+==ERROR: |^WARNING: ThreadSanitizer|: runtime error: ' '%s'/*.log 2>/dev/null",
      s->logdir);
  if (system(cmd) == 0) fail_msg("sanitizer report in the logs above (%s)", s->logdir);
}

/* Deletes the scenario's topics and waits until the broker no longer lists
 * them: a day of test runs against one local broker would otherwise leave
 * it thousands of partitions, which slow it down (and every benchmark run
 * on it). */
static void delete_topics(const h_scenario_t *s) {
  rd_kafka_t *rk = kafka_client_at(s->topics_bootstrap);
  const char *names[4] = {s->telemetry, s->lifecycle, s->dlq, s->alerts};
  rd_kafka_DeleteTopic_t *dt[4];
  for (int i = 0; i < 4; i++) dt[i] = rd_kafka_DeleteTopic_new(names[i]);
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_DeleteTopics(rk, dt, 4, NULL, q);
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
  if (!ev) fail_msg("DeleteTopics timed out");
  size_t n;
  const rd_kafka_topic_result_t **tr =
      rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &n);
  for (size_t i = 0; i < n; i++)
    if (rd_kafka_topic_result_error(tr[i]) &&
        rd_kafka_topic_result_error(tr[i]) != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
      fail_msg("delete topic %s: %s", rd_kafka_topic_result_name(tr[i]),
               rd_kafka_topic_result_error_string(tr[i]));
  rd_kafka_event_destroy(ev);
  for (int i = 0; i < 4; i++) rd_kafka_DeleteTopic_destroy(dt[i]);
  rd_kafka_queue_destroy(q);
  int left = 4;
  for (int attempt = 0; attempt < 100 && left; attempt++) {
    const struct rd_kafka_metadata *md;
    if (attempt) msleep(100);
    if (rd_kafka_metadata(rk, 1, NULL, &md, 5000) != RD_KAFKA_RESP_ERR_NO_ERROR) continue;
    left = 0;
    for (int i = 0; i < md->topic_cnt; i++)
      for (int k = 0; k < 4; k++)
        if (strcmp(md->topics[i].topic, names[k]) == 0) left++;
    rd_kafka_metadata_destroy(md);
  }
  rd_kafka_destroy(rk);
  if (left)
    fail_msg("%d of the scenario's topics (it.%s.*) still listed 10 s after deleting them", left, s->name);
}

void h_scenario_cleanup(h_scenario_t *s) {
  sanitizer_check(s);
  delete_topics(s);
  mongoc_client_t *c = mongo(s);
  mongoc_database_t *db = mongoc_client_get_database(c, s->database);
  bson_error_t err;
  if (!mongoc_database_drop(db, &err)) fprintf(stderr, "[harness] drop %s: %s\n", s->database, err.message);
  mongoc_database_destroy(db);
  mongoc_client_destroy(c);
}

/* ---- Processes ------------------------------------------------------------- */

/* Every process a scenario started, so a failed test leaves none behind. */
static pid_t g_children[256];
static int g_n_children;

static void kill_children(void) {
  for (int i = 0; i < g_n_children; i++) {
    if (g_children[i] > 0 && kill(g_children[i], 0) == 0) {
      kill(g_children[i], SIGKILL);
      waitpid(g_children[i], NULL, 0);
    }
  }
  g_n_children = 0;
}

/* fork and exec, not posix_spawn: the child asks the kernel to kill it when
 * this test process ends, whatever ends it (a failed assertion's exit, or
 * ctest's SIGKILL at a timeout), so no engine or simulator outlives its test
 * and loads the machine for the tests after it. Between fork and exec only
 * async-signal-safe calls. */
static pid_t spawn(const char *const *argv, const char *log) {
  if (access(argv[0], X_OK) != 0) fail_msg("cannot start %s: %s", argv[0], strerror(errno));
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) fail_msg("cannot start %s: %s", argv[0], strerror(errno));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127); /* the test ended before the prctl */
    if (log) {
      int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd < 0) _exit(127);
      dup2(fd, 1);
      dup2(fd, 2);
      if (fd > 2) close(fd);
    }
    execve(argv[0], (char *const *)argv, environ);
    _exit(127);
  }
  static bool registered;
  if (!registered) atexit(kill_children);
  registered = true;
  if (g_n_children < 256) g_children[g_n_children++] = pid;
  return pid;
}

pid_t h_sim_start(const h_scenario_t *s, const char *const *extra) {
  const char *argv[64];
  char bin[512];
  int n = 0;
  snprintf(bin, sizeof bin, "%s/twin-sim", s->bin_dir);
  argv[n++] = bin;
  argv[n++] = "--brokers";
  argv[n++] = s->bootstrap;
  argv[n++] = "--telemetry-topic";
  argv[n++] = s->telemetry;
  argv[n++] = "--lifecycle-topic";
  argv[n++] = s->lifecycle;
  argv[n++] = "--record";
  argv[n++] = s->record;
  argv[n++] = "--truth";
  argv[n++] = s->truth;
  for (; extra && *extra && n < 62; extra++) argv[n++] = *extra;
  argv[n] = NULL;
  char log[300];
  snprintf(log, sizeof log, "%s/sim.log", s->logdir);
  return spawn(argv, log);
}

void h_sim_wait(const h_scenario_t *s, pid_t pid) {
  int st;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail_msg("twin-sim failed (see %s/sim.log)", s->logdir);
}

void h_run_sim(const h_scenario_t *s, const char *const *extra) { h_sim_wait(s, h_sim_start(s, extra)); }

static char g_last_log[320];

const char *h_engine_log(void) { return g_last_log; }

int h_engine_http_port(const char *log) {
  FILE *f = fopen(log, "r");
  if (!f) return 0;
  char line[4096];
  int port = 0;
  while (fgets(line, sizeof line, f)) {
    const char *p = strstr(line, "listening on http://127.0.0.1:");
    if (p) port = atoi(p + strlen("listening on http://127.0.0.1:"));
  }
  fclose(f);
  return port;
}

bool h_http_get(int port, const char *path, char *buf, size_t cap) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char req[512];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
  bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0 && send(fd, req, (size_t)n, MSG_NOSIGNAL) == n;
  size_t len = 0;
  ssize_t got;
  while (ok && len + 1 < cap && (got = read(fd, buf + len, cap - 1 - len)) > 0) len += (size_t)got;
  close(fd);
  buf[len] = '\0';
  const char *body = strstr(buf, "\r\n\r\n");
  if (!ok || !body || strncmp(buf, "HTTP/1.", 7) != 0 || atoi(buf + 9) != 200) return false;
  memmove(buf, body + 4, strlen(body + 4) + 1);
  return true;
}

double h_metric_max(const char *body, const char *name) {
  double max = -1;
  size_t nl = strlen(name);
  for (const char *p = body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
    if (strncmp(p, name, nl) != 0 || (p[nl] != '{' && p[nl] != ' ')) continue;
    const char *sp = strchr(p, ' ');
    const char *eol = strchr(p, '\n');
    if (!sp || (eol && sp > eol)) continue;
    double v = strtod(sp + 1, NULL);
    if (v > max) max = v;
  }
  return max;
}

bool h_wait_engine_log(const char *needle, int timeout_s) {
  char cmd[800];
  snprintf(cmd, sizeof cmd, "grep -q '%s' '%s'", needle, g_last_log);
  for (int i = 0; i < timeout_s * 10; i++) {
    if (system(cmd) == 0) return true;
    msleep(100);
  }
  return false;
}

pid_t h_engine_start(const h_scenario_t *s, int shards, const char *const *extra) {
  return h_engine_start_log(s, shards, extra, NULL);
}

pid_t h_engine_start_log(const h_scenario_t *s, int shards, const char *const *extra, const char *log_path) {
  static int counter = 0;
  char bin[512], sets[20][256], log[300];
  const char *argv[80];
  int n = 0, k = 0;
  snprintf(bin, sizeof bin, "%s/twin-engine", s->bin_dir);
  argv[n++] = bin;
  argv[n++] = "run";
#define SET(...)                                    \
  do {                                              \
    snprintf(sets[k], sizeof sets[k], __VA_ARGS__); \
    argv[n++] = "--set";                            \
    argv[n++] = sets[k++];                          \
  } while (0)
  SET("kafka.bootstrap.servers=%s", s->bootstrap);
  SET("kafka.group.id=%s", s->group);
  SET("topics.telemetry=%s", s->telemetry);
  SET("topics.lifecycle=%s", s->lifecycle);
  SET("topics.dlq=%s", s->dlq);
  SET("topics.alerts=%s", s->alerts);
  SET("mongo.uri=%s", s->mongo_uri);
  SET("mongo.database=%s", s->database);
  SET("shards=%d", shards);
  SET("snapshot.interval.ms=%d", 1000);
  SET("kafka.session.timeout.ms=%d", 6000);
  SET("kafka.max.poll.interval.ms=%d", 60000);
  /* Several engines run at once: each HTTP server on a free port (extra
   * --set http.listen=... wins). */
  SET("http.listen=%s", "127.0.0.1:0");
#undef SET
  for (; extra && *extra && n < 76; extra++) {
    argv[n++] = "--set";
    argv[n++] = *extra;
  }
  argv[n] = NULL;
  if (log_path)
    snprintf(log, sizeof log, "%s", log_path);
  else
    snprintf(log, sizeof log, "%s/engine-%d.log", s->logdir, counter++);
  snprintf(g_last_log, sizeof g_last_log, "%s", log);
  pid_t pid = spawn(argv, log);
  /* Return once the engine handles SIGTERM (SigCgt bit 15), so a test that
   * stops it at once gets a graceful stop, not the default action. */
  for (int i = 0; i < 100; i++) {
    char path[64], line[256];
    unsigned long long caught = 0;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
      if (strncmp(line, "SigCgt:", 7) == 0) caught = strtoull(line + 7, NULL, 16);
    if (f) fclose(f);
    if (caught & (1ULL << (SIGTERM - 1))) break;
    msleep(50);
  }
  return pid;
}

int h_engine_stop(pid_t pid, int sig) {
  int st;
  kill(pid, sig);
  for (int i = 0; i < 1200; i++) { /* 120 s: a graceful stop flushes */
    if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    msleep(100);
  }
  kill(pid, SIGKILL);
  waitpid(pid, &st, 0);
  fail_msg("engine %d did not stop within 120 s after signal %d", (int)pid, sig);
  return -1;
}

long h_rss_kib(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  long kib = 0;
  if (!f) return 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld", &kib) == 1) break;
  fclose(f);
  return kib;
}

int h_stack(const h_scenario_t *s, const char *cmd, const char *component) {
  char line[1024];
  snprintf(line, sizeof line, "bash '%s/deploy/local/stack.sh' %s %s >> '%s/stack.log' 2>&1", s->source_dir,
           cmd, component ? component : "", s->logdir);
  return system(line);
}

pid_t h_stack_pid(const h_scenario_t *s, const char *component) {
  char path[600];
  const char *dir = getenv("TWIN_STACK_DIR");
  if (dir && *dir)
    snprintf(path, sizeof path, "%s/%s/%s.pid", dir, component, component);
  else
    snprintf(path, sizeof path, "%s/.stack/%s/%s.pid", s->source_dir, component, component);
  FILE *f = fopen(path, "r");
  int pid = 0;
  if (f) {
    if (fscanf(f, "%d", &pid) != 1) pid = 0;
    fclose(f);
  }
  return pid > 0 && kill(pid, 0) == 0 ? (pid_t)pid : 0;
}

/* ---- Progress -------------------------------------------------------------- */

int64_t h_end_offsets_total(const h_scenario_t *s) {
  rd_kafka_t *rk = kafka_client(s);
  int64_t total = 0;
  const char *topics[2] = {s->telemetry, s->lifecycle};
  for (int t = 0; t < 2; t++) {
    for (int p = 0; p < s->partitions; p++) {
      int64_t lo, hi;
      rd_kafka_resp_err_t err;
      /* A broker that just restarted answers "not leader" for a while. */
      for (int attempt = 0;; attempt++) {
        err = rd_kafka_query_watermark_offsets(rk, topics[t], p, &lo, &hi, 10000);
        if (!err || attempt == 60) break;
        msleep(500);
      }
      if (err) fail_msg("watermarks %s[%d]: %s", topics[t], p, rd_kafka_err2str(err));
      total += hi;
    }
  }
  rd_kafka_destroy(rk);
  return total;
}

int64_t h_checkpoints_total(const h_scenario_t *s) {
  mongoc_client_t *c = mongo(s);
  mongoc_collection_t *col = mongoc_client_get_collection(c, s->database, "checkpoints");
  bson_t filter = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&filter, "group", s->group);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, NULL, NULL);
  const bson_t *doc;
  int64_t total = 0;
  bson_iter_t it;
  while (mongoc_cursor_next(cur, &doc))
    if (bson_iter_init_find(&it, doc, "offset")) total += bson_iter_as_int64(&it);
  bson_error_t err;
  if (mongoc_cursor_error(cur, &err)) total = -1;
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  mongoc_collection_destroy(col);
  mongoc_client_destroy(c);
  return total;
}

/* On a caught-up timeout: every input partition whose checkpoint trails its
 * end offset, so the log shows which partition stopped and where. */
static void print_lagging_partitions(const h_scenario_t *s) {
  rd_kafka_t *rk = kafka_client(s);
  mongoc_client_t *c = mongo(s);
  mongoc_collection_t *col = mongoc_client_get_collection(c, s->database, "checkpoints");
  const char *topics[2] = {s->telemetry, s->lifecycle};
  for (int t = 0; t < 2; t++) {
    for (int p = 0; p < s->partitions; p++) {
      int64_t lo = 0, hi = -1, ck = -1;
      rd_kafka_query_watermark_offsets(rk, topics[t], p, &lo, &hi, 10000);
      char id[600];
      snprintf(id, sizeof id, "%s/%s/%d", s->group, topics[t], p);
      bson_t filter = BSON_INITIALIZER;
      BSON_APPEND_UTF8(&filter, "_id", id);
      mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, NULL, NULL);
      const bson_t *doc;
      bson_iter_t it;
      if (mongoc_cursor_next(cur, &doc) && bson_iter_init_find(&it, doc, "offset"))
        ck = bson_iter_as_int64(&it);
      mongoc_cursor_destroy(cur);
      bson_destroy(&filter);
      if (ck < hi)
        fprintf(stderr, "[harness] %s[%d]: checkpoint %lld, end offset %lld\n", topics[t], p, (long long)ck,
                (long long)hi);
    }
  }
  mongoc_collection_destroy(col);
  mongoc_client_destroy(c);
  rd_kafka_destroy(rk);
}

bool h_wait_caught_up(const h_scenario_t *s, int timeout_s) {
  /* Slow is fine (FerretDB on a busy 2-core machine), stuck is not: give up
   * after timeout_s without progress, or 15 minutes in all. */
  int64_t end = h_end_offsets_total(s), last = -1;
  int idle = 0;
  for (int i = 0; i < 900 * 4 && idle < timeout_s * 4; i++) {
    int64_t now = h_checkpoints_total(s);
    if (now >= end) return true;
    idle = now > last ? 0 : idle + 1;
    last = now > last ? now : last;
    msleep(250);
  }
  fprintf(stderr, "[harness] not caught up: checkpoints %lld of %lld\n", (long long)h_checkpoints_total(s),
          (long long)end);
  print_lagging_partitions(s);
  /* CI keeps only this output: show why, from the last engine's log. */
  if (g_last_log[0]) {
    char cmd[400];
    fprintf(stderr, "[harness] last 40 lines of %s:\n", g_last_log);
    snprintf(cmd, sizeof cmd, "tail -n 40 '%s' >&2", g_last_log);
    if (system(cmd) != 0) fprintf(stderr, "[harness] (log not readable)\n");
  }
  return false;
}

/* ---- Expected state -------------------------------------------------------- */

static const char *const g_interleaved_rules[] = {"service_due", "brake_wear_predicted"};

bool h_alert_rule_interleaved(const char *rule) {
  for (size_t k = 0; k < 2; k++)
    if (strcmp(rule, g_interleaved_rules[k]) == 0) return true;
  return false;
}

void h_strip_interleaved_alerts(tw_twin_t *t) {
  const char *const *rules = g_interleaved_rules;
  for (size_t k = 0; k < 2; k++) {
    for (uint32_t i = 0; i < t->n_alerts; i++) {
      if (strcmp(t->alerts[i].rule, rules[k]) != 0) continue;
      tw_alert_cleanup(&t->alerts[i]); /* its four strings are one block */
      memmove(&t->alerts[i], &t->alerts[i + 1], (t->n_alerts - i - 1) * sizeof *t->alerts);
      t->n_alerts--;
      break;
    }
    for (uint32_t i = 0; i < t->n_alert_cycles; i++) {
      if (strcmp(t->alert_cycles[i].rule, rules[k]) != 0) continue;
      free(t->alert_cycles[i].rule);
      memmove(&t->alert_cycles[i], &t->alert_cycles[i + 1],
              (t->n_alert_cycles - i - 1) * sizeof *t->alert_cycles);
      t->n_alert_cycles--;
      break;
    }
  }
}

/* The engine's rules (the built-ins), evaluated as a shard does. */
void h_expected_build(const h_scenario_t *s, uint32_t seq_window, h_expected_t *out) {
  h_expected_build_alerts(s, seq_window, out, NULL, NULL);
}

void h_expected_build_alerts(const h_scenario_t *s, uint32_t seq_window, h_expected_t *out, tw_alert_cb cb,
                             void *ud) {
  char rerr[256];
  tw_rules_t *rules = tw_rules_compile(true, NULL, 0, rerr, sizeof rerr);
  if (!rules) fail_msg("%s", rerr);
  memset(out, 0, sizeof *out);
  tw_map_init(&out->twins);
  tw_record_reader_t *r;
  char err[512];
  if (!tw_record_reader_open(s->record, &r, err, sizeof err)) fail_msg("%s", err);
  for (;;) {
    tw_record_t rec;
    bool eof;
    if (!tw_record_reader_next(r, &rec, &eof, err, sizeof err)) fail_msg("%s", err);
    if (eof) break;
    if (strcmp(rec.topic, s->telemetry) != 0 && strcmp(rec.topic, s->lifecycle) != 0) continue;
    char why[512]; /* the engine's gate, with its default message.max.bytes */
    Twin__V1__Envelope *env =
        tw_envelope_decode(NULL, rec.value, rec.value_len, rec.key, rec.key_len, 1048576, why, sizeof why);
    if (!env) {
      out->garbage++;
      continue;
    }
    tw_apply_event(rules, tw_map_get_or_new(&out->twins, env->product_id, seq_window), env, NULL, cb, ud);
    out->valid++;
    twin__v1__envelope__free_unpacked(env, NULL);
  }
  tw_record_reader_close(r);
  tw_rules_destroy(rules);
  for (size_t i = 0; i < out->twins.cap; i++)
    if (out->twins.slots[i]) h_strip_interleaved_alerts(out->twins.slots[i]);
}

void h_expected_cleanup(h_expected_t *e) { tw_map_cleanup(&e->twins, true); }

typedef void (*doc_fn)(void *ud, const bson_t *doc);

static void each_twin(const h_scenario_t *s, doc_fn fn, void *ud) {
  mongoc_client_t *c = mongo(s);
  mongoc_collection_t *col = mongoc_client_get_collection(c, s->database, "twins");
  bson_t filter = BSON_INITIALIZER;
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, NULL, NULL);
  const bson_t *doc;
  while (mongoc_cursor_next(cur, &doc)) fn(ud, doc);
  bson_error_t err;
  if (mongoc_cursor_error(cur, &err)) fail_msg("reading twins: %s", err.message);
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  mongoc_collection_destroy(col);
  mongoc_client_destroy(c);
}

typedef struct {
  const h_expected_t *e;
  int diffs;
  size_t docs;
  int64_t lost, duplicated;
  tw_map_t found; /* expected twins seen in the store (not owned) */
} cmp_ctx_t;

static void print_twin(const char *label, const tw_twin_t *t) {
  bson_t d = BSON_INITIALIZER;
  tw_twin_to_bson(t, -1, &d);
  char *json = bson_as_relaxed_extended_json(&d, NULL);
  fprintf(stderr, "  %s: %.3000s\n", label, json);
  bson_free(json);
  bson_destroy(&d);
}

static void cmp_doc(void *ud, const bson_t *doc) {
  cmp_ctx_t *c = ud;
  char err[256];
  c->docs++;
  tw_twin_t *got = tw_twin_from_bson(doc, 0, err, sizeof err);
  if (!got) {
    c->diffs++;
    fprintf(stderr, "[harness] unreadable twin: %s\n", err);
    return;
  }
  tw_twin_t *want = tw_map_get(&c->e->twins, got->product_id);
  if (!want) {
    c->duplicated += (int64_t)got->seen;
    if (c->diffs++ < 3) fprintf(stderr, "[harness] unexpected twin %s\n", got->product_id);
  } else {
    if (got->seen < want->seen) c->lost += (int64_t)(want->seen - got->seen);
    if (got->seen > want->seen) c->duplicated += (int64_t)(got->seen - want->seen);
    if (!tw_map_get(&c->found, want->product_id)) tw_map_put(&c->found, want);
    got->seq_window = want->seq_window;     /* window bits were read with the default */
    got->offsets[0] = got->offsets[1] = -1; /* Kafka offsets are not part of the expected state */
    h_strip_interleaved_alerts(got);
    if (tw_twin_state_hash(got) != tw_twin_state_hash(want)) {
      if (c->diffs++ < 3) {
        fprintf(stderr, "[harness] twin %s differs\n", got->product_id);
        print_twin("stored  ", got);
        print_twin("expected", want);
      }
    }
  }
  tw_twin_destroy(got);
}

int h_compare_store(const h_scenario_t *s, const h_expected_t *e) {
  int64_t lost, dup;
  return h_compare_store_counts(s, e, &lost, &dup);
}

int h_compare_store_counts(const h_scenario_t *s, const h_expected_t *e, int64_t *lost, int64_t *duplicated) {
  cmp_ctx_t c = {e, 0, 0, 0, 0, {0}};
  tw_map_init(&c.found);
  each_twin(s, cmp_doc, &c);
  for (size_t i = 0; i < e->twins.cap; i++) /* twins missing from the store lose all their events */
    if (e->twins.slots[i] && !tw_map_get(&c.found, e->twins.slots[i]->product_id))
      c.lost += (int64_t)e->twins.slots[i]->seen;
  tw_map_cleanup(&c.found, false);
  *lost = c.lost;
  *duplicated = c.duplicated;
  if (c.docs != e->twins.len) {
    fprintf(stderr, "[harness] %zu twins stored, %zu expected\n", c.docs, e->twins.len);
    c.diffs++;
  }
  fprintf(stderr, "[harness] compared %zu stored twins with %zu expected: %d differences\n", c.docs,
          e->twins.len, c.diffs);
  return c.diffs;
}

/* ---- Truth file ------------------------------------------------------------ */

typedef struct {
  tw_map_t stored;
} truth_ctx_t;

static void load_doc(void *ud, const bson_t *doc) {
  truth_ctx_t *c = ud;
  char err[256];
  tw_twin_t *t = tw_twin_from_bson(doc, 0, err, sizeof err);
  if (t) tw_map_put(&c->stored, t);
}

static const char *jstr(const bson_t *b, const char *k) {
  bson_iter_t it;
  if (bson_iter_init_find(&it, b, k) && BSON_ITER_HOLDS_UTF8(&it)) return bson_iter_utf8(&it, NULL);
  return NULL;
}

static int cmp_strp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int h_check_truth(const h_scenario_t *s) {
  truth_ctx_t c;
  tw_map_init(&c.stored);
  each_twin(s, load_doc, &c);
  FILE *f = fopen(s->truth, "r");
  if (!f) fail_msg("cannot open %s", s->truth);
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  int diffs = 0, products = 0;
  while ((len = getline(&line, &cap, f)) > 0) {
    bson_error_t err;
    bson_t *b = bson_new_from_json((const uint8_t *)line, len, &err);
    if (!b) fail_msg("truth line: %s", err.message);
    bson_iter_t it;
    if (bson_iter_init_find(&it, b, "summary")) {
      bson_destroy(b);
      continue;
    }
    products++;
    const char *pid = jstr(b, "product_id");
    tw_twin_t *t = pid ? tw_map_get(&c.stored, pid) : NULL;
    char why[256] = "";
    int64_t accepted = bson_iter_init_find(&it, b, "accepted") ? bson_iter_as_int64(&it) : -1;
    if (!t) {
      if (accepted > 0) snprintf(why, sizeof why, "missing");
    } else {
      const char *stage = jstr(b, "stage"), *owner = jstr(b, "owner");
      if ((int64_t)t->rev != accepted)
        snprintf(why, sizeof why, "rev %llu, truth accepted %lld", (unsigned long long)t->rev,
                 (long long)accepted);
      else if (stage && strcmp(stage, tw_stage_name(t->stage)) != 0)
        snprintf(why, sizeof why, "stage %s, truth %s", tw_stage_name(t->stage), stage);
      else if ((owner || t->owner) && (!owner || !t->owner || strcmp(owner, t->owner) != 0))
        snprintf(why, sizeof why, "owner %s, truth %s", t->owner ? t->owner : "null", owner ? owner : "null");
      else if (bson_iter_init_find(&it, b, "open_recalls") && BSON_ITER_HOLDS_ARRAY(&it)) {
        bson_iter_t a;
        char *want[256];
        uint32_t nw = 0;
        bson_iter_recurse(&it, &a);
        while (bson_iter_next(&a) && nw < 256) want[nw++] = (char *)bson_iter_utf8(&a, NULL);
        char **have = malloc((t->n_open_recalls + 1) * sizeof *have);
        if (t->n_open_recalls) memcpy(have, t->open_recalls, t->n_open_recalls * sizeof *have);
        qsort(have, t->n_open_recalls, sizeof *have, cmp_strp);
        qsort(want, nw, sizeof *want, cmp_strp);
        bool same = nw == t->n_open_recalls;
        for (uint32_t i = 0; same && i < nw; i++) same = strcmp(want[i], have[i]) == 0;
        free(have);
        if (!same)
          snprintf(why, sizeof why, "open recalls differ (%u stored, %u truth)", t->n_open_recalls, nw);
      }
    }
    if (why[0] && diffs++ < 5) fprintf(stderr, "[harness] truth: %s: %s\n", pid ? pid : "?", why);
    bson_destroy(b);
  }
  free(line);
  fclose(f);
  tw_map_cleanup(&c.stored, true);
  fprintf(stderr, "[harness] truth file: %d products checked, %d differences\n", products, diffs);
  if (products == 0) diffs++;
  return diffs;
}

/* ---- DLQ ------------------------------------------------------------------- */

int64_t h_count_dlq(const h_scenario_t *s, int64_t *bad_headers) {
  char err[512], group[160];
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  snprintf(group, sizeof group, "%s-dlq-reader", s->group);
  rd_kafka_conf_set(c, "bootstrap.servers", s->bootstrap, err, sizeof err);
  rd_kafka_conf_set(c, "group.id", group, err, sizeof err);
  rd_kafka_conf_set(c, "enable.auto.commit", "false", err, sizeof err);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
  if (!rk) fail_msg("dlq consumer: %s", err);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(2);
  int64_t want = 0;
  for (int p = 0; p < 2; p++) {
    int64_t lo, hi;
    rd_kafka_query_watermark_offsets(rk, s->dlq, p, &lo, &hi, 10000);
    want += hi - lo;
    rd_kafka_topic_partition_list_add(l, s->dlq, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  }
  rd_kafka_assign(rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  int64_t got = 0;
  *bad_headers = 0;
  for (int idle = 0; got < want && idle < 100;) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
    if (!m) {
      idle++;
      continue;
    }
    if (!m->err) {
      got++;
      rd_kafka_headers_t *h;
      const void *v;
      size_t vl;
      bool ok = rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
                rd_kafka_header_get_last(h, "twin.error", &v, &vl) == RD_KAFKA_RESP_ERR_NO_ERROR && vl > 0 &&
                rd_kafka_header_get_last(h, "twin.origin.topic", &v, &vl) == RD_KAFKA_RESP_ERR_NO_ERROR &&
                rd_kafka_header_get_last(h, "twin.origin.offset", &v, &vl) == RD_KAFKA_RESP_ERR_NO_ERROR;
      if (!ok) (*bad_headers)++;
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return got;
}

/* ---- Alerts topic ---------------------------------------------------------- */

static void alerts_push(h_alerts_t *a, const bson_t *d) {
  if (a->n == a->cap) {
    a->cap = a->cap ? a->cap * 2 : 256;
    a->docs = realloc(a->docs, a->cap * sizeof *a->docs);
  }
  a->docs[a->n++] = bson_copy(d);
}

void h_alerts_free(h_alerts_t *a) {
  for (size_t i = 0; i < a->n; i++) bson_destroy(a->docs[i]);
  free(a->docs);
  memset(a, 0, sizeof *a);
}

const char *h_doc_str(const bson_t *d, const char *k) {
  bson_iter_t it;
  return bson_iter_init_find(&it, d, k) && BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL) : "";
}

void h_read_alerts(const h_scenario_t *s, size_t min, int quiet_ms, int timeout_s, h_alerts_t *out) {
  char err[512], group[160];
  memset(out, 0, sizeof *out);
  snprintf(group, sizeof group, "%s-alerts-reader-%d", s->group, rand());
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  rd_kafka_conf_set(c, "bootstrap.servers", s->bootstrap, err, sizeof err);
  rd_kafka_conf_set(c, "group.id", group, err, sizeof err);
  rd_kafka_conf_set(c, "enable.auto.commit", "false", err, sizeof err);
  rd_kafka_conf_set(c, "isolation.level", "read_committed", err, sizeof err);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
  if (!rk) fail_msg("alerts consumer: %s", err);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(s->partitions);
  size_t there = 0; /* messages on the topic when we start */
  for (int p = 0; p < s->partitions; p++) {
    int64_t lo = 0, hi = 0;
    if (rd_kafka_query_watermark_offsets(rk, s->alerts, p, &lo, &hi, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR)
      there += (size_t)(hi - lo);
    rd_kafka_topic_partition_list_add(l, s->alerts, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  }
  rd_kafka_assign(rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  int64_t deadline = (int64_t)time(NULL) + timeout_s, quiet = 0;
  while ((int64_t)time(NULL) < deadline) {
    if (out->n >= min && out->n >= there && there > 0) break;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
    if (!m) {
      quiet += 100;
      if (out->n >= min && quiet >= quiet_ms) break;
      continue;
    }
    if (m->err) {
      rd_kafka_message_destroy(m);
      continue;
    }
    quiet = 0;
    Twin__V1__MaintenanceAlert *a = twin__v1__maintenance_alert__unpack(NULL, m->len, m->payload);
    if (!a) fail_msg("alert at %s[%d]@%lld does not decode", s->alerts, m->partition, (long long)m->offset);
    if (m->key_len != strlen(a->product_id) || memcmp(m->key, a->product_id, m->key_len) != 0) out->bad_key++;
    bson_t d = BSON_INITIALIZER;
    tw_alert_to_bson(a, &d);
    alerts_push(out, &d);
    bson_destroy(&d);
    twin__v1__maintenance_alert__free_unpacked(a, NULL);
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
}

char *h_slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  size_t got;
  while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
    n += got;
    if (cap - n < 2) buf = realloc(buf, cap *= 2);
  }
  buf[n] = '\0';
  fclose(f);
  return buf;
}
