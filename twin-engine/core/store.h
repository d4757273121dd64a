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

/* ---- Export fence: consistent exports while the engine runs ---------------
 *
 * In collection `fence`: the document {_id: "export"} with `export_until`
 * (wall ms until which an export holds the fence, 0 = none) and `holder`,
 * written by exports only; and one document per flush in progress,
 * {_id: "flush|<id>", kind: "flush", until}, inserted and deleted by its
 * flush only. No document is written by both sides, because FerretDB runs
 * an update as read-modify-write: two shards updating one shared document
 * at once lost one of the updates (a flush that had left stayed listed, and
 * every export waited for it to expire). A flush announces itself, then
 * enters only if no export holds the fence (else withdraws); an export takes
 * the fence, then waits until no flush is in progress, then reads
 * checkpoints and twins: the twins are exactly the state at those
 * checkpoints. Both sides expire (a flush after TW_FENCE_FLUSH_MS, an
 * export at export_until), so a crashed engine or exporter blocks the other
 * for a bounded time only. */
#define TW_FENCE_FLUSH_MS 120000
bool tw_store_fence_init(tw_store_t *s, bson_error_t *err);
typedef struct {
  char entry[192]; /* the _id of this flush's document */
} tw_fence_ticket_t;
/* *entered = false (and true returned) when an export holds the fence. */
bool tw_store_fence_enter(tw_store_t *s, const char *flush_id, int64_t now_ms, tw_fence_ticket_t *ticket,
                          bool *entered, bson_error_t *err);
bool tw_store_fence_leave(tw_store_t *s, const tw_fence_ticket_t *ticket, bson_error_t *err);
/* Takes the fence until now_ms + lease_ms; *taken = false when another
 * export holds it. Call again (same holder) to renew. */
bool tw_store_export_take(tw_store_t *s, const char *holder, int64_t now_ms, int64_t lease_ms, bool *taken,
                          bson_error_t *err);
/* Flushes in progress that have not expired at now_ms. */
bool tw_store_export_inflight(tw_store_t *s, int64_t now_ms, int *inflight, bson_error_t *err);
bool tw_store_export_release(tw_store_t *s, const char *holder, bson_error_t *err);

#endif
