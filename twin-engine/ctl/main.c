/* twinctl - look twins up in MongoDB, for people and scripts.
 *
 * Reads the `twins` collection directly (--mongo-uri), so it works when no
 * engine runs. This first version has `get` and `list`; `timeline` and
 * `export` are planned (issue 5) and say so instead of pretending. */
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "twin/log.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: twinctl [--mongo-uri URI] [--database DB] get ID\n"
          "       twinctl [--mongo-uri URI] [--database DB] list [--stage STAGE] [--owner ID] [--dtc CODE]\n"
          "                                                      [--brake-below MM] [--limit N]\n"
          "Prints twins as relaxed extended JSON, one per line.\n"
          "Defaults: --mongo-uri $TWIN_MONGO_URI or mongodb://127.0.0.1:27017, --database twin.\n"
          "Not yet available: timeline, export (planned).\n");
}

static int print_cursor(mongoc_cursor_t *cur) {
  const bson_t *doc;
  int n = 0;
  while (mongoc_cursor_next(cur, &doc)) {
    char *json = bson_as_relaxed_extended_json(doc, NULL);
    printf("%s\n", json);
    bson_free(json);
    n++;
  }
  bson_error_t err;
  if (mongoc_cursor_error(cur, &err)) {
    fprintf(stderr, "twinctl: %s\n", err.message);
    return -1;
  }
  return n;
}

int main(int argc, char **argv) {
  const char *uri = getenv("TWIN_MONGO_URI");
  const char *db = "twin";
  if (!uri || !*uri) uri = "mongodb://127.0.0.1:27017";
  int i = 1;
  for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
    if (strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    }
    if (i + 1 >= argc) break;
    if (strcmp(argv[i], "--mongo-uri") == 0)
      uri = argv[i + 1];
    else if (strcmp(argv[i], "--database") == 0)
      db = argv[i + 1];
    else {
      fprintf(stderr, "twinctl: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (i >= argc) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[i++];
  if (strcmp(cmd, "timeline") == 0 || strcmp(cmd, "export") == 0) {
    fprintf(stderr, "twinctl: '%s' is not implemented yet\n", cmd);
    return 2;
  }
  if (strcmp(cmd, "get") != 0 && strcmp(cmd, "list") != 0) {
    fprintf(stderr, "twinctl: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
  }

  mongoc_init();
  tw_log_route_mongoc();
  tw_log_set_level(TW_LOG_ERROR);
  bson_error_t err;
  mongoc_uri_t *u = mongoc_uri_new_with_error(uri, &err);
  if (!u) {
    fprintf(stderr, "twinctl: --mongo-uri: %s\n", err.message);
    return 2;
  }
  mongoc_client_t *client = mongoc_client_new_from_uri(u);
  mongoc_collection_t *col = mongoc_client_get_collection(client, db, "twins");
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
  int rc = 0;
  if (strcmp(cmd, "get") == 0) {
    if (i >= argc) {
      fprintf(stderr, "twinctl get: missing ID\n");
      rc = 2;
      goto out;
    }
    BSON_APPEND_UTF8(&filter, "_id", argv[i]);
  } else {
    int64_t limit = 20;
    for (; i + 1 < argc; i += 2) {
      const char *k = argv[i], *v = argv[i + 1];
      if (strcmp(k, "--stage") == 0)
        BSON_APPEND_UTF8(&filter, "stage", v);
      else if (strcmp(k, "--owner") == 0)
        BSON_APPEND_UTF8(&filter, "owner", v);
      else if (strcmp(k, "--dtc") == 0)
        BSON_APPEND_UTF8(&filter, "active_dtcs", v);
      else if (strcmp(k, "--brake-below") == 0) {
        bson_t lt;
        BSON_APPEND_DOCUMENT_BEGIN(&filter, "min_brake_pad_mm", &lt);
        BSON_APPEND_DOUBLE(&lt, "$lt", atof(v));
        bson_append_document_end(&filter, &lt);
      } else if (strcmp(k, "--limit") == 0) {
        limit = atoll(v);
        if (limit < 1 || limit > 10000) {
          fprintf(stderr, "twinctl list: --limit must be 1..10000\n");
          rc = 2;
          goto out;
        }
      } else {
        fprintf(stderr, "twinctl list: unknown filter %s\n", k);
        rc = 2;
        goto out;
      }
    }
    if (i < argc) {
      fprintf(stderr, "twinctl list: %s needs a value\n", argv[i]);
      rc = 2;
      goto out;
    }
    BSON_APPEND_INT64(&opts, "limit", limit);
  }
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, &opts, NULL);
  int n = print_cursor(cur);
  mongoc_cursor_destroy(cur);
  if (n < 0) rc = 1;
  if (n == 0 && strcmp(cmd, "get") == 0) {
    fprintf(stderr, "twinctl: no twin with id %s in %s.twins\n", argv[i], db);
    rc = 1;
  }
out:
  bson_destroy(&filter);
  bson_destroy(&opts);
  mongoc_collection_destroy(col);
  mongoc_client_destroy(client);
  mongoc_uri_destroy(u);
  mongoc_cleanup();
  return rc;
}
