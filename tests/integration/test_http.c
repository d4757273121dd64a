/* test_http.c - the engine's HTTP API, the real binary over real sockets.
 *
 * The group setup produces a seeded twin-sim fleet to its own topics, starts
 * twin-engine with the HTTP server on a free loopback port (http.listen
 * 127.0.0.1:0, the port read from its log) and bearer tokens (one in
 * http.tokens, one in http.tokens.file), waits until its checkpoints cover
 * every message, adds two twins that only MongoDB holds (one with an id
 * that needs percent-encoding) and writes every stored twin, sorted by _id,
 * to twins.jsonl. tests/integration/test_http.py then checks the running
 * server against that file: every route and filter, paging, auth, errors,
 * the schema, /metrics. A second engine serves HTTPS with a self-signed
 * certificate (openssl req -x509) and no tokens. Engines that must refuse
 * to start (bad certificate, missing tokens file, port in use) and the
 * settings (check-config, --help-config, TWIN_HTTP_LISTEN) are checked here.
 * Needs `deploy/local/stack.sh up`; logs in /tmp/twin-it/http_<pid>_<t>/. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <mongoc/mongoc.h>

#include "harness.h"
#include "twin/log.h"

#define TOKEN "it-http-token-5b1f0c9e"
#define FILE_TOKEN "it-http-file-token-77d2"
#define MAX_LIMIT 25

static h_scenario_t g_s;
static pid_t g_engine;
static int g_n_engines; /* h_engine_start numbers its logs engine-<n>.log */
static char g_base[128];

/* ---- Helpers ------------------------------------------------------------------- */

static bool contains(const char *hay, const char *needle) { return hay && strstr(hay, needle) != NULL; }

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
  char cmd[4000];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  fprintf(stderr, "[test] %s\n", cmd);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static pid_t engine_start(const char *const *extra, char *log, size_t cap) {
  pid_t pid = h_engine_start(&g_s, 2, extra);
  snprintf(log, cap, "%s/engine-%d.log", g_s.logdir, g_n_engines++);
  return pid;
}

/* Waits for the engine's "listening on" line; writes its base URL. */
static void wait_listening(const char *log, const char *scheme, char *base, size_t cap) {
  char needle[64];
  snprintf(needle, sizeof needle, "listening on %s://", scheme);
  if (!h_wait_engine_log(needle, 60))
    fail_msg("the engine did not log '%s' within 60 s (see %s)", needle, log);
  char *text = h_slurp(log);
  const char *p = strstr(text, needle);
  assert_non_null(p);
  const char *host = p + strlen("listening on ");
  size_t n = strcspn(host, " ");
  snprintf(base, cap, "%.*s", (int)n, host);
  free(text);
  fprintf(stderr, "[test] engine serves %s\n", base);
}

/* Waits (60 s) for an engine that must refuse to start; returns its exit code. */
static int wait_exit(pid_t pid) {
  for (int i = 0; i < 600; i++) {
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    usleep(100000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  fail_msg("engine %d still running 60 s after a start-up that must fail", (int)pid);
  return -1;
}

static int python(const char *mode, const char *base, const char *extra) {
  return sh("/usr/bin/python3 %s/tests/integration/test_http.py %s --base %s --docs %s/twins.jsonl "
            "--schema %s/schemas/twin.schema.json --max-limit %d %s",
            g_s.source_dir, mode, base, g_s.logdir, g_s.source_dir, MAX_LIMIT, extra);
}

/* ---- Fleet --------------------------------------------------------------------- */

/* Copies a stored twin under a new _id, so that only MongoDB holds it (no
 * event names it, so no shard ever loads it). */
static void insert_copy(mongoc_collection_t *col, const bson_t *src, const char *id) {
  bson_t doc = BSON_INITIALIZER;
  bson_iter_t it;
  BSON_APPEND_UTF8(&doc, "_id", id);
  bson_iter_init(&it, src);
  while (bson_iter_next(&it))
    if (strcmp(bson_iter_key(&it), "_id") != 0) bson_append_iter(&doc, bson_iter_key(&it), -1, &it);
  bson_error_t e;
  if (!mongoc_collection_insert_one(col, &doc, NULL, NULL, &e)) fail_msg("insert %s: %s", id, e.message);
  bson_destroy(&doc);
}

/* The twin with the longest timeline (the richest document to copy). */
static void add_db_only_twins(mongoc_collection_t *col) {
  bson_t filter = BSON_INITIALIZER;
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, NULL, NULL);
  const bson_t *doc;
  bson_t *best = NULL;
  uint32_t best_n = 0;
  while (mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it, a;
    uint32_t n = 0;
    if (bson_iter_init_find(&it, doc, "timeline") && bson_iter_recurse(&it, &a))
      while (bson_iter_next(&a)) n++;
    if (!best || n > best_n) {
      if (best) bson_destroy(best);
      best = bson_copy(doc);
      best_n = n;
    }
  }
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  assert_non_null(best);
  insert_copy(col, best, "ZZ-HTTP-DB-ONLY-1");
  /* A slash, a space, non-ASCII, and characters a URL reserves. */
  insert_copy(col, best, "HTTP/DB only \xc3\x9f+%?#&=");
  bson_destroy(best);
}

static void dump_twins(mongoc_collection_t *col, const char *path) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort;
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
  BSON_APPEND_INT32(&sort, "_id", 1);
  bson_append_document_end(&opts, &sort);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, &opts, NULL);
  const bson_t *doc;
  size_t n = 0;
  while (mongoc_cursor_next(cur, &doc)) {
    char *j = bson_as_relaxed_extended_json(doc, NULL);
    fprintf(f, "%s\n", j);
    bson_free(j);
    n++;
  }
  bson_error_t e;
  if (mongoc_cursor_error(cur, &e)) fail_msg("reading twins: %s", e.message);
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  bson_destroy(&opts);
  fclose(f);
  fprintf(stderr, "[test] %zu stored twins written to %s\n", n, path);
  assert_true(n >= 30);
}

static int setup_fleet(void **state) {
  (void)state;
  h_scenario_init(&g_s, "http", 4);
  const char *sim[] = {"--seed",       "33",   "--products", "40",   "--events", "12000",
                       "--duplicates", "0.01", "--invalid",  "0.02", "--quiet",  NULL};
  h_run_sim(&g_s, sim);

  char tokens_file[400], log[400];
  snprintf(tokens_file, sizeof tokens_file, "%s/tokens.txt", g_s.logdir);
  FILE *f = fopen(tokens_file, "w");
  assert_non_null(f);
  fprintf(f, "# bearer tokens for test_http\n\n  %s  \n", FILE_TOKEN);
  fclose(f);
  char tf[450], lim[64];
  snprintf(tf, sizeof tf, "http.tokens.file=%s", tokens_file);
  snprintf(lim, sizeof lim, "http.max.limit=%d", MAX_LIMIT);
  const char *extra[] = {
      "http.listen=127.0.0.1:0", "http.tokens=other-token," TOKEN, tf, lim, "http.threads=3", NULL};
  g_engine = engine_start(extra, log, sizeof log);
  wait_listening(log, "http", g_base, sizeof g_base);
  assert_true(h_wait_caught_up(&g_s, 180));

  mongoc_client_t *c = mongoc_client_new(g_s.mongo_uri);
  mongoc_collection_t *col = mongoc_client_get_collection(c, g_s.database, "twins");
  add_db_only_twins(col);
  char path[400];
  snprintf(path, sizeof path, "%s/twins.jsonl", g_s.logdir);
  dump_twins(col, path);
  mongoc_collection_destroy(col);
  mongoc_client_destroy(c);
  return 0;
}

static int teardown_fleet(void **state) {
  (void)state;
  if (g_engine > 0) h_engine_stop(g_engine, SIGKILL);
  h_scenario_cleanup(&g_s);
  return 0;
}

/* ---- Tests --------------------------------------------------------------------- */

/* Every route, filter, error and header, auth on (test_http.py main). */
static void test_api(void **state) {
  (void)state;
  assert_int_equal(python("main", g_base, "--token " TOKEN " --token " FILE_TOKEN), 0);
}

/* The server's view while the engine keeps consuming: new events reach
 * memory before MongoDB, and the twin route says which one answered. */
static void test_live_updates(void **state) {
  (void)state;
  const char *sim[] = {"--seed", "34", "--products", "40", "--events", "3000", "--quiet", NULL};
  h_run_sim(&g_s, sim);
  char arg[400];
  snprintf(arg, sizeof arg, "--token " TOKEN " --truth %s", g_s.truth);
  assert_int_equal(python("live", g_base, arg), 0);
  assert_true(h_wait_caught_up(&g_s, 180));
}

/* A graceful stop with the server running: exit 0, port closed. */
static void test_stop(void **state) {
  (void)state;
  assert_int_equal(h_engine_stop(g_engine, SIGTERM), 0);
  g_engine = 0;
  assert_int_equal(python("down", g_base, ""), 0);
}

/* HTTPS with a self-signed certificate; no tokens: every route open. */
static void test_tls_no_auth(void **state) {
  (void)state;
  char cert[400], key[400], ca_arg[450], set_cert[450], set_key[450], log[400], base[128];
  snprintf(cert, sizeof cert, "%s/cert.pem", g_s.logdir);
  snprintf(key, sizeof key, "%s/key.pem", g_s.logdir);
  assert_int_equal(sh("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
                      "-addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout %s -out %s 2>/dev/null",
                      key, cert),
                   0);
  snprintf(set_cert, sizeof set_cert, "http.tls.cert=%s", cert);
  snprintf(set_key, sizeof set_key, "http.tls.key=%s", key);
  const char *extra[] = {"http.listen=127.0.0.1:0", set_cert, set_key, NULL};
  pid_t e = engine_start(extra, log, sizeof log);
  wait_listening(log, "https", base, sizeof base);
  snprintf(ca_arg, sizeof ca_arg, "--cafile %s", cert);
  assert_int_equal(python("tls", base, ca_arg), 0);
  /* curl agrees: the certificate as CA, and refused without it. */
  assert_int_equal(sh("curl -sf --cacert %s -o /dev/null %s/healthz", cert, base), 0);
  assert_int_not_equal(sh("curl -sf -o /dev/null %s/healthz", base), 0);
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
}

/* Settings that stop start-up, each naming the key. */
static void test_refusals(void **state) {
  (void)state;
  char log[400], arg[450], path[400];
  struct {
    const char *set1, *set2, *must_name;
  } cases[] = {
      {"http.tls.cert=%s/junk.pem", "http.tls.key=%s/junk.pem", "http.tls.cert"},
      {"http.tls.cert=%s/no-such-cert.pem", "http.tls.key=%s/no-such-key.pem", "http.tls.cert"},
      {"http.tokens.file=%s/no-such-tokens.txt", NULL, "http.tokens.file"},
      {"http.tokens.file=%s/empty-tokens.txt", NULL, "http.tokens.file"},
  };
  snprintf(path, sizeof path, "%s/junk.pem", g_s.logdir);
  FILE *f = fopen(path, "w");
  fputs("not a certificate\n", f);
  fclose(f);
  snprintf(path, sizeof path, "%s/empty-tokens.txt", g_s.logdir);
  f = fopen(path, "w");
  fputs("# nothing here\n\n", f);
  fclose(f);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char a1[450], a2[450] = "";
    snprintf(a1, sizeof a1, cases[i].set1, g_s.logdir);
    if (cases[i].set2) snprintf(a2, sizeof a2, cases[i].set2, g_s.logdir);
    const char *extra[] = {"http.listen=127.0.0.1:0", a1, cases[i].set2 ? a2 : NULL, NULL};
    int rc = wait_exit(engine_start(extra, log, sizeof log));
    char *text = h_slurp(log);
    fprintf(stderr, "[test] %s -> exit %d\n", a1, rc);
    if (rc == 0 || !contains(text, cases[i].must_name))
      fail_msg("engine with %s: exit %d, log must name %s:\n%s", a1, rc, cases[i].must_name, text);
    free(text);
  }

  /* A port another process listens on. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(fd, 1), 0);
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  snprintf(arg, sizeof arg, "http.listen=127.0.0.1:%d", ntohs(sa.sin_port));
  const char *extra[] = {arg, NULL};
  int rc = wait_exit(engine_start(extra, log, sizeof log));
  close(fd);
  char *text = h_slurp(log);
  if (rc == 0 || !contains(text, "http.listen"))
    fail_msg("engine on a busy port: exit %d, log must name http.listen:\n%s", rc, text);
  free(text);
}

/* The settings table: help, masking, environment, validation (no servers). */
static void test_settings(void **state) {
  (void)state;
  char out[400];
  snprintf(out, sizeof out, "%s/settings.out", g_s.logdir);
  assert_int_equal(sh("%s/twin-engine --help-config > %s", g_s.bin_dir, out), 0);
  char *text = h_slurp(out);
  const char *keys[] = {"http.listen",  "http.tokens",    "http.tokens.file", "http.tls.cert",
                        "http.tls.key", "http.max.limit", "http.threads",     "127.0.0.1:8080"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    if (!contains(text, keys[i])) fail_msg("--help-config lacks %s", keys[i]);
  free(text);

  assert_int_equal(sh("TWIN_HTTP_LISTEN='[::1]:9191' TWIN_HTTP_TOKENS='s3cr3t-a, s3cr3t-b' %s/twin-engine "
                      "check-config --set http.max.limit=77 > %s 2>&1",
                      g_s.bin_dir, out),
                   0);
  text = h_slurp(out);
  assert_true(contains(text, "http.listen=[::1]:9191"));
  assert_true(contains(text, "http.max.limit=77"));
  assert_true(contains(text, "http.tokens=(secret)"));
  assert_false(contains(text, "s3cr3t"));
  free(text);

  const struct {
    const char *sets, *must_name;
  } bad[] = {
      {"--set http.listen=8080", "http.listen"},
      {"--set http.listen=::1:8080", "http.listen"},
      {"--set http.listen=localhost:70000", "http.listen"},
      {"--set http.listen=", "http.listen"},
      {"--set http.tls.cert=/etc/hostname", "http.tls.key"},
      {"--set http.tls.key=/etc/hostname", "http.tls.cert"},
      {"--set http.max.limit=0", "http.max.limit"},
      {"--set http.threads=0", "http.threads"},
      {"--set 'http.tokens=a,,b'", "http.tokens"},
      {"--set 'http.tokens=has space'", "http.tokens"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int rc = sh("%s/twin-engine check-config %s > %s 2>&1", g_s.bin_dir, bad[i].sets, out);
    text = h_slurp(out);
    if (rc != 2 || !contains(text, bad[i].must_name))
      fail_msg("check-config %s: exit %d, output must name %s: %s", bad[i].sets, rc, bad[i].must_name, text);
    free(text);
  }
  /* off is a value, and the defaults are loopback. */
  assert_int_equal(sh("%s/twin-engine check-config --set http.listen=off > %s 2>&1", g_s.bin_dir, out), 0);
  assert_int_equal(
      sh("env -u TWIN_HTTP_LISTEN %s/twin-engine check-config | grep -qx 'http.listen=127.0.0.1:8080'",
         g_s.bin_dir),
      0);
}

int main(void) {
  mongoc_init();
  tw_log_route_mongoc();
  if (getenv("TWIN_TEST_FILTER")) cmocka_set_test_filter(getenv("TWIN_TEST_FILTER"));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_api),      cmocka_unit_test(test_live_updates),
      cmocka_unit_test(test_stop),     cmocka_unit_test(test_tls_no_auth),
      cmocka_unit_test(test_refusals), cmocka_unit_test(test_settings),
  };
  int rc = cmocka_run_group_tests(tests, setup_fleet, teardown_fleet);
  mongoc_cleanup();
  return rc;
}
