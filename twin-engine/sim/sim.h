/* sim.h - internals of twin-sim, the deterministic fleet simulator.
 *
 * fleet.c   one product's life: order, build, ship, deliver, years of
 *           telemetry, service, recalls, decommissioning -> envelopes
 * stream.c  the fleet as one stream: a time-ordered scheduler over all
 *           products, the message budget, fault injection (duplicates,
 *           reordering, late events, garbage, invalid transitions) and the
 *           truth (what the engine must end up with)
 * kafka.c   the librdkafka producer
 * main.c    options, outputs, pacing, summary
 *
 * Nothing here reads the wall clock except main.c's pacing: the content
 * of the stream depends on the options only. Single-threaded. */
#ifndef TWIN_SIM_H
#define TWIN_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "twin/v1/events.pb-c.h"

/* ---- PRNG: xoshiro256** seeded through splitmix64 ---------------------------- */
typedef struct {
  uint64_t s[4];
} tw_rng_t;

static inline uint64_t tw_splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static inline void tw_rng_seed(tw_rng_t *r, uint64_t seed, uint64_t stream) {
  uint64_t x = seed ^ (stream * 0xd1342543de82ef95ULL);
  for (int i = 0; i < 4; i++) r->s[i] = tw_splitmix64(&x);
}

static inline uint64_t tw_rng_u64(tw_rng_t *r) {
  uint64_t *s = r->s;
  uint64_t x = s[1] * 5;
  uint64_t out = ((x << 7) | (x >> 57)) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = (s[3] << 45) | (s[3] >> 19);
  return out;
}

/* Uniform in [0, 1). */
static inline double tw_rng_unit(tw_rng_t *r) { return (double)(tw_rng_u64(r) >> 11) * 0x1.0p-53; }
/* Uniform in [a, b). */
static inline double tw_rng_range(tw_rng_t *r, double a, double b) { return a + (b - a) * tw_rng_unit(r); }
/* Uniform integer in [0, n); n > 0. */
static inline uint64_t tw_rng_below(tw_rng_t *r, uint64_t n) { return tw_rng_u64(r) % n; }
static inline bool tw_rng_chance(tw_rng_t *r, double p) { return p > 0 && tw_rng_unit(r) < p; }

/* ---- Sources ------------------------------------------------------------------ */
typedef enum {
  TW_SRC_MES = 0,   /* order, build, quality */
  TW_SRC_LOGISTICS, /* shipped, arrived */
  TW_SRC_DMS,       /* delivered, service, warranty, recall completion */
  TW_SRC_OEM,       /* recall issued */
  TW_SRC_CRM,       /* ownership transfer, decommission */
  TW_SRC_TCU,       /* telemetry */
  TW_SRC_COUNT
} tw_sim_src_t;

extern const char *const tw_sim_src_names[TW_SRC_COUNT];

enum { TW_SIM_TOPIC_TELEMETRY = 0, TW_SIM_TOPIC_LIFECYCLE = 1 };

/* Engine-visible stages (names as in the snapshot document). */
typedef enum {
  TW_SIM_STAGE_NONE = 0,
  TW_SIM_STAGE_ORDERED,
  TW_SIM_STAGE_IN_PRODUCTION,
  TW_SIM_STAGE_BUILT,
  TW_SIM_STAGE_IN_TRANSIT,
  TW_SIM_STAGE_AT_DEALER,
  TW_SIM_STAGE_IN_SERVICE,
  TW_SIM_STAGE_DECOMMISSIONED,
} tw_sim_stage_t;

extern const char *const tw_sim_stage_names[];

#define TW_SIM_MAX_RECALLS 4
#define TW_SIM_MAX_HELD 6 /* 2 reordered + 4 late */

/* A message held back by the injector (reordered or late telemetry). */
typedef struct {
  uint8_t *buf; /* owned */
  uint32_t len, cap;
  uint64_t seq;
  uint64_t release_at; /* send once the source's highest sent seq reaches this */
  int64_t time_ms;
  bool active, late, queued;
  /* truth of the sample, applied when (if) it is sent */
  double odo, min_pad;
  bool has_pads, dtc_reported;
  uint16_t dtc_mask;
} tw_sim_held_t;

/* Last-writer-wins stamp of a truth field, as the engine keeps it. */
typedef struct {
  int64_t at;
  uint64_t seq;
  bool set;
} tw_sim_stamp_t;

/* One product. The lifecycle fields are also the truth: lifecycle events
 * are sent the moment they are generated and never held back. */
typedef struct {
  char vin[18];
  uint8_t stage; /* tw_sim_stage_t */
  uint8_t phase; /* generator step, fleet.c */
  uint8_t sub;   /* step/gate index within the phase */
  uint8_t fails; /* quality gate failures at the current gate */
  uint8_t model;
  uint8_t pending; /* in-service lifecycle event due next, fleet.c */
  uint8_t fw;      /* firmware version index */
  uint8_t n_recalls;
  bool force_pads, in_heap;
  uint16_t dtc_mask;
  uint16_t dealer;
  uint32_t owner;     /* customer number, 0 = none */
  uint32_t service_n; /* services done */
  uint32_t last_wo;   /* work order number of the last service, 0 = none */
  uint32_t last_recall_bucket;
  uint32_t recall_code[TW_SIM_MAX_RECALLS];
  int64_t recall_due[TW_SIM_MAX_RECALLS]; /* 0 = never completed */
  int64_t next_ms, ordered_ms, delivered_ms, service_ms, last_tel_ms;
  double odo, km_at_service, service_km, daily_km, soh, soc, home_lat, home_lon, tire_base;
  double pads[4], wear_front, wear_rear;
  uint64_t seq[TW_SRC_COUNT];      /* last seq generated */
  uint64_t max_sent[TW_SRC_COUNT]; /* highest seq sent = the engine's high-water mark */
  tw_rng_t rng;                    /* content of this product's events */
  /* truth */
  uint64_t accepted, dup_sent, late_sent, invalid_sent, garbage_sent;
  double t_odo, t_min_pad;
  uint16_t t_dtc_mask;
  tw_sim_stamp_t st_odo, st_pad, st_dtc;
  tw_sim_held_t *held; /* NULL or TW_SIM_MAX_HELD slots, owned */
} tw_sim_product_t;

/* What the stream needs to know about a generated event. */
typedef struct {
  int src;   /* tw_sim_src_t */
  int topic; /* TW_SIM_TOPIC_* */
  bool telemetry;
  int kind; /* lifecycle kind, 0 for telemetry */
  double odo, min_pad;
  bool has_odo, has_pads, dtc_reported;
  uint16_t dtc_mask;
} tw_sim_event_t;

/* ---- fleet.c ------------------------------------------------------------------- */
typedef struct tw_fleet tw_fleet_t;

typedef struct {
  uint64_t seed;
  int64_t start_ms;
  int64_t span_ms;     /* simulated time over which products are ordered */
  int64_t interval_ms; /* mean time between telemetry samples in service */
} tw_fleet_opts_t;

/* Owned by the caller; destroy with tw_fleet_destroy (NULL is fine). */
tw_fleet_t *tw_fleet_new(const tw_fleet_opts_t *o);
void tw_fleet_destroy(tw_fleet_t *f);
/* Sets up product idx (ids, model, home, order time in next_ms). */
void tw_fleet_product_init(tw_fleet_t *f, tw_sim_product_t *p, uint32_t idx);
/* Generates p's next event at p->next_ms into the fleet's envelope, moves p
 * on and sets p->next_ms (> the event's time), or p->in_heap = false when
 * p has no further events. Returns the envelope (owned by f, valid until
 * the next call). */
const Twin__V1__Envelope *tw_fleet_next(tw_fleet_t *f, tw_sim_product_t *p, tw_sim_event_t *ev);
/* An impossible lifecycle event for p at now_ms (the engine must reject
 * it): DELIVERED before built, RECALL_COMPLETED for a recall never issued,
 * or anything after DECOMMISSIONED. choice picks among what fits. */
const Twin__V1__Envelope *tw_fleet_invalid(tw_fleet_t *f, tw_sim_product_t *p, int64_t now_ms,
                                           uint64_t choice, tw_sim_event_t *ev);
/* Writes the customer id of owner number n into buf. */
void tw_fleet_owner_id(uint32_t n, char *buf, size_t cap);
void tw_fleet_recall_id(uint32_t code, char *buf, size_t cap);
void tw_fleet_work_order(const tw_sim_product_t *p, uint32_t n, char *buf, size_t cap);
/* DTC code of bit i of a dtc mask (16 codes). */
const char *tw_fleet_dtc(int i);

/* ---- stream.c ------------------------------------------------------------------ */
typedef struct {
  uint64_t seed;
  uint32_t products;
  uint64_t events; /* messages to produce in all */
  int64_t start_ms;
  double years;      /* span over which the fleet is ordered */
  double interval_h; /* mean telemetry interval; 0 = derived from the budget */
  double duplicates, reorder, late, garbage, invalid; /* fractions */
} tw_sim_opts_t;

typedef struct {
  int topic; /* TW_SIM_TOPIC_* */
  const uint8_t *key;
  size_t key_len;
  const uint8_t *value;
  size_t value_len;
} tw_sim_msg_t;

typedef struct {
  uint64_t sent, telemetry, lifecycle, duplicates, reordered, late, late_dropped, garbage, invalid, accepted;
  uint64_t garbage_kind[4]; /* random bytes, truncated, empty product_id, key != product_id */
  int64_t max_event_ms;
} tw_sim_stats_t;

typedef struct tw_sim tw_sim_t;

/* Owned by the caller; destroy with tw_sim_destroy (NULL is fine). */
tw_sim_t *tw_sim_new(const tw_sim_opts_t *o, char *err, size_t err_cap);
void tw_sim_destroy(tw_sim_t *s);
/* The next message, or false when the budget is spent. m's pointers stay
 * valid until the next call. */
bool tw_sim_next(tw_sim_t *s, tw_sim_msg_t *m);
const tw_sim_stats_t *tw_sim_stats(const tw_sim_t *s);
/* Telemetry interval actually used, hours. */
double tw_sim_interval_h(const tw_sim_t *s);
/* Writes the truth (JSON lines) for what has been produced so far. */
bool tw_sim_write_truth(const tw_sim_t *s, FILE *out);

/* ---- kafka.c ------------------------------------------------------------------- */
typedef struct tw_sim_kafka tw_sim_kafka_t;

typedef struct {
  const char *brokers;
  const char *topics[2];               /* telemetry, lifecycle */
  const char **set_keys, **set_values; /* kafka.* overrides, without "kafka." */
  size_t n_set;
} tw_sim_kafka_opts_t;

bool tw_sim_kafka_new(const tw_sim_kafka_opts_t *o, tw_sim_kafka_t **out, char *err, size_t err_cap);
/* Queues one message (copied); waits while the local queue is full. */
bool tw_sim_kafka_produce(tw_sim_kafka_t *k, int topic, const void *key, size_t key_len, const void *value,
                          size_t value_len, char *err, size_t err_cap);
void tw_sim_kafka_poll(tw_sim_kafka_t *k);
/* Flushes (up to timeout_ms) and reports delivery failures. */
bool tw_sim_kafka_flush(tw_sim_kafka_t *k, int timeout_ms, uint64_t *delivered, uint64_t *failed, char *err,
                        size_t err_cap);
void tw_sim_kafka_destroy(tw_sim_kafka_t *k); /* accepts NULL */

#endif
