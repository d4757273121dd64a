/* freshness.c - joins input events, snapshot reads and alert reads into
 * latencies (see freshness.h). */
#include "freshness.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define VEC(T)     \
  struct {         \
    T *v;          \
    size_t n, cap; \
  }

static void *grow(void *v, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return v;
  size_t c = *cap ? *cap * 2 : 8;
  while (c < need) c *= 2;
  *cap = c;
  return tw_xrealloc(v, c * size);
}

#define PUSH(vec, x)                                                   \
  do {                                                                 \
    (vec).v = grow((vec).v, &(vec).cap, (vec).n + 1, sizeof *(vec).v); \
    (vec).v[(vec).n++] = (x);                                          \
  } while (0)

typedef struct {
  uint64_t seq;
  int64_t at; /* produced */
} ev_t;

typedef struct {
  uint64_t hwm;
  int64_t at; /* read */
  uint64_t *missing;
  size_t n_missing;
} obs_t;

typedef struct {
  char *name;
  VEC(ev_t) ev;
  VEC(obs_t) obs;
} src_t;

typedef struct {
  int64_t event_ms, at; /* event time; produced (an input) or read (an alert) */
} stamp_t;

typedef struct {
  char *id;
  VEC(src_t) src;
  VEC(stamp_t) inputs;
  VEC(stamp_t) alerts;
} prod_t;

struct fr {
  pthread_mutex_t mu;
  prod_t **slot; /* open addressing on the product id */
  size_t cap, n;
  size_t events, alerts;
};

static uint64_t hash(const char *s) {
  uint64_t h = UINT64_C(1469598103934665603);
  for (; *s; s++) h = (h ^ (uint8_t)*s) * UINT64_C(1099511628211);
  return h;
}

fr_t *fr_new(void) {
  fr_t *f = tw_xcalloc(1, sizeof *f);
  pthread_mutex_init(&f->mu, NULL);
  f->cap = 1024;
  f->slot = tw_xcalloc(f->cap, sizeof *f->slot);
  return f;
}

void fr_free(fr_t *f) {
  if (!f) return;
  for (size_t i = 0; i < f->cap; i++) {
    prod_t *p = f->slot[i];
    if (!p) continue;
    for (size_t j = 0; j < p->src.n; j++) {
      src_t *s = &p->src.v[j];
      for (size_t k = 0; k < s->obs.n; k++) free(s->obs.v[k].missing);
      free(s->obs.v);
      free(s->ev.v);
      free(s->name);
    }
    free(p->src.v);
    free(p->inputs.v);
    free(p->alerts.v);
    free(p->id);
    free(p);
  }
  free(f->slot);
  pthread_mutex_destroy(&f->mu);
  free(f);
}

static prod_t *product(fr_t *f, const char *id) {
  if (2 * (f->n + 1) > f->cap) { /* rehash at half full */
    size_t cap = f->cap * 2;
    prod_t **slot = tw_xcalloc(cap, sizeof *slot);
    for (size_t i = 0; i < f->cap; i++) {
      if (!f->slot[i]) continue;
      size_t j = hash(f->slot[i]->id) & (cap - 1);
      while (slot[j]) j = (j + 1) & (cap - 1);
      slot[j] = f->slot[i];
    }
    free(f->slot);
    f->slot = slot;
    f->cap = cap;
  }
  size_t j = hash(id) & (f->cap - 1);
  for (; f->slot[j]; j = (j + 1) & (f->cap - 1))
    if (strcmp(f->slot[j]->id, id) == 0) return f->slot[j];
  prod_t *p = tw_xcalloc(1, sizeof *p);
  p->id = tw_xstrdup(id);
  f->slot[j] = p;
  f->n++;
  return p;
}

static src_t *source(prod_t *p, const char *name) {
  for (size_t i = 0; i < p->src.n; i++)
    if (strcmp(p->src.v[i].name, name) == 0) return &p->src.v[i];
  src_t s = {.name = tw_xstrdup(name)};
  PUSH(p->src, s);
  return &p->src.v[p->src.n - 1];
}

void fr_event(fr_t *f, const char *product_id, const char *source_name, uint64_t seq, int64_t event_time_ms,
              int64_t produced_ms) {
  pthread_mutex_lock(&f->mu);
  prod_t *p = product(f, product_id);
  PUSH(source(p, source_name)->ev, ((ev_t){seq, produced_ms}));
  PUSH(p->inputs, ((stamp_t){event_time_ms, produced_ms}));
  f->events++;
  pthread_mutex_unlock(&f->mu);
}

static bool same_missing(const obs_t *o, const uint64_t *missing, size_t n) {
  return o->n_missing == n && (n == 0 || memcmp(o->missing, missing, n * sizeof *missing) == 0);
}

void fr_observe(fr_t *f, const char *product_id, const char *source_name, uint64_t hwm,
                const uint64_t *missing, size_t n_missing, int64_t seen_ms) {
  pthread_mutex_lock(&f->mu);
  src_t *s = source(product(f, product_id), source_name);
  /* Only a read that shows more than the one before counts: it is where
   * events first became readable. */
  const obs_t *last = s->obs.n ? &s->obs.v[s->obs.n - 1] : NULL;
  if (!last || last->hwm != hwm || !same_missing(last, missing, n_missing)) {
    obs_t o = {hwm, seen_ms, NULL, n_missing};
    if (n_missing) {
      o.missing = tw_xmalloc(n_missing * sizeof *missing);
      memcpy(o.missing, missing, n_missing * sizeof *missing);
    }
    PUSH(s->obs, o);
  }
  pthread_mutex_unlock(&f->mu);
}

void fr_alert(fr_t *f, const char *product_id, int64_t event_time_ms, int64_t seen_ms) {
  pthread_mutex_lock(&f->mu);
  PUSH(product(f, product_id)->alerts, ((stamp_t){event_time_ms, seen_ms}));
  f->alerts++;
  pthread_mutex_unlock(&f->mu);
}

size_t fr_events(fr_t *f) {
  pthread_mutex_lock(&f->mu);
  size_t n = f->events;
  pthread_mutex_unlock(&f->mu);
  return n;
}

size_t fr_alerts(fr_t *f) {
  pthread_mutex_lock(&f->mu);
  size_t n = f->alerts;
  pthread_mutex_unlock(&f->mu);
  return n;
}

static bool holds(const obs_t *o, uint64_t seq) {
  if (o->hwm < seq) return false;
  for (size_t i = 0; i < o->n_missing; i++)
    if (o->missing[i] == seq) return false;
  return true;
}

/* The first read of s that holds seq, or NULL. The reads' hwms never go
 * down, so the search starts at the first read with hwm >= seq. */
static const obs_t *first_holding(const src_t *s, uint64_t seq) {
  size_t lo = 0, hi = s->obs.n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (s->obs.v[mid].hwm < seq)
      lo = mid + 1;
    else
      hi = mid;
  }
  for (; lo < s->obs.n; lo++)
    if (holds(&s->obs.v[lo], seq)) return &s->obs.v[lo];
  return NULL;
}

/* Calls fn(arg, latency) for every input event held by a read, counts the rest. */
static size_t join_snapshots(fr_t *f, void (*fn)(void *, int64_t), void *arg) {
  size_t unseen = 0;
  for (size_t i = 0; i < f->cap; i++) {
    const prod_t *p = f->slot[i];
    if (!p) continue;
    for (size_t j = 0; j < p->src.n; j++) {
      const src_t *s = &p->src.v[j];
      for (size_t k = 0; k < s->ev.n; k++) {
        const obs_t *o = first_holding(s, s->ev.v[k].seq);
        if (!o)
          unseen++;
        else if (fn)
          fn(arg, o->at - s->ev.v[k].at);
      }
    }
  }
  return unseen;
}

size_t fr_unseen(fr_t *f) {
  pthread_mutex_lock(&f->mu);
  size_t n = join_snapshots(f, NULL, NULL);
  pthread_mutex_unlock(&f->mu);
  return n;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static int cmp_stamp(const void *a, const void *b) {
  const stamp_t *x = a, *y = b;
  if (x->event_ms != y->event_ms) return (x->event_ms > y->event_ms) - (x->event_ms < y->event_ms);
  return (x->at > y->at) - (x->at < y->at);
}

typedef VEC(int64_t) lat_t;

static void add_latency(void *arg, int64_t ms) {
  lat_t *l = arg;
  PUSH(*l, ms < 0 ? 0 : ms); /* a clock step; the reads and stamps are on one machine */
}

/* Nearest rank: the smallest latency with at least q of them at or below it. */
static int64_t rank(const lat_t *l, double q) {
  size_t k = (size_t)(q * (double)l->n + 0.999999);
  if (k < 1) k = 1;
  return l->v[k - 1];
}

static void dist(lat_t *l, size_t unseen, fr_dist_t *d) {
  *d = (fr_dist_t){.n = l->n, .unseen = unseen};
  if (!l->n) return;
  qsort(l->v, l->n, sizeof *l->v, cmp_i64);
  d->p50 = rank(l, 0.5);
  d->p99 = rank(l, 0.99);
  d->max = l->v[l->n - 1];
}

void fr_result(fr_t *f, fr_dist_t *snapshot, fr_dist_t *alert) {
  pthread_mutex_lock(&f->mu);
  lat_t l = {0};
  size_t unseen = join_snapshots(f, add_latency, &l);
  dist(&l, unseen, snapshot);
  l.n = 0;
  unseen = 0;
  for (size_t i = 0; i < f->cap; i++) {
    prod_t *p = f->slot[i];
    if (!p || !p->alerts.n) continue;
    /* The earliest produced input with the alert's event time. */
    if (p->inputs.n) qsort(p->inputs.v, p->inputs.n, sizeof *p->inputs.v, cmp_stamp);
    for (size_t k = 0; k < p->alerts.n; k++) {
      size_t lo = 0, hi = p->inputs.n;
      while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->inputs.v[mid].event_ms < p->alerts.v[k].event_ms)
          lo = mid + 1;
        else
          hi = mid;
      }
      if (lo < p->inputs.n && p->inputs.v[lo].event_ms == p->alerts.v[k].event_ms)
        add_latency(&l, p->alerts.v[k].at - p->inputs.v[lo].at);
      else
        unseen++;
    }
  }
  dist(&l, unseen, alert);
  free(l.v);
  pthread_mutex_unlock(&f->mu);
}

int64_t fr_poll_rest_ms(int64_t poll_ms, int64_t took_ms) {
  if (took_ms < 0) took_ms = 0;
  int64_t rest = poll_ms - took_ms;
  return rest > 2 * took_ms ? rest : 2 * took_ms;
}
