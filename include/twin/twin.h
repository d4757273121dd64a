/* twin.h - the in-memory twin of one product and the pure reducer.
 *
 * tw_reduce() is the heart of twin-engine: a deterministic function
 * (twin, envelope) -> outcome with no I/O, no clock and no logging. The
 * same envelopes in the same order give byte-identical twins, which
 * tw_twin_to_bson() renders as the MongoDB snapshot document (see
 * schemas/twin.schema.json) and tw_twin_from_bson() reads back.
 *
 * Threads: a twin belongs to the one shard thread that owns its product's
 * Kafka partition; nothing here locks. */
#ifndef TWIN_TWIN_H
#define TWIN_TWIN_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "twin/v1/events.pb-c.h"

/* ---- Lifecycle stages ------------------------------------------------------ */
typedef enum {
  TW_STAGE_NONE = 0, /* no lifecycle event yet (e.g. telemetry arrived first) */
  TW_STAGE_ORDERED,
  TW_STAGE_IN_PRODUCTION,
  TW_STAGE_BUILT,
  TW_STAGE_IN_TRANSIT,
  TW_STAGE_AT_DEALER,
  TW_STAGE_IN_SERVICE,
  TW_STAGE_DECOMMISSIONED,
  TW_STAGE_COUNT
} tw_stage_t;

const char *tw_stage_name(tw_stage_t s);
bool tw_stage_parse(const char *name, tw_stage_t *out);
/* "ORDERED", "BUILD_STARTED", ... or NULL for an unknown kind. */
const char *tw_lifecycle_kind_name(int kind);

/* ---- Telemetry values, last-writer-wins by (event time, seq) --------------- */
typedef enum {
  TW_F_ODOMETER_KM = 0,
  TW_F_SPEED_KPH,
  TW_F_BATTERY_SOC_PCT,
  TW_F_BATTERY_SOH_PCT,
  TW_F_BATTERY_TEMP_C,
  TW_F_LATITUDE,
  TW_F_LONGITUDE,
  TW_F_FUEL_LEVEL_PCT,
  TW_F_AUX_BATTERY_V,
  TW_F_AMBIENT_TEMP_C,
  TW_F_RANGE_KM,
  TW_F_SCALAR_COUNT
} tw_scalar_field_t;

/* Proto field name of a scalar ("odometer_km", ...). */
const char *tw_scalar_field_name(tw_scalar_field_t f);

/* seq 0 means no value: validation rejects seq 0, so every stamp the
 * reducer writes has seq >= 1 (16 bytes instead of 24 with a bool). */
typedef struct {
  int64_t at_ms; /* event time of the sample that set the value */
  uint64_t seq;  /* its seq (tie-breaker); 0 = never set */
} tw_stamp_t;

static inline bool tw_stamp_set(const tw_stamp_t *st) { return st->seq != 0; }

typedef struct {
  double value;
  tw_stamp_t st;
} tw_scalar_t;

/* Up to TW_VEC_INLINE values (a vehicle's wheels) live in the vector
 * itself, so reading them touches no other block; v points to inl then,
 * to an owned array for more. Set with tw_vec_set(); a vector is never
 * copied by value (it lives in the twin's telemetry block). */
#define TW_VEC_INLINE 4
typedef struct {
  double *v; /* inl, or owned when n > TW_VEC_INLINE; NULL when never set */
  uint32_t n;
  tw_stamp_t st;
  double inl[TW_VEC_INLINE];
} tw_vec_t;

typedef struct {
  char **s; /* owned, each owned */
  uint32_t n;
  tw_stamp_t st;
} tw_strs_t;

typedef struct {
  char *name; /* in the metrics block (tw_telemetry_t.metrics), after the entries */
  tw_scalar_t val;
} tw_metric_t;

/* ---- Per-source seq dedupe: an anti-replay window behind the high-water mark */
typedef struct {
  char *name;     /* in the twin's sources block (tw_twin_t.sources), after the windows */
  uint64_t hwm;   /* highest seq seen; 0 = none */
  uint64_t *bits; /* in the same block; bit i of the window = seq (hwm - i) seen */
} tw_source_t;

/* ---- Timeline -------------------------------------------------------------- */
/* The texts of a timeline entry, in the order an entry stores them. */
typedef enum {
  TW_ET_SOURCE = 0,
  TW_ET_SITE,
  TW_ET_ACTOR,
  TW_ET_DETAIL,
  TW_ET_WORK_ORDER,
  TW_ET_RECALL_ID,
  TW_ET_OWNER_ID,
  TW_ET_MODEL,
  TW_ET_REASON, /* why it was rejected; none when applied */
  TW_ET_COUNT
} tw_entry_text_t;

typedef struct {
  const char *k, *v;
} tw_kv_t;

/* What a timeline entry is made from; every text is borrowed (NULL: none)
 * and copied by tw_twin_timeline_add(). */
typedef struct {
  int kind; /* Twin__V1__LifecycleKind */
  int64_t event_time_ms;
  uint64_t seq;
  const char *text[TW_ET_COUNT]; /* text[TW_ET_SOURCE] NULL is stored as "" */
  bool has_odometer, rejected;
  double odometer_km;
  char *const *parts;
  uint32_t n_parts;
  uint32_t n_attrs;
  const tw_kv_t *attrs; /* sorted by key */
} tw_entry_in_t;

/* A timeline entry: one allocation, this header followed by its texts,
 * each NUL-terminated, back to back: the ones present of TW_ET_SOURCE ..
 * TW_ET_REASON in that order, the parts, then each attribute's key and
 * value: 40 bytes and the texts, in one malloc. Nothing on the hot path
 * reads an entry back (snapshots and recall checks do, with
 * tw_entry_texts()), so the texts are not worth a pointer each. */
typedef struct {
  int64_t event_time_ms;
  uint64_t seq;
  double odometer_km;
  int32_t kind;     /* Twin__V1__LifecycleKind */
  uint16_t present; /* bit i: text i is stored */
  bool has_odometer, rejected;
  uint32_t n_parts, n_attrs;
  char texts[];
} tw_entry_t;

/* One walk over e's texts: out[i] = text i or NULL when it has none (the
 * source is always there). Returns the first part; each next part, then
 * each attribute's key and value, starts after the one before
 * (tw_text_next()). */
const char *tw_entry_texts(const tw_entry_t *e, const char *out[TW_ET_COUNT]);
/* Text i of e, or NULL. */
const char *tw_entry_text(const tw_entry_t *e, tw_entry_text_t i);
static inline const char *tw_text_next(const char *s) { return s + strlen(s) + 1; }

typedef struct {
  int64_t at_ms;
  double odometer_km;
  char *work_order, *site; /* owned */
  bool set;                /* the bools last: no padding between fields */
  bool has_odometer;
} tw_service_t;

/* Event counters kept in the twin (all but seen are shown to users). */
typedef struct {
  uint64_t telemetry; /* accepted telemetry events */
  uint64_t lifecycle; /* accepted lifecycle events */
  uint64_t duplicates;
  uint64_t too_late;
  uint64_t rejected;
  uint64_t stale_fields; /* field values not applied because a newer one was held */
} tw_counters_t;

/* Battery health trend: least squares of state of health over time. */
typedef struct {
  uint64_t n;
  int64_t t0_ms;           /* time origin of the sums (first sample) */
  double st, sy, stt, sty; /* sums over t (days since t0) and y (soh %) */
} tw_trend_t;

/* Brake pad wear of the current pads: least squares of the thinnest pad
 * (mm) over time (days since t0) and over distance (km since k0, samples
 * that carried an odometer reading). A sample more than TW_WEAR_JUMP_MM
 * thicker than the latest one starts a new fit (new pads). Only telemetry
 * feeds it, so it does not depend on how the telemetry and lifecycle
 * topics interleave; the rules combine it with last_brake_service_ms. */
#define TW_WEAR_JUMP_MM 1.0
typedef struct {
  uint64_t n;
  int64_t t0_ms;  /* first sample of these pads */
  int64_t t_last; /* latest sample by event time, and its thickness */
  double y_last;
  double st, sy, stt, sty;
  uint64_t nk;
  double k0, sk, skk, sky, syk; /* syk: sum of y over the distance samples */
} tw_wear_t;

/* ---- What the alert rules read, by class ---------------------------------- */
/* The reducer ORs into t->rule_inputs the classes of rule inputs an event
 * changed (a value, or whether there is one); the rules (rules.h) evaluate
 * a rule only when a class it reads is set. Setting a bit without a change
 * only costs time; missing one would skip a rule that had to run. */
#define TW_SIG_SCALAR(f) (UINT32_C(1) << (f))                   /* scalars[f] */
#define TW_SIG_TIRES (UINT32_C(1) << (TW_F_SCALAR_COUNT + 0))   /* tire_pressure_kpa */
#define TW_SIG_PADS (UINT32_C(1) << (TW_F_SCALAR_COUNT + 1))    /* brake_pad_mm */
#define TW_SIG_METRICS (UINT32_C(1) << (TW_F_SCALAR_COUNT + 2)) /* any metric */
#define TW_SIG_DTCS (UINT32_C(1) << (TW_F_SCALAR_COUNT + 3))    /* dtc_codes: how many, or none reported */
#define TW_SIG_RECALLS (UINT32_C(1) << (TW_F_SCALAR_COUNT + 4)) /* open_recalls */
#define TW_SIG_STAGE (UINT32_C(1) << (TW_F_SCALAR_COUNT + 5))
#define TW_SIG_SERVICE (UINT32_C(1) << (TW_F_SCALAR_COUNT + 6)) /* last_service, delivered* */
#define TW_SIG_WEAR (UINT32_C(1) << (TW_F_SCALAR_COUNT + 7))    /* brake_wear, last_brake_service_ms */
#define TW_SIG_TIME (UINT32_C(1) << (TW_F_SCALAR_COUNT + 8))    /* last_event_ms, the twin's "now" */
/* Every accepted event, whatever it changed: added by the rules, not the
 * reducer, for the rules that must run every time. */
#define TW_SIG_EVENT (UINT32_C(1) << (TW_F_SCALAR_COUNT + 9))
#define TW_SIG_ALL ((UINT32_C(1) << (TW_F_SCALAR_COUNT + 10)) - 1)

/* One active maintenance alert (engine bookkeeping, kept in the snapshot
 * so alerts survive restarts; see include/twin/rules.h). */
typedef struct {
  char *rule;       /* owned; rule id */
  char *alert_id;   /* owned; stable for this raise/clear cycle */
  char *message;    /* owned; the text sent with RAISED */
  char *unit;       /* owned; unit of value and threshold */
  int severity;     /* Twin__V1__Severity */
  int64_t since_ms; /* event time of the event that raised it */
  int leaf;         /* which comparison of the condition reports value/threshold */
  double value, threshold;
  bool has_predicted;
  int64_t predicted_at_ms;
} tw_alert_t;

typedef struct {
  char *rule; /* owned */
  uint32_t n; /* times raised: the cycle number in alert ids */
} tw_alert_cycle_t;

/* ---- The telemetry state --------------------------------------------------- */
/* Everything only telemetry writes, in one block the twin allocates on the
 * first telemetry event that sets a value (tw_twin_tel_mut). Most twins of
 * a fleet never get telemetry (ordered, in production or in transit, or
 * not connected) and keep tel NULL: they read tw_telemetry_none, an
 * all-zero block, which reads exactly as a block no event has written
 * (no stamp set, no vectors, codes, firmware or metrics, empty fits). */
typedef struct {
  tw_scalar_t scalars[TW_F_SCALAR_COUNT];
  tw_vec_t tire_pressure_kpa, brake_pad_mm;
  tw_strs_t dtc_codes;
  char *firmware_version; /* owned */
  tw_stamp_t firmware_st;
  tw_trend_t soh_trend;
  tw_wear_t brake_wear;
  tw_metric_t *metrics; /* owned, sorted by name; one block with their names */
  uint32_t n_metrics;   /* last: the block's only padding is after it */
} tw_telemetry_t;

extern const tw_telemetry_t tw_telemetry_none;

typedef struct tw_twin {
  char *product_id; /* stored right after the struct, freed with it */
  tw_stage_t stage;
  /* The bools fill the padding after stage. */
  bool quality_hold;           /* the last quality gate failed and none passed since */
  bool delivered;              /* a DELIVERED event applied: the base of "service due" before any visit */
  bool delivered_has_odometer; /* with delivered_ms and delivered_odometer_km below */
  bool stored;                 /* engine: a snapshot of it is known to be in MongoDB (loaded or written) */
  char *model, *owner;         /* owned, may be NULL */
  uint64_t rev;                /* events accepted: not duplicate, too late or rejected */
  uint64_t seen;               /* every event that reached the reducer; guards writes */
  tw_telemetry_t *tel;         /* owned; NULL until a telemetry event set a value: read with tw_twin_tel() */

  tw_source_t *sources; /* owned, sorted by name; one block with their windows and names */
  uint32_t n_sources;
  uint32_t seq_window; /* seqs accepted behind each source's high-water mark */

  tw_entry_t **timeline; /* owned, each entry owned, in applied order */
  uint32_t n_timeline, cap_timeline;
  char **open_recalls; /* owned, in issue order */
  uint32_t n_open_recalls;
  /* Set by the reducer, cleared by the rules: the TW_SIG_* classes changed
   * since rule set number rules_gen last evaluated this twin (0: none has,
   * e.g. a new or loaded twin, so every rule runs next time). */
  uint32_t rule_inputs;
  uint64_t rules_gen;
  /* Set by the rules: no rule that reads the twin's time or its odometer
   * can raise an alert while last_event_ms stays below rules_wake_s
   * seconds and the odometer reading below rules_wake_km, unless another
   * of its inputs changes; an event that moves only those two skips them
   * (rules.c, hold_wake). Both rounded down; 0: not known, e.g. a new or
   * loaded twin. */
  uint32_t rules_wake_s;
  float rules_wake_km;
  tw_service_t last_service;
  int64_t last_brake_service_ms; /* 0 = never */
  int64_t delivered_ms;
  double delivered_odometer_km;
  int64_t last_event_ms; /* latest event time of any accepted event: the twin's "now" */
  tw_counters_t counters;

  /* Active alerts, sorted by rule id. Written by the rules (rules.h) after
   * the reducer, never by the reducer itself. */
  tw_alert_t *alerts;
  tw_alert_cycle_t *alert_cycles; /* sorted by rule id */
  uint32_t n_alerts, n_alert_cycles;

  /* Engine bookkeeping, not touched by the reducer: the Kafka offset of
   * the last message of this product incorporated, per input topic (-1 =
   * none). Replays after a crash skip offsets at or below these. */
  int64_t offsets[2];
  int64_t dirty_ms;  /* wall clock when it became dirty (snapshot freshness metric) */
  int32_t partition; /* the input partition this product lives in, -1 = unknown */
  bool dirty;        /* changed since the last acknowledged snapshot */
} tw_twin_t;

/* The twin's telemetry state for reading: tw_telemetry_none when it has
 * none yet. */
static inline const tw_telemetry_t *tw_twin_tel(const tw_twin_t *t) {
  return t->tel ? t->tel : &tw_telemetry_none;
}
/* For writing: allocates the block (all zero) on first use. */
tw_telemetry_t *tw_twin_tel_mut(tw_twin_t *t);

enum { TW_TOPIC_TELEMETRY = 0, TW_TOPIC_LIFECYCLE = 1 };

/* Allocates an empty twin for product_id with a seq window of seq_window
 * (0 = TW_SEQ_WINDOW_DEFAULT, capped at TW_SEQ_WINDOW_MAX). Aborts on
 * out-of-memory. */
tw_twin_t *tw_twin_new(const char *product_id, uint32_t seq_window);
void tw_twin_destroy(tw_twin_t *t); /* accepts NULL */

/* Asks the cache for what applying an event to t reads, without waiting
 * for it: stage 0 the struct, stage 1 the blocks it points to (sources,
 * the telemetry block, alerts, the timeline's next slot), stage 2 the
 * blocks those point to (each source's window and name, each alert's rule
 * id, the metrics and the vectors), stage 3 each metric's name. A shard
 * calls stage 0 for the twin a few events ahead of the one it applies and
 * the later stages nearer: each stage reads the pointers the one before
 * brought in. Changes nothing; t may be NULL. */
void tw_twin_prefetch(const tw_twin_t *t, int stage);

/* The prefetches to make before applying the event of tw[i], in a batch
 * whose events go to the twins tw[0..n). */
static inline void tw_twin_prefetch_ahead(tw_twin_t *const *tw, size_t i, size_t n) {
  if (i + 4 < n) tw_twin_prefetch(tw[i + 4], 0);
  if (i + 3 < n) tw_twin_prefetch(tw[i + 3], 1);
  if (i + 2 < n) tw_twin_prefetch(tw[i + 2], 2);
  if (i + 1 < n) tw_twin_prefetch(tw[i + 1], 3);
}

/* ---- The reducer ----------------------------------------------------------- */
typedef enum {
  TW_OUT_APPLIED = 0, /* accepted and at least one value changed */
  TW_OUT_STALE,       /* accepted (counted in rev) but every field was older than held */
  TW_OUT_DUPLICATE,   /* seq already seen from this source: not applied */
  TW_OUT_TOO_LATE,    /* seq older than the window: not applied */
  TW_OUT_REJECTED,    /* impossible lifecycle transition: kept in the timeline */
  TW_OUT_COUNT
} tw_outcome_t;

const char *tw_outcome_name(tw_outcome_t o);

#define TW_SEQ_WINDOW_DEFAULT 64u
#define TW_SEQ_WINDOW_MAX 65536u

/* Applies env to t. env must have passed tw_envelope_validate(). reason,
 * when not NULL, receives a static or twin-owned string for REJECTED. */
tw_outcome_t tw_reduce(tw_twin_t *t, const Twin__V1__Envelope *env, const char **reason);

/* ---- Validation (what goes to the dead-letter topic instead) --------------- */
#define TW_PRODUCT_ID_MAX 256
#define TW_NAME_MAX 128

/* Checks what the reducer relies on; on failure writes a reason for the DLQ
 * into err (NUL-terminated) and returns false. key is the Kafka message key
 * (NULL = the message had none, which fails). */
bool tw_envelope_validate(const Twin__V1__Envelope *env, const void *key, size_t key_len, char *err,
                          size_t err_cap);

/* Event times the engine accepts: 1970-01-01T00:00:00Z .. 2100-01-01T00:00:00Z
 * (exclusive). Outside that a clock was unset or broken; such a time would
 * win every last-writer-wins comparison (or lose all of them) for good. */
#define TW_EVENT_TIME_MIN_MS INT64_C(0)
#define TW_EVENT_TIME_MAX_MS INT64_C(4102444800000)

/* The engine's whole gate for one Kafka message: size limit (max_bytes),
 * protobuf decoding, strings without NUL bytes (protobuf-c would cut them
 * short at the NUL), then tw_envelope_validate(). Returns the envelope,
 * allocated with alloc (NULL = protobuf-c's default; free it with
 * twin__v1__envelope__free_unpacked), or NULL with the reason for the DLQ
 * in err. Pure: no I/O, no state. */
Twin__V1__Envelope *tw_envelope_decode(ProtobufCAllocator *alloc, const void *value, size_t len,
                                       const void *key, size_t key_len, size_t max_bytes, char *err,
                                       size_t err_cap);

/* ---- Snapshot document ----------------------------------------------------- */
/* Appends the snapshot document to doc (caller-owned, empty). updated_at_ms
 * < 0 leaves updated_at out (state hashing). */
void tw_twin_to_bson(const tw_twin_t *t, int64_t updated_at_ms, bson_t *doc);
/* Reads a snapshot document; returns NULL and fills err if it is not one. */
tw_twin_t *tw_twin_from_bson(const bson_t *doc, uint32_t seq_window, char *err, size_t err_cap);
/* 64-bit FNV-1a over the document without updated_at: equal state, equal hash. */
uint64_t tw_twin_state_hash(const tw_twin_t *t);

#endif
