/* test_security.c - secrets stay secret, and the HTTP server limits what one
 * client can ask, on the real engine binary:
 *
 *   - secrets given as ${file:...}, ${env:...}, TWIN_* variables and --set
 *     (a Kafka SASL password, an SSL key password, HTTP bearer tokens, a
 *     MongoDB URI with a password) never appear in the engine's log (at
 *     log.level=debug), in any HTTP answer (/metrics included), or in the
 *     output of `twin-engine check-config`, also when a setting is wrong;
 *   - http.rate.limit: a client past its burst gets 429 with Retry-After,
 *     probes are never limited, the bucket refills, /metrics counts the 429s;
 *   - request size limits: a long URI (414), a long query (414), a body (413),
 *     oversized headers (431 or a closed connection, from libmicrohttpd).
 * Needs `deploy/local/stack.sh up`; logs in /tmp/twin-it/security_<pid>_<t>/. */
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

/* The secrets: each must never be seen outside the engine. */
#define S_SASL "sasl-Secret-4d1e9a"
#define S_SSLKEY "sslkey-Secret-c07f21"
#define S_TOKEN_ENV "token-Secret-88ab3e"
#define S_TOKEN_FILE "token-Secret-file-19f0"
#define S_MONGO "mongo-Secret-5e6b77"
static const char *const SECRETS[] = {S_SASL, S_SSLKEY, S_TOKEN_ENV, S_TOKEN_FILE, S_MONGO};
#define N_SECRETS (sizeof SECRETS / sizeof SECRETS[0])

static h_scenario_t g_s;

static void assert_no_secret(const char *what, const char *text) {
  for (size_t i = 0; i < N_SECRETS; i++)
    if (text && strstr(text, SECRETS[i])) fail_msg("%s shows the secret '%s'", what, SECRETS[i]);
}

/* Runs a shell command; returns its output (owned). */
static char *capture(const char *cmd) {
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t cap = 4096, n = 0, got;
  char *buf = malloc(cap);
  while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
    n += got;
    if (cap - n < 2) buf = realloc(buf, cap *= 2);
  }
  buf[n] = '\0';
  pclose(p);
  return buf;
}

/* The engine's HTTP port, from its "listening on http://127.0.0.1:PORT" line. */
static int wait_port(const char *log) {
  if (!h_wait_engine_log("listening on http://", 60)) fail_msg("no 'listening on' line in %s", log);
  char *text = h_slurp(log);
  const char *p = strstr(text, "listening on http://127.0.0.1:");
  assert_non_null(p);
  int port = atoi(p + strlen("listening on http://127.0.0.1:"));
  free(text);
  return port;
}

/* One raw HTTP/1.1 request; returns the status (0: connection closed
 * without an answer) and the whole response in *resp (owned). */
static int http_raw(int port, const char *request, size_t len, char **resp) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) fail_msg("cannot connect to port %d", port);
  for (size_t off = 0; off < len;) {
    ssize_t w = send(fd, request + off, len - off, MSG_NOSIGNAL);
    if (w <= 0) break; /* the server may close early on an oversized request */
    off += (size_t)w;
  }
  size_t cap = 65536, n = 0;
  char *buf = malloc(cap);
  ssize_t r;
  while ((r = recv(fd, buf + n, cap - n - 1, 0)) > 0) {
    n += (size_t)r;
    if (cap - n < 2) buf = realloc(buf, cap *= 2);
  }
  buf[n] = '\0';
  close(fd);
  *resp = buf;
  int status = 0;
  if (strncmp(buf, "HTTP/1.1 ", 9) == 0) status = atoi(buf + 9);
  return status;
}

static int http_get(int port, const char *path, const char *token, char **resp) {
  char req[20000];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s%s\r\n",
                   path, token ? "Authorization: Bearer " : "", token ? token : "", token ? "\r\n" : "");
  return http_raw(port, req, (size_t)n, resp);
}

static int setup(void **state) {
  (void)state;
  h_scenario_init(&g_s, "security", 4);
  const char *sim[] = {"--products", "60", "--events", "3000", NULL};
  h_run_sim(&g_s, sim);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  h_scenario_cleanup(&g_s);
  return 0;
}

/* The engine with every kind of secret, at debug level; then every HTTP
 * route and the rate limit; then its log. */
static void test_secrets_and_limits(void **state) {
  (void)state;
  char sasl_file[400], token_file[400], ref[450];
  snprintf(sasl_file, sizeof sasl_file, "%s/sasl.secret", g_s.logdir);
  snprintf(token_file, sizeof token_file, "%s/tokens", g_s.logdir);
  FILE *f = fopen(sasl_file, "w");
  assert_non_null(f);
  fprintf(f, "%s\n", S_SASL);
  fclose(f);
  f = fopen(token_file, "w");
  assert_non_null(f);
  fprintf(f, "%s\n", S_TOKEN_FILE);
  fclose(f);
  snprintf(ref, sizeof ref, "kafka.sasl.password=${file:%s}", sasl_file);
  char tf[450];
  snprintf(tf, sizeof tf, "http.tokens.file=%s", token_file);
  setenv("TWIN_HTTP_TOKENS", S_TOKEN_ENV, 1);
  const char *extra[] = {
      "log.level=debug",   "kafka.sasl.username=svc", ref, "kafka.ssl.key.password=" S_SSLKEY, tf,
      "http.rate.limit=5", "http.rate.burst=5",       NULL};
  pid_t pid = h_engine_start(&g_s, 2, extra);
  unsetenv("TWIN_HTTP_TOKENS");
  char log[400];
  snprintf(log, sizeof log, "%s/engine-0.log", g_s.logdir);
  int port = wait_port(log);
  assert_true(h_wait_caught_up(&g_s, 300));

  /* Every route, with and without a token; none shows a secret. Each
   * request is paced under the limit (5/s) so none is refused here. */
  static const char *const paths[] = {
      "/metrics", "/v1/twins?limit=3", "/v1/twins/nope", "/v1/twins/x/timeline",
      "/readyz",  "/healthz",          "/no/such/route", "/v1/twins?bad=1"};
  char *resp;
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    for (int k = 0; k < 3; k++) {
      const char *tok = k == 0 ? NULL : k == 1 ? S_TOKEN_ENV : "wrong-token";
      int st = http_get(port, paths[i], tok, &resp);
      assert_true(st >= 200 && st != 429);
      assert_no_secret(paths[i], resp);
      free(resp);
      usleep(250000);
    }
  }
  /* both token sources work */
  assert_int_equal(http_get(port, "/v1/twins?limit=1", S_TOKEN_FILE, &resp), 200);
  free(resp);
  usleep(250000);
  assert_int_equal(http_get(port, "/v1/twins?limit=1", S_TOKEN_ENV, &resp), 200);
  free(resp);

  /* Size limits. */
  sleep(2); /* a full bucket */
  char *big = malloc(20000);
  memset(big, 'a', 19999);
  big[19999] = '\0';
  char path[20100];
  snprintf(path, sizeof path, "/v1/twins/%.9000s", big);
  assert_int_equal(http_get(port, path, S_TOKEN_ENV, &resp), 414);
  free(resp);
  snprintf(path, sizeof path, "/v1/twins?owner=%.5000s", big);
  assert_int_equal(http_get(port, path, S_TOKEN_ENV, &resp), 414);
  free(resp);
  const char body_req[] =
      "POST /v1/twins HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer " S_TOKEN_ENV
      "\r\nContent-Length: 5\r\n\r\nhello";
  int st = http_raw(port, body_req, sizeof body_req - 1, &resp);
  assert_true(st == 405 || st == 413);
  free(resp);
  /* headers past the per-connection memory (64 KiB): refused, never served */
  char *huge = malloc(200000);
  int n = snprintf(huge, 200000, "GET /v1/twins HTTP/1.1\r\nHost: x\r\nX-Big: ");
  memset(huge + n, 'b', 150000);
  n += 150000;
  n += snprintf(huge + n, 200000 - (size_t)n, "\r\nConnection: close\r\n\r\n");
  st = http_raw(port, huge, (size_t)n, &resp);
  fprintf(stderr, "[test] 150 KB of headers: status %d\n", st);
  assert_true(st == 0 || st == 431 || st == 413 || st == 400);
  free(resp);
  free(huge);
  free(big);

  /* The rate limit: 5 per second, burst 5. */
  sleep(2);
  int ok = 0, limited = 0;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < 20; i++) { /* /metrics: no MongoDB query, so the requests come fast */
    st = http_get(port, "/metrics", S_TOKEN_ENV, &resp);
    if (st == 200) ok++;
    if (st == 429) {
      limited++;
      assert_non_null(strstr(resp, "Retry-After: "));
      assert_non_null(strstr(resp, "http.rate.limit"));
    }
    free(resp);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  fprintf(stderr, "[test] 20 requests in %.2f s: %d answered, %d refused with 429\n", secs, ok, limited);
  assert_int_equal(ok + limited, 20);
  /* the burst, plus what refilled meanwhile */
  assert_true(ok >= 5 && ok <= 5 + (int)(secs * 5) + 1);
  assert_true(limited > 0);
  /* also wrong tokens are limited: no guessing at speed */
  assert_int_equal(http_get(port, "/v1/twins", "guess-1", &resp), 429);
  free(resp);
  /* probes are never limited */
  for (int i = 0; i < 20; i++) {
    assert_int_equal(http_get(port, "/healthz", NULL, &resp), 200);
    free(resp);
  }
  /* the bucket refills */
  sleep(2);
  assert_int_equal(http_get(port, "/metrics", S_TOKEN_ENV, &resp), 200);
  assert_non_null(strstr(resp, "code=\"429\""));
  assert_no_secret("/metrics", resp);
  free(resp);

  assert_int_equal(h_engine_stop(pid, SIGTERM), 0);
  char *text = h_slurp(log);
  assert_non_null(text);
  assert_true(strlen(text) > 1000); /* debug level: plenty was logged */
  assert_no_secret("the engine log", text);
  free(text);
}

/* A MongoDB URI with a password, unreachable: the engine logs that it waits,
 * and never the password; check-config with wrong settings neither. */
static void test_secrets_in_errors(void **state) {
  (void)state;
  const char *extra[] = {"log.level=debug",
                         "mongo.uri=mongodb://svc:" S_MONGO "@127.0.0.1:9/?connectTimeoutMS=200", NULL};
  pid_t pid = h_engine_start(&g_s, 1, extra);
  char log[400];
  snprintf(log, sizeof log, "%s/engine-1.log", g_s.logdir);
  if (!h_wait_engine_log("not reachable", 60))
    fail_msg("the engine did not report MongoDB unreachable (%s)", log);
  h_engine_stop(pid, SIGTERM);
  char *text = h_slurp(log);
  assert_no_secret("the engine log (MongoDB unreachable)", text);
  free(text);

  char cmd[2000];
  snprintf(cmd, sizeof cmd,
           "'%s/twin-engine' check-config --set 'mongo.uri=mongdb://svc:" S_MONGO
           "@db' --set 'kafka.sasl.password=" S_SASL "' 2>&1",
           g_s.bin_dir);
  char *out = capture(cmd);
  fprintf(stderr, "[test] check-config said: %s", out);
  assert_non_null(strstr(out, "mongo.uri"));
  assert_no_secret("check-config (bad mongo.uri)", out);
  free(out);
  snprintf(cmd, sizeof cmd,
           "'%s/twin-engine' check-config --set 'kafka.ssl.key.password=" S_SSLKEY
           "' --set 'http.tokens=" S_TOKEN_ENV ",bad token' 2>&1",
           g_s.bin_dir);
  out = capture(cmd);
  fprintf(stderr, "[test] check-config said: %s", out);
  assert_non_null(strstr(out, "http.tokens"));
  assert_no_secret("check-config (bad http.tokens)", out);
  free(out);
  snprintf(cmd, sizeof cmd, "'%s/twin-engine' check-config --set 'kafka.sasl.password=" S_SASL "' 2>&1",
           g_s.bin_dir);
  out = capture(cmd);
  assert_no_secret("check-config (valid)", out);
  free(out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_secrets_and_limits),
      cmocka_unit_test(test_secrets_in_errors),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
