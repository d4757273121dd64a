/* db.c - twinctl's MongoDB connection and single-twin lookup.
 *
 * Read-only. The URI is never printed (it may carry a password); errors
 * show libmongoc's message, which names the host but not the credentials. */
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

void ctl_db_init(ctl_db_t *db) {
  memset(db, 0, sizeof *db);
  db->uri = getenv("TWIN_MONGO_URI");
  if (!db->uri || !*db->uri) db->uri = "mongodb://127.0.0.1:27017";
  db->database = getenv("TWIN_MONGO_DATABASE");
  if (!db->database || !*db->database) db->database = "twin";
}

void ctl_opts_db(ctl_opts_t *o, ctl_db_t *db) {
  ctl_opt(o, "--mongo-uri", CTL_OPT_STR, &db->uri, 0, 0, NULL);
  ctl_opt(o, "--database", CTL_OPT_STR, &db->database, 0, 0, NULL);
}

int ctl_db_open(ctl_db_t *db, const char *cmd) {
  bson_error_t err;
  db->muri = mongoc_uri_new_with_error(db->uri, &err);
  if (!db->muri) return ctl_usage_error(cmd, "--mongo-uri is not a MongoDB URI: %s", err.message);
  /* Fail in seconds, not libmongoc's 30 s, when the server is down; a URI
   * option still wins. */
  if (!mongoc_uri_has_option(db->muri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
    mongoc_uri_set_option_as_int32(db->muri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 5000);
  if (!mongoc_uri_get_appname(db->muri)) mongoc_uri_set_appname(db->muri, "twinctl");
  db->client = mongoc_client_new_from_uri_with_error(db->muri, &err);
  if (!db->client) return ctl_usage_error(cmd, "--mongo-uri: %s", err.message);
  mongoc_client_set_error_api(db->client, MONGOC_ERROR_API_VERSION_2);
  db->twins = mongoc_client_get_collection(db->client, db->database, "twins");
  db->checkpoints = mongoc_client_get_collection(db->client, db->database, "checkpoints");
  return CTL_OK;
}

void ctl_db_close(ctl_db_t *db) {
  if (db->twins) mongoc_collection_destroy(db->twins);
  if (db->checkpoints) mongoc_collection_destroy(db->checkpoints);
  if (db->client) mongoc_client_destroy(db->client);
  if (db->muri) mongoc_uri_destroy(db->muri);
  db->twins = db->checkpoints = NULL;
  db->client = NULL;
  db->muri = NULL;
}

int ctl_db_get_twin(ctl_db_t *db, const char *id, bson_t **doc) {
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&filter, "_id", id);
  BSON_APPEND_INT64(&opts, "limit", 1);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(db->twins, &filter, &opts, NULL);
  const bson_t *d;
  bson_error_t err;
  int rc = CTL_OK;
  *doc = NULL;
  if (mongoc_cursor_next(cur, &d))
    *doc = bson_copy(d);
  else if (mongoc_cursor_error(cur, &err))
    rc = ctl_fail("reading %s.twins: %s", db->database, err.message);
  else
    rc = ctl_fail("no twin '%s' in %s.twins", id, db->database);
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  bson_destroy(&opts);
  return rc;
}
