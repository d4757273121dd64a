/* store.c - snapshots and checkpoints in MongoDB (see store.h).
 *
 * Both writes use one mechanism for "never go backwards": an upsert whose
 * filter only matches an older document. When the stored document is as
 * new or newer the filter matches nothing, the upsert tries to insert the
 * same _id, and the server answers duplicate key (11000): that answer is
 * the expected "already newer", not a failure. */
#include "store.h"

#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "twin/log.h"
#include "util.h"

struct tw_store {
  mongoc_client_t *client;
  mongoc_collection_t *twins, *checkpoints, *journal, *fence;
  int ferretdb; /* -1 unknown yet, 0 MongoDB, 1 FerretDB */
};

tw_store_t *tw_store_new(const char *uri_s, const char *database, const char *appname, bson_error_t *err) {
  mongoc_uri_t *uri = mongoc_uri_new_with_error(uri_s, err);
  if (!uri) return NULL;
  if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 5000);
  if (!mongoc_uri_has_option(uri, MONGOC_URI_SOCKETTIMEOUTMS))
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, 60000);
  if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTRYONCE))
    mongoc_uri_set_option_as_bool(uri, MONGOC_URI_SERVERSELECTIONTRYONCE, false);
  mongoc_client_t *c = mongoc_client_new_from_uri_with_error(uri, err);
  mongoc_uri_destroy(uri);
  if (!c) return NULL;
  mongoc_client_set_appname(c, appname);
  mongoc_client_set_error_api(c, MONGOC_ERROR_API_VERSION_2);
  tw_store_t *s = bson_malloc0(sizeof *s);
  s->client = c;
  s->twins = mongoc_client_get_collection(c, database, "twins");
  s->checkpoints = mongoc_client_get_collection(c, database, "checkpoints");
  s->journal = mongoc_client_get_collection(c, database, "snapshot_journal");
  s->fence = mongoc_client_get_collection(c, database, "fence");
  s->ferretdb = -1;
  return s;
}

void tw_store_destroy(tw_store_t *s) {
  if (!s) return;
  mongoc_collection_destroy(s->twins);
  mongoc_collection_destroy(s->checkpoints);
  mongoc_collection_destroy(s->fence);
  mongoc_collection_destroy(s->journal);
  mongoc_client_destroy(s->client);
  bson_free(s);
}

bool tw_store_ping(tw_store_t *s, bson_error_t *err) {
  bson_t cmd = BSON_INITIALIZER;
  BSON_APPEND_INT32(&cmd, "ping", 1);
  bool ok = mongoc_client_command_simple(s->client, "admin", &cmd, NULL, NULL, err);
  bson_destroy(&cmd);
  return ok;
}

static void append_in(bson_t *filter, const char *field, const char *const *ids, size_t n);

bool tw_store_load(tw_store_t *s, const char *const *ids, size_t n, tw_store_doc_cb cb, void *ud,
                   bson_error_t *err) {
  bson_t filter = BSON_INITIALIZER;
  append_in(&filter, "_id", ids, n);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(s->twins, &filter, NULL, NULL);
  const bson_t *doc;
  while (mongoc_cursor_next(cur, &doc)) cb(ud, doc);
  bool ok = !mongoc_cursor_error(cur, err);
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  return ok;
}

/* True when reply's write errors include a duplicate key (a guard hit). */
static bool has_dup_key_error(const bson_t *reply) {
  bson_iter_t it, arr, e;
  if (!bson_iter_init_find(&it, reply, "writeErrors") || !BSON_ITER_HOLDS_ARRAY(&it)) return false;
  bson_iter_recurse(&it, &arr);
  while (bson_iter_next(&arr))
    if (bson_iter_recurse(&arr, &e) && bson_iter_find(&e, "code") && bson_iter_as_int64(&e) == 11000)
      return true;
  return false;
}

/* A guarded upsert: (filter, doc). */
typedef struct {
  bson_t *filter, *doc; /* heap: bson_t wants 128-byte alignment, arrays of it don't get it */
} op_t;

/* Runs ops as one unordered bulk. When a guard hit (11000) shows up, the
 * ops are run again one at a time: MongoDB would have applied the others,
 * but FerretDB 1.24 ignores ordered:false for updates and stops at the
 * first error without saying which op it was. Guarded upserts are
 * idempotent, so running them again is safe on both. */
static bool run_guarded(mongoc_collection_t *col, op_t *ops, size_t n, size_t *stale, bson_error_t *err) {
  bson_t opts = BSON_INITIALIZER, upsert = BSON_INITIALIZER, reply;
  BSON_APPEND_BOOL(&opts, "ordered", false);
  BSON_APPEND_BOOL(&upsert, "upsert", true);
  if (stale) *stale = 0;
  mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(col, &opts);
  bool ok = true;
  for (size_t i = 0; i < n && ok; i++)
    ok = mongoc_bulk_operation_replace_one_with_opts(bulk, ops[i].filter, ops[i].doc, &upsert, err);
  if (ok) {
    ok = mongoc_bulk_operation_execute(bulk, &reply, err) != 0;
    bool retry_each = !ok && has_dup_key_error(&reply);
    bson_destroy(&reply);
    if (retry_each) {
      ok = true;
      for (size_t i = 0; i < n && ok; i++) {
        bson_error_t e1;
        bson_t r1;
        if (mongoc_collection_replace_one(col, ops[i].filter, ops[i].doc, &upsert, &r1, &e1)) {
          bson_destroy(&r1);
          continue;
        }
        bson_destroy(&r1);
        if (e1.code == 11000) {
          if (stale) (*stale)++;
        } else {
          *err = e1;
          ok = false;
        }
      }
    }
  }
  mongoc_bulk_operation_destroy(bulk);
  bson_destroy(&opts);
  bson_destroy(&upsert);
  return ok;
}

static op_t *ops_new(size_t n) {
  op_t *ops = bson_malloc0((n ? n : 1) * sizeof(op_t));
  for (size_t i = 0; i < n; i++) {
    ops[i].filter = bson_new();
    ops[i].doc = bson_new();
  }
  return ops;
}

static void ops_destroy(op_t *ops, size_t n) {
  for (size_t i = 0; i < n; i++) {
    bson_destroy(ops[i].filter);
    bson_destroy(ops[i].doc);
  }
  bson_free(ops);
}

/* filter = {_id: id, <field>: {$lt: v}} */
static void guard_filter(bson_t *f, const char *id, const char *field, int64_t v) {
  bson_t lt;
  BSON_APPEND_UTF8(f, "_id", id);
  BSON_APPEND_DOCUMENT_BEGIN(f, field, &lt);
  BSON_APPEND_INT64(&lt, "$lt", v);
  bson_append_document_end(f, &lt);
}

/* FerretDB answers buildInfo with a ferretdbVersion field. */
static bool detect_server(tw_store_t *s, bson_error_t *err) {
  if (s->ferretdb >= 0) return true;
  bson_t cmd = BSON_INITIALIZER, reply;
  BSON_APPEND_INT32(&cmd, "buildInfo", 1);
  bool ok = mongoc_client_command_simple(s->client, "admin", &cmd, NULL, &reply, err);
  if (ok) {
    bson_iter_t it;
    s->ferretdb = bson_iter_init_find(&it, &reply, "ferretdbVersion") ? 1 : 0;
  }
  bson_destroy(&reply);
  bson_destroy(&cmd);
  return ok;
}

static void append_in(bson_t *filter, const char *field, const char *const *ids, size_t n) {
  bson_t f, in;
  char key[16];
  const char *kp;
  BSON_APPEND_DOCUMENT_BEGIN(filter, field, &f);
  BSON_APPEND_ARRAY_BEGIN(&f, "$in", &in);
  for (size_t i = 0; i < n; i++) {
    bson_uint32_to_string((uint32_t)i, &kp, key, sizeof key);
    BSON_APPEND_UTF8(&in, kp, ids[i]);
  }
  bson_append_array_end(&f, &in);
  bson_append_document_end(filter, &f);
}

/* Inserts docs unordered. Duplicate keys are not failures: their indexes
 * into docs go to dup_idx (when not NULL, room for n) and their count to
 * *dups; any other write error fails. */
static bool insert_unordered(mongoc_collection_t *col, bson_t *const *docs, size_t n, size_t *dup_idx,
                             size_t *dups, bson_error_t *err) {
  bson_t opts = BSON_INITIALIZER, reply;
  BSON_APPEND_BOOL(&opts, "ordered", false);
  mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(col, &opts);
  for (size_t i = 0; i < n; i++) mongoc_bulk_operation_insert(bulk, docs[i]);
  bool ok = mongoc_bulk_operation_execute(bulk, &reply, err) != 0;
  *dups = 0;
  if (!ok && has_dup_key_error(&reply)) {
    bson_iter_t it, arr, e;
    ok = true;
    bson_iter_init_find(&it, &reply, "writeErrors");
    bson_iter_recurse(&it, &arr);
    while (bson_iter_next(&arr)) {
      int64_t code = -1, index = -1;
      if (bson_iter_recurse(&arr, &e))
        while (bson_iter_next(&e)) {
          if (strcmp(bson_iter_key(&e), "code") == 0) code = bson_iter_as_int64(&e);
          if (strcmp(bson_iter_key(&e), "index") == 0) index = bson_iter_as_int64(&e);
        }
      if (code != 11000 || index < 0 || (size_t)index >= n) {
        ok = false;
        continue;
      }
      if (dup_idx) dup_idx[*dups] = (size_t)index;
      (*dups)++;
    }
    if (!ok)
      bson_set_error(err, MONGOC_ERROR_SERVER, 1, "insert failed with errors other than duplicate key");
  }
  bson_destroy(&reply);
  bson_destroy(&opts);
  mongoc_bulk_operation_destroy(bulk);
  return ok;
}

/* Replaces stored snapshots by delete + insert, keeping the newer `seen`:
 * the delete only matches stored documents older than ours, so the insert
 * of an id whose stored document is as new or newer fails with duplicate
 * key (counted as stale). One collection scan per batch. */
static bool replace_by_insert(tw_store_t *s, bson_t *const *docs, size_t n, size_t *stale,
                              bson_error_t *err) {
  bson_t filter = BSON_INITIALIZER, or ;
  char key[16];
  const char *kp;
  BSON_APPEND_ARRAY_BEGIN(&filter, "$or", & or);
  for (size_t i = 0; i < n; i++) {
    bson_iter_t it;
    bson_t clause, lt;
    bson_uint32_to_string((uint32_t)i, &kp, key, sizeof key);
    BSON_APPEND_DOCUMENT_BEGIN(& or, kp, &clause);
    bson_iter_init_find(&it, docs[i], "_id");
    BSON_APPEND_UTF8(&clause, "_id", bson_iter_utf8(&it, NULL));
    bson_iter_init_find(&it, docs[i], "seen");
    BSON_APPEND_DOCUMENT_BEGIN(&clause, "seen", &lt);
    BSON_APPEND_INT64(&lt, "$lt", bson_iter_as_int64(&it));
    bson_append_document_end(&clause, &lt);
    bson_append_document_end(& or, &clause);
  }
  bson_append_array_end(&filter, & or);
  int64_t t0 = tw_mono_ms();
  bool ok = mongoc_collection_delete_many(s->twins, &filter, NULL, NULL, err);
  bson_destroy(&filter);
  int64_t t1 = tw_mono_ms();
  size_t dups = 0;
  if (ok) ok = insert_unordered(s->twins, docs, n, NULL, &dups, err);
  TW_DEBUG("store", "delete %lld ms, insert %lld ms", (long long)(t1 - t0), (long long)(tw_mono_ms() - t1));
  if (stale) *stale += dups;
  return ok;
}

/* The journal keeps each batch's snapshots, in a few large documents
 * (FerretDB's cost is per document scanned), until the batch is in
 * `twins`, so a crash between delete and insert can be repaired
 * (tw_store_repair) before anyone loads those twins again. */
#define JOURNAL_CHUNK_BYTES (8u * 1024u * 1024u)

static bool journaled_replace(tw_store_t *s, bson_t *const *docs, const int32_t *parts, size_t n,
                              size_t *stale, bson_error_t *err) {
  static _Atomic uint64_t counter;
  char prefix[64];
  bson_snprintf(prefix, sizeof prefix, "%llx-%d-%llu", (unsigned long long)tw_now_ms(), (int)getpid(),
                (unsigned long long)atomic_fetch_add(&counter, 1));
  bson_t **chunks = NULL;
  size_t nc = 0;
  for (size_t i = 0; i < n;) {
    bson_t *c = bson_new(), arr, pa;
    char id[96], key[16];
    const char *kp;
    bson_snprintf(id, sizeof id, "%s-%zu", prefix, nc);
    BSON_APPEND_UTF8(c, "_id", id);
    BSON_APPEND_ARRAY_BEGIN(c, "partitions", &pa);
    size_t start = i, bytes = 0;
    while (i < n && (i == start || bytes + docs[i]->len < JOURNAL_CHUNK_BYTES)) bytes += docs[i++]->len;
    uint32_t k = 0;
    for (size_t j = start; j < i; j++) {
      bool seen_before = false;
      for (size_t q = start; q < j; q++) seen_before |= parts[q] == parts[j];
      if (seen_before) continue;
      bson_uint32_to_string(k++, &kp, key, sizeof key);
      BSON_APPEND_INT32(&pa, kp, parts[j]);
    }
    bson_append_array_end(c, &pa);
    BSON_APPEND_ARRAY_BEGIN(c, "snapshots", &arr);
    for (size_t j = start; j < i; j++) {
      bson_uint32_to_string((uint32_t)(j - start), &kp, key, sizeof key);
      BSON_APPEND_DOCUMENT(&arr, kp, docs[j]);
    }
    bson_append_array_end(c, &arr);
    chunks = bson_realloc(chunks, (nc + 1) * sizeof *chunks);
    chunks[nc++] = c;
  }
  size_t dups;
  int64_t t0 = tw_mono_ms();
  bool ok = insert_unordered(s->journal, chunks, nc, NULL, &dups, err);
  int64_t t1 = tw_mono_ms();
  ok = ok && replace_by_insert(s, docs, n, stale, err);
  int64_t t2 = tw_mono_ms();
  if (ok) {
    const char **ids = bson_malloc0(nc * sizeof *ids);
    for (size_t i = 0; i < nc; i++) {
      bson_iter_t it;
      bson_iter_init_find(&it, chunks[i], "_id");
      ids[i] = bson_iter_utf8(&it, NULL);
    }
    bson_t del = BSON_INITIALIZER;
    append_in(&del, "_id", ids, nc);
    ok = mongoc_collection_delete_many(s->journal, &del, NULL, NULL, err);
    bson_destroy(&del);
    bson_free(ids);
  }
  TW_DEBUG("store", "journal insert %lld ms, replace %lld ms, journal delete %lld ms (%zu docs)",
           (long long)(t1 - t0), (long long)(t2 - t1), (long long)(tw_mono_ms() - t2), n);
  for (size_t i = 0; i < nc; i++) bson_destroy(chunks[i]);
  bson_free(chunks);
  return ok;
}

bool tw_store_write_twins(tw_store_t *s, tw_twin_t *const *twins, size_t n, int64_t now_ms, size_t *stale,
                          bson_error_t *err) {
  if (stale) *stale = 0;
  if (n == 0) return true;
  if (!detect_server(s, err)) return false;
  bool ok;
  if (s->ferretdb) {
    /* FerretDB 1.24 scans the whole collection for every update, so a
     * batch of upserts costs batch x collection. Twins never stored yet are
     * inserted; the others (and any insert that finds its id taken) are
     * replaced by journal + guarded delete + insert: two scans per batch. */
    bson_t **docs = bson_malloc0(n * sizeof *docs);
    bson_t **fresh = bson_malloc0(n * sizeof *fresh), **old = bson_malloc0(n * sizeof *old);
    int32_t *fresh_parts = bson_malloc0(n * sizeof *fresh_parts), *parts = bson_malloc0(n * sizeof *parts);
    size_t *dup_idx = bson_malloc0(n * sizeof *dup_idx);
    size_t nf = 0, no = 0, dups = 0;
    for (size_t i = 0; i < n; i++) {
      docs[i] = bson_new();
      tw_twin_to_bson(twins[i], now_ms, docs[i]);
      if (twins[i]->stored) {
        parts[no] = twins[i]->partition;
        old[no++] = docs[i];
      } else {
        fresh_parts[nf] = twins[i]->partition;
        fresh[nf++] = docs[i];
      }
    }
    ok = nf == 0 || insert_unordered(s->twins, fresh, nf, dup_idx, &dups, err);
    for (size_t i = 0; ok && i < dups; i++) { /* taken meanwhile: replace instead */
      parts[no] = fresh_parts[dup_idx[i]];
      old[no++] = fresh[dup_idx[i]];
    }
    if (ok && no) ok = journaled_replace(s, old, parts, no, stale, err);
    bson_free(dup_idx);
    bson_free(fresh_parts);
    for (size_t i = 0; i < n; i++) bson_destroy(docs[i]);
    bson_free(docs);
    bson_free(fresh);
    bson_free(old);
    bson_free(parts);
  } else {
    op_t *ops = ops_new(n);
    for (size_t i = 0; i < n; i++) {
      guard_filter(ops[i].filter, twins[i]->product_id, "seen", (int64_t)twins[i]->seen);
      tw_twin_to_bson(twins[i], now_ms, ops[i].doc);
    }
    ok = run_guarded(s->twins, ops, n, stale, err);
    ops_destroy(ops, n);
  }
  return ok;
}

bool tw_store_repair(tw_store_t *s, const int32_t *partitions, size_t n_parts, size_t *repaired,
                     bson_error_t *err) {
  *repaired = 0;
  if (!detect_server(s, err)) return false;
  if (!s->ferretdb || n_parts == 0) return true;
  bson_t filter = BSON_INITIALIZER, f, in;
  char key[16];
  const char *kp;
  BSON_APPEND_DOCUMENT_BEGIN(&filter, "partitions", &f);
  BSON_APPEND_ARRAY_BEGIN(&f, "$in", &in);
  for (size_t i = 0; i < n_parts; i++) {
    bson_uint32_to_string((uint32_t)i, &kp, key, sizeof key);
    BSON_APPEND_INT32(&in, kp, partitions[i]);
  }
  bson_append_array_end(&f, &in);
  bson_append_document_end(&filter, &f);
  /* Collect the newest journaled snapshot of each product, then replace
   * them in one batch (the writes are guarded by `seen`, so snapshots that
   * did reach `twins`, or are older, change nothing). */
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(s->journal, &filter, NULL, NULL);
  const bson_t *d;
  bson_t **snaps = NULL;
  size_t n = 0;
  while (mongoc_cursor_next(cur, &d)) {
    bson_iter_t it, arr;
    if (!bson_iter_init_find(&it, d, "snapshots") || !BSON_ITER_HOLDS_ARRAY(&it)) continue;
    bson_iter_recurse(&it, &arr);
    while (bson_iter_next(&arr)) {
      uint32_t len;
      const uint8_t *data;
      if (!BSON_ITER_HOLDS_DOCUMENT(&arr)) continue;
      bson_iter_document(&arr, &len, &data);
      bson_t *snap = bson_new_from_data(data, len);
      bson_iter_t fi;
      const char *id = bson_iter_init_find(&fi, snap, "_id") ? bson_iter_utf8(&fi, NULL) : "";
      int64_t seen = bson_iter_init_find(&fi, snap, "seen") ? bson_iter_as_int64(&fi) : 0;
      size_t k = 0;
      for (; k < n; k++) {
        bson_iter_t g;
        bson_iter_init_find(&g, snaps[k], "_id");
        if (strcmp(bson_iter_utf8(&g, NULL), id) == 0) break;
      }
      if (k < n) {
        bson_iter_t g;
        bson_iter_init_find(&g, snaps[k], "seen");
        if (bson_iter_as_int64(&g) >= seen) {
          bson_destroy(snap);
          continue;
        }
        bson_destroy(snaps[k]);
        snaps[k] = snap;
      } else {
        snaps = bson_realloc(snaps, (n + 1) * sizeof *snaps);
        snaps[n++] = snap;
      }
    }
  }
  bool ok = !mongoc_cursor_error(cur, err);
  mongoc_cursor_destroy(cur);
  size_t stale = 0;
  if (ok && n) ok = replace_by_insert(s, snaps, n, &stale, err);
  if (ok) *repaired = n - stale;
  for (size_t i = 0; i < n; i++) bson_destroy(snaps[i]);
  bson_free(snaps);
  if (ok) ok = mongoc_collection_delete_many(s->journal, &filter, NULL, NULL, err);
  bson_destroy(&filter);
  return ok;
}

/* ---- Checkpoints ----------------------------------------------------------- */

static void checkpoint_id(char *buf, size_t cap, const char *group, const char *topic, int32_t partition) {
  bson_snprintf(buf, cap, "%s/%s/%d", group, topic, partition);
}

bool tw_store_write_checkpoints(tw_store_t *s, const char *group, const tw_checkpoint_t *cps, size_t n,
                                int64_t now_ms, bson_error_t *err) {
  if (n == 0) return true;
  op_t *ops = ops_new(n);
  for (size_t i = 0; i < n; i++) {
    char id[512];
    checkpoint_id(id, sizeof id, group, cps[i].topic, cps[i].partition);
    guard_filter(ops[i].filter, id, "offset", cps[i].offset);
    bson_t *doc = ops[i].doc;
    BSON_APPEND_UTF8(doc, "_id", id);
    BSON_APPEND_UTF8(doc, "group", group);
    BSON_APPEND_UTF8(doc, "topic", cps[i].topic);
    BSON_APPEND_INT32(doc, "partition", cps[i].partition);
    BSON_APPEND_INT64(doc, "offset", cps[i].offset);
    BSON_APPEND_DATE_TIME(doc, "updated_at", now_ms);
  }
  bool ok = run_guarded(s->checkpoints, ops, n, NULL, err);
  ops_destroy(ops, n);
  return ok;
}

bool tw_store_read_checkpoint(tw_store_t *s, const char *group, const char *topic, int32_t partition,
                              int64_t *offset, bson_error_t *err) {
  char id[512];
  *offset = -1;
  checkpoint_id(id, sizeof id, group, topic, partition);
  bson_t filter = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&filter, "_id", id);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(s->checkpoints, &filter, NULL, NULL);
  const bson_t *doc;
  bson_iter_t it;
  if (mongoc_cursor_next(cur, &doc) && bson_iter_init_find(&it, doc, "offset"))
    *offset = bson_iter_as_int64(&it);
  bool ok = !mongoc_cursor_error(cur, err);
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  return ok;
}

/* ---- Export fence ---------------------------------------------------------- */

#define FENCE_ID "export"

/* Runs update_one(filter, update); *matched = documents matched. */
static bool fence_update(tw_store_t *s, const bson_t *filter, const bson_t *update, bool upsert,
                         int64_t *matched, bson_error_t *err) {
  bson_t opts = BSON_INITIALIZER, reply;
  if (upsert) BSON_APPEND_BOOL(&opts, "upsert", true);
  bool ok = mongoc_collection_update_one(s->fence, filter, update, &opts, &reply, err);
  bson_iter_t it;
  if (matched) *matched = 0;
  if (ok && matched && bson_iter_init_find(&it, &reply, "matchedCount")) *matched = bson_iter_as_int64(&it);
  bson_destroy(&reply);
  bson_destroy(&opts);
  return ok;
}

bool tw_store_fence_init(tw_store_t *s, bson_error_t *err) {
  bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, soi;
  BSON_APPEND_UTF8(&filter, "_id", FENCE_ID);
  BSON_APPEND_DOCUMENT_BEGIN(&update, "$setOnInsert", &soi);
  BSON_APPEND_INT64(&soi, "export_until", 0);
  BSON_APPEND_UTF8(&soi, "holder", "");
  bson_append_document_end(&update, &soi);
  bool ok = fence_update(s, &filter, &update, true, NULL, err);
  /* Two engines starting at once: the loser's upsert hits the unique _id. */
  if (!ok && err->code == 11000) ok = true;
  bson_destroy(&filter);
  bson_destroy(&update);
  return ok;
}

/* export_until of the fence document (0 when there is none). */
static bool fence_export_until(tw_store_t *s, int64_t *until, bson_error_t *err) {
  bson_t filter = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&filter, "_id", FENCE_ID);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(s->fence, &filter, NULL, NULL);
  const bson_t *doc;
  bson_iter_t it;
  *until = 0;
  if (mongoc_cursor_next(cur, &doc) && bson_iter_init_find(&it, doc, "export_until") &&
      BSON_ITER_HOLDS_NUMBER(&it))
    *until = bson_iter_as_int64(&it);
  bool ok = !mongoc_cursor_error(cur, err);
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  return ok;
}

/* A flush first announces itself (its own document), then looks at the
 * fence; an export first takes the fence, then looks for flushes. Each side
 * writes before it reads, so at least one of them sees the other: the flush
 * backs off, or the export waits for it. */
bool tw_store_fence_enter(tw_store_t *s, const char *flush_id, int64_t now_ms, tw_fence_ticket_t *ticket,
                          bool *entered, bson_error_t *err) {
  *entered = false;
  bson_snprintf(ticket->entry, sizeof ticket->entry, "flush|%s", flush_id);
  bson_t doc = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&doc, "_id", ticket->entry);
  BSON_APPEND_UTF8(&doc, "kind", "flush");
  BSON_APPEND_INT64(&doc, "until", now_ms + TW_FENCE_FLUSH_MS);
  bson_t opts = BSON_INITIALIZER;
  BSON_APPEND_BOOL(&opts, "upsert", true);
  bson_t filter = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&filter, "_id", ticket->entry);
  bool ok = mongoc_collection_replace_one(s->fence, &filter, &doc, &opts, NULL, err);
  bson_destroy(&filter);
  bson_destroy(&opts);
  bson_destroy(&doc);
  int64_t until = 0;
  ok = ok && fence_export_until(s, &until, err);
  if (ok && until <= now_ms) {
    *entered = true;
    return true;
  }
  bson_error_t lerr;
  tw_store_fence_leave(s, ticket, &lerr); /* fenced (or failed): withdraw */
  return ok;
}

bool tw_store_fence_leave(tw_store_t *s, const tw_fence_ticket_t *ticket, bson_error_t *err) {
  bson_t filter = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&filter, "_id", ticket->entry);
  bool ok = mongoc_collection_delete_one(s->fence, &filter, NULL, NULL, err);
  bson_destroy(&filter);
  return ok;
}

bool tw_store_export_take(tw_store_t *s, const char *holder, int64_t now_ms, int64_t lease_ms, bool *taken,
                          bson_error_t *err) {
  *taken = false;
  if (!tw_store_fence_init(s, err)) return false;
  /* Free (expired) or already ours. */
  bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, or, a, b, lte, set;
  BSON_APPEND_UTF8(&filter, "_id", FENCE_ID);
  BSON_APPEND_ARRAY_BEGIN(&filter, "$or", & or);
  BSON_APPEND_DOCUMENT_BEGIN(& or, "0", &a);
  BSON_APPEND_DOCUMENT_BEGIN(&a, "export_until", &lte);
  BSON_APPEND_INT64(&lte, "$lte", now_ms);
  bson_append_document_end(&a, &lte);
  bson_append_document_end(& or, &a);
  BSON_APPEND_DOCUMENT_BEGIN(& or, "1", &b);
  BSON_APPEND_UTF8(&b, "holder", holder);
  bson_append_document_end(& or, &b);
  bson_append_array_end(&filter, & or);
  BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set);
  BSON_APPEND_INT64(&set, "export_until", now_ms + lease_ms);
  BSON_APPEND_UTF8(&set, "holder", holder);
  bson_append_document_end(&update, &set);
  int64_t matched = 0;
  bool ok = fence_update(s, &filter, &update, false, &matched, err);
  *taken = ok && matched == 1;
  bson_destroy(&filter);
  bson_destroy(&update);
  return ok;
}

bool tw_store_export_inflight(tw_store_t *s, int64_t now_ms, int *inflight, bson_error_t *err) {
  bson_t filter = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&filter, "kind", "flush");
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(s->fence, &filter, NULL, NULL);
  const bson_t *doc;
  bson_iter_t it;
  *inflight = 0;
  while (mongoc_cursor_next(cur, &doc))
    if (bson_iter_init_find(&it, doc, "until") && BSON_ITER_HOLDS_NUMBER(&it) &&
        bson_iter_as_int64(&it) > now_ms)
      (*inflight)++;
  bool ok = !mongoc_cursor_error(cur, err);
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  return ok;
}

bool tw_store_export_release(tw_store_t *s, const char *holder, bson_error_t *err) {
  bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, set;
  BSON_APPEND_UTF8(&filter, "_id", FENCE_ID);
  BSON_APPEND_UTF8(&filter, "holder", holder);
  BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set);
  BSON_APPEND_INT64(&set, "export_until", 0);
  BSON_APPEND_UTF8(&set, "holder", "");
  bson_append_document_end(&update, &set);
  bool ok = fence_update(s, &filter, &update, false, NULL, err);
  bson_destroy(&filter);
  bson_destroy(&update);
  return ok;
}
