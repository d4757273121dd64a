/* stream.c - the whole fleet as one stream of Kafka messages.
 *
 * A min-heap orders products by the time of their next event, so event
 * times rise through the stream the way a real fleet's would. On top of
 * the clean stream the injector adds, each in a given fraction:
 *   duplicates  an identical copy of an already sent event (recent, or
 *               from a reservoir over the whole history: "much later");
 *   reorder     a telemetry event held back until up to 32 later seqs of
 *               its source were sent (inside the engine's 64-seq window);
 *   late        a telemetry event held back until its source has sent a
 *               seq more than 200 above it (beyond the window: too late);
 *   garbage     random bytes, a truncated envelope, an envelope with an
 *               empty product_id, or a key != product_id;
 *   invalid     an impossible lifecycle transition (valid protobuf).
 * Every decision comes from a PRNG separate from the products' own, so
 * injection does not change the products' lives.
 *
 * The truth (what the engine must end up with) is updated when a message
 * is actually handed out, with the engine's rules: telemetry fields are
 * last-writer-wins by (event time, seq); lifecycle events are never held,
 * so the product's lifecycle state is the truth.
 *
 * Ownership: the tw_sim_t owns every buffer; a message returned by
 * tw_sim_next() points into them until the next call. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

#define DAY_MS 86400000LL
#define YEAR_MS (DAY_MS * 36525 / 100)
#define RING 4096
#define RESERVOIR 512
#define REORDER_MAX_DIST 32
#define LATE_DIST 201
#define MAX_REORDER_HELD 2
#define MAX_LATE_HELD 4

typedef struct {
  uint8_t *buf; /* owned */
  uint32_t len, cap;
  uint32_t prod;
  uint8_t topic;
} slot_t;

typedef struct {
  uint32_t prod;
  uint8_t slot;
} ready_t;

/* Heap entries carry their key: no trip to the product on each compare. */
typedef struct {
  int64_t at;
  uint32_t idx;
} heap_ent_t;

struct tw_sim {
  tw_sim_opts_t o;
  tw_fleet_t *fleet;
  tw_sim_product_t *prod;
  heap_ent_t *heap;
  uint32_t heap_n;
  tw_rng_t rng; /* injection decisions and garbage bytes */
  int64_t interval_ms;
  int64_t end_ms; /* start + span: where the budget is expected to run out */

  uint8_t *pack; /* the current message */
  size_t pack_cap;
  char key[32];

  bool keep_history; /* ring + reservoir, needed for duplicates and garbage */
  slot_t ring[RING];
  uint64_t ring_n; /* messages ever added */
  slot_t res[RESERVOIR];

  ready_t *ready; /* held messages whose time has come, FIFO */
  size_t ready_head, ready_n, ready_cap;
  uint32_t *decom; /* decommissioned products (targets for invalid events) */
  size_t decom_n, decom_cap;
  uint64_t pending_reorder; /* held reordered messages: they will be sent */
  uint32_t flush_cursor;

  tw_sim_stats_t st;
};

/* ---- Small helpers ------------------------------------------------------------ */

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n);
  if (!q) {
    fprintf(stderr, "twin-sim: out of memory\n");
    abort();
  }
  return q;
}

static void buf_put(uint8_t **buf, uint32_t *cap, uint32_t *len, const uint8_t *src, size_t n) {
  if (*cap < n) {
    uint32_t c = *cap ? *cap : 256;
    while (c < n) c *= 2;
    *buf = xrealloc(*buf, c);
    *cap = c;
  }
  memcpy(*buf, src, n);
  *len = (uint32_t)n;
}

static size_t pack_env(tw_sim_t *s, const Twin__V1__Envelope *env) {
  size_t n = twin__v1__envelope__get_packed_size(env);
  if (s->pack_cap < n) {
    size_t c = s->pack_cap ? s->pack_cap : 1024;
    while (c < n) c *= 2;
    s->pack = xrealloc(s->pack, c);
    s->pack_cap = c;
  }
  return twin__v1__envelope__pack(env, s->pack);
}

static void set_msg(tw_sim_t *s, tw_sim_msg_t *m, int topic, const char *key, const uint8_t *v, size_t n) {
  m->topic = topic;
  m->key = (const uint8_t *)key;
  m->key_len = strlen(key);
  m->value = v;
  m->value_len = n;
  s->st.sent++;
}

/* ---- Scheduler (min-heap on (next_ms, index)) ------------------------------------ */

static inline bool heap_less(const heap_ent_t *a, const heap_ent_t *b) {
  return a->at != b->at ? a->at < b->at : a->idx < b->idx;
}

static void heap_down(tw_sim_t *s, uint32_t i) {
  uint32_t n = s->heap_n;
  heap_ent_t *h = s->heap, e = h[i];
  for (;;) {
    uint32_t l = 2 * i + 1, m = l;
    if (l >= n) break;
    if (l + 1 < n && heap_less(&h[l + 1], &h[l])) m = l + 1;
    if (!heap_less(&h[m], &e)) break;
    h[i] = h[m];
    i = m;
  }
  h[i] = e;
}

/* ---- Truth -------------------------------------------------------------------- */

static bool newer(const tw_sim_stamp_t *st, int64_t at, uint64_t seq) {
  if (!st->set) return true;
  return at != st->at ? at > st->at : seq > st->seq;
}

static void stamp(tw_sim_stamp_t *st, int64_t at, uint64_t seq) {
  st->at = at;
  st->seq = seq;
  st->set = true;
}

static void truth_telemetry(tw_sim_product_t *p, int64_t at, uint64_t seq, double odo, bool has_pads,
                            double min_pad, bool dtc_reported, uint16_t dtc_mask) {
  if (newer(&p->st_odo, at, seq)) {
    p->t_odo = odo;
    stamp(&p->st_odo, at, seq);
  }
  if (has_pads && newer(&p->st_pad, at, seq)) {
    p->t_min_pad = min_pad;
    stamp(&p->st_pad, at, seq);
  }
  if (dtc_reported && newer(&p->st_dtc, at, seq)) {
    p->t_dtc_mask = dtc_mask;
    stamp(&p->st_dtc, at, seq);
  }
}

/* ---- History for duplicates and garbage ------------------------------------------ */

static void history_add(tw_sim_t *s, uint32_t prod, int topic, const uint8_t *v, size_t n) {
  if (!s->keep_history) return;
  slot_t *sl = &s->ring[s->ring_n % RING];
  buf_put(&sl->buf, &sl->cap, &sl->len, v, n);
  sl->prod = prod;
  sl->topic = (uint8_t)topic;
  s->ring_n++;
  /* reservoir sampling over everything ever sent */
  uint64_t k = s->ring_n <= RESERVOIR ? s->ring_n - 1 : tw_rng_below(&s->rng, s->ring_n);
  if (k < RESERVOIR) {
    slot_t *r = &s->res[k];
    buf_put(&r->buf, &r->cap, &r->len, v, n);
    r->prod = prod;
    r->topic = (uint8_t)topic;
  }
}

/* A random earlier message, or NULL if none was sent yet. */
static const slot_t *history_pick(tw_sim_t *s) {
  if (s->ring_n == 0) return NULL;
  uint64_t nres = s->ring_n < RESERVOIR ? s->ring_n : RESERVOIR;
  if (s->ring_n > RING && tw_rng_chance(&s->rng, 0.25)) return &s->res[tw_rng_below(&s->rng, nres)];
  uint64_t back = tw_rng_below(&s->rng, s->ring_n < RING ? s->ring_n : RING);
  return &s->ring[(s->ring_n - 1 - back) % RING];
}

/* ---- Held messages --------------------------------------------------------------- */

static void ready_push(tw_sim_t *s, uint32_t prod, int slot) {
  if (s->ready_head + s->ready_n == s->ready_cap) {
    if (s->ready_head > 0) {
      memmove(s->ready, s->ready + s->ready_head, s->ready_n * sizeof *s->ready);
      s->ready_head = 0;
    } else {
      s->ready_cap = s->ready_cap ? s->ready_cap * 2 : 64;
      s->ready = xrealloc(s->ready, s->ready_cap * sizeof *s->ready);
    }
  }
  s->ready[s->ready_head + s->ready_n++] = (ready_t){prod, (uint8_t)slot};
}

/* After p's source src sent a new highest seq: queue what may go now. */
static void release_check(tw_sim_t *s, uint32_t idx, int src) {
  tw_sim_product_t *p = &s->prod[idx];
  if (!p->held || src != TW_SRC_TCU) return;
  for (int i = 0; i < TW_SIM_MAX_HELD; i++) {
    tw_sim_held_t *h = &p->held[i];
    if (h->active && !h->queued && p->max_sent[src] >= h->release_at) {
      h->queued = true;
      ready_push(s, idx, i);
    }
  }
}

static void mark_sent(tw_sim_t *s, uint32_t idx, int src, uint64_t seq) {
  tw_sim_product_t *p = &s->prod[idx];
  if (seq > p->max_sent[src]) {
    p->max_sent[src] = seq;
    release_check(s, idx, src);
  }
}

/* Holds the packed telemetry event (in s->pack) back; false if no slot. */
static bool hold(tw_sim_t *s, uint32_t idx, const tw_sim_event_t *ev, const Twin__V1__Envelope *env, size_t n,
                 bool late) {
  tw_sim_product_t *p = &s->prod[idx];
  if (!p->held) p->held = calloc(TW_SIM_MAX_HELD, sizeof *p->held);
  if (!p->held) return false;
  int free_slot = -1, reorders = 0, lates = 0;
  for (int i = 0; i < TW_SIM_MAX_HELD; i++) {
    if (!p->held[i].active) {
      if (free_slot < 0) free_slot = i;
    } else if (p->held[i].late) {
      lates++;
    } else {
      reorders++;
    }
  }
  if (free_slot < 0 || (late ? lates >= MAX_LATE_HELD : reorders >= MAX_REORDER_HELD)) return false;
  tw_sim_held_t *h = &p->held[free_slot];
  buf_put(&h->buf, &h->cap, &h->len, s->pack, n);
  h->seq = env->seq;
  h->time_ms = env->event_time_ms;
  h->late = late;
  h->queued = false;
  h->active = true;
  h->release_at = late ? env->seq + LATE_DIST : env->seq + 1 + tw_rng_below(&s->rng, REORDER_MAX_DIST);
  h->odo = ev->odo;
  h->min_pad = ev->min_pad;
  h->has_pads = ev->has_pads;
  h->dtc_reported = ev->dtc_reported;
  h->dtc_mask = ev->dtc_mask;
  if (!late) s->pending_reorder++;
  return true;
}

/* Sends held slot i of product idx (a reordered message is applied by the
 * engine; a late one is counted as too late). */
static void send_held(tw_sim_t *s, uint32_t idx, int i, tw_sim_msg_t *m) {
  tw_sim_product_t *p = &s->prod[idx];
  tw_sim_held_t *h = &p->held[i];
  h->active = false;
  h->queued = false;
  set_msg(s, m, TW_SIM_TOPIC_TELEMETRY, p->vin, h->buf, h->len);
  s->st.telemetry++;
  if (h->late) {
    p->late_sent++;
    s->st.late++;
    return;
  }
  s->pending_reorder--;
  s->st.reordered++;
  p->accepted++;
  s->st.accepted++;
  truth_telemetry(p, h->time_ms, h->seq, h->odo, h->has_pads, h->min_pad, h->dtc_reported, h->dtc_mask);
  history_add(s, idx, TW_SIM_TOPIC_TELEMETRY, h->buf, h->len);
}

/* A decommissioned product sends nothing more: its reordered messages go
 * now, its late one can never become late enough and is dropped. */
static void release_all(tw_sim_t *s, uint32_t idx) {
  tw_sim_product_t *p = &s->prod[idx];
  if (!p->held) return;
  for (int i = 0; i < TW_SIM_MAX_HELD; i++) {
    tw_sim_held_t *h = &p->held[i];
    if (!h->active || h->queued) continue;
    if (h->late) {
      h->active = false;
      s->st.late_dropped++;
    } else {
      h->queued = true;
      ready_push(s, idx, i);
    }
  }
}

/* ---- Message kinds ------------------------------------------------------------------ */

/* The next event of the product whose turn it is. Returns false when it was
 * held back (no message this time). */
static bool fresh(tw_sim_t *s, tw_sim_msg_t *m) {
  uint32_t idx = s->heap[0].idx;
  tw_sim_product_t *p = &s->prod[idx];
  tw_sim_event_t ev;
  const Twin__V1__Envelope *env = tw_fleet_next(s->fleet, p, &ev);
  if (p->in_heap) {
    s->heap[0].at = p->next_ms;
    heap_down(s, 0);
  } else {
    s->heap[0] = s->heap[--s->heap_n];
    heap_down(s, 0);
  }
  if (s->heap_n) { /* the next product's state is cold in large fleets: fetch it while we pack */
    const char *np = (const char *)&s->prod[s->heap[0].idx];
    for (size_t off = 0; off < sizeof(tw_sim_product_t); off += 64) __builtin_prefetch(np + off, 1);
  }
  size_t n = pack_env(s, env);
  if (env->event_time_ms > s->st.max_event_ms) s->st.max_event_ms = env->event_time_ms;

  if (ev.telemetry) {
    /* late only where the source can still get more than 200 seqs ahead */
    if (s->o.late > 0 && tw_rng_chance(&s->rng, s->o.late) &&
        (s->end_ms - env->event_time_ms) / s->interval_ms > LATE_DIST + 60 && hold(s, idx, &ev, env, n, true))
      return false;
    if (s->o.reorder > 0 && tw_rng_chance(&s->rng, s->o.reorder) && hold(s, idx, &ev, env, n, false))
      return false;
  }
  set_msg(s, m, ev.topic, p->vin, s->pack, n);
  p->accepted++;
  s->st.accepted++;
  if (ev.telemetry) {
    s->st.telemetry++;
    truth_telemetry(p, env->event_time_ms, env->seq, ev.odo, ev.has_pads, ev.min_pad, ev.dtc_reported,
                    ev.dtc_mask);
  } else {
    s->st.lifecycle++;
  }
  history_add(s, idx, ev.topic, s->pack, n);
  mark_sent(s, idx, ev.src, env->seq);
  if (ev.kind == TWIN__V1__LIFECYCLE_KIND__DECOMMISSIONED) {
    if (s->decom_n == s->decom_cap) {
      s->decom_cap = s->decom_cap ? s->decom_cap * 2 : 64;
      s->decom = xrealloc(s->decom, s->decom_cap * sizeof *s->decom);
    }
    s->decom[s->decom_n++] = idx;
    release_all(s, idx);
  }
  return true;
}

static bool duplicate(tw_sim_t *s, tw_sim_msg_t *m) {
  const slot_t *sl = history_pick(s);
  if (!sl) return false;
  tw_sim_product_t *p = &s->prod[sl->prod];
  set_msg(s, m, sl->topic, p->vin, sl->buf, sl->len);
  p->dup_sent++;
  s->st.duplicates++;
  return true;
}

/* True when the engine would accept value under key (then it is no garbage). */
static bool would_accept(const uint8_t *v, size_t n, const char *key) {
  Twin__V1__Envelope *e = twin__v1__envelope__unpack(NULL, n, v);
  if (!e) return false;
  bool ok = e->product_id[0] && strcmp(e->product_id, key) == 0 &&
            e->payload_case != TWIN__V1__ENVELOPE__PAYLOAD__NOT_SET && e->seq > 0;
  twin__v1__envelope__free_unpacked(e, NULL);
  return ok;
}

static bool decodes(const uint8_t *v, size_t n) {
  Twin__V1__Envelope *e = twin__v1__envelope__unpack(NULL, n, v);
  if (e) twin__v1__envelope__free_unpacked(e, NULL);
  return e != NULL;
}

static bool garbage(tw_sim_t *s, tw_sim_msg_t *m) {
  const slot_t *sl = history_pick(s);
  int kind = sl ? (int)tw_rng_below(&s->rng, 4) : 0;
  if (kind == 1 && sl->len < 2) kind = 0;
  uint32_t idx = sl ? sl->prod : s->heap_n ? s->heap[0].idx : 0;
  tw_sim_product_t *p = &s->prod[idx];
  const char *key = p->vin;
  size_t n = 0;
  switch (kind) {
  case 0: /* random bytes */
    do {
      n = 1 + tw_rng_below(&s->rng, 200);
      if (s->pack_cap < n) {
        s->pack = xrealloc(s->pack, 1024);
        s->pack_cap = 1024;
      }
      for (size_t i = 0; i < n; i++) s->pack[i] = (uint8_t)tw_rng_u64(&s->rng);
    } while (decodes(s->pack, n)); /* undecodable for sure, and attributed to the key's product */
    break;
  case 1: /* cut off: payload is the last field, so any cut loses it or breaks it */
    n = 1 + tw_rng_below(&s->rng, sl->len - 1);
    if (s->pack_cap < sl->len) {
      s->pack = xrealloc(s->pack, sl->len);
      s->pack_cap = sl->len;
    }
    memcpy(s->pack, sl->buf, n);
    if (would_accept(s->pack, n, key)) { /* cannot happen; stay safe */
      s->pack[0] = 0xff;
      n = 1;
    }
    break;
  case 2: { /* empty product_id */
    Twin__V1__Envelope *e = twin__v1__envelope__unpack(NULL, sl->len, sl->buf);
    if (!e) return false;
    char *id = e->product_id;
    e->product_id = (char *)protobuf_c_empty_string;
    n = pack_env(s, e);
    e->product_id = id;
    twin__v1__envelope__free_unpacked(e, NULL);
    break;
  }
  default: { /* key != product_id */
    if (s->pack_cap < sl->len) {
      s->pack = xrealloc(s->pack, sl->len);
      s->pack_cap = sl->len;
    }
    memcpy(s->pack, sl->buf, sl->len);
    n = sl->len;
    uint32_t other = (uint32_t)tw_rng_below(&s->rng, s->o.products);
    if (other == idx) other = (idx + 1) % s->o.products;
    if (other != idx) {
      snprintf(s->key, sizeof s->key, "%s", s->prod[other].vin);
    } else { /* a fleet of one */
      snprintf(s->key, sizeof s->key, "%.16s%c", p->vin, p->vin[16] == 'Z' ? 'Y' : 'Z');
    }
    key = s->key;
    break;
  }
  }
  set_msg(s, m, (int)tw_rng_below(&s->rng, 2), key, s->pack, n);
  p->garbage_sent++;
  s->st.garbage++;
  s->st.garbage_kind[kind]++;
  return true;
}

static bool invalid(tw_sim_t *s, tw_sim_msg_t *m) {
  if (!s->heap_n) return false;
  uint32_t idx;
  if (s->decom_n && tw_rng_chance(&s->rng, 0.3)) {
    idx = s->decom[tw_rng_below(&s->rng, s->decom_n)];
  } else {
    idx = (uint32_t)tw_rng_below(&s->rng, s->o.products);
    if (s->prod[idx].stage == TW_SIM_STAGE_NONE) idx = s->heap[0].idx;
  }
  tw_sim_product_t *p = &s->prod[idx];
  if (p->stage == TW_SIM_STAGE_NONE) return false;
  int64_t now = s->heap[0].at;
  tw_sim_event_t ev;
  const Twin__V1__Envelope *env = tw_fleet_invalid(s->fleet, p, now, tw_rng_u64(&s->rng), &ev);
  size_t n = pack_env(s, env);
  set_msg(s, m, TW_SIM_TOPIC_LIFECYCLE, p->vin, s->pack, n);
  p->invalid_sent++;
  s->st.invalid++;
  mark_sent(s, idx, ev.src, env->seq);
  return true;
}

/* ---- Public ---------------------------------------------------------------------- */

tw_sim_t *tw_sim_new(const tw_sim_opts_t *o, char *err, size_t err_cap) {
  tw_sim_t *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, err_cap, "out of memory");
    return NULL;
  }
  s->o = *o;
  tw_rng_seed(&s->rng, o->seed, 0);
  int64_t span = (int64_t)(o->years * (double)YEAR_MS);
  if (o->interval_h > 0) {
    s->interval_ms = (int64_t)(o->interval_h * 3600000.0);
  } else {
    /* Spread the budget over the span: products are ordered uniformly over
     * it, spend ~50 days in production and logistics (~16 events), and
     * then report telemetry until the end. */
    double fresh = (double)o->events * fmax(0.05, 1.0 - o->duplicates - o->garbage - o->invalid);
    double per_product = fresh / (double)o->products - 16.0;
    double service_ms = (double)span / 2.0 - 50.0 * (double)DAY_MS;
    if (service_ms < (double)DAY_MS) service_ms = (double)DAY_MS;
    double iv = service_ms / fmax(1.0, per_product);
    s->interval_ms = (int64_t)fmin(fmax(iv, 1000.0), 60.0 * (double)DAY_MS);
  }
  s->end_ms = o->start_ms + span;
  s->keep_history = o->duplicates > 0 || o->garbage > 0;
  tw_fleet_opts_t fo = {
      .seed = o->seed, .start_ms = o->start_ms, .span_ms = span, .interval_ms = s->interval_ms};
  s->fleet = tw_fleet_new(&fo);
  s->prod = calloc(o->products, sizeof *s->prod);
  s->heap = calloc(o->products, sizeof *s->heap);
  if (!s->fleet || !s->prod || !s->heap) {
    snprintf(err, err_cap, "out of memory for %u products", o->products);
    tw_sim_destroy(s);
    return NULL;
  }
  for (uint32_t i = 0; i < o->products; i++) {
    tw_fleet_product_init(s->fleet, &s->prod[i], i);
    s->heap[i] = (heap_ent_t){s->prod[i].next_ms, i};
  }
  s->heap_n = o->products;
  for (int64_t i = (int64_t)s->heap_n / 2 - 1; i >= 0; i--) heap_down(s, (uint32_t)i);
  s->st.max_event_ms = o->start_ms;
  return s;
}

void tw_sim_destroy(tw_sim_t *s) {
  if (!s) return;
  if (s->prod) {
    for (uint32_t i = 0; i < s->o.products; i++) {
      if (!s->prod[i].held) continue;
      for (int j = 0; j < TW_SIM_MAX_HELD; j++) free(s->prod[i].held[j].buf);
      free(s->prod[i].held);
    }
  }
  for (int i = 0; i < RING; i++) free(s->ring[i].buf);
  for (int i = 0; i < RESERVOIR; i++) free(s->res[i].buf);
  free(s->prod);
  free(s->heap);
  free(s->pack);
  free(s->ready);
  free(s->decom);
  tw_fleet_destroy(s->fleet);
  free(s);
}

bool tw_sim_next(tw_sim_t *s, tw_sim_msg_t *m) {
  for (;;) {
    if (s->ready_n) {
      ready_t r = s->ready[s->ready_head++];
      s->ready_n--;
      tw_sim_held_t *h = &s->prod[r.prod].held[r.slot];
      if (!h->active) continue;
      if (h->late && s->st.sent + s->pending_reorder >= s->o.events) {
        h->active = false; /* no budget left for it */
        h->queued = false;
        s->st.late_dropped++;
        continue;
      }
      send_held(s, r.prod, r.slot, m);
      return true;
    }
    if (s->st.sent + s->pending_reorder < s->o.events && s->heap_n) {
      double u = tw_rng_unit(&s->rng);
      const tw_sim_opts_t *o = &s->o;
      if (u < o->duplicates) {
        if (duplicate(s, m)) return true;
      } else if ((u -= o->duplicates) < o->garbage) {
        if (garbage(s, m)) return true;
      } else if ((u -= o->garbage) < o->invalid) {
        if (invalid(s, m)) return true;
      }
      if (fresh(s, m)) return true;
      continue;
    }
    /* budget spent: what is held for reordering still goes out */
    if (s->pending_reorder) {
      for (; s->flush_cursor < s->o.products; s->flush_cursor++) {
        tw_sim_product_t *p = &s->prod[s->flush_cursor];
        if (!p->held) continue;
        for (int i = 0; i < TW_SIM_MAX_HELD; i++) {
          if (p->held[i].active && !p->held[i].late) {
            send_held(s, s->flush_cursor, i, m);
            return true;
          }
        }
      }
    }
    /* late messages still held can never be late enough now */
    for (uint32_t i = 0; i < s->o.products; i++) {
      tw_sim_product_t *p = &s->prod[i];
      if (!p->held) continue;
      for (int j = 0; j < TW_SIM_MAX_HELD; j++) {
        if (p->held[j].active) {
          p->held[j].active = false;
          s->st.late_dropped++;
        }
      }
    }
    return false;
  }
}

const tw_sim_stats_t *tw_sim_stats(const tw_sim_t *s) { return &s->st; }
double tw_sim_interval_h(const tw_sim_t *s) { return (double)s->interval_ms / 3600000.0; }

/* ---- Truth file -------------------------------------------------------------------- */

/* Shortest decimal that reads back as the same double. */
static void fmt_num(char *b, size_t cap, double v) {
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(b, cap, "%.*g", prec, v);
    if (strtod(b, NULL) == v) return;
  }
}

static int cmp_str(const void *a, const void *b) { return strcmp((const char *)a, (const char *)b); }

static void write_product(const tw_sim_product_t *p, FILE *out) {
  char num[40], buf[48];
  fprintf(out, "{\"product_id\":\"%s\",\"accepted\":%llu,\"stage\":\"%s\"", p->vin,
          (unsigned long long)p->accepted, tw_sim_stage_names[p->stage]);
  if (p->owner) {
    tw_fleet_owner_id(p->owner, buf, sizeof buf);
    fprintf(out, ",\"owner\":\"%s\"", buf);
  } else {
    fputs(",\"owner\":null", out);
  }
  char ids[TW_SIM_MAX_RECALLS][32];
  for (int i = 0; i < p->n_recalls; i++) tw_fleet_recall_id(p->recall_code[i], ids[i], sizeof ids[i]);
  qsort(ids, p->n_recalls, sizeof ids[0], cmp_str);
  fputs(",\"open_recalls\":[", out);
  for (int i = 0; i < p->n_recalls; i++) fprintf(out, "%s\"%s\"", i ? "," : "", ids[i]);
  fputc(']', out);
  if (p->st_odo.set) {
    fmt_num(num, sizeof num, p->t_odo);
    fprintf(out, ",\"odometer_km\":%s", num);
  } else {
    fputs(",\"odometer_km\":null", out);
  }
  if (p->st_pad.set) {
    fmt_num(num, sizeof num, p->t_min_pad);
    fprintf(out, ",\"min_brake_pad_mm\":%s", num);
  } else {
    fputs(",\"min_brake_pad_mm\":null", out);
  }
  if (p->st_dtc.set) {
    fputs(",\"dtc_codes\":[", out);
    int k = 0; /* sorted, as the engine stores the set */
    const char *codes[16];
    for (int i = 0; i < 16; i++)
      if (p->t_dtc_mask & (1u << i)) codes[k++] = tw_fleet_dtc(i);
    for (int i = 1; i < k; i++)
      for (int j = i; j > 0 && strcmp(codes[j - 1], codes[j]) > 0; j--) {
        const char *t = codes[j];
        codes[j] = codes[j - 1];
        codes[j - 1] = t;
      }
    for (int i = 0; i < k; i++) fprintf(out, "%s\"%s\"", i ? "," : "", codes[i]);
    fputc(']', out);
  } else {
    fputs(",\"dtc_codes\":null", out);
  }
  if (p->last_wo) {
    tw_fleet_work_order(p, p->last_wo, buf, sizeof buf);
    fprintf(out, ",\"last_service_work_order\":\"%s\"", buf);
  } else {
    fputs(",\"last_service_work_order\":null", out);
  }
  fprintf(out, ",\"duplicates_sent\":%llu,\"late_sent\":%llu,\"invalid_sent\":%llu,\"garbage_sent\":%llu",
          (unsigned long long)p->dup_sent, (unsigned long long)p->late_sent,
          (unsigned long long)p->invalid_sent, (unsigned long long)p->garbage_sent);
  fputs(",\"sources\":{", out);
  int k = 0;
  for (int i = 0; i < TW_SRC_COUNT; i++)
    if (p->max_sent[i])
      fprintf(out, "%s\"%s\":%llu", k++ ? "," : "", tw_sim_src_names[i], (unsigned long long)p->max_sent[i]);
  fputs("}}\n", out);
}

bool tw_sim_write_truth(const tw_sim_t *s, FILE *out) {
  uint64_t with_events = 0;
  for (uint32_t i = 0; i < s->o.products; i++) {
    const tw_sim_product_t *p = &s->prod[i];
    if (!p->accepted && !p->dup_sent && !p->late_sent && !p->invalid_sent && !p->garbage_sent) continue;
    with_events++;
    write_product(p, out);
  }
  const tw_sim_stats_t *st = &s->st;
  char iv[40];
  fmt_num(iv, sizeof iv, tw_sim_interval_h(s));
  fprintf(out,
          "{\"summary\":true,\"events_sent\":%llu,\"telemetry\":%llu,\"lifecycle\":%llu,\"duplicates\":%llu,"
          "\"reordered\":%llu,\"late\":%llu,\"late_dropped\":%llu,\"garbage\":%llu,\"invalid\":%llu,"
          "\"accepted\":%llu,\"products\":%u,\"products_with_events\":%llu,\"seed\":%llu,\"start_ms\":%lld,"
          "\"last_event_ms\":%lld,\"interval_h\":%s}\n",
          (unsigned long long)st->sent, (unsigned long long)st->telemetry, (unsigned long long)st->lifecycle,
          (unsigned long long)st->duplicates, (unsigned long long)st->reordered, (unsigned long long)st->late,
          (unsigned long long)st->late_dropped, (unsigned long long)st->garbage,
          (unsigned long long)st->invalid, (unsigned long long)st->accepted, s->o.products,
          (unsigned long long)with_events, (unsigned long long)s->o.seed, (long long)s->o.start_ms,
          (long long)st->max_event_ms, iv);
  return !ferror(out);
}
