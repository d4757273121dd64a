/* faults.c - see faults.h. */
#include "faults.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <mongoc/mongoc.h>

#include "twin/log.h"

static unsigned g_seed;

void f_seed_init(void) {
  const char *seed = getenv("TWIN_TEST_SEED");
  g_seed = seed && *seed ? (unsigned)strtoul(seed, NULL, 10) : (unsigned)time(NULL);
  fprintf(stderr, "[fault] TWIN_TEST_SEED=%u (set it to replay these fault points)\n", g_seed);
  srand(g_seed);
}

int f_main(const struct CMUnitTest *tests, size_t n) {
  f_seed_init();
  mongoc_init();
  tw_log_route_mongoc();
  const char *filter = getenv("TWIN_TEST_FILTER");
  if (filter && *filter) cmocka_set_test_filter(filter);
  int rc = _cmocka_run_group_tests("tests", tests, n, NULL, NULL);
  mongoc_cleanup();
  return rc;
}

int f_rnd(int lo, int hi) { return lo + (int)(rand_r(&g_seed) % (unsigned)(hi - lo + 1)); }

void f_msleep(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

int64_t f_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static FILE *summary_file(void) {
  const char *path = getenv("TWIN_TEST_FAULTS_SUMMARY");
  return fopen(path && *path ? path : "faults-summary.tsv", "a");
}

/* A scenario starts on a whole stack: one that failed while Kafka or
 * FerretDB was down (killed, stopped) must not fail every scenario after it.
 * stack.sh up starts only what is not running. */
static void stack_up(void) {
  const char *src = getenv("TWIN_SOURCE_DIR");
  char cmd[1024];
  mkdir("/tmp/twin-it", 0755);
  snprintf(cmd, sizeof cmd, "bash '%s/deploy/local/stack.sh' up >> /tmp/twin-it/fault-stack.log 2>&1",
           src && *src ? src : ".");
  if (system(cmd) != 0) fprintf(stderr, "[fault] stack.sh up failed: see /tmp/twin-it/fault-stack.log\n");
}

void f_begin(f_run_t *r, const char *name) {
  /* The scenarios kill servers that the proxy and the checks write to: a
   * write to a dead peer is an error to handle, not the end of the test. */
  signal(SIGPIPE, SIG_IGN);
  stack_up();
  memset(r, 0, sizeof *r);
  snprintf(r->name, sizeof r->name, "%s", name);
  r->t0_ms = f_now_ms();
  /* Replaced by f_finish's line; left as is when the scenario fails before
   * its end check, so the table shows it did not finish. */
  FILE *f = summary_file();
  if (f) {
    fprintf(f, "%s\t-\t-\t-\t-\t-\t-\t-\t-\tUNFINISHED\n", r->name);
    fclose(f);
  }
}

/* ---- Expected alert transitions -------------------------------------------- */

typedef struct {
  char **v;
  size_t n, cap;
} strs_t;

static void strs_add(strs_t *s, const char *alert_id, const char *state) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 256;
    s->v = realloc(s->v, s->cap * sizeof *s->v);
  }
  size_t len = strlen(alert_id) + strlen(state) + 2;
  s->v[s->n] = malloc(len);
  snprintf(s->v[s->n++], len, "%s %s", alert_id, state);
}

static void strs_free(strs_t *s) {
  for (size_t i = 0; i < s->n; i++) free(s->v[i]);
  free(s->v);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void on_expected_alert(void *ud, const Twin__V1__MaintenanceAlert *a) {
  if (h_alert_rule_interleaved(a->rule_id)) return; /* depends on how the two topics interleave */
  strs_add(ud, a->alert_id, a->state == TWIN__V1__ALERT_STATE__RAISED ? "RAISED" : "CLEARED");
}

/* ---- The end check ---------------------------------------------------------- */

void f_finish(f_run_t *r, const h_scenario_t *s) {
  int64_t events = h_end_offsets_total(s);
  h_expected_t e;
  strs_t want = {0};
  h_expected_build_alerts(s, 64, &e, on_expected_alert, &want);
  int64_t lost = 0, dup = 0;
  int diffs = h_compare_store_counts(s, &e, &lost, &dup);
  int truth = h_check_truth(s);

  /* Alerts: the expected transitions against the deduplicated topic. */
  qsort(want.v, want.n, sizeof *want.v, cmp_str);
  size_t wn = 0; /* unique */
  for (size_t i = 0; i < want.n; i++)
    if (wn == 0 || strcmp(want.v[wn - 1], want.v[i]) != 0)
      want.v[wn++] = want.v[i];
    else
      free(want.v[i]);
  want.n = wn;
  h_alerts_t got;
  h_read_alerts(s, want.n, 3000, 120, &got);
  strs_t seen = {0};
  for (size_t i = 0; i < got.n; i++) {
    if (h_alert_rule_interleaved(h_doc_str(got.docs[i], "rule_id"))) continue;
    strs_add(&seen, h_doc_str(got.docs[i], "alert_id"), h_doc_str(got.docs[i], "state"));
  }
  qsort(seen.v, seen.n, sizeof *seen.v, cmp_str);
  size_t repeated = 0, unexpected = 0, missing = 0, unique = 0;
  for (size_t i = 0; i < seen.n; i++) {
    if (i > 0 && strcmp(seen.v[i - 1], seen.v[i]) == 0) {
      repeated++;
      continue;
    }
    unique++;
    if (!bsearch(&seen.v[i], want.v, want.n, sizeof *want.v, cmp_str) && unexpected++ < 3)
      fprintf(stderr, "[fault] unexpected alert transition on the topic: %s\n", seen.v[i]);
  }
  for (size_t i = 0; i < want.n; i++)
    if (!bsearch(&want.v[i], seen.v, seen.n, sizeof *seen.v, cmp_str) && missing++ < 3)
      fprintf(stderr, "[fault] expected alert transition missing from the topic: %s\n", want.v[i]);

  /* What the simulator sent must all be in Kafka: a loss there would not
   * be the engine's, and the comparison would blame it. */
  int64_t sent = (int64_t)(e.valid + e.garbage);
  if (events != sent)
    fprintf(stderr, "[fault] the input topics hold %lld messages, twin-sim sent %lld\n", (long long)events,
            (long long)sent);
  double secs = (double)(f_now_ms() - r->t0_ms) / 1000.0;
  bool ok = events == sent && diffs == 0 && truth == 0 && lost == 0 && dup == 0 && missing == 0 &&
            unexpected == 0 && got.bad_key == 0 && e.twins.len > 0 && want.n > 0;
  fprintf(stderr,
          "[fault] %s: %lld events, %d faults injected; twins: %zu expected, %d differences, truth %d "
          "differences, %lld events lost, %lld duplicated; alerts: %zu expected transitions, %zu on the "
          "topic (%zu unique, %zu repeated), %zu missing, %zu unexpected; %.1f s: %s\n",
          r->name, (long long)events, r->faults, e.twins.len, diffs, truth, (long long)lost, (long long)dup,
          want.n, seen.n, unique, repeated, missing, unexpected, secs, ok ? "ok" : "FAILED");

  FILE *f = summary_file();
  if (f) {
    fprintf(f, "%s\t%lld\t%d\t%lld\t%lld\t%zu\t%zu\t%zu\t%.1f\t%s\n", r->name, (long long)events, r->faults,
            (long long)lost, (long long)dup, want.n, missing, repeated, secs, ok ? "ok" : "FAIL");
    fclose(f);
  }

  assert_int_equal(events, sent);
  assert_true(e.twins.len > 0);
  assert_true(want.n > 0); /* the fleet must exercise the alert rules */
  assert_int_equal(diffs, 0);
  assert_int_equal(truth, 0);
  assert_int_equal(lost, 0);
  assert_int_equal(dup, 0);
  assert_int_equal(got.bad_key, 0);
  assert_int_equal(missing, 0);
  assert_int_equal(unexpected, 0);
  h_alerts_free(&got);
  strs_free(&want);
  strs_free(&seen);
  h_expected_cleanup(&e);
}

long long f_log_final_count(const char *log, const char *key) {
  FILE *f = fopen(log, "r");
  if (!f) return -1;
  char line[4096], pat[64];
  snprintf(pat, sizeof pat, " %s=", key);
  long long sum = 0;
  bool any = false;
  while (fgets(line, sizeof line, f)) {
    if (!strstr(line, "[stats] final ")) continue;
    const char *p = strstr(line, pat);
    if (!p) continue;
    sum += strtoll(p + strlen(pat), NULL, 10);
    any = true;
  }
  fclose(f);
  return any ? sum : -1;
}

/* ---- Latency proxy ---------------------------------------------------------- */

#define F_PROXY_MAX_CONNS 128

/* A chunk in flight, passed on at due_ms. */
typedef struct f_chunk {
  struct f_chunk *next;
  int64_t due_ms;
  size_t len;
  char data[];
} f_chunk_t;

/* One direction of a connection: a reader thread queues what it reads, a
 * writer thread passes each chunk on when it is due. So every byte is late
 * by the delay, and throughput is not capped by it. */
typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  f_chunk_t *head, *tail;
  bool ended;
} f_queue_t;

typedef struct {
  f_proxy_t *p;
  int fd[2];           /* client, server */
  f_queue_t q[2];      /* 0: client to server, 1: server to client */
  _Atomic int running; /* threads still running */
} f_conn_t;

struct f_proxy {
  int listen_fd, port, target_port;
  _Atomic int delay_ms;
  _Atomic long long chunks;
  _Atomic int stopping;
  pthread_t acceptor;
  pthread_mutex_t mu;
  f_conn_t *conns[F_PROXY_MAX_CONNS]; /* open connections */
};

typedef struct {
  f_conn_t *c;
  int dir;
} f_pipe_t;

static bool proxy_track(f_proxy_t *p, f_conn_t *c, f_conn_t *want) {
  bool done = false;
  pthread_mutex_lock(&p->mu);
  for (int i = 0; i < F_PROXY_MAX_CONNS && !done; i++)
    if (p->conns[i] == want) p->conns[i] = c, done = true;
  pthread_mutex_unlock(&p->mu);
  return done;
}

/* Either side ended or failed: shut both down and end both queues, so all
 * four threads finish; the last one closes the sockets and frees. */
static void proxy_end(f_conn_t *c) {
  shutdown(c->fd[0], SHUT_RDWR);
  shutdown(c->fd[1], SHUT_RDWR);
  for (int d = 0; d < 2; d++) {
    pthread_mutex_lock(&c->q[d].mu);
    c->q[d].ended = true;
    pthread_cond_broadcast(&c->q[d].cv);
    pthread_mutex_unlock(&c->q[d].mu);
  }
}

static void proxy_release(f_conn_t *c) {
  if (atomic_fetch_sub(&c->running, 1) != 1) return;
  proxy_track(c->p, NULL, c);
  close(c->fd[0]);
  close(c->fd[1]);
  for (int d = 0; d < 2; d++) {
    while (c->q[d].head) {
      f_chunk_t *k = c->q[d].head;
      c->q[d].head = k->next;
      free(k);
    }
    pthread_mutex_destroy(&c->q[d].mu);
    pthread_cond_destroy(&c->q[d].cv);
  }
  free(c);
}

static void *proxy_reader(void *arg) {
  f_pipe_t pp = *(f_pipe_t *)arg;
  free(arg);
  f_conn_t *c = pp.c;
  f_queue_t *q = &c->q[pp.dir];
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = read(c->fd[pp.dir], buf, sizeof buf);
    if (n <= 0) break;
    f_chunk_t *k = malloc(sizeof *k + (size_t)n);
    k->next = NULL;
    k->due_ms = f_now_ms() + atomic_load(&c->p->delay_ms);
    k->len = (size_t)n;
    memcpy(k->data, buf, (size_t)n);
    pthread_mutex_lock(&q->mu);
    if (q->tail)
      q->tail->next = k;
    else
      q->head = k;
    q->tail = k;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
  }
  proxy_end(c);
  proxy_release(c);
  return NULL;
}

static void *proxy_writer(void *arg) {
  f_pipe_t pp = *(f_pipe_t *)arg;
  free(arg);
  f_conn_t *c = pp.c;
  f_queue_t *q = &c->q[pp.dir];
  int to = c->fd[!pp.dir];
  for (;;) {
    pthread_mutex_lock(&q->mu);
    while (!q->head && !q->ended) pthread_cond_wait(&q->cv, &q->mu);
    f_chunk_t *k = q->ended ? NULL : q->head;
    if (k) {
      q->head = k->next;
      if (!q->head) q->tail = NULL;
    }
    pthread_mutex_unlock(&q->mu);
    if (!k) break;
    int64_t wait = k->due_ms - f_now_ms();
    if (wait > 0) f_msleep((int)wait);
    size_t off = 0;
    while (off < k->len) {
      ssize_t w = send(to, k->data + off, k->len - off, MSG_NOSIGNAL);
      if (w <= 0) break;
      off += (size_t)w;
    }
    bool ok = off == k->len;
    free(k);
    if (!ok) break;
    atomic_fetch_add(&c->p->chunks, 1);
  }
  proxy_end(c);
  proxy_release(c);
  return NULL;
}

static void *proxy_accept(void *arg) {
  f_proxy_t *p = arg;
  for (;;) {
    int cfd = accept(p->listen_fd, NULL, NULL);
    if (cfd < 0) {
      if (atomic_load(&p->stopping)) return NULL;
      f_msleep(10);
      continue;
    }
    int sfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p->target_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (sfd < 0 || connect(sfd, (struct sockaddr *)&a, sizeof a) != 0) { /* server down: refuse */
      if (sfd >= 0) close(sfd);
      close(cfd);
      continue;
    }
    int one = 1;
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    f_conn_t *c = calloc(1, sizeof *c);
    c->p = p;
    c->fd[0] = cfd;
    c->fd[1] = sfd;
    for (int d = 0; d < 2; d++) {
      pthread_mutex_init(&c->q[d].mu, NULL);
      pthread_cond_init(&c->q[d].cv, NULL);
    }
    atomic_init(&c->running, 4);
    if (!proxy_track(p, c, NULL)) { /* table full */
      close(cfd);
      close(sfd);
      free(c);
      continue;
    }
    for (int i = 0; i < 4; i++) {
      f_pipe_t *pp = malloc(sizeof *pp);
      *pp = (f_pipe_t){c, i / 2};
      pthread_t t;
      pthread_create(&t, NULL, i % 2 ? proxy_writer : proxy_reader, pp);
      pthread_detach(t);
    }
  }
}

f_proxy_t *f_proxy_start(int target_port) {
  f_proxy_t *p = calloc(1, sizeof *p);
  p->target_port = target_port;
  pthread_mutex_init(&p->mu, NULL);
  p->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (p->listen_fd < 0 || bind(p->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      listen(p->listen_fd, 64) != 0 || getsockname(p->listen_fd, (struct sockaddr *)&a, &len) != 0)
    fail_msg("latency proxy: cannot listen on 127.0.0.1");
  p->port = ntohs(a.sin_port);
  pthread_create(&p->acceptor, NULL, proxy_accept, p);
  return p;
}

int f_proxy_port(const f_proxy_t *p) { return p->port; }
void f_proxy_delay(f_proxy_t *p, int delay_ms) { atomic_store(&p->delay_ms, delay_ms); }
long long f_proxy_chunks(const f_proxy_t *p) { return atomic_load(&((f_proxy_t *)p)->chunks); }

void f_proxy_stop(f_proxy_t *p) {
  atomic_store(&p->stopping, 1);
  shutdown(p->listen_fd, SHUT_RDWR);
  pthread_join(p->acceptor, NULL);
  close(p->listen_fd);
  /* Shut every connection down; its threads close and free it. */
  pthread_mutex_lock(&p->mu);
  for (int i = 0; i < F_PROXY_MAX_CONNS; i++)
    if (p->conns[i]) {
      shutdown(p->conns[i]->fd[0], SHUT_RDWR);
      shutdown(p->conns[i]->fd[1], SHUT_RDWR);
    }
  pthread_mutex_unlock(&p->mu);
  for (;;) { /* wait until every connection is gone, then free */
    bool any = false;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < F_PROXY_MAX_CONNS; i++) any = any || p->conns[i];
    pthread_mutex_unlock(&p->mu);
    if (!any) break;
    f_msleep(10);
  }
  pthread_mutex_destroy(&p->mu);
  free(p);
}
