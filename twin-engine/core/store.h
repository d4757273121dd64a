/* store.h - the MongoDB side: twin snapshots and partition checkpoints.
 *
 * One tw_store_t per thread (it wraps a mongoc_client_t, which is not
 * thread-safe). Functions return false and fill err on failure; a false
 * return from a write means nothing may be assumed durable. */
#ifndef TWIN_STORE_H
#define TWIN_STORE_H

#include <mongoc/mongoc.h>
#include <stdbool.h>

#include "twin/twin.h"

typedef struct tw_store tw_store_t;

tw_store_t *tw_store_new(const char *uri, const char *database, const char *appname, bson_error_t *err);
void tw_store_destroy(tw_store_t *s);
bool tw_store_ping(tw_store_t *s, bson_error_t *err);

/* Loads the snapshots of ids (one query); calls cb for each document found. */
typedef void (*tw_store_doc_cb)(void *ud, const bson_t *doc);
bool tw_store_load(tw_store_t *s, const char *const *ids, size_t n, tw_store_doc_cb cb, void *ud,
                   bson_error_t *err);

/* Writes the snapshots of twins. A stored document with the same or a newer
 * `seen` is never replaced (counted in *stale). On MongoDB: one unordered
 * bulk of guarded upserts. On FerretDB (which scans the collection for
 * every update): journal, then delete + insert per batch. */
bool tw_store_write_twins(tw_store_t *s, tw_twin_t *const *twins, size_t n, int64_t now_ms, size_t *stale,
                          bson_error_t *err);

/* Finishes snapshot writes that a crash interrupted, for the given input
 * partitions (FerretDB write path only). Call before loading their twins. */
bool tw_store_repair(tw_store_t *s, const int32_t *partitions, size_t n_parts, size_t *repaired,
                     bson_error_t *err);

typedef struct {
  const char *topic;
  int32_t partition;
  int64_t offset; /* next offset to consume */
} tw_checkpoint_t;

/* Stores checkpoints monotonically: an offset never moves backwards. */
bool tw_store_write_checkpoints(tw_store_t *s, const char *group, const tw_checkpoint_t *cps, size_t n,
                                int64_t now_ms, bson_error_t *err);
/* *offset = the stored next offset, or -1 when none is stored. */
bool tw_store_read_checkpoint(tw_store_t *s, const char *group, const char *topic, int32_t partition,
                              int64_t *offset, bson_error_t *err);

#endif
