/* http.c - the engine's HTTP server (libmicrohttpd): the aftersales query
 * API, Prometheus metrics, health and readiness. See http.h.
 *
 * Routes (GET and HEAD; JSON errors {"error", "status"} everywhere):
 *   /v1/twins/{id}           the twin: this instance's memory first, else MongoDB
 *   /v1/twins/{id}/timeline  its lifecycle history, oldest first
 *   /v1/twins?filters        a page of stored twins, sorted by _id, cursor paging
 *   /metrics                 the engine's metrics plus the server's own
 *   /v1/stats                fleet figures for the viewer's fleet page
 *   /healthz, /readyz        probes (never behind the bearer tokens)
 *   /, /fleet, /twins/{id}, /ui/<file>   the twin viewer (web/, built in; no
 *                            data in it, so no token: its API calls need one)
 *
 * The request target is parsed here from the raw URI (libmicrohttpd's
 * decoded copy would turn %2F into a path separator and %00 into an end of
 * string). Every filter value becomes a BSON string (or a strictly parsed
 * number), never a document, so a query string cannot inject an operator.
 * This file reads MongoDB through its own client pool and writes nothing
 * but the list indexes (createIndexes at start). */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <mongoc/mongoc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "twin/log.h"
#include "twin/twin.h"
#include "util.h"
#include "web.h"

#define MAX_URI 8192              /* longer request targets: 414 */
#define MAX_QUERY 4096            /* longer query strings: 414 */
#define MAX_ID 256                /* product_id bytes, as the engine accepts them */
#define MAX_PARAMS 16             /* query parameters per request */
#define CONN_LIMIT 256u           /* concurrent connections */
#define CONN_TIMEOUT_S 30u        /* idle connection timeout */
#define CONN_MEMORY (64u * 1024u) /* per-connection buffer: request line and headers */
#define DEFAULT_LIMIT 50          /* page size when limit= is not given */
#define MONGO_SELECT_TIMEOUT_MS 5000
#define STATS_CACHE_MS 5000 /* /v1/stats answers from a copy at most this old */
#define STATS_BRAKE_TOP 10  /* products listed by soonest predicted brake service */

/* ---- Server state ---------------------------------------------------------- */

enum { R_TWIN, R_TIMELINE, R_LIST, R_METRICS, R_HEALTHZ, R_READYZ, R_STATS, R_WEB, R_OTHER, N_ROUTES };
static const char *const ROUTE_LABEL[N_ROUTES] = {"/v1/twins/{id}", "/v1/twins/{id}/timeline",
                                                  "/v1/twins",      "/metrics",
                                                  "/healthz",       "/readyz",
                                                  "/v1/stats",      "viewer",
                                                  "other"};

static const int CODES[] = {200, 304, 400, 401, 404, 405, 413, 414, 429, 500, 503};
#define N_CODES (sizeof CODES / sizeof CODES[0] + 1) /* the last slot: any other code */

static const double BUCKETS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                 0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define N_BUCKETS (sizeof BUCKETS / sizeof BUCKETS[0])

typedef struct {
  pthread_mutex_t mu;
  uint64_t requests[N_ROUTES][N_CODES];
  uint64_t buckets[N_ROUTES][N_BUCKETS + 1]; /* per bucket, not cumulative; the last: +Inf */
  uint64_t count[N_ROUTES];
  double sum[N_ROUTES];
} stats_t;

/* Request rate per client address: a token bucket each, refilled at
 * http.rate.limit per second up to http.rate.burst. The buckets live in a
 * set-associative table; a new address takes the least recently seen way
 * of its set, so the table's memory is fixed whatever the number of
 * clients. */
#define RATE_SETS 1024
#define RATE_WAYS 4
typedef struct {
  uint8_t addr[16]; /* IPv4 as v4-mapped IPv6 */
  bool used;
  double tokens;
  int64_t last_ns;
} rate_slot_t;

typedef struct {
  double per_s, burst; /* per_s 0: no limit */
  pthread_mutex_t mu;
  rate_slot_t slot[RATE_SETS][RATE_WAYS];
} rate_t;

struct tw_http {
  struct MHD_Daemon *d;
  tw_http_engine_t engine;
  mongoc_client_pool_t *pool;
  char *database;
  int64_t max_limit;
  char **tokens; /* owned; empty: no authentication */
  size_t n_tokens;
  char where[300]; /* "http://127.0.0.1:8080", for logs */
  stats_t stats;
  atomic_int in_flight; /* requests between their URI and their completion */
  pthread_t index_thread;
  bool index_started;
  atomic_bool stopping;
  atomic_bool starting;         /* MHD's log lines go to start_err too */
  char start_err[512];          /* what libmicrohttpd said while starting */
  _Atomic int64_t mongo_log_ms; /* last MongoDB error logged (rate limit) */
  rate_t rate;
  pthread_mutex_t stats_mu; /* guards the three below */
  pthread_cond_t stats_cv;  /* signalled when a computation ends */
  bool stats_busy;          /* a /v1/stats computation is running */
  char *stats_json;         /* its last answer (owned), or NULL */
  int64_t stats_ms;         /* when it was computed (monotonic) */
};

/* One request, from its URI to its completion (MHD's con_cls). */
typedef struct {
  char *uri; /* the raw request target; NULL when longer than MAX_URI */
  bool headers_seen, body_seen, responded;
  int code;
  int route;
  int64_t start_ns;
} req_t;

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* "2026-01-01T00:00:00.000Z" */
static void iso_ms(int64_t ms, char *buf, size_t cap) {
  time_t s = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  struct tm tm;
  gmtime_r(&s, &tm);
  size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, cap - n, ".%03dZ", (int)(ms - (int64_t)s * 1000));
}

/* ---- Responses ------------------------------------------------------------- */

typedef struct {
  const char *name;
  char value[64];
} header_t;

/* Queues body (bson_malloc'd, taken) with status code. */
static enum MHD_Result reply(struct MHD_Connection *c, req_t *r, int code, char *body, size_t len,
                             const char *type, const header_t *headers, size_t n_headers) {
  struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(len, body, bson_free);
  if (!resp) {
    bson_free(body);
    return MHD_NO;
  }
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
  for (size_t i = 0; i < n_headers; i++) MHD_add_response_header(resp, headers[i].name, headers[i].value);
  enum MHD_Result ok = MHD_queue_response(c, (unsigned)code, resp);
  MHD_destroy_response(resp);
  r->code = code;
  return ok;
}

static enum MHD_Result reply_json(struct MHD_Connection *c, req_t *r, int code, bson_string_t *s,
                                  const header_t *headers, size_t n_headers) {
  bson_string_append_c(s, '\n');
  size_t len = s->len;
  return reply(c, r, code, bson_string_free(s, false), len, "application/json", headers, n_headers);
}

/* Appends text as a JSON string literal (quotes included). */
static void json_str(bson_string_t *s, const char *text) {
  char *e = bson_utf8_escape_for_json(text, -1);
  bson_string_append_c(s, '"');
  bson_string_append(s, e ? e : "");
  bson_string_append_c(s, '"');
  bson_free(e);
}

static enum MHD_Result fail_h(struct MHD_Connection *c, req_t *r, int code, const header_t *headers,
                              size_t n_headers, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static enum MHD_Result fail_h(struct MHD_Connection *c, req_t *r, int code, const header_t *headers,
                              size_t n_headers, const char *fmt, ...) {
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  /* A message quoting client input may have been cut inside a UTF-8 sequence. */
  size_t n = strlen(msg);
  while (n && !bson_utf8_validate(msg, n, false)) msg[--n] = '\0';
  bson_string_t *s = bson_string_new("{\"error\": ");
  json_str(s, msg);
  bson_string_append_printf(s, ", \"status\": %d}", code);
  return reply_json(c, r, code, s, headers, n_headers);
}

#define fail(c, r, code, ...) fail_h(c, r, code, NULL, 0, __VA_ARGS__)

/* Client input quoted in a message: at most 80 bytes. */
#define Q(s) (int)(strlen(s) > 80 ? 80 : strlen(s)), (s)

/* ---- Metrics --------------------------------------------------------------- */

static void stats_record(stats_t *st, int route, int code, double seconds) {
  size_t k = 0;
  while (k < N_CODES - 1 && CODES[k] != code) k++;
  size_t b = 0;
  while (b < N_BUCKETS && seconds > BUCKETS[b]) b++;
  pthread_mutex_lock(&st->mu);
  st->requests[route][k]++;
  st->buckets[route][b]++;
  st->count[route]++;
  st->sum[route] += seconds;
  pthread_mutex_unlock(&st->mu);
}

static void stats_render(tw_http_t *h, bson_string_t *out) {
  stats_t *st = &h->stats;
  pthread_mutex_lock(&st->mu);
  bson_string_append(out,
                     "# HELP twin_http_requests_total HTTP requests answered, by route and status code.\n"
                     "# TYPE twin_http_requests_total counter\n");
  for (int r = 0; r < N_ROUTES; r++) {
    for (size_t k = 0; k < N_CODES; k++) {
      if (!st->requests[r][k]) continue;
      char code[16];
      if (k < N_CODES - 1)
        snprintf(code, sizeof code, "%d", CODES[k]);
      else
        snprintf(code, sizeof code, "other");
      bson_string_append_printf(out, "twin_http_requests_total{code=\"%s\",route=\"%s\"} %llu\n", code,
                                ROUTE_LABEL[r], (unsigned long long)st->requests[r][k]);
    }
  }
  bson_string_append(out, "# HELP twin_http_request_duration_seconds Time from a request's first line to its "
                          "response sent, by route.\n"
                          "# TYPE twin_http_request_duration_seconds histogram\n");
  for (int r = 0; r < N_ROUTES; r++) {
    if (!st->count[r]) continue;
    uint64_t cum = 0;
    for (size_t b = 0; b < N_BUCKETS; b++) {
      cum += st->buckets[r][b];
      bson_string_append_printf(out,
                                "twin_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                                ROUTE_LABEL[r], BUCKETS[b], (unsigned long long)cum);
    }
    bson_string_append_printf(out,
                              "twin_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n"
                              "twin_http_request_duration_seconds_sum{route=\"%s\"} %.9g\n"
                              "twin_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
                              ROUTE_LABEL[r], (unsigned long long)st->count[r], ROUTE_LABEL[r], st->sum[r],
                              ROUTE_LABEL[r], (unsigned long long)st->count[r]);
  }
  pthread_mutex_unlock(&st->mu);
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
  bson_string_append_printf(out,
                            "# HELP twin_http_connections Open HTTP connections.\n"
                            "# TYPE twin_http_connections gauge\n"
                            "twin_http_connections %u\n",
                            info ? info->num_connections : 0u);
}

/* ---- Request target -------------------------------------------------------- */

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Percent-decodes s[0..n) ('+' is a space when form) into a new string
 * (caller frees). NULL with why set when the escapes are malformed or the
 * result holds a NUL byte or is not valid UTF-8. */
static char *decode(const char *s, size_t n, bool form, size_t *out_len, const char **why) {
  char *out = tw_xmalloc(n + 1);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%') {
      int hi = i + 2 < n ? hexval(s[i + 1]) : -1, lo = i + 2 < n ? hexval(s[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        free(out);
        *why = "a malformed percent-escape (expected %XX with two hex digits)";
        return NULL;
      }
      out[k++] = (char)(hi * 16 + lo);
      i += 2;
    } else if (form && s[i] == '+') {
      out[k++] = ' ';
    } else {
      out[k++] = s[i];
    }
  }
  out[k] = '\0';
  if (memchr(out, '\0', k)) {
    free(out);
    *why = "a NUL byte";
    return NULL;
  }
  if (!bson_utf8_validate(out, k, false)) {
    free(out);
    *why = "bytes that are not valid UTF-8";
    return NULL;
  }
  *out_len = k;
  return out;
}

typedef struct {
  char *name, *value;
} param_t;

typedef struct {
  param_t v[MAX_PARAMS];
  int n;
} params_t;

static void params_free(params_t *p) {
  for (int i = 0; i < p->n; i++) {
    free(p->v[i].name);
    free(p->v[i].value);
  }
  p->n = 0;
}

/* Splits and decodes a query string; false with a message in err. */
static bool params_parse(const char *q, params_t *p, char *err, size_t cap) {
  p->n = 0;
  while (*q) {
    size_t n = strcspn(q, "&");
    if (n > 0) {
      const char *eq = memchr(q, '=', n);
      size_t nl = eq ? (size_t)(eq - q) : n, vl;
      const char *why = NULL;
      if (p->n == MAX_PARAMS) return tw_fail(err, cap, "more than %d query parameters", MAX_PARAMS);
      char *name = decode(q, nl, true, &vl, &why);
      if (!name) return tw_fail(err, cap, "a query parameter name has %s", why);
      char *value = decode(eq ? eq + 1 : q + n, eq ? n - nl - 1 : 0, true, &vl, &why);
      if (!value) {
        tw_fail(err, cap, "query parameter '%.*s' has %s", Q(name), why);
        free(name);
        return false;
      }
      for (int i = 0; i < p->n; i++) {
        if (strcmp(p->v[i].name, name) == 0) {
          tw_fail(err, cap, "query parameter '%.*s' is given twice", Q(name));
          free(name);
          free(value);
          return false;
        }
      }
      p->v[p->n].name = name;
      p->v[p->n].value = value;
      p->n++;
    }
    q += n;
    if (*q == '&') q++;
  }
  return true;
}

/* ---- Authentication -------------------------------------------------------- */

/* Time depends on the length of what the client sent, never on where it
 * differs from a token or on how long the tokens are. */
static bool token_ok(const tw_http_t *h, const char *given, size_t n) {
  unsigned ok = 0;
  for (size_t t = 0; t < h->n_tokens; t++) {
    const char *want = h->tokens[t];
    size_t wl = strlen(want);
    volatile unsigned char d = (unsigned char)(n != wl);
    for (size_t i = 0; i < n; i++) d |= (unsigned char)(given[i] ^ want[i % wl]);
    ok |= (unsigned)(d == 0);
  }
  return ok != 0;
}

/* True: go on. False: the 401 was queued (*res). */
/* The client's address as 16 bytes; false if MHD cannot tell. */
static bool client_addr(struct MHD_Connection *c, uint8_t out[16]) {
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (!ci || !ci->client_addr) return false;
  const struct sockaddr *sa = ci->client_addr;
  if (sa->sa_family == AF_INET) {
    memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    memcpy(out + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    return true;
  }
  if (sa->sa_family == AF_INET6) {
    memcpy(out, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
    return true;
  }
  return false;
}

/* Takes one token from the client's bucket; false (and *retry_s, whole
 * seconds until a token is back) when it is empty. */
static bool rate_take(rate_t *rt, struct MHD_Connection *c, int *retry_s) {
  uint8_t a[16];
  if (rt->per_s <= 0 || !client_addr(c, a)) return true;
  uint32_t hsh = 2166136261u;
  for (int i = 0; i < 16; i++) hsh = (hsh ^ a[i]) * 16777619u;
  int64_t now = mono_ns();
  pthread_mutex_lock(&rt->mu);
  rate_slot_t *set = rt->slot[hsh % RATE_SETS], *s = NULL;
  for (int w = 0; w < RATE_WAYS && !s; w++)
    if (set[w].used && memcmp(set[w].addr, a, 16) == 0) s = &set[w];
  if (!s) { /* a new client: the least recently seen way */
    s = &set[0];
    for (int w = 1; w < RATE_WAYS; w++)
      if (!set[w].used || (s->used && set[w].last_ns < s->last_ns)) s = &set[w];
    *s = (rate_slot_t){.used = true, .tokens = rt->burst, .last_ns = now};
    memcpy(s->addr, a, 16);
  }
  s->tokens += (double)(now - s->last_ns) / 1e9 * rt->per_s;
  if (s->tokens > rt->burst) s->tokens = rt->burst;
  s->last_ns = now;
  bool ok = s->tokens >= 1;
  if (ok)
    s->tokens -= 1;
  else
    *retry_s = (int)ceil((1 - s->tokens) / rt->per_s);
  pthread_mutex_unlock(&rt->mu);
  return ok;
}

static bool authorized(tw_http_t *h, struct MHD_Connection *c, req_t *r, enum MHD_Result *res) {
  if (!h->n_tokens) return true;
  const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
  header_t hd = {MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"twin-engine\""};
  if (!a || !*a) {
    *res = fail_h(c, r, 401, &hd, 1, "missing bearer token: send 'Authorization: Bearer <token>'");
    return false;
  }
  while (*a == ' ') a++;
  if (strncasecmp(a, "Bearer ", 7) != 0) {
    *res = fail_h(c, r, 401, &hd, 1, "the Authorization header must use the Bearer scheme");
    return false;
  }
  a += 7;
  while (*a == ' ') a++;
  size_t n = strlen(a);
  while (n && (a[n - 1] == ' ' || a[n - 1] == '\t')) n--;
  if (!token_ok(h, a, n)) {
    snprintf(hd.value, sizeof hd.value, "Bearer realm=\"twin-engine\", error=\"invalid_token\"");
    *res = fail_h(c, r, 401, &hd, 1, "invalid bearer token");
    return false;
  }
  return true;
}

/* ---- MongoDB --------------------------------------------------------------- */

/* 503 when MongoDB cannot be reached, 500 for other errors; the details go
 * to the log (at most one line per 5 s), not to the client. */
static enum MHD_Result mongo_fail(tw_http_t *h, struct MHD_Connection *c, req_t *r, const char *what,
                                  const bson_error_t *e) {
  int64_t now = tw_mono_ms(), last = atomic_load(&h->mongo_log_ms);
  if (now - last >= 5000 && atomic_compare_exchange_strong(&h->mongo_log_ms, &last, now)) {
    TW_WARN("http", "%s: MongoDB: %s (domain %u, code %u)", what, e->message, e->domain, e->code);
  }
  if (e->domain == MONGOC_ERROR_SERVER_SELECTION || e->domain == MONGOC_ERROR_STREAM) {
    header_t retry = {MHD_HTTP_HEADER_RETRY_AFTER, "5"};
    return fail_h(c, r, 503, &retry, 1, "MongoDB is unavailable; try again later");
  }
  return fail(c, r, 500, "MongoDB query failed (details in the engine's log)");
}

/* Finds one twin by _id (with projection opts, may be NULL). found=false
 * when there is none; false on a MongoDB error (e set). */
static bool mongo_find_one(tw_http_t *h, const char *id, const bson_t *projection, bson_t *out, bool *found,
                           bson_error_t *e) {
  mongoc_client_t *cl = mongoc_client_pool_pop(h->pool);
  mongoc_collection_t *col = mongoc_client_get_collection(cl, h->database, "twins");
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&filter, "_id", id);
  BSON_APPEND_INT64(&opts, "limit", 1);
  if (projection) BSON_APPEND_DOCUMENT(&opts, "projection", projection);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, &opts, NULL);
  const bson_t *doc;
  *found = false;
  if (mongoc_cursor_next(cur, &doc)) {
    bson_copy_to(doc, out);
    *found = true;
  }
  bool ok = !mongoc_cursor_error(cur, e);
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  bson_destroy(&opts);
  mongoc_collection_destroy(col);
  mongoc_client_pool_push(h->pool, cl);
  return ok;
}

/* Creates the indexes the list filters use, one command per index:
 * FerretDB 1.24 drops the connection (a server panic) when one
 * createIndexes names two or more indexes that all exist already. An
 * existing index with the same key and name is not an error. */
static void *index_main(void *arg) {
  tw_http_t *h = arg;
  static const char *const keys[] = {"stage",        "owner",       "timeline.site",   "alerts.active.rule",
                                     "open_recalls", "active_dtcs", "min_brake_pad_mm"};
  mongoc_client_t *cl = mongoc_client_pool_pop(h->pool);
  mongoc_database_t *db = mongoc_client_get_database(cl, h->database);
  int64_t t0 = tw_mono_ms();
  size_t ok = 0;
  for (size_t i = 0; i < sizeof keys / sizeof keys[0] && !atomic_load(&h->stopping); i++) {
    char name[64];
    snprintf(name, sizeof name, "%s_1", keys[i]);
    bson_t cmd = BSON_INITIALIZER, arr, ix, key, reply;
    BSON_APPEND_UTF8(&cmd, "createIndexes", "twins");
    BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &arr);
    BSON_APPEND_DOCUMENT_BEGIN(&arr, "0", &ix);
    BSON_APPEND_DOCUMENT_BEGIN(&ix, "key", &key);
    BSON_APPEND_INT32(&key, keys[i], 1);
    bson_append_document_end(&ix, &key);
    BSON_APPEND_UTF8(&ix, "name", name);
    bson_append_document_end(&arr, &ix);
    bson_append_array_end(&cmd, &arr);
    bson_error_t e = {0};
    if (mongoc_database_write_command_with_opts(db, &cmd, NULL, &reply, &e))
      ok++;
    else
      TW_WARN("http", "could not create index %s on %s.twins (lists filtering on %s scan the collection): %s",
              name, h->database, keys[i], e.message);
    bson_destroy(&reply);
    bson_destroy(&cmd);
    if (e.domain == MONGOC_ERROR_SERVER_SELECTION || e.domain == MONGOC_ERROR_STREAM) {
      TW_WARN("http", "MongoDB unreachable: the list indexes are not created until the next start");
      break;
    }
  }
  if (ok == sizeof keys / sizeof keys[0])
    TW_INFO("http", "list indexes on %s.twins ready (%lld ms)", h->database, (long long)(tw_mono_ms() - t0));
  mongoc_database_destroy(db);
  mongoc_client_pool_push(h->pool, cl);
  return NULL;
}

/* ---- Routes ---------------------------------------------------------------- */

/* The freshness headers of an in-memory twin. */
static size_t memory_headers(const tw_http_twin_meta_t *m, header_t *hd) {
  size_t n = 0;
  hd[n].name = "X-Twin-Source";
  snprintf(hd[n++].value, sizeof hd[0].value, "memory");
  hd[n].name = "X-Twin-Dirty";
  snprintf(hd[n++].value, sizeof hd[0].value, "%s", m->dirty ? "true" : "false");
  hd[n].name = "X-Twin-Last-Event-Ms";
  snprintf(hd[n++].value, sizeof hd[0].value, "%lld", (long long)m->last_event_ms);
  hd[n].name = "X-Twin-Shard";
  snprintf(hd[n++].value, sizeof hd[0].value, "%d", m->shard);
  hd[n].name = "X-Twin-Partition";
  snprintf(hd[n++].value, sizeof hd[0].value, "%d", (int)m->partition);
  if (m->flushed_ms > 0) {
    hd[n].name = "X-Twin-Flushed-At";
    iso_ms(m->flushed_ms, hd[n++].value, sizeof hd[0].value);
  }
  return n;
}

static size_t mongo_headers(const bson_t *doc, header_t *hd) {
  size_t n = 0;
  hd[n].name = "X-Twin-Source";
  snprintf(hd[n++].value, sizeof hd[0].value, "mongodb");
  bson_iter_t it;
  if (bson_iter_init_find(&it, doc, "updated_at") && BSON_ITER_HOLDS_DATE_TIME(&it)) {
    hd[n].name = "X-Twin-Updated-At";
    iso_ms(bson_iter_date_time(&it), hd[n++].value, sizeof hd[0].value);
  }
  return n;
}

/* GET /v1/twins/{id} and /v1/twins/{id}/timeline. */
static enum MHD_Result route_twin(tw_http_t *h, struct MHD_Connection *c, req_t *r, const char *id,
                                  bool timeline) {
  bson_t doc = BSON_INITIALIZER;
  header_t hd[8];
  size_t n_hd = 0;
  tw_http_twin_meta_t meta = {0};
  bool found = h->engine.twin && h->engine.twin(h->engine.ud, id, &doc, &meta);
  if (found) {
    n_hd = memory_headers(&meta, hd);
  } else {
    bson_reinit(&doc);
    bson_error_t e;
    bson_t proj = BSON_INITIALIZER;
    if (timeline) {
      BSON_APPEND_INT32(&proj, "timeline", 1);
      BSON_APPEND_INT32(&proj, "updated_at", 1);
    }
    bool ok = mongo_find_one(h, id, timeline ? &proj : NULL, &doc, &found, &e);
    bson_destroy(&proj);
    if (!ok) {
      bson_destroy(&doc);
      return mongo_fail(h, c, r, "GET /v1/twins/{id}", &e);
    }
    if (!found) {
      bson_destroy(&doc);
      return fail(c, r, 404, "no twin with product_id '%.*s'", Q(id));
    }
    n_hd = mongo_headers(&doc, hd);
  }
  bson_t out = BSON_INITIALIZER;
  if (timeline) {
    BSON_APPEND_UTF8(&out, "product_id", id);
    bson_iter_t it;
    if (bson_iter_init_find(&it, &doc, "timeline") && BSON_ITER_HOLDS_ARRAY(&it)) {
      bson_append_iter(&out, "timeline", -1, &it);
    } else {
      bson_t empty;
      BSON_APPEND_ARRAY_BEGIN(&out, "timeline", &empty);
      bson_append_array_end(&out, &empty);
    }
  }
  char *j = bson_as_relaxed_extended_json(timeline ? &out : &doc, NULL);
  bson_string_t *s = bson_string_new(j ? j : "{}");
  bson_free(j);
  bson_destroy(&out);
  bson_destroy(&doc);
  return reply_json(c, r, 200, s, hd, n_hd);
}

static const char *const LIST_PARAMS =
    "prefix, stage, owner, site, alert, recall, dtc, brake_below, limit, after";

/* GET /v1/twins?prefix=&stage=&owner=&site=&alert=&recall=&dtc=&brake_below=&limit=&after= */
static enum MHD_Result route_list(tw_http_t *h, struct MHD_Connection *c, req_t *r, const params_t *p) {
  /* Filters and the fields they match, as twinctl list has them. */
  static const char *const str_filters[][2] = {{"stage", "stage"},         {"owner", "owner"},
                                               {"site", "timeline.site"},  {"alert", "alerts.active.rule"},
                                               {"recall", "open_recalls"}, {"dtc", "active_dtcs"}};
  bson_t filter = BSON_INITIALIZER;
  int64_t limit = DEFAULT_LIMIT;
  const char *after = NULL, *prefix = NULL;
  double brake_below = NAN;
  for (int i = 0; i < p->n; i++) {
    const char *name = p->v[i].name, *v = p->v[i].value;
    size_t k = 0;
    while (k < 6 && strcmp(str_filters[k][0], name) != 0) k++;
    bool known = k < 6 || !strcmp(name, "limit") || !strcmp(name, "after") || !strcmp(name, "brake_below") ||
                 !strcmp(name, "prefix");
    if (!known) {
      bson_destroy(&filter);
      return fail(c, r, 400, "unknown query parameter '%.*s' (allowed: %s)", Q(name), LIST_PARAMS);
    }
    if (!*v) {
      bson_destroy(&filter);
      return fail(c, r, 400, "query parameter '%s' is empty", name);
    }
    if (strlen(v) > MAX_ID) {
      bson_destroy(&filter);
      return fail(c, r, 400, "query parameter '%s' is longer than %d bytes", name, MAX_ID);
    }
    if (k < 6) {
      tw_stage_t st;
      if (k == 0 && !tw_stage_parse(v, &st)) {
        bson_destroy(&filter);
        char names[256] = "";
        for (int s = 0; s < TW_STAGE_COUNT; s++) {
          strcat(names, s ? ", " : "");
          strcat(names, tw_stage_name((tw_stage_t)s));
        }
        return fail(c, r, 400, "stage '%.*s' is not allowed: expected one of %s", Q(v), names);
      }
      BSON_APPEND_UTF8(&filter, str_filters[k][1], v);
    } else if (!strcmp(name, "limit")) {
      char *end;
      errno = 0;
      long long x = strtoll(v, &end, 10);
      if (errno || *end || v[0] == '+' || v[0] == '-' || x < 1 || x > h->max_limit) {
        bson_destroy(&filter);
        return fail(c, r, 400, "limit '%.*s' is not allowed: expected an integer from 1 to %lld", Q(v),
                    (long long)h->max_limit);
      }
      limit = x;
    } else if (!strcmp(name, "after")) {
      after = v;
    } else if (!strcmp(name, "prefix")) {
      prefix = v;
    } else {
      char *end;
      errno = 0;
      brake_below = strtod(v, &end);
      if (errno || *end || !isfinite(brake_below) || brake_below < 0 || brake_below > 1000) {
        bson_destroy(&filter);
        return fail(c, r, 400, "brake_below '%.*s' is not allowed: expected a number of mm from 0 to 1000",
                    Q(v));
      }
    }
  }
  if (!isnan(brake_below)) {
    bson_t lt;
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "min_brake_pad_mm", &lt);
    BSON_APPEND_DOUBLE(&lt, "$lt", brake_below);
    bson_append_document_end(&filter, &lt);
  }
  if (after || prefix) {
    bson_t range;
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &range);
    if (after) BSON_APPEND_UTF8(&range, "$gt", after);
    if (prefix) {
      /* Ids starting with prefix: [prefix, prefix + U+10FFFF), compared
       * byte-wise as MongoDB compares strings; uses the _id index. */
      char upper[MAX_ID + 8];
      snprintf(upper, sizeof upper, "%s\xf4\x8f\xbf\xbf", prefix);
      BSON_APPEND_UTF8(&range, "$gte", prefix);
      BSON_APPEND_UTF8(&range, "$lt", upper);
    }
    bson_append_document_end(&filter, &range);
  }
  /* One more than asked: tells whether a next page exists. */
  bson_t opts = BSON_INITIALIZER, sort;
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
  BSON_APPEND_INT32(&sort, "_id", 1);
  bson_append_document_end(&opts, &sort);
  BSON_APPEND_INT64(&opts, "limit", limit + 1);

  mongoc_client_t *cl = mongoc_client_pool_pop(h->pool);
  mongoc_collection_t *col = mongoc_client_get_collection(cl, h->database, "twins");
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, &opts, NULL);
  bson_string_t *s = bson_string_new("{\"items\": [");
  const bson_t *doc;
  int64_t n = 0;
  char *last = NULL;
  bool more = false;
  while (mongoc_cursor_next(cur, &doc)) {
    if (n == limit) {
      more = true;
      break;
    }
    size_t jl;
    char *j = bson_as_relaxed_extended_json(doc, &jl);
    if (n) bson_string_append(s, ", ");
    bson_string_append(s, j);
    bson_free(j);
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_UTF8(&it)) {
      free(last);
      last = tw_xstrdup(bson_iter_utf8(&it, NULL));
    }
    n++;
  }
  bson_error_t e;
  bool ok = !mongoc_cursor_error(cur, &e);
  mongoc_cursor_destroy(cur);
  mongoc_collection_destroy(col);
  mongoc_client_pool_push(h->pool, cl);
  bson_destroy(&filter);
  bson_destroy(&opts);
  if (!ok) {
    free(last);
    bson_string_free(s, true);
    return mongo_fail(h, c, r, "GET /v1/twins", &e);
  }
  bson_string_append(s, "], \"next\": ");
  if (more && last)
    json_str(s, last);
  else
    bson_string_append(s, "null");
  bson_string_append_printf(s, ", \"limit\": %lld}", (long long)limit);
  free(last);
  header_t hd = {"X-Twin-Source", "mongodb"};
  return reply_json(c, r, 200, s, &hd, 1);
}

static enum MHD_Result route_metrics(tw_http_t *h, struct MHD_Connection *c, req_t *r) {
  bson_string_t *s = bson_string_new(NULL);
  if (h->engine.metrics) h->engine.metrics(h->engine.ud, s);
  if (s->len && s->str[s->len - 1] != '\n') bson_string_append_c(s, '\n');
  stats_render(h, s);
  size_t len = s->len;
  return reply(c, r, 200, bson_string_free(s, false), len, "text/plain; version=0.0.4; charset=utf-8", NULL,
               0);
}

static enum MHD_Result route_readyz(tw_http_t *h, struct MHD_Connection *c, req_t *r) {
  char why[256] = "";
  if (!h->engine.ready || h->engine.ready(h->engine.ud, why, sizeof why))
    return reply_json(c, r, 200, bson_string_new("{\"status\": \"ready\"}"), NULL, 0);
  return fail(c, r, 503, "not ready: %s", why[0] ? why : "starting");
}

/* ---- Fleet figures (/v1/stats) ------------------------------------------- */

/* Battery state-of-health histogram, %: bin 0 is below SOH_EDGES[0], bin i
 * is [SOH_EDGES[i-1], SOH_EDGES[i]), the last one is the last edge and up.
 * 80 % is the battery_health_low threshold. */
static const double SOH_EDGES[] = {80, 82, 84, 86, 88, 90, 92, 94, 96, 98};
#define N_SOH_BINS (sizeof SOH_EDGES / sizeof SOH_EDGES[0] + 1)

typedef struct {
  char *rule, *severity;
  int64_t n;
} rule_count_t;

typedef struct {
  int64_t predicted_ms;
  char *id, *model, *owner;
  double pad_mm; /* NAN: not reported */
} brake_item_t;

typedef struct {
  int64_t twins, by_stage[TW_STAGE_COUNT], soh_bins[N_SOH_BINS], soh_none, alerts;
  rule_count_t *rules;
  size_t n_rules;
  brake_item_t brake[STATS_BRAKE_TOP + 1];
  size_t n_brake;
} fleet_stats_t;

static const char *doc_str(const bson_t *doc, const char *path) {
  bson_iter_t it, d;
  if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, path, &d) && BSON_ITER_HOLDS_UTF8(&d))
    return bson_iter_utf8(&d, NULL);
  return NULL;
}

static bool iter_num(const bson_iter_t *it, double *out) {
  if (!BSON_ITER_HOLDS_NUMBER(it)) return false;
  *out = bson_iter_as_double(it);
  return isfinite(*out);
}

static bool doc_num(const bson_t *doc, const char *path, double *out) {
  bson_iter_t it, d;
  return bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, path, &d) && iter_num(&d, out);
}

/* Keeps the STATS_BRAKE_TOP soonest predictions, soonest first (ties by id). */
static void brake_offer(fleet_stats_t *fs, const bson_t *doc, int64_t predicted_ms) {
  const char *id = doc_str(doc, "_id");
  if (!id) return;
  size_t k = fs->n_brake;
  while (k > 0 && (fs->brake[k - 1].predicted_ms > predicted_ms ||
                   (fs->brake[k - 1].predicted_ms == predicted_ms && strcmp(fs->brake[k - 1].id, id) > 0)))
    k--;
  if (k == STATS_BRAKE_TOP) return;
  if (fs->n_brake == STATS_BRAKE_TOP) { /* drop the latest */
    brake_item_t *last = &fs->brake[STATS_BRAKE_TOP - 1];
    free(last->id), free(last->model), free(last->owner);
    fs->n_brake--;
  }
  memmove(&fs->brake[k + 1], &fs->brake[k], (fs->n_brake - k) * sizeof fs->brake[0]);
  brake_item_t *b = &fs->brake[k];
  const char *model = doc_str(doc, "model"), *owner = doc_str(doc, "owner");
  b->predicted_ms = predicted_ms;
  b->id = tw_xstrdup(id);
  b->model = model ? tw_xstrdup(model) : NULL;
  b->owner = owner ? tw_xstrdup(owner) : NULL;
  if (!doc_num(doc, "min_brake_pad_mm", &b->pad_mm)) b->pad_mm = NAN;
  fs->n_brake++;
}

static void stats_add(fleet_stats_t *fs, const bson_t *doc) {
  fs->twins++;
  tw_stage_t st;
  const char *stage = doc_str(doc, "stage");
  if (stage && tw_stage_parse(stage, &st)) fs->by_stage[st]++;
  double soh;
  if (doc_num(doc, "battery_health.soh_pct", &soh)) {
    size_t b = 0;
    while (b < N_SOH_BINS - 1 && soh >= SOH_EDGES[b]) b++;
    fs->soh_bins[b]++;
  } else {
    fs->soh_none++;
  }
  bson_iter_t it, arr, al;
  if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, "alerts.active", &arr) ||
      !BSON_ITER_HOLDS_ARRAY(&arr) || !bson_iter_recurse(&arr, &al))
    return;
  while (bson_iter_next(&al)) {
    if (!BSON_ITER_HOLDS_DOCUMENT(&al)) continue;
    const char *rule = NULL, *sev = "";
    int64_t pred = 0;
    bson_iter_t a;
    bson_iter_recurse(&al, &a);
    while (bson_iter_next(&a)) {
      const char *k = bson_iter_key(&a);
      if (!strcmp(k, "rule") && BSON_ITER_HOLDS_UTF8(&a)) rule = bson_iter_utf8(&a, NULL);
      if (!strcmp(k, "severity") && BSON_ITER_HOLDS_UTF8(&a)) sev = bson_iter_utf8(&a, NULL);
      if (!strcmp(k, "predicted_at_ms") && BSON_ITER_HOLDS_INT(&a)) pred = bson_iter_as_int64(&a);
    }
    if (!rule) continue;
    fs->alerts++;
    size_t r = 0;
    while (r < fs->n_rules && strcmp(fs->rules[r].rule, rule) != 0) r++;
    if (r == fs->n_rules) {
      fs->rules = tw_xrealloc(fs->rules, (r + 1) * sizeof *fs->rules);
      fs->rules[r] = (rule_count_t){tw_xstrdup(rule), tw_xstrdup(sev), 0};
      fs->n_rules++;
    }
    fs->rules[r].n++;
    if (!strcmp(rule, "brake_wear_predicted") && pred > 0) brake_offer(fs, doc, pred);
  }
}

static void stats_free(fleet_stats_t *fs) {
  for (size_t i = 0; i < fs->n_rules; i++) free(fs->rules[i].rule), free(fs->rules[i].severity);
  free(fs->rules);
  for (size_t i = 0; i < fs->n_brake; i++)
    free(fs->brake[i].id), free(fs->brake[i].model), free(fs->brake[i].owner);
}

static int rule_cmp(const void *a, const void *b) {
  const rule_count_t *x = a, *y = b;
  if (x->n != y->n) return x->n > y->n ? -1 : 1;
  return strcmp(x->rule, y->rule);
}

static void json_str_or_null(bson_string_t *s, const char *v) {
  if (v)
    json_str(s, v);
  else
    bson_string_append(s, "null");
}

static char *stats_json(fleet_stats_t *fs) {
  char when[40];
  iso_ms((int64_t)time(NULL) * 1000, when, sizeof when);
  bson_string_t *s = bson_string_new("{\"twins\": ");
  bson_string_append_printf(s, "%lld, \"by_stage\": {", (long long)fs->twins);
  for (int i = 0; i < TW_STAGE_COUNT; i++)
    bson_string_append_printf(s, "%s\"%s\": %lld", i ? ", " : "", tw_stage_name((tw_stage_t)i),
                              (long long)fs->by_stage[i]);
  bson_string_append_printf(s, "}, \"alerts_active\": %lld, \"alerts_by_rule\": [", (long long)fs->alerts);
  qsort(fs->rules, fs->n_rules, sizeof *fs->rules, rule_cmp);
  for (size_t i = 0; i < fs->n_rules; i++) {
    bson_string_append(s, i ? ", {\"rule\": " : "{\"rule\": ");
    json_str(s, fs->rules[i].rule);
    bson_string_append(s, ", \"severity\": ");
    json_str(s, fs->rules[i].severity);
    bson_string_append_printf(s, ", \"count\": %lld}", (long long)fs->rules[i].n);
  }
  bson_string_append(s, "], \"battery_soh\": {\"unit\": \"%\", \"bins\": [");
  for (size_t b = 0; b < N_SOH_BINS; b++) {
    bson_string_append(s, b ? ", {\"from\": " : "{\"from\": ");
    if (b)
      bson_string_append_printf(s, "%g", SOH_EDGES[b - 1]);
    else
      bson_string_append(s, "null");
    if (b < N_SOH_BINS - 1)
      bson_string_append_printf(s, ", \"to\": %g", SOH_EDGES[b]);
    else
      bson_string_append(s, ", \"to\": null");
    bson_string_append_printf(s, ", \"count\": %lld}", (long long)fs->soh_bins[b]);
  }
  bson_string_append_printf(s, "], \"no_data\": %lld}, \"brake_service_soonest\": [",
                            (long long)fs->soh_none);
  for (size_t i = 0; i < fs->n_brake; i++) {
    const brake_item_t *b = &fs->brake[i];
    bson_string_append(s, i ? ", {\"product_id\": " : "{\"product_id\": ");
    json_str(s, b->id);
    bson_string_append(s, ", \"model\": ");
    json_str_or_null(s, b->model);
    bson_string_append(s, ", \"owner\": ");
    json_str_or_null(s, b->owner);
    bson_string_append_printf(
        s, ", \"predicted_at_ms\": %lld, \"min_brake_pad_mm\": ", (long long)b->predicted_ms);
    if (isnan(b->pad_mm))
      bson_string_append(s, "null");
    else
      bson_string_append_printf(s, "%.17g", b->pad_mm);
    bson_string_append_c(s, '}');
  }
  bson_string_append(s, "], \"computed_at\": ");
  json_str(s, when);
  bson_string_append_c(s, '}');
  return bson_string_free(s, false);
}

/* One pass over the twins collection, reading only the fields the figures
 * need. Not an aggregation: FerretDB 1.24 has no $bucket, $facet, $cond or
 * $floor, and groups $unwind-ed nested fields under null, so the figures
 * are counted here, the same way on MongoDB and FerretDB. */
static bool stats_compute(tw_http_t *h, char **out, bson_error_t *e) {
  fleet_stats_t fs = {0};
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj;
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
  static const char *const fields[] = {"stage",
                                       "model",
                                       "owner",
                                       "battery_health.soh_pct",
                                       "min_brake_pad_mm",
                                       "alerts.active.rule",
                                       "alerts.active.severity",
                                       "alerts.active.predicted_at_ms"};
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) BSON_APPEND_INT32(&proj, fields[i], 1);
  bson_append_document_end(&opts, &proj);
  mongoc_client_t *cl = mongoc_client_pool_pop(h->pool);
  mongoc_collection_t *col = mongoc_client_get_collection(cl, h->database, "twins");
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, &opts, NULL);
  const bson_t *doc;
  while (mongoc_cursor_next(cur, &doc)) stats_add(&fs, doc);
  bool ok = !mongoc_cursor_error(cur, e);
  mongoc_cursor_destroy(cur);
  mongoc_collection_destroy(col);
  mongoc_client_pool_push(h->pool, cl);
  bson_destroy(&filter);
  bson_destroy(&opts);
  *out = ok ? stats_json(&fs) : NULL;
  stats_free(&fs);
  return ok;
}

/* GET /v1/stats: from a copy at most STATS_CACHE_MS old. One computation
 * at a time, outside the lock; meanwhile other requests get the previous
 * copy (a few seconds older) rather than wait, so a slow database holds one
 * HTTP thread, not all of them. Only the very first requests wait. */
static enum MHD_Result route_stats(tw_http_t *h, struct MHD_Connection *c, req_t *r) {
  pthread_mutex_lock(&h->stats_mu);
  while (!h->stats_json && h->stats_busy) pthread_cond_wait(&h->stats_cv, &h->stats_mu);
  bool stale = !h->stats_json || tw_mono_ms() - h->stats_ms >= STATS_CACHE_MS;
  if (stale && !h->stats_busy) {
    h->stats_busy = true;
    pthread_mutex_unlock(&h->stats_mu);
    char *json = NULL;
    bson_error_t e;
    bool ok = stats_compute(h, &json, &e);
    pthread_mutex_lock(&h->stats_mu);
    h->stats_busy = false;
    if (ok) {
      bson_free(h->stats_json);
      h->stats_json = json;
      h->stats_ms = tw_mono_ms();
    }
    pthread_cond_broadcast(&h->stats_cv);
    if (!ok) {
      pthread_mutex_unlock(&h->stats_mu);
      return mongo_fail(h, c, r, "GET /v1/stats", &e);
    }
  }
  bson_string_t *s = bson_string_new(h->stats_json);
  header_t hd[2] = {{"X-Twin-Source", "mongodb"}, {"Age", ""}};
  snprintf(hd[1].value, sizeof hd[1].value, "%lld", (long long)((tw_mono_ms() - h->stats_ms) / 1000));
  pthread_mutex_unlock(&h->stats_mu);
  return reply_json(c, r, 200, s, hd, 2);
}

/* ---- The viewer's files ---------------------------------------------------- */

/* Built-in files: revalidated with their ETag on every use (no-cache), so
 * an upgraded engine's page is never mixed with an old script. */
static enum MHD_Result route_web(struct MHD_Connection *c, req_t *r, const tw_web_asset_t *a) {
  const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
  bool fresh = inm && (strstr(inm, a->etag) || !strcmp(inm, "*"));
  struct MHD_Response *resp =
      fresh ? MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT)
            : MHD_create_response_from_buffer(a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
  if (!resp) return MHD_NO;
  if (!fresh) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, a->type);
  MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, a->etag);
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
  MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
  MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
  MHD_add_response_header(resp, "X-Frame-Options", "DENY");
  /* Only this server's own files and API; no inline script. */
  MHD_add_response_header(resp, "Content-Security-Policy",
                          "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                          "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'");
  int code = fresh ? 304 : 200;
  enum MHD_Result ok = MHD_queue_response(c, (unsigned)code, resp);
  MHD_destroy_response(resp);
  r->code = code;
  return ok;
}

/* ---- Dispatch -------------------------------------------------------------- */

static bool has_body(struct MHD_Connection *c) {
  const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  if (cl && strspn(cl, "0") != strlen(cl)) return true;
  return MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
}

static enum MHD_Result dispatch(tw_http_t *h, struct MHD_Connection *c, req_t *r, const char *method) {
  r->route = R_OTHER;
  if (!r->uri) return fail(c, r, 414, "the request URI is longer than %d bytes", MAX_URI);
  const char *qm = strchr(r->uri, '?');
  size_t path_len = qm ? (size_t)(qm - r->uri) : strlen(r->uri);
  const char *query = qm ? qm + 1 : "";
  char path[MAX_URI + 1];
  memcpy(path, r->uri, path_len);
  path[path_len] = '\0';

  /* Route on the raw path; decode the product_id segment alone. */
  const char *seg = NULL;
  size_t seg_len = 0;
  const tw_web_asset_t *asset = NULL;
  if (!strcmp(path, "/v1/twins")) {
    r->route = R_LIST;
  } else if (!strncmp(path, "/v1/twins/", 10)) {
    seg = path + 10;
    const char *slash = strchr(seg, '/');
    seg_len = slash ? (size_t)(slash - seg) : strlen(seg);
    if (!slash)
      r->route = R_TWIN;
    else if (!strcmp(slash, "/timeline"))
      r->route = R_TIMELINE;
  } else if (!strcmp(path, "/metrics")) {
    r->route = R_METRICS;
  } else if (!strcmp(path, "/healthz")) {
    r->route = R_HEALTHZ;
  } else if (!strcmp(path, "/readyz")) {
    r->route = R_READYZ;
  } else if (!strcmp(path, "/v1/stats")) {
    r->route = R_STATS;
  } else if ((asset = tw_web_find(path))) {
    r->route = R_WEB;
  }
  if (r->route == R_OTHER)
    return fail(c, r, 404,
                "no such route (routes: /v1/twins, /v1/twins/{product_id}, /v1/twins/{product_id}/timeline, "
                "/v1/stats, /metrics, /healthz, /readyz; the viewer: /, /fleet, /twins/{product_id})");
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    header_t allow = {MHD_HTTP_HEADER_ALLOW, "GET, HEAD"};
    return fail_h(c, r, 405, &allow, 1, "method %.*s is not allowed: this API is read-only (GET, HEAD)",
                  Q(method));
  }
  enum MHD_Result res;
  int retry_s = 1;
  /* Probes are never limited (an orchestrator polls them); everything else
   * is, before authentication, so tokens cannot be guessed at speed. */
  if (r->route != R_HEALTHZ && r->route != R_READYZ && !rate_take(&h->rate, c, &retry_s)) {
    header_t ra = {MHD_HTTP_HEADER_RETRY_AFTER, ""};
    snprintf(ra.value, sizeof ra.value, "%d", retry_s < 1 ? 1 : retry_s);
    return fail_h(c, r, 429, &ra, 1,
                  "too many requests from this address (http.rate.limit = %g per second, burst %g)",
                  h->rate.per_s, h->rate.burst);
  }
  /* The viewer's files hold no data; every API call the page makes is checked. */
  if (r->route != R_HEALTHZ && r->route != R_READYZ && r->route != R_WEB && !authorized(h, c, r, &res))
    return res;
  if (r->body_seen || has_body(c)) return fail(c, r, 413, "request bodies are not accepted");
  if (strlen(query) > MAX_QUERY)
    return fail(c, r, 414, "the query string is longer than %d bytes", MAX_QUERY);

  switch (r->route) {
  case R_HEALTHZ: return reply_json(c, r, 200, bson_string_new("{\"status\": \"ok\"}"), NULL, 0);
  case R_READYZ: return route_readyz(h, c, r);
  case R_METRICS: return route_metrics(h, c, r);
  case R_WEB: return route_web(c, r, asset);
  default: break;
  }

  /* /v1 routes: strict query strings. */
  params_t p;
  char err[400];
  if (!params_parse(query, &p, err, sizeof err)) {
    params_free(&p);
    return fail(c, r, 400, "%s", err);
  }
  if (r->route == R_LIST) {
    res = route_list(h, c, r, &p);
    params_free(&p);
    return res;
  }
  if (p.n) {
    res = fail(c, r, 400, "unknown query parameter '%.*s' (%s takes none)", Q(p.v[0].name),
               ROUTE_LABEL[r->route]);
    params_free(&p);
    return res;
  }
  params_free(&p);
  if (r->route == R_STATS) return route_stats(h, c, r);
  size_t id_len = 0;
  const char *why = NULL;
  char *id = decode(seg, seg_len, false, &id_len, &why);
  if (!id) return fail(c, r, 400, "product_id has %s", why);
  if (id_len == 0)
    res = fail(c, r, 400, "product_id is empty: GET /v1/twins/{product_id}");
  else if (id_len > MAX_ID)
    res = fail(c, r, 400, "product_id is longer than %d bytes", MAX_ID);
  else
    res = route_twin(h, c, r, id, r->route == R_TIMELINE);
  free(id);
  return res;
}

/* ---- libmicrohttpd callbacks ----------------------------------------------- */

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c) {
  (void)c;
  tw_http_t *h = cls;
  req_t *r = tw_xcalloc(1, sizeof *r);
  r->start_ns = mono_ns();
  r->route = R_OTHER;
  if (strlen(uri) <= MAX_URI) r->uri = tw_xstrdup(uri);
  atomic_fetch_add(&h->in_flight, 1);
  return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
  (void)url;
  (void)version;
  (void)upload_data;
  tw_http_t *h = cls;
  req_t *r = *con_cls;
  if (!r) return MHD_NO; /* on_uri always runs first */
  if (r->responded) {
    *upload_data_size = 0; /* a body we refused: discard it */
    return MHD_YES;
  }
  if (!r->headers_seen) {
    r->headers_seen = true;
    /* Answering before the body is read makes libmicrohttpd close the
     * connection: right for a request with a body (always refused). The
     * others are answered on the next call, which keeps it alive. */
    if (!has_body(c)) return MHD_YES;
    r->responded = true;
    return dispatch(h, c, r, method);
  }
  if (*upload_data_size) { /* a body the headers did not announce */
    r->body_seen = true;
    *upload_data_size = 0;
    return MHD_YES;
  }
  r->responded = true;
  return dispatch(h, c, r, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  (void)c;
  tw_http_t *h = cls;
  req_t *r = *con_cls;
  if (!r) return;
  double seconds = (double)(mono_ns() - r->start_ns) / 1e9;
  if (r->code) {
    stats_record(&h->stats, r->route, r->code, seconds);
    if (tw_log_enabled(TW_LOG_DEBUG)) {
      const char *u = r->uri ? r->uri : "(too long)";
      size_t ul = strcspn(u, "?");
      TW_DEBUG("http", "%.*s %d %.1f ms%s", (int)(ul > 200 ? 200 : ul), u, r->code, seconds * 1e3,
               toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed early)");
    }
  }
  free(r->uri);
  free(r);
  *con_cls = NULL;
  atomic_fetch_sub(&h->in_flight, 1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
  tw_http_t *h = cls;
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r' || msg[n - 1] == '.')) msg[--n] = '\0';
  if (atomic_load(&h->starting)) {
    size_t used = strlen(h->start_err);
    snprintf(h->start_err + used, sizeof h->start_err - used, "%s%s", used ? "; " : "", msg);
    TW_DEBUG("http", "libmicrohttpd: %s", msg);
  } else {
    /* Client mistakes and disconnects: not the operator's problem. */
    TW_DEBUG("http", "libmicrohttpd: %s", msg);
  }
}

/* ---- Start and stop -------------------------------------------------------- */

/* Reads a whole (small) file; NULL with a message naming key. */
static char *read_small_file(const char *key, const char *path, char *err, size_t cap) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    tw_fail(err, cap, "%s: cannot read '%s': %s", key, path, strerror(errno));
    return NULL;
  }
  size_t n = 0, sz = 4096;
  char *buf = tw_xmalloc(sz);
  size_t got;
  while ((got = fread(buf + n, 1, sz - n - 1, f)) > 0) {
    n += got;
    if (n + 1 == sz) {
      if (sz >= (1u << 20)) break;
      buf = tw_xrealloc(buf, sz *= 2);
    }
  }
  bool bad = ferror(f) || n + 1 == sz;
  int e = errno;
  fclose(f);
  if (bad) {
    free(buf);
    tw_fail(err, cap, "%s: cannot read '%s': %s", key, path, n + 1 == sz ? "larger than 1 MiB" : strerror(e));
    return NULL;
  }
  buf[n] = '\0';
  return buf;
}

static bool token_add(tw_http_t *h, const char *t, size_t n) {
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)t[i] <= ' ' || (unsigned char)t[i] >= 0x7f) return false;
  h->tokens = tw_xrealloc(h->tokens, (h->n_tokens + 1) * sizeof *h->tokens);
  h->tokens[h->n_tokens++] = tw_xstrndup(t, n);
  return true;
}

/* http.tokens (validated by tw_config_validate) and http.tokens.file. */
static bool load_tokens(tw_http_t *h, const tw_config_t *cfg, char *err, size_t cap) {
  for (const char *p = cfg->http_tokens; *p;) {
    size_t n = strcspn(p, ",");
    const char *t = p;
    size_t len = n;
    while (len && (*t == ' ' || *t == '\t')) t++, len--;
    while (len && (t[len - 1] == ' ' || t[len - 1] == '\t')) len--;
    if (len && !token_add(h, t, len))
      return tw_fail(err, cap,
                     "http.tokens: a token contains a space or a character that is not printable ASCII");
    p += n + (p[n] ? 1 : 0);
  }
  if (!*cfg->http_tokens_file) return true;
  char *text = read_small_file("http.tokens.file", cfg->http_tokens_file, err, cap);
  if (!text) return false;
  size_t before = h->n_tokens, line = 0;
  bool ok = true;
  for (char *p = text; ok && *p;) {
    size_t n = strcspn(p, "\r\n");
    line++;
    char *t = p;
    size_t len = n;
    while (len && (*t == ' ' || *t == '\t')) t++, len--;
    while (len && (t[len - 1] == ' ' || t[len - 1] == '\t')) len--;
    if (len && *t != '#' && !token_add(h, t, len))
      ok = tw_fail(err, cap,
                   "http.tokens.file: '%s' line %zu: the token contains a space or a character that is not "
                   "printable ASCII",
                   cfg->http_tokens_file, line);
    p += n;
    if (*p == '\r') p++;
    if (*p == '\n') p++;
  }
  /* Wipe the file's copy of the secrets. */
  memset(text, 0, strlen(text));
  free(text);
  if (ok && h->n_tokens == before)
    ok = tw_fail(err, cap, "http.tokens.file: '%s' holds no token (one per line; '#' starts a comment)",
                 cfg->http_tokens_file);
  return ok;
}

/* Resolves http.listen into addr; *v6 when it is an IPv6 address. */
static bool resolve_listen(const char *listen, struct sockaddr_storage *addr, socklen_t *len, bool *v6,
                           char *err, size_t cap) {
  char host[256];
  const char *colon = strrchr(listen, ':');
  if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof host)
    return tw_fail(err, cap, "http.listen = '%s': expected host:port", listen);
  const char *hs = listen;
  size_t hl = (size_t)(colon - listen);
  if (hs[0] == '[' && hl >= 2 && hs[hl - 1] == ']') hs++, hl -= 2;
  memcpy(host, hs, hl);
  host[hl] = '\0';
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  int rc = getaddrinfo(host, colon + 1, &hints, &res);
  if (rc != 0 || !res)
    return tw_fail(err, cap, "http.listen = '%s': cannot resolve '%s': %s", listen, host, gai_strerror(rc));
  memcpy(addr, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  *v6 = res->ai_family == AF_INET6;
  freeaddrinfo(res);
  return true;
}

static bool make_pool(tw_http_t *h, const tw_config_t *cfg, char *err, size_t cap) {
  bson_error_t e;
  mongoc_uri_t *uri = mongoc_uri_new_with_error(cfg->mongo_uri, &e);
  if (!uri) return tw_fail(err, cap, "mongo.uri: %s", e.message);
  /* An HTTP client should hear "unavailable" in seconds, not after 30 s. */
  if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, MONGO_SELECT_TIMEOUT_MS);
  if (!mongoc_uri_has_option(uri, MONGOC_URI_APPNAME))
    mongoc_uri_set_option_as_utf8(uri, MONGOC_URI_APPNAME, "twin-engine-http");
  h->pool = mongoc_client_pool_new_with_error(uri, &e);
  mongoc_uri_destroy(uri);
  if (!h->pool) return tw_fail(err, cap, "mongo.uri: %s", e.message);
  mongoc_client_pool_set_error_api(h->pool, MONGOC_ERROR_API_VERSION_2);
  mongoc_client_pool_max_size(h->pool, (uint32_t)cfg->http_threads + 2);
  return true;
}

tw_http_t *tw_http_start(const tw_config_t *cfg, const tw_http_engine_t *engine, char *err, size_t err_cap) {
  tw_http_t *h = tw_xcalloc(1, sizeof *h);
  pthread_mutex_init(&h->stats.mu, NULL);
  pthread_mutex_init(&h->stats_mu, NULL);
  pthread_cond_init(&h->stats_cv, NULL);
  atomic_init(&h->in_flight, 0);
  if (engine) h->engine = *engine;
  if (strcmp(cfg->http_listen, "off") == 0) {
    TW_INFO("http", "HTTP server off (http.listen = off)");
    return h;
  }
  h->database = tw_xstrdup(cfg->mongo_database);
  h->max_limit = cfg->http_max_limit;
  h->rate.per_s = (double)cfg->http_rate_limit;
  h->rate.burst = (double)(cfg->http_rate_burst ? cfg->http_rate_burst : 2 * cfg->http_rate_limit);
  if (h->rate.burst < 1) h->rate.burst = 1;
  pthread_mutex_init(&h->rate.mu, NULL);
  char *cert = NULL, *key = NULL;
  struct sockaddr_storage addr;
  socklen_t addr_len;
  bool v6 = false, tls = *cfg->http_tls_cert && *cfg->http_tls_key;
  if (!load_tokens(h, cfg, err, err_cap)) goto fail;
  if (!resolve_listen(cfg->http_listen, &addr, &addr_len, &v6, err, err_cap)) goto fail;
  if (tls) {
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
      tw_fail(err, err_cap, "http.tls.cert: this libmicrohttpd was built without TLS support");
      goto fail;
    }
    if (!(cert = read_small_file("http.tls.cert", cfg->http_tls_cert, err, err_cap))) goto fail;
    if (!(key = read_small_file("http.tls.key", cfg->http_tls_key, err, err_cap))) goto fail;
    if (!strstr(cert, "-----BEGIN CERTIFICATE-----")) {
      tw_fail(err, err_cap, "http.tls.cert: '%s' holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
              cfg->http_tls_cert);
      goto fail;
    }
    if (!strstr(key, "-----BEGIN ") || !strstr(key, "PRIVATE KEY-----")) {
      tw_fail(err, err_cap, "http.tls.key: '%s' holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)",
              cfg->http_tls_key);
      goto fail;
    }
  }
  if (!make_pool(h, cfg, err, err_cap)) goto fail;

  unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC;
  if (v6) {
    flags |= MHD_USE_IPv6;
    if (IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&addr)->sin6_addr)) flags |= MHD_USE_DUAL_STACK;
  }
  if (tls) flags |= MHD_USE_TLS;
  struct MHD_OptionItem opts[16];
  int n = 0;
#define OPT(o, v, p) opts[n++] = (struct MHD_OptionItem){o, (intptr_t)(v), p}
  OPT(MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h); /* first, so it gets every message */
  OPT(MHD_OPTION_SOCK_ADDR, 0, &addr);
  OPT(MHD_OPTION_CONNECTION_LIMIT, CONN_LIMIT, NULL);
  OPT(MHD_OPTION_CONNECTION_TIMEOUT, CONN_TIMEOUT_S, NULL);
  OPT(MHD_OPTION_CONNECTION_MEMORY_LIMIT, CONN_MEMORY, NULL);
  if (cfg->http_threads > 1) OPT(MHD_OPTION_THREAD_POOL_SIZE, cfg->http_threads, NULL);
  OPT(MHD_OPTION_URI_LOG_CALLBACK, on_uri, h);
  OPT(MHD_OPTION_NOTIFY_COMPLETED, on_completed, h);
  if (tls) {
    OPT(MHD_OPTION_HTTPS_MEM_CERT, 0, cert);
    OPT(MHD_OPTION_HTTPS_MEM_KEY, 0, key);
  }
  OPT(MHD_OPTION_END, 0, NULL);
#undef OPT
  atomic_store(&h->starting, true);
  /* The port is also in addr; given here for libmicrohttpd's messages. */
  uint16_t port =
      ntohs(v6 ? ((struct sockaddr_in6 *)&addr)->sin6_port : ((struct sockaddr_in *)&addr)->sin_port);
  h->d = MHD_start_daemon(flags, port, NULL, NULL, on_request, h, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
  atomic_store(&h->starting, false);
  if (!h->d) {
    const char *why = h->start_err[0] ? h->start_err : "libmicrohttpd gave no reason";
    bool tls_err =
        tls && (strcasestr(why, "tls") || strcasestr(why, "certificate") || strcasestr(why, "key"));
    if (tls_err)
      tw_fail(err, err_cap, "http.tls.cert / http.tls.key ('%s', '%s'): rejected: %s", cfg->http_tls_cert,
              cfg->http_tls_key, why);
    else
      tw_fail(err, err_cap, "http.listen = '%s': cannot start the HTTP server: %s", cfg->http_listen, why);
    goto fail;
  }
  if (key) memset(key, 0, strlen(key));
  free(cert);
  free(key);
  cert = key = NULL;

  const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
  char host[200];
  snprintf(host, sizeof host, "%.*s", (int)(strrchr(cfg->http_listen, ':') - cfg->http_listen),
           cfg->http_listen);
  snprintf(h->where, sizeof h->where, "%s://%s:%u", tls ? "https" : "http", host, info ? info->port : 0u);
  TW_INFO("http", "listening on %s (%lld threads, bearer tokens: %zu%s)", h->where,
          (long long)cfg->http_threads, h->n_tokens, h->n_tokens ? "" : ", authentication off");
  bool loopback = !strncmp(host, "127.", 4) || !strcmp(host, "[::1]") || !strcmp(host, "localhost");
  if (!h->n_tokens && !loopback)
    TW_WARN("http",
            "HTTP API on %s without authentication: anyone who can reach it can read every twin (set "
            "http.tokens or http.tokens.file)",
            h->where);
  if (pthread_create(&h->index_thread, NULL, index_main, h) == 0) h->index_started = true;
  return h;

fail:
  if (key) memset(key, 0, strlen(key));
  free(cert);
  free(key);
  tw_http_stop(h);
  return NULL;
}

void tw_http_stop(tw_http_t *h) {
  if (!h) return;
  atomic_store(&h->stopping, true);
  if (h->d) {
    /* Stop accepting, give requests in flight up to 5 s, then close. */
    MHD_socket fd = MHD_quiesce_daemon(h->d);
    for (int i = 0; i < 500 && atomic_load(&h->in_flight) > 0; i++) {
      struct timespec ts = {0, 10 * 1000000L};
      nanosleep(&ts, NULL);
    }
    MHD_stop_daemon(h->d);
    if (fd != MHD_INVALID_SOCKET) close(fd);
    TW_INFO("http", "stopped listening on %s", h->where);
  }
  if (h->index_started) pthread_join(h->index_thread, NULL);
  if (h->pool) mongoc_client_pool_destroy(h->pool);
  for (size_t i = 0; i < h->n_tokens; i++) {
    memset(h->tokens[i], 0, strlen(h->tokens[i]));
    free(h->tokens[i]);
  }
  free(h->tokens);
  free(h->database);
  pthread_mutex_destroy(&h->stats.mu);
  pthread_mutex_destroy(&h->rate.mu);
  pthread_mutex_destroy(&h->stats_mu);
  pthread_cond_destroy(&h->stats_cv);
  bson_free(h->stats_json);
  free(h);
}
