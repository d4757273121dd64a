/* store.c - snapshots and checkpoints in MongoDB (see store.h).
 *
 * Both writes use one mechanism for "never go backwards": an upsert whose
 * filter only matches an older document. When the stored document is as
 * new or newer the filter matches nothing, the upsert tries to insert the
 * same _id, and the server answers duplicate key (11000): that answer is
 * the expected "already newer", not a failure. */
#include "store.h"

#include <string.h>

struct tw_store {
  mongoc_client_t *client;
  mongoc_collection_t *twins, *checkpoints;
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
  return s;
}

void tw_store_destroy(tw_store_t *s) {
  if (!s) return;
  mongoc_collection_destroy(s->twins);
  mongoc_collection_destroy(s->checkpoints);
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

bool tw_store_load(tw_store_t *s, const char *const *ids, size_t n, tw_store_doc_cb cb, void *ud,
                   bson_error_t *err) {
  bson_t filter = BSON_INITIALIZER, id, in;
  char key[16];
  const char *kp;
  BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &id);
  BSON_APPEND_ARRAY_BEGIN(&id, "$in", &in);
  for (size_t i = 0; i < n; i++) {
    bson_uint32_to_string((uint32_t)i, &kp, key, sizeof key);
    BSON_APPEND_UTF8(&in, kp, ids[i]);
  }
  bson_append_array_end(&id, &in);
  bson_append_document_end(&filter, &id);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(s->twins, &filter, NULL, NULL);
  const bson_t *doc;
  while (mongoc_cursor_next(cur, &doc)) cb(ud, doc);
  bool ok = !mongoc_cursor_error(cur, err);
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  return ok;
}

/* True when every write error in reply is a duplicate key (the guard) and
 * there is no write concern error; counts them in *dups. */
static bool only_dup_key_errors(const bson_t *reply, size_t *dups) {
  bson_iter_t it, arr, e;
  *dups = 0;
  if (bson_iter_init_find(&it, reply, "writeConcernErrors") && BSON_ITER_HOLDS_ARRAY(&it)) {
    bson_iter_recurse(&it, &arr);
    if (bson_iter_next(&arr)) return false;
  }
  if (!bson_iter_init_find(&it, reply, "writeErrors") || !BSON_ITER_HOLDS_ARRAY(&it)) return false;
  bson_iter_recurse(&it, &arr);
  while (bson_iter_next(&arr)) {
    if (!bson_iter_recurse(&arr, &e) || !bson_iter_find(&e, "code")) return false;
    if (bson_iter_as_int64(&e) != 11000) return false;
    (*dups)++;
  }
  return *dups > 0;
}

/* Runs bulk; a reply whose only errors are guard hits counts as success. */
static bool run_guarded(mongoc_bulk_operation_t *bulk, size_t *stale, bson_error_t *err) {
  bson_t reply;
  size_t dups = 0;
  bool ok = mongoc_bulk_operation_execute(bulk, &reply, err) != 0;
  if (!ok && only_dup_key_errors(&reply, &dups)) {
    ok = true;
    memset(err, 0, sizeof *err);
  }
  if (stale) *stale = dups;
  bson_destroy(&reply);
  return ok;
}

bool tw_store_write_twins(tw_store_t *s, tw_twin_t *const *twins, size_t n, int64_t now_ms, size_t *stale,
                          bson_error_t *err) {
  if (stale) *stale = 0;
  if (n == 0) return true;
  bson_t opts = BSON_INITIALIZER;
  BSON_APPEND_BOOL(&opts, "ordered", false);
  mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(s->twins, &opts);
  bson_destroy(&opts);
  bson_t upsert = BSON_INITIALIZER;
  BSON_APPEND_BOOL(&upsert, "upsert", true);
  bool ok = true;
  for (size_t i = 0; i < n && ok; i++) {
    bson_t filter = BSON_INITIALIZER, lt, doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&filter, "_id", twins[i]->product_id);
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "seen", &lt);
    BSON_APPEND_INT64(&lt, "$lt", (int64_t)twins[i]->seen);
    bson_append_document_end(&filter, &lt);
    tw_twin_to_bson(twins[i], now_ms, &doc);
    ok = mongoc_bulk_operation_replace_one_with_opts(bulk, &filter, &doc, &upsert, err);
    bson_destroy(&filter);
    bson_destroy(&doc);
  }
  if (ok) ok = run_guarded(bulk, stale, err);
  bson_destroy(&upsert);
  mongoc_bulk_operation_destroy(bulk);
  return ok;
}

static void checkpoint_id(char *buf, size_t cap, const char *group, const char *topic, int32_t partition) {
  bson_snprintf(buf, cap, "%s/%s/%d", group, topic, partition);
}

bool tw_store_write_checkpoints(tw_store_t *s, const char *group, const tw_checkpoint_t *cps, size_t n,
                                int64_t now_ms, bson_error_t *err) {
  if (n == 0) return true;
  bson_t opts = BSON_INITIALIZER;
  BSON_APPEND_BOOL(&opts, "ordered", false);
  mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(s->checkpoints, &opts);
  bson_destroy(&opts);
  bson_t upsert = BSON_INITIALIZER;
  BSON_APPEND_BOOL(&upsert, "upsert", true);
  bool ok = true;
  for (size_t i = 0; i < n && ok; i++) {
    char id[512];
    checkpoint_id(id, sizeof id, group, cps[i].topic, cps[i].partition);
    bson_t filter = BSON_INITIALIZER, lt, doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&filter, "_id", id);
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "offset", &lt);
    BSON_APPEND_INT64(&lt, "$lt", cps[i].offset);
    bson_append_document_end(&filter, &lt);
    BSON_APPEND_UTF8(&doc, "_id", id);
    BSON_APPEND_UTF8(&doc, "group", group);
    BSON_APPEND_UTF8(&doc, "topic", cps[i].topic);
    BSON_APPEND_INT32(&doc, "partition", cps[i].partition);
    BSON_APPEND_INT64(&doc, "offset", cps[i].offset);
    BSON_APPEND_DATE_TIME(&doc, "updated_at", now_ms);
    ok = mongoc_bulk_operation_replace_one_with_opts(bulk, &filter, &doc, &upsert, err);
    bson_destroy(&filter);
    bson_destroy(&doc);
  }
  if (ok) ok = run_guarded(bulk, NULL, err);
  bson_destroy(&upsert);
  mongoc_bulk_operation_destroy(bulk);
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
  if (mongoc_cursor_next(cur, &doc) && bson_iter_init_find(&it, doc, "offset")) *offset = bson_iter_as_int64(&it);
  bool ok = !mongoc_cursor_error(cur, err);
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  return ok;
}
