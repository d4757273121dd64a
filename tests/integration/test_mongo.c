/* test_mongo.c - BSON documents on the real local MongoDB-protocol server.
 *
 * Needs `deploy/local/stack.sh up` (TWIN_MONGO_URI, default
 * mongodb://127.0.0.1:27017, FerretDB there); fails, never skips, when the
 * server is absent. Pins the server behaviour the engine's sink relies on:
 * unordered bulk upserts, and the monotonic "guarded upsert"
 *   replace_one({_id: X, seen: {$lt: S}}, doc, {upsert: true})
 * which, when the stored doc already has seen >= S, must fail that one
 * operation with a duplicate-key error (11000) and leave the stored doc as
 * it was, while the other operations of the same unordered bulk still apply.
 * Each run uses its own database and drops it at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>

#include "store.h"
#include "util.h"
#include <mongoc/mongoc.h>

typedef struct {
  mongoc_client_t *client;
  mongoc_database_t *db;
  mongoc_collection_t *coll;
  char dbname[64];
} fixture_t;

static const char *uri_string(void) {
  const char *u = getenv("TWIN_MONGO_URI");
  return u && *u ? u : "mongodb://127.0.0.1:27017";
}

static int setup(void **state) {
  bson_error_t err;
  fixture_t *f = calloc(1, sizeof *f);
  assert_non_null(f);
  mongoc_uri_t *uri = mongoc_uri_new_with_error(uri_string(), &err);
  if (!uri) fail_msg("TWIN_MONGO_URI %s: %s", uri_string(), err.message);
  if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 5000);
  mongoc_uri_set_appname(uri, "twin-test-mongo");
  f->client = mongoc_client_new_from_uri_with_error(uri, &err);
  mongoc_uri_destroy(uri);
  if (!f->client) fail_msg("mongoc client: %s", err.message);
  mongoc_client_set_error_api(f->client, MONGOC_ERROR_API_VERSION_2);

  bson_t ping = BSON_INITIALIZER;
  BSON_APPEND_INT32(&ping, "ping", 1);
  bool ok = mongoc_client_command_simple(f->client, "admin", &ping, NULL, NULL, &err);
  bson_destroy(&ping);
  if (!ok)
    fail_msg("no MongoDB ping answer at %s (%s): start it with deploy/local/stack.sh up", uri_string(),
             err.message);

  snprintf(f->dbname, sizeof f->dbname, "twin_test_%ld_%ld", (long)getpid(), (long)time(NULL));
  f->db = mongoc_client_get_database(f->client, f->dbname);
  f->coll = mongoc_database_get_collection(f->db, "twins");
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  if (!f) return 0;
  bson_error_t err;
  if (!mongoc_database_drop(f->db, &err)) fprintf(stderr, "drop %s: %s\n", f->dbname, err.message);
  mongoc_collection_destroy(f->coll);
  mongoc_database_destroy(f->db);
  mongoc_client_destroy(f->client);
  free(f);
  return 0;
}

/* ---- Helpers ------------------------------------------------------------------ */

/* Returns the stored document with _id `id` (caller destroys), or NULL. */
static bson_t *find_by_id(mongoc_collection_t *coll, const char *id) {
  bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, NULL, NULL);
  const bson_t *doc;
  bson_t *out = NULL;
  if (mongoc_cursor_next(cur, &doc)) out = bson_copy(doc);
  bson_error_t err;
  if (mongoc_cursor_error(cur, &err)) fail_msg("find %s: %s", id, err.message);
  mongoc_cursor_destroy(cur);
  bson_destroy(filter);
  return out;
}

static int64_t get_int(const bson_t *doc, const char *path) {
  bson_iter_t it;
  if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &it))
    fail_msg("field %s missing in %s", path, bson_as_relaxed_extended_json(doc, NULL));
  if (!BSON_ITER_HOLDS_NUMBER(&it)) fail_msg("field %s is not a number", path);
  return bson_iter_as_int64(&it);
}

static const char *get_str(const bson_t *doc, const char *path) {
  bson_iter_t it;
  if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &it) || !BSON_ITER_HOLDS_UTF8(&it))
    fail_msg("string field %s missing", path);
  return bson_iter_utf8(&it, NULL);
}

static void dump(const char *what, const bson_t *doc) {
  char *json = bson_as_relaxed_extended_json(doc, NULL);
  fprintf(stderr, "%s: %s\n", what, json);
  bson_free(json);
}

static void insert(mongoc_collection_t *coll, bson_t *doc) {
  bson_error_t err;
  if (!mongoc_collection_insert_one(coll, doc, NULL, NULL, &err)) fail_msg("insert: %s", err.message);
  bson_destroy(doc);
}

/* ---- Tests --------------------------------------------------------------------- */

static void test_insert_and_read_back(void **state) {
  fixture_t *f = *state;
  bson_t *doc = BCON_NEW(
      "_id", BCON_UTF8("WVWZZZ1JZXW000001"), "rev", BCON_INT64(7), "seen", BCON_INT64(1234567890123), "stage",
      BCON_UTF8("IN_SERVICE"), "odometer_km", BCON_DOUBLE(60012.5), "active", BCON_BOOL(true), "updated_at",
      BCON_DATE_TIME(1767225600123), "nothing", BCON_NULL, "telemetry", "{", "tire_pressure_kpa", "[",
      BCON_DOUBLE(230.5), BCON_DOUBLE(231.0), "]", "dtc_codes", "[", BCON_UTF8("P0420"), "]", "}",
      "attributes", "{", "plant", BCON_UTF8("Gr\xc3\xbcnheide"), "}", "small", BCON_INT32(-3));
  bson_t *copy = bson_copy(doc);
  insert(f->coll, doc);
  bson_t *got = find_by_id(f->coll, "WVWZZZ1JZXW000001");
  assert_non_null(got);
  /* Same fields, same order, same types, same values. */
  if (!bson_equal(got, copy)) {
    dump("stored", copy);
    dump("read", got);
    fail_msg("document changed on the way through the server");
  }
  bson_destroy(got);
  bson_destroy(copy);

  bson_error_t err;
  bson_t *filter = BCON_NEW("stage", BCON_UTF8("IN_SERVICE"));
  int64_t n = mongoc_collection_count_documents(f->coll, filter, NULL, NULL, NULL, &err);
  assert_int_equal(n, 1);
  bson_destroy(filter);
}

static void test_bulk_upsert_unordered(void **state) {
  fixture_t *f = *state;
  bson_error_t err;
  bson_t reply;
  for (int round = 0; round < 2; round++) {
    bson_t *opts = BCON_NEW("ordered", BCON_BOOL(false));
    mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(f->coll, opts);
    bson_destroy(opts);
    for (int i = 0; i < 5; i++) {
      char id[32];
      snprintf(id, sizeof id, "SN-%d", i);
      bson_t *sel = BCON_NEW("_id", BCON_UTF8(id));
      bson_t *doc = BCON_NEW("_id", BCON_UTF8(id), "rev", BCON_INT64(round + 1), "n", BCON_INT32(i));
      bson_t *uopts = BCON_NEW("upsert", BCON_BOOL(true));
      if (!mongoc_bulk_operation_replace_one_with_opts(bulk, sel, doc, uopts, &err))
        fail_msg("replace_one: %s", err.message);
      bson_destroy(sel);
      bson_destroy(doc);
      bson_destroy(uopts);
    }
    uint32_t ok = mongoc_bulk_operation_execute(bulk, &reply, &err);
    if (!ok) {
      dump("reply", &reply);
      fail_msg("bulk round %d: %s", round, err.message);
    }
    if (round == 0) {
      assert_int_equal(get_int(&reply, "nUpserted"), 5);
      assert_int_equal(get_int(&reply, "nMatched"), 0);
    } else {
      assert_int_equal(get_int(&reply, "nUpserted"), 0);
      assert_int_equal(get_int(&reply, "nMatched"), 5);
      assert_int_equal(get_int(&reply, "nModified"), 5);
    }
    bson_destroy(&reply);
    mongoc_bulk_operation_destroy(bulk);
  }
  for (int i = 0; i < 5; i++) {
    char id[32];
    snprintf(id, sizeof id, "SN-%d", i);
    bson_t *got = find_by_id(f->coll, id);
    assert_non_null(got);
    assert_int_equal(get_int(got, "rev"), 2);
    assert_int_equal(get_int(got, "n"), i);
    bson_destroy(got);
  }
}

/* True when the server is FerretDB (its buildInfo carries ferretdbVersion). */
static bool is_ferretdb(fixture_t *f) {
  bson_t cmd = BSON_INITIALIZER, reply;
  bson_error_t err;
  BSON_APPEND_INT32(&cmd, "buildInfo", 1);
  if (!mongoc_client_command_simple(f->client, "admin", &cmd, NULL, &reply, &err))
    fail_msg("buildInfo: %s", err.message);
  bool yes = bson_has_field(&reply, "ferretdbVersion");
  bson_destroy(&cmd);
  bson_destroy(&reply);
  return yes;
}

typedef struct {
  const char *id;
  int64_t seen;
  const char *v;
  bool id_in_doc;
} guarded_t;

/* The engine's monotonic write:
 *   replace_one({_id: id, seen: {$lt: seen}}, {_id: id, seen: seen, v: v}, {upsert: true}) */
static void guarded_parts(const guarded_t *g, bson_t **sel, bson_t **doc, bson_t **opts) {
  *sel = BCON_NEW("_id", BCON_UTF8(g->id), "seen", "{", "$lt", BCON_INT64(g->seen), "}");
  *doc = g->id_in_doc ? BCON_NEW("_id", BCON_UTF8(g->id), "seen", BCON_INT64(g->seen), "v", BCON_UTF8(g->v))
                      : BCON_NEW("seen", BCON_INT64(g->seen), "v", BCON_UTF8(g->v));
  *opts = BCON_NEW("upsert", BCON_BOOL(true));
}

/* Collects writeErrors[].index into failed[] (all must be code 11000); returns their count. */
static int write_errors(const bson_t *reply, bool *failed, int n_ops) {
  bson_iter_t it, arr;
  int n = 0;
  if (!bson_iter_init_find(&it, reply, "writeErrors")) return 0;
  assert_true(BSON_ITER_HOLDS_ARRAY(&it));
  assert_true(bson_iter_recurse(&it, &arr));
  while (bson_iter_next(&arr)) {
    const uint8_t *data;
    uint32_t len;
    bson_t we;
    bson_iter_document(&arr, &len, &data);
    assert_true(bson_init_static(&we, data, len));
    int64_t index = get_int(&we, "index");
    assert_in_range(index, 0, n_ops - 1);
    if (get_int(&we, "code") != 11000) {
      dump("write error", &we);
      fail_msg("op %d failed with code %d, expected 11000", (int)index, (int)get_int(&we, "code"));
    }
    failed[index] = true;
    n++;
  }
  return n;
}

static void assert_doc(mongoc_collection_t *coll, const char *id, int64_t seen, const char *v) {
  bson_t *d = find_by_id(coll, id);
  if (!v) {
    if (d) dump("unexpected", d);
    assert_null(d);
    return;
  }
  if (!d) fail_msg("document %s missing", id);
  if (get_int(d, "seen") != seen || strcmp(get_str(d, "v"), v) != 0) {
    dump("stored", d);
    fail_msg("document %s: expected seen=%d v=%s", id, (int)seen, v);
  }
  bson_destroy(d);
}

static void test_guarded_upsert_is_monotonic(void **state) {
  fixture_t *f = *state;
  bson_error_t err;
  bson_t reply;
  const bool ferret = is_ferretdb(f);
  insert(f->coll, BCON_NEW("_id", BCON_UTF8("A"), "seen", BCON_INT64(10), "v", BCON_UTF8("A10")));
  insert(f->coll, BCON_NEW("_id", BCON_UTF8("C"), "seen", BCON_INT64(1), "v", BCON_UTF8("C1")));
  insert(f->coll, BCON_NEW("_id", BCON_UTF8("D"), "seen", BCON_INT64(5), "v", BCON_UTF8("D5")));

  const guarded_t ops[] = {
      {"C", 7, "C7", true},       /* 0: stored seen 1 < 7: replaced */
      {"A", 5, "A5-stale", true}, /* 1: stored seen 10 >= 5: duplicate key, A untouched */
      {"B", 3, "B3", false},      /* 2: new: inserted, _id taken from the filter */
      {"D", 5, "D5-again", true}, /* 3: stored seen 5 == 5: duplicate key, D untouched */
  };
  const int n_ops = (int)(sizeof ops / sizeof ops[0]);
  bson_t *opts = BCON_NEW("ordered", BCON_BOOL(false));
  mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(f->coll, opts);
  bson_destroy(opts);
  for (int i = 0; i < n_ops; i++) {
    bson_t *sel, *doc, *uopts;
    guarded_parts(&ops[i], &sel, &doc, &uopts);
    if (!mongoc_bulk_operation_replace_one_with_opts(bulk, sel, doc, uopts, &err))
      fail_msg("replace_one: %s", err.message);
    bson_destroy(sel);
    bson_destroy(doc);
    bson_destroy(uopts);
  }
  uint32_t ok = mongoc_bulk_operation_execute(bulk, &reply, &err);
  mongoc_bulk_operation_destroy(bulk);
  if (ok) {
    dump("reply", &reply);
    fail_msg("bulk with stale guarded upserts succeeded; expected duplicate-key errors");
  }
  /* On both servers: the bulk fails with 11000 and no stale write lands. */
  assert_int_equal(err.code, 11000);
  bool failed[4] = {false};
  int n_errors = write_errors(&reply, failed, n_ops);
  assert_doc(f->coll, "A", 10, "A10");
  assert_doc(f->coll, "D", 5, "D5");

  if (!ferret) {
    /* MongoDB: unordered = every op is tried; exactly ops 1 and 3 fail. */
    if (n_errors != 2 || failed[0] || !failed[1] || failed[2] || !failed[3]) {
      dump("reply", &reply);
      fail_msg("MongoDB: expected exactly ops 1 and 3 to fail");
    }
    assert_int_equal(get_int(&reply, "nUpserted"), 1);
    assert_int_equal(get_int(&reply, "nMatched"), 1);
    assert_int_equal(get_int(&reply, "nModified"), 1);
    assert_doc(f->coll, "B", 3, "B3");
    assert_doc(f->coll, "C", 7, "C7");
  } else {
    /* FerretDB 1.24 ignores ordered:false for `update` (FerretDB issue 2612):
     * it applies the ops in order, stops at the first error, keeps what it
     * already applied, and reports one write error with index 0 (not the
     * failing op's index) and no counts. Pinned here so a FerretDB change
     * shows up; the engine must not depend on either behaviour (below). */
    if (n_errors != 1 || !failed[0]) {
      dump("reply", &reply);
      fail_msg("FerretDB: expected one write error at index 0");
    }
    assert_int_equal(get_int(&reply, "nUpserted"), 0);
    assert_int_equal(get_int(&reply, "nMatched"), 0);
    assert_int_equal(get_int(&reply, "nModified"), 0);
    assert_doc(f->coll, "C", 7, "C7"); /* op 0, before the failure: applied */
    assert_doc(f->coll, "B", 0, NULL); /* op 2, after it: never tried */
  }
  bson_destroy(&reply);

  /* What works on both: guarded upserts are idempotent, so after a failed
   * bulk every op can be re-run one by one, an 11000 meaning "the stored
   * revision is already as new". The result is the same on both servers. */
  for (int i = 0; i < n_ops; i++) {
    bson_t *sel, *doc, *uopts;
    guarded_parts(&ops[i], &sel, &doc, &uopts);
    bool one_ok = mongoc_collection_replace_one(f->coll, sel, doc, uopts, &reply, &err);
    if (!one_ok && err.code != 11000) fail_msg("op %d alone: %s", i, err.message);
    /* Only B is still missing (FerretDB never tried it); C is already at
     * seen 7, so re-running it is an 11000 too. On MongoDB all four are. */
    bool want_ok = ferret && i == 2;
    if (one_ok != want_ok) {
      dump("reply", &reply);
      fail_msg("op %d alone: %s, expected %s", i, one_ok ? "ok" : err.message, want_ok ? "ok" : "11000");
    }
    bson_destroy(&reply);
    bson_destroy(sel);
    bson_destroy(doc);
    bson_destroy(uopts);
  }
  assert_doc(f->coll, "A", 10, "A10");
  assert_doc(f->coll, "B", 3, "B3");
  assert_doc(f->coll, "C", 7, "C7");
  assert_doc(f->coll, "D", 5, "D5");
  bson_error_t cerr;
  bson_t all = BSON_INITIALIZER;
  assert_int_equal(mongoc_collection_count_documents(f->coll, &all, NULL, NULL, NULL, &cerr), 4);
}

static void test_insert_duplicate_id(void **state) {
  fixture_t *f = *state;
  bson_error_t err;
  bson_t reply;
  insert(f->coll, BCON_NEW("_id", BCON_UTF8("X"), "v", BCON_INT32(1)));
  bson_t *dup = BCON_NEW("_id", BCON_UTF8("X"), "v", BCON_INT32(2));
  bool ok = mongoc_collection_insert_one(f->coll, dup, NULL, &reply, &err);
  bson_destroy(dup);
  if (ok) fail_msg("inserting an existing _id succeeded");
  if (err.code != 11000) {
    dump("reply", &reply);
    fail_msg("duplicate _id: code %u (%s), expected 11000", err.code, err.message);
  }
  /* API v2: write errors are server errors. */
  assert_int_equal(err.domain, MONGOC_ERROR_SERVER);
  bson_destroy(&reply);
  bson_t *got = find_by_id(f->coll, "X");
  assert_non_null(got);
  assert_int_equal(get_int(got, "v"), 1);
  bson_destroy(got);
}

/* The export fence (store.h) on the real server: a flush cannot enter
 * while an export holds it, the export sees flushes in progress, both
 * sides expire, and a renewal by the holder works while others wait. */
static void test_export_fence(void **state) {
  fixture_t *f = *state;
  bson_error_t err;
  tw_store_t *eng = tw_store_new(uri_string(), f->dbname, "fence-engine", &err);
  tw_store_t *exp = tw_store_new(uri_string(), f->dbname, "fence-export", &err);
  assert_non_null(eng);
  assert_non_null(exp);
  assert_true(tw_store_fence_init(eng, &err));
  assert_true(tw_store_fence_init(eng, &err)); /* idempotent */
  int64_t now = 1000000;
  bool ok = false;
  int inflight = -1;
  tw_fence_ticket_t t1, t2, t3;
  /* A flush in progress is seen by the exporter, which still takes the fence
   * (it then waits for the flush to leave). */
  assert_true(tw_store_fence_enter(eng, "i1/0/1", now, &t1, &ok, &err));
  assert_true(ok);
  assert_true(tw_store_export_take(exp, "exporter-a", now, 60000, &ok, &err));
  assert_true(ok);
  assert_true(tw_store_export_inflight(exp, now, &inflight, &err));
  assert_int_equal(inflight, 1);
  /* No new flush enters while the export holds the fence. */
  assert_true(tw_store_fence_enter(eng, "i1/1/1", now + 10, &t2, &ok, &err));
  assert_false(ok);
  assert_true(tw_store_fence_leave(eng, &t1, &err));
  assert_true(tw_store_export_inflight(exp, now + 20, &inflight, &err));
  assert_int_equal(inflight, 0);
  /* A second exporter waits; the holder renews. */
  assert_true(tw_store_export_take(exp, "exporter-b", now + 30, 60000, &ok, &err));
  assert_false(ok);
  assert_true(tw_store_export_take(exp, "exporter-a", now + 40, 60000, &ok, &err));
  assert_true(ok);
  /* Released: flushes enter again. */
  assert_true(tw_store_export_release(exp, "exporter-a", &err));
  assert_true(tw_store_fence_enter(eng, "i1/1/2", now + 50, &t2, &ok, &err));
  assert_true(ok);
  /* An abandoned flush expires for the exporter; an abandoned export
   * expires for the engine. */
  assert_true(tw_store_export_take(exp, "exporter-b", now + 60, 1000, &ok, &err));
  assert_true(ok);
  assert_true(tw_store_export_inflight(exp, now + 60, &inflight, &err));
  assert_int_equal(inflight, 1);
  assert_true(tw_store_export_inflight(exp, now + 50 + TW_FENCE_FLUSH_MS + 1, &inflight, &err));
  assert_int_equal(inflight, 0);
  assert_true(tw_store_fence_enter(eng, "i1/0/2", now + 500, &t3, &ok, &err));
  assert_false(ok);
  assert_true(tw_store_fence_enter(eng, "i1/0/3", now + 60 + 1000, &t3, &ok, &err));
  assert_true(ok);
  tw_store_destroy(eng);
  tw_store_destroy(exp);
}

/* Shards of several engines enter and leave the fence at the same time:
 * every flush that left must be gone for the exporter (a lost leave would
 * make every export wait until it expires, TW_FENCE_FLUSH_MS). */
typedef struct {
  const char *db;
  int id;
  bool ok;
} racer_t;

static void *fence_racer(void *arg) {
  racer_t *r = arg;
  bson_error_t err;
  tw_store_t *st = tw_store_new(uri_string(), r->db, "fence-racer", &err);
  r->ok = st != NULL;
  for (int i = 0; r->ok && i < 40; i++) {
    char fid[64];
    snprintf(fid, sizeof fid, "racer/%d/%d", r->id, i);
    tw_fence_ticket_t t;
    bool entered = false;
    r->ok = tw_store_fence_enter(st, fid, tw_now_ms(), &t, &entered, &err) && entered &&
            tw_store_fence_leave(st, &t, &err);
  }
  tw_store_destroy(st);
  return NULL;
}

static void test_export_fence_concurrent(void **state) {
  fixture_t *f = *state;
  bson_error_t err;
  tw_store_t *exp = tw_store_new(uri_string(), f->dbname, "fence-export", &err);
  assert_non_null(exp);
  assert_true(tw_store_fence_init(exp, &err));
  enum { N = 4 };
  pthread_t th[N];
  racer_t r[N];
  for (int i = 0; i < N; i++) {
    r[i] = (racer_t){f->dbname, i, false};
    assert_int_equal(pthread_create(&th[i], NULL, fence_racer, &r[i]), 0);
  }
  for (int i = 0; i < N; i++) {
    pthread_join(th[i], NULL);
    assert_true(r[i].ok);
  }
  int inflight = -1;
  assert_true(tw_store_export_inflight(exp, tw_now_ms(), &inflight, &err));
  assert_int_equal(inflight, 0);
  tw_store_destroy(exp);
}

int main(void) {
  mongoc_init();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_insert_and_read_back, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bulk_upsert_unordered, setup, teardown),
      cmocka_unit_test_setup_teardown(test_guarded_upsert_is_monotonic, setup, teardown),
      cmocka_unit_test_setup_teardown(test_insert_duplicate_id, setup, teardown),
      cmocka_unit_test_setup_teardown(test_export_fence, setup, teardown),
      cmocka_unit_test_setup_teardown(test_export_fence_concurrent, setup, teardown),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  mongoc_cleanup();
  return rc;
}
