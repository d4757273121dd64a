/* fuzz_http.c - libFuzzer target for the HTTP request handling: the input
 * is the raw bytes a client sends (request line, headers, maybe a body).
 * They go through a socketpair into libmicrohttpd, which calls the engine's
 * own callbacks (engine/http.c, compiled into this file so its static
 * functions are the ones under test) with a stub engine: no listening
 * socket, no network, no threads (MHD_run in this thread).
 *
 * The stub engine holds every twin whose id does not start with 'm'; those
 * and the list route go to MongoDB, here an address nothing listens on, so
 * they take the "MongoDB is unavailable" path. The first input byte picks
 * bearer-token authentication on or off. */
#include "http.c"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

static tw_http_t *g_h;
static struct MHD_Daemon *g_d;

static bool stub_twin(void *ud, const char *id, bson_t *doc, tw_http_twin_meta_t *meta) {
  (void)ud;
  if (id[0] == 'm') return false;
  tw_twin_t *t = tw_twin_new(id, 0);
  tw_twin_to_bson(t, 1767225600000, doc);
  tw_twin_destroy(t);
  *meta = (tw_http_twin_meta_t){.partition = 3, .shard = 1, .dirty = true, .last_event_ms = 1767225600000};
  return true;
}

static void stub_metrics(void *ud, bson_string_t *out) {
  (void)ud;
  bson_string_append(out, "twin_fuzz 1");
}

static bool stub_ready(void *ud, char *why, size_t cap) {
  (void)ud;
  snprintf(why, cap, "fuzzing");
  return false;
}

static void setup(void) {
  mongoc_init();
  tw_log_set_level(TW_LOG_ERROR);
  g_h = tw_xcalloc(1, sizeof *g_h);
  pthread_mutex_init(&g_h->stats.mu, NULL);
  g_h->engine = (tw_http_engine_t){NULL, stub_twin, stub_metrics, stub_ready};
  g_h->database = tw_xstrdup("fuzz");
  g_h->max_limit = 1000;
  snprintf(g_h->where, sizeof g_h->where, "fuzz");
  tw_config_t cfg;
  tw_config_init(&cfg);
  char err[256];
  if (!tw_config_set(
          &cfg, "mongo.uri",
          "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=1&connectTimeoutMS=1&serverSelectionTryOnce=true",
          "fuzz", err, sizeof err) ||
      !make_pool(g_h, &cfg, err, sizeof err)) {
    fprintf(stderr, "fuzz_http: %s\n", err);
    abort();
  }
  tw_config_cleanup(&cfg);
  g_d = MHD_start_daemon(MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, g_h,
                         MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, g_h, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                         (size_t)CONN_MEMORY, MHD_OPTION_URI_LOG_CALLBACK, on_uri, g_h,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, g_h, MHD_OPTION_END);
  if (!g_d) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char *tokens[1] = {"fuzz-token"};
  if (!g_h) setup();
  if (size == 0) return 0;
  g_h->tokens = data[0] & 1 ? tokens : NULL;
  g_h->n_tokens = data[0] & 1 ? 1 : 0;
  data++;
  size--;

  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) abort();
  fcntl(sv[0], F_SETFL, O_NONBLOCK);
  struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000)};
  peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (MHD_add_connection(g_d, sv[1], (struct sockaddr *)&peer, sizeof peer) != MHD_YES) abort();
  size_t sent = 0;
  char buf[65536];
  bool eof = false;
  /* Send, let the server work, read its answers, until it closes. */
  for (int round = 0; round < 2000 && !eof; round++) {
    if (sent < size) {
      ssize_t n = write(sv[0], data + sent, size - sent);
      if (n > 0) sent += (size_t)n;
      if (sent == size) shutdown(sv[0], SHUT_WR);
    } else if (size == 0 || round == 0) {
      shutdown(sv[0], SHUT_WR);
    }
    MHD_run(g_d);
    ssize_t n;
    while ((n = read(sv[0], buf, sizeof buf)) > 0) {
    }
    if (n == 0) eof = true;
  }
  close(sv[0]);
  MHD_run(g_d); /* lets the server notice and clean up */
  return 0;
}
