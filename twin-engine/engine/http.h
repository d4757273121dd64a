/* http.h - the engine's HTTP server: the aftersales query API
 * (/v1/twins...), Prometheus metrics, health and readiness.
 *
 * The server owns its threads and its own MongoDB connections; it reaches
 * the engine only through tw_http_engine_t, whose callbacks are called from
 * HTTP threads and must be thread-safe. */
#ifndef TWIN_ENGINE_HTTP_H
#define TWIN_ENGINE_HTTP_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "twin/config.h"

/* Where an in-memory twin came from and how fresh it is. */
typedef struct {
  int32_t partition;     /* its input partition */
  int shard;             /* the shard thread that owns it */
  bool dirty;            /* changed since its last snapshot was written */
  int64_t last_event_ms; /* latest event time applied (the twin's "now") */
  int64_t flushed_ms;    /* wall clock of the shard's last successful flush (0 = none yet) */
} tw_http_twin_meta_t;

typedef struct {
  void *ud;
  /* When this instance owns the product's partition and holds its twin in
   * memory: appends the snapshot document to doc (empty, caller-owned) and
   * returns true. False otherwise (then read MongoDB). */
  bool (*twin)(void *ud, const char *product_id, bson_t *doc, tw_http_twin_meta_t *meta);
  /* Appends the engine's metrics in the Prometheus text format. */
  void (*metrics)(void *ud, bson_string_t *out);
  /* True when partitions are assigned and MongoDB is reachable; otherwise
   * writes why not into why. */
  bool (*ready)(void *ud, char *why, size_t why_cap);
} tw_http_engine_t;

typedef struct tw_http tw_http_t;

/* Starts listening on cfg's http.listen. NULL with a message in err when it
 * cannot (address in use, bad certificate, ...). */
tw_http_t *tw_http_start(const tw_config_t *cfg, const tw_http_engine_t *engine, char *err, size_t err_cap);
/* Stops accepting, finishes requests in flight, frees h (NULL is fine). */
void tw_http_stop(tw_http_t *h);

#endif
