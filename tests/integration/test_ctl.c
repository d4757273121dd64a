/* test_ctl.c - twinctl, the real binary, against twins the real engine wrote.
 *
 * The group setup produces a seeded twin-sim fleet to its own topics, runs
 * twin-engine until its checkpoints cover every message and stops it with
 * SIGTERM; the tests then run twinctl as a subprocess against that database
 * and check what it prints against the documents read here with libmongoc:
 * get (table and --json), list with every filter and paging, timeline
 * order, flag validation, and export (NDJSON validated against the schema,
 * CSV parsed back by Python's csv module, zstd round trip, meta.json
 * checkpoints). The last test changes documents (alerts, an owner that needs
 * CSV quoting), so it runs last. Needs `deploy/local/stack.sh up`. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <mongoc/mongoc.h>

#include "harness.h"
#include "twin/log.h"

static h_scenario_t g_s;
static bson_t **g_docs; /* every stored twin, sorted by _id */
static size_t g_n;

/* ---- Helpers ------------------------------------------------------------------- */

/* Splits buf in place into lines (without the newline); returns the count. */
static size_t split_lines(char *buf, char ***lines) {
  size_t n = 0, cap = 64;
  *lines = malloc(cap * sizeof **lines);
  for (char *p = buf; p && *p;) {
    char *nl = strchr(p, '\n');
    if (nl) *nl = '\0';
    if (n == cap) *lines = realloc(*lines, (cap *= 2) * sizeof **lines);
    (*lines)[n++] = p;
    p = nl ? nl + 1 : NULL;
  }
  return n;
}

static bool contains(const char *hay, const char *needle) { return hay && strstr(hay, needle) != NULL; }

/* Runs `twinctl --database DB ARGS` through the shell; returns its exit
 * code and, when out/err are not NULL, what it printed (caller frees). */
static int ctl(char **out, char **err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int ctl(char **out, char **err, const char *fmt, ...) {
  char args[2000], cmd[3000], out_path[300], err_path[300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(out_path, sizeof out_path, "%s/ctl.out", g_s.logdir);
  snprintf(err_path, sizeof err_path, "%s/ctl.err", g_s.logdir);
  snprintf(cmd, sizeof cmd, "%s/twinctl --database %s %s >%s 2>%s", g_s.bin_dir, g_s.database, args, out_path,
           err_path);
  int st = system(cmd);
  int rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  if (out) *out = h_slurp(out_path);
  if (err) *err = h_slurp(err_path);
  fprintf(stderr, "[test] twinctl %s -> %d\n", args, rc);
  return rc;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
  char cmd[3000];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *dstr(const bson_t *d, const char *path) {
  bson_iter_t it, f;
  if (!bson_iter_init(&it, d) || !bson_iter_find_descendant(&it, path, &f) || !BSON_ITER_HOLDS_UTF8(&f))
    return NULL;
  return bson_iter_utf8(&f, NULL);
}

static bool dnum(const bson_t *d, const char *path, double *v) {
  bson_iter_t it, f;
  if (!bson_iter_init(&it, d) || !bson_iter_find_descendant(&it, path, &f) || !BSON_ITER_HOLDS_NUMBER(&f))
    return false;
  *v = bson_iter_as_double(&f);
  return true;
}

/* Positions elems before the first element of the array at path. */
static bool array_iter(const bson_t *d, const char *path, bson_iter_t *elems) {
  bson_iter_t it, f;
  return bson_iter_init(&it, d) && bson_iter_find_descendant(&it, path, &f) && BSON_ITER_HOLDS_ARRAY(&f) &&
         bson_iter_recurse(&f, elems);
}

static bool array_has_str(const bson_t *d, const char *path, const char *v) {
  bson_iter_t a;
  if (!array_iter(d, path, &a)) return false;
  while (bson_iter_next(&a))
    if (BSON_ITER_HOLDS_UTF8(&a) && strcmp(bson_iter_utf8(&a, NULL), v) == 0) return true;
  return false;
}

/* The string elements of the array at path joined by sep, as the CSV has them. */
static void joined(const bson_t *d, const char *path, const char *sep, char *buf, size_t cap) {
  bson_iter_t a;
  buf[0] = '\0';
  if (!array_iter(d, path, &a)) return;
  while (bson_iter_next(&a)) {
    if (!BSON_ITER_HOLDS_UTF8(&a)) continue;
    if (buf[0]) strncat(buf, sep, cap - strlen(buf) - 1);
    strncat(buf, bson_iter_utf8(&a, NULL), cap - strlen(buf) - 1);
  }
}

static uint32_t array_len(const bson_t *d, const char *path) {
  bson_iter_t a;
  uint32_t n = 0;
  if (array_iter(d, path, &a))
    while (bson_iter_next(&a)) n++;
  return n;
}

/* The sub-document it points at (a timeline entry, an alert), as a static bson_t. */
static bool subdoc(const bson_iter_t *it, bson_t *out) {
  uint32_t len;
  const uint8_t *data;
  if (!BSON_ITER_HOLDS_DOCUMENT(it)) return false;
  bson_iter_document(it, &len, &data);
  return bson_init_static(out, data, len);
}

static mongoc_client_t *client(void) {
  mongoc_client_t *c = mongoc_client_new(g_s.mongo_uri);
  if (!c) fail_msg("bad mongo uri %s", g_s.mongo_uri);
  return c;
}

static void free_docs(void) {
  for (size_t i = 0; i < g_n; i++) bson_destroy(g_docs[i]);
  free(g_docs);
  g_docs = NULL;
  g_n = 0;
}

/* (Re)reads every stored twin, sorted by _id. */
static void load_docs(void) {
  free_docs();
  mongoc_client_t *c = client();
  mongoc_collection_t *col = mongoc_client_get_collection(c, g_s.database, "twins");
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort;
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
  BSON_APPEND_INT32(&sort, "_id", 1);
  bson_append_document_end(&opts, &sort);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, &opts, NULL);
  const bson_t *doc;
  size_t cap = 64;
  g_docs = malloc(cap * sizeof *g_docs);
  while (mongoc_cursor_next(cur, &doc)) {
    if (g_n == cap) g_docs = realloc(g_docs, (cap *= 2) * sizeof *g_docs);
    g_docs[g_n++] = bson_copy(doc);
  }
  bson_error_t err;
  if (mongoc_cursor_error(cur, &err)) fail_msg("reading twins: %s", err.message);
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  bson_destroy(&opts);
  mongoc_collection_destroy(col);
  mongoc_client_destroy(c);
}

static char *doc_json(const bson_t *d) { return bson_as_relaxed_extended_json(d, NULL); }

static const bson_t *find_doc(const char *id) {
  for (size_t i = 0; i < g_n; i++)
    if (strcmp(dstr(g_docs[i], "_id"), id) == 0) return g_docs[i];
  return NULL;
}

/* ---- Fleet --------------------------------------------------------------------- */

static int setup_fleet(void **state) {
  (void)state;
  h_scenario_init(&g_s, "ctl", 4);
  const char *sim[] = {"--seed",       "21",   "--products", "40",   "--events", "12000",
                       "--duplicates", "0.01", "--invalid",  "0.02", "--quiet",  NULL};
  h_run_sim(&g_s, sim);
  pid_t e = h_engine_start(&g_s, 2, NULL);
  assert_true(h_wait_caught_up(&g_s, 120));
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  load_docs();
  fprintf(stderr, "[test] %zu twins stored\n", g_n);
  assert_true(g_n >= 30);
  return 0;
}

static int teardown_fleet(void **state) {
  (void)state;
  free_docs();
  h_scenario_cleanup(&g_s);
  return 0;
}

/* ---- help ---------------------------------------------------------------------- */

static void test_help(void **state) {
  (void)state;
  char *out = NULL;
  assert_int_equal(ctl(&out, NULL, "--help"), 0);
  const char *cmds[] = {"get", "list", "timeline", "export", "--mongo-uri", "--database"};
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) assert_true(contains(out, cmds[i]));
  free(out);
  assert_int_equal(ctl(&out, NULL, "list --help"), 0);
  const char *flags[] = {"--stage", "--owner", "--site",  "--alert", "--recall",
                         "--dtc",   "--limit", "--after", "--json",  "--brake-below"};
  for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) assert_true(contains(out, flags[i]));
  free(out);
  assert_int_equal(ctl(&out, NULL, "export --help"), 0);
  assert_true(contains(out, "--format") && contains(out, "--compress") && contains(out, "meta.json"));
  free(out);
  assert_int_equal(ctl(&out, NULL, "get --help"), 0);
  free(out);
  assert_int_equal(ctl(&out, NULL, "timeline --help"), 0);
  free(out);
}

/* ---- get ----------------------------------------------------------------------- */

/* The twin with the most to show: open recalls, DTCs, a service, a long timeline. */
static const bson_t *richest(void) {
  const bson_t *best = g_docs[0];
  uint32_t best_score = 0;
  for (size_t i = 0; i < g_n; i++) {
    uint32_t score = array_len(g_docs[i], "open_recalls") * 100 + array_len(g_docs[i], "active_dtcs") * 100 +
                     array_len(g_docs[i], "timeline") + (dstr(g_docs[i], "last_service.site") ? 50 : 0);
    if (score > best_score) {
      best = g_docs[i];
      best_score = score;
    }
  }
  return best;
}

static void test_get(void **state) {
  (void)state;
  const bson_t *d = richest();
  const char *id = dstr(d, "_id");
  char *out = NULL, *err = NULL;

  /* --json: exactly the stored document. */
  assert_int_equal(ctl(&out, NULL, "get --json %s", id), 0);
  char *want = doc_json(d);
  size_t len = strlen(out);
  assert_true(len > 0 && out[len - 1] == '\n');
  out[len - 1] = '\0';
  assert_string_equal(out, want);
  bson_free(want);
  free(out);

  /* The table: identity, condition, recalls, DTCs, service site. */
  assert_int_equal(ctl(&out, NULL, "get %s", id), 0);
  assert_true(contains(out, id));
  const char *fields[] = {"model", "stage", "owner", "last_service.site"};
  for (size_t i = 0; i < 4; i++)
    if (dstr(d, fields[i])) assert_true(contains(out, dstr(d, fields[i])));
  bson_iter_t a;
  const char *arrays[] = {"open_recalls", "active_dtcs"};
  for (size_t k = 0; k < 2; k++)
    if (array_iter(d, arrays[k], &a))
      while (bson_iter_next(&a)) assert_true(contains(out, bson_iter_utf8(&a, NULL)));
  assert_true(contains(out, "km") && contains(out, "brake pads") && contains(out, "tire pressures"));
  assert_true(contains(out, "Active alerts"));
  free(out);

  /* Unknown ids, also one that looks like a query operator: exit 1. */
  assert_int_equal(ctl(&out, &err, "get NO-SUCH-VIN"), 1);
  assert_true(contains(err, "NO-SUCH-VIN"));
  assert_string_equal(out, "");
  free(out);
  free(err);
  assert_int_equal(ctl(NULL, NULL, "get '{\"$gt\":\"\"}'"), 1);
  assert_int_equal(ctl(NULL, NULL, "get --json '{\"$gt\":\"\"}'"), 1);
}

/* ---- list ---------------------------------------------------------------------- */

typedef bool (*pred_fn)(const bson_t *d, const void *arg);

/* Runs `list ARGS --json --limit 10000` and compares the ids, in order,
 * with the stored twins pred accepts. Returns how many matched. */
static size_t check_list(const char *args, pred_fn pred, const void *arg) {
  char *out = NULL, **lines;
  assert_int_equal(ctl(&out, NULL, "list %s --json --limit 10000", args), 0);
  size_t n = split_lines(out, &lines), k = 0;
  for (size_t i = 0; i < g_n; i++) {
    if (!pred(g_docs[i], arg)) continue;
    if (k >= n) fail_msg("list %s: %s missing (only %zu lines)", args, dstr(g_docs[i], "_id"), n);
    bson_error_t e;
    bson_t *got = bson_new_from_json((const uint8_t *)lines[k], -1, &e);
    if (!got) fail_msg("list %s: line %zu is not JSON: %s", args, k + 1, e.message);
    if (strcmp(dstr(got, "_id"), dstr(g_docs[i], "_id")) != 0)
      fail_msg("list %s: line %zu is %s, expected %s", args, k + 1, dstr(got, "_id"), dstr(g_docs[i], "_id"));
    bson_destroy(got);
    k++;
  }
  if (k != n) fail_msg("list %s: %zu lines, %zu twins match", args, n, k);
  free(lines);
  free(out);
  fprintf(stderr, "[test]   %zu twins\n", k);
  return k;
}

static bool p_stage(const bson_t *d, const void *a) { return strcmp(dstr(d, "stage"), a) == 0; }
static bool p_owner(const bson_t *d, const void *a) {
  return dstr(d, "owner") && strcmp(dstr(d, "owner"), a) == 0;
}
static bool p_recall(const bson_t *d, const void *a) { return array_has_str(d, "open_recalls", a); }
static bool p_dtc(const bson_t *d, const void *a) { return array_has_str(d, "active_dtcs", a); }
static bool p_none(const bson_t *d, const void *a) {
  (void)d;
  (void)a;
  return false;
}
static bool p_site(const bson_t *d, const void *a) {
  bson_iter_t t;
  bson_t e;
  if (!array_iter(d, "timeline", &t)) return false;
  while (bson_iter_next(&t))
    if (subdoc(&t, &e) && dstr(&e, "site") && strcmp(dstr(&e, "site"), a) == 0) return true;
  return false;
}
static bool p_alert(const bson_t *d, const void *a) {
  bson_iter_t al;
  bson_t e;
  if (!array_iter(d, "alerts.active", &al)) return false;
  while (bson_iter_next(&al))
    if (subdoc(&al, &e) && dstr(&e, "rule") && strcmp(dstr(&e, "rule"), a) == 0) return true;
  return false;
}
static bool p_brake(const bson_t *d, const void *a) {
  double v;
  return dnum(d, "min_brake_pad_mm", &v) && v < *(const double *)a;
}
static bool p_stage_brake(const bson_t *d, const void *a) {
  double mm = 6.0;
  return p_stage(d, a) && p_brake(d, &mm);
}

/* The first non-empty string of the array at path in any twin, else NULL. */
static const char *any_element(const char *path) {
  bson_iter_t a;
  for (size_t i = 0; i < g_n; i++)
    if (array_iter(g_docs[i], path, &a) && bson_iter_next(&a) && BSON_ITER_HOLDS_UTF8(&a))
      return bson_iter_utf8(&a, NULL);
  return NULL;
}

static void test_list_filters(void **state) {
  (void)state;
  /* every stage name, present or not */
  const char *stages[] = {"NONE",       "ORDERED",   "IN_PRODUCTION", "BUILT",
                          "IN_TRANSIT", "AT_DEALER", "IN_SERVICE",    "DECOMMISSIONED"};
  size_t total = 0;
  char args[600];
  for (size_t i = 0; i < 8; i++) {
    snprintf(args, sizeof args, "--stage %s", stages[i]);
    total += check_list(args, p_stage, stages[i]);
  }
  assert_int_equal(total, g_n);

  const char *owner = NULL;
  for (size_t i = 0; i < g_n && !owner; i++) owner = dstr(g_docs[i], "owner");
  assert_non_null(owner);
  snprintf(args, sizeof args, "--owner %s", owner);
  assert_true(check_list(args, p_owner, owner) >= 1);

  /* A dealer: every twin with an event there. */
  const char *site = dstr(richest(), "last_service.site");
  assert_non_null(site);
  snprintf(args, sizeof args, "--site %s", site);
  assert_true(check_list(args, p_site, site) >= 1);
  assert_true(check_list("--site OEM-QUALITY", p_site, "OEM-QUALITY") >= 1);

  const char *recall = any_element("open_recalls"), *dtc = any_element("active_dtcs");
  assert_non_null(recall);
  assert_non_null(dtc);
  snprintf(args, sizeof args, "--recall %s", recall);
  assert_true(check_list(args, p_recall, recall) >= 1);
  snprintf(args, sizeof args, "--dtc=%s", dtc);
  assert_true(check_list(args, p_dtc, dtc) >= 1);

  double mm = 6.0;
  assert_true(check_list("--brake-below 6", p_brake, &mm) >= 1);
  check_list("--stage IN_SERVICE --brake-below 6.0", p_stage_brake, "IN_SERVICE");

  /* Values are values: an operator-looking filter matches nothing. */
  check_list("--owner '{\"$ne\":1}'", p_none, NULL);
  check_list("--stage IN_SERVICE --owner '$ne'", p_none, NULL);
  check_list("--alert no_such_rule", p_none, NULL);
  /* Alerts the engine's rules raised, when this engine writes alerts. */
  for (size_t i = 0; i < g_n; i++) {
    bson_iter_t al;
    bson_t e;
    if (!array_iter(g_docs[i], "alerts.active", &al) || !bson_iter_next(&al) || !subdoc(&al, &e)) continue;
    snprintf(args, sizeof args, "--alert %s", dstr(&e, "rule"));
    assert_true(check_list(args, p_alert, dstr(&e, "rule")) >= 1);
    break;
  }

  /* The table: a header and one row per twin, filters as for --json. */
  char *out = NULL, **lines;
  assert_int_equal(ctl(&out, NULL, "list --stage IN_SERVICE --limit 10000"), 0);
  size_t n = split_lines(out, &lines), want = 0;
  for (size_t i = 0; i < g_n; i++) want += p_stage(g_docs[i], "IN_SERVICE");
  assert_true(want > 0);
  assert_int_equal(n, want + 1);
  assert_true(contains(lines[0], "PRODUCT_ID") && contains(lines[0], "MIN_PAD_MM"));
  assert_true(contains(lines[1], "IN_SERVICE"));
  free(lines);
  free(out);
}

static void test_list_pages(void **state) {
  (void)state;
  /* Pages of 7 with --after the last id: every twin once, in order. */
  char after[300] = "";
  size_t seen = 0;
  for (int page = 0; page < 100; page++) {
    char *out = NULL, *err = NULL, **lines;
    if (after[0])
      assert_int_equal(ctl(&out, &err, "list --json --limit 7 --after %s", after), 0);
    else
      assert_int_equal(ctl(&out, &err, "list --json --limit 7"), 0);
    size_t n = split_lines(out, &lines);
    for (size_t i = 0; i < n; i++) {
      bson_t *d = bson_new_from_json((const uint8_t *)lines[i], -1, NULL);
      assert_non_null(d);
      assert_true(seen < g_n);
      assert_string_equal(dstr(d, "_id"), dstr(g_docs[seen], "_id"));
      snprintf(after, sizeof after, "%s", dstr(d, "_id"));
      seen++;
      bson_destroy(d);
    }
    free(lines);
    free(out);
    free(err);
    if (n < 7) break;
  }
  assert_int_equal(seen, g_n);

  /* The table says where the next page starts. */
  char *out = NULL, *err = NULL;
  assert_int_equal(ctl(&out, &err, "list --limit 5"), 0);
  char hint[400];
  snprintf(hint, sizeof hint, "--after %s", dstr(g_docs[4], "_id"));
  assert_true(contains(err, hint));
  free(out);
  free(err);
  /* The last page of a filter is empty past the end. */
  assert_int_equal(ctl(&out, NULL, "list --json --after %s", dstr(g_docs[g_n - 1], "_id")), 0);
  assert_string_equal(out, "");
  free(out);
}

/* ---- timeline ------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void test_timeline(void **state) {
  (void)state;
  /* The twin with a rejected entry and the longest timeline. */
  const bson_t *d = NULL;
  uint32_t best = 0;
  for (size_t i = 0; i < g_n; i++) {
    double rejected = 0;
    dnum(g_docs[i], "counters.rejected", &rejected);
    uint32_t n = array_len(g_docs[i], "timeline") + (rejected > 0 ? 1000 : 0);
    if (n > best) {
      best = n;
      d = g_docs[i];
    }
  }
  assert_non_null(d);
  const char *id = dstr(d, "_id");
  uint32_t n = array_len(d, "timeline");
  char **want = malloc(n * sizeof *want);
  bson_iter_t t;
  bson_t e;
  uint32_t k = 0, rejected = 0;
  assert_true(array_iter(d, "timeline", &t));
  char reason[300] = "";
  while (bson_iter_next(&t)) {
    assert_true(subdoc(&t, &e));
    want[k++] = doc_json(&e);
    if (dstr(&e, "status") && strcmp(dstr(&e, "status"), "rejected") == 0) {
      rejected++;
      snprintf(reason, sizeof reason, "[rejected: %s]", dstr(&e, "reason"));
    }
  }
  assert_int_equal(k, n);
  assert_true(rejected > 0);

  /* --json: the stored entries, each once, oldest first. */
  char *out = NULL, **lines;
  assert_int_equal(ctl(&out, NULL, "timeline --json %s", id), 0);
  assert_int_equal(split_lines(out, &lines), n);
  int64_t prev = INT64_MIN;
  for (uint32_t i = 0; i < n; i++) {
    bson_t *x = bson_new_from_json((const uint8_t *)lines[i], -1, NULL);
    assert_non_null(x);
    double ms = 0;
    assert_true(dnum(x, "event_time_ms", &ms));
    assert_true((int64_t)ms >= prev);
    prev = (int64_t)ms;
    bson_destroy(x);
  }
  qsort(lines, n, sizeof *lines, cmp_str);
  qsort(want, n, sizeof *want, cmp_str);
  for (uint32_t i = 0; i < n; i++) assert_string_equal(lines[i], want[i]);
  for (uint32_t i = 0; i < n; i++) bson_free(want[i]);
  free(want);
  free(lines);
  free(out);

  /* The table: a title, a header, a row per entry, rejected ones marked. */
  assert_int_equal(ctl(&out, NULL, "timeline %s", id), 0);
  assert_true(contains(out, reason));
  assert_int_equal(split_lines(out, &lines), n + 2); /* splits out in place */
  assert_true(contains(lines[1], "TIME") && contains(lines[1], "KIND") && contains(lines[1], "WORK_ORDER"));
  assert_true(strncmp(lines[2], "20", 2) == 0 && contains(lines[2], "Z "));
  free(lines);
  free(out);

  assert_int_equal(ctl(NULL, NULL, "timeline NO-SUCH-VIN"), 1);
}

/* ---- bad flags ----------------------------------------------------------------- */

static void test_bad_flags(void **state) {
  (void)state;
  const struct {
    const char *args, *must_name;
  } cases[] = {
      {"list --bogus", "--bogus"},
      {"list --limit", "--limit"},
      {"list --limit 0", "--limit"},
      {"list --limit 10001", "--limit"},
      {"list --limit 12abc", "--limit"},
      {"list --stage FOO", "--stage"},
      {"list --stage in_service", "IN_SERVICE"},
      {"list --owner", "--owner"},
      {"list --owner --json", "--owner"},
      {"list --owner=", "--owner"},
      {"list --brake-below soon", "--brake-below"},
      {"list --brake-below -1", "--brake-below"},
      {"list --json=yes", "--json"},
      {"list --limit 5 --limit 6", "--limit"},
      {"list stray", "stray"},
      {"get", "ID"},
      {"get A B", "B"},
      {"timeline", "ID"},
      {"export --out x.csv", "--format"},
      {"export --format csv", "--out"},
      {"export --format xml --out x", "--format"},
      {"export --format csv --out x --compress gzip", "--compress"},
      {"export --format csv --out x --limit 5", "--limit"},
      {"frobnicate", "frobnicate"},
      {"--bogus list", "--bogus"},
      {"--mongo-uri not-a-uri list", "--mongo-uri"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *out = NULL, *err = NULL;
    int rc = ctl(&out, &err, "%s", cases[i].args);
    if (rc != 2 || !contains(err, cases[i].must_name) || (out && *out))
      fail_msg("twinctl %s: exit %d, stderr '%s', stdout '%s'", cases[i].args, rc, err ? err : "",
               out ? out : "");
    free(out);
    free(err);
  }
}

/* ---- export -------------------------------------------------------------------- */

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* The stored checkpoints as meta.json renders them: sorted by _id. */
static void check_meta(const char *path, const char *format, size_t count) {
  char *text = h_slurp(path);
  assert_non_null(text);
  bson_error_t e;
  bson_t *meta = bson_new_from_json((const uint8_t *)text, -1, &e);
  if (!meta) fail_msg("%s: %s", path, e.message);
  double n;
  assert_true(dnum(meta, "count", &n));
  assert_int_equal((size_t)n, count);
  assert_string_equal(dstr(meta, "format"), format);
  assert_string_equal(dstr(meta, "database"), g_s.database);
  assert_non_null(dstr(meta, "exported_at"));

  mongoc_client_t *c = client();
  mongoc_collection_t *col = mongoc_client_get_collection(c, g_s.database, "checkpoints");
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort;
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
  BSON_APPEND_INT32(&sort, "_id", 1);
  bson_append_document_end(&opts, &sort);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &filter, &opts, NULL);
  const bson_t *cp;
  bson_iter_t a;
  assert_true(array_iter(meta, "checkpoints", &a));
  size_t k = 0;
  while (mongoc_cursor_next(cur, &cp)) {
    bson_t m;
    double off = 0, part = 0, want_off = 0, want_part = 0;
    assert_true(bson_iter_next(&a));
    assert_true(subdoc(&a, &m));
    assert_string_equal(dstr(&m, "topic"), dstr(cp, "topic"));
    assert_string_equal(dstr(&m, "group"), dstr(cp, "group"));
    assert_true(dnum(&m, "partition", &part) && dnum(cp, "partition", &want_part));
    assert_true(dnum(&m, "offset", &off) && dnum(cp, "offset", &want_off));
    assert_true(part == want_part && off == want_off);
    k++;
  }
  assert_false(bson_iter_next(&a));
  assert_true(k > 0);
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  bson_destroy(&opts);
  mongoc_collection_destroy(col);
  mongoc_client_destroy(c);
  bson_destroy(meta);
  free(text);
}

static void test_export_ndjson(void **state) {
  (void)state;
  char path[400], meta[420], tmp[420];
  snprintf(path, sizeof path, "%s/twins.ndjson", g_s.logdir);
  snprintf(meta, sizeof meta, "%s.meta.json", path);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  assert_int_equal(ctl(NULL, NULL, "export --format ndjson --out %s", path), 0);
  assert_false(exists(tmp));

  /* Every line parses and is the stored document, in _id order. */
  char *text = h_slurp(path), **lines;
  assert_non_null(text);
  assert_int_equal(split_lines(text, &lines), g_n);
  for (size_t i = 0; i < g_n; i++) {
    bson_error_t e;
    bson_t *d = bson_new_from_json((const uint8_t *)lines[i], -1, &e);
    if (!d) fail_msg("line %zu: %s", i + 1, e.message);
    bson_destroy(d);
    char *want = doc_json(g_docs[i]);
    assert_string_equal(lines[i], want);
    bson_free(want);
  }
  free(lines);
  free(text);
  check_meta(meta, "ndjson", g_n);

  /* Each line is valid against the schema for an independent validator. */
  assert_int_equal(sh("/usr/bin/python3 %s/tests/tools/validate_schema.py %s/schemas/twin.schema.json %s",
                      g_s.source_dir, g_s.source_dir, path),
                   0);

  /* With a filter: only those, and meta says how many. */
  size_t want = 0;
  for (size_t i = 0; i < g_n; i++) want += p_stage(g_docs[i], "IN_SERVICE");
  assert_int_equal(ctl(NULL, NULL, "export --format=ndjson --out=%s --stage IN_SERVICE", path), 0);
  text = h_slurp(path);
  assert_int_equal(split_lines(text, &lines), want);
  free(lines);
  free(text);
  check_meta(meta, "ndjson", want);
}

static void test_export_csv(void **state) {
  (void)state;
  char path[400], parsed[420];
  snprintf(path, sizeof path, "%s/twins.csv", g_s.logdir);
  snprintf(parsed, sizeof parsed, "%s/twins.csv.jsonl", g_s.logdir);
  assert_int_equal(ctl(NULL, NULL, "export --format csv --out %s", path), 0);
  char meta[420];
  snprintf(meta, sizeof meta, "%s.meta.json", path);
  check_meta(meta, "csv", g_n);

  /* Python's csv module reads it back: one JSON object per row. */
  assert_int_equal(sh("/usr/bin/python3 -c 'import csv, json, sys\n"
                      "for r in csv.DictReader(open(sys.argv[1], newline=\"\", encoding=\"utf-8\")): "
                      "print(json.dumps(r))' %s > %s",
                      path, parsed),
                   0);
  char *text = h_slurp(parsed), **lines;
  assert_int_equal(split_lines(text, &lines), g_n);
  for (size_t i = 0; i < g_n; i++) {
    const bson_t *d = g_docs[i];
    bson_error_t e;
    bson_t *r = bson_new_from_json((const uint8_t *)lines[i], -1, &e);
    if (!r) fail_msg("row %zu: %s", i + 1, e.message);
    assert_string_equal(dstr(r, "product_id"), dstr(d, "_id"));
    assert_string_equal(dstr(r, "stage"), dstr(d, "stage"));
    assert_string_equal(dstr(r, "model"), dstr(d, "model") ? dstr(d, "model") : "");
    assert_string_equal(dstr(r, "owner"), dstr(d, "owner") ? dstr(d, "owner") : "");
    /* Numbers read back to exactly the stored doubles. */
    const char *nums[][2] = {{"odometer_km", "telemetry.odometer_km.value"},
                             {"min_brake_pad_mm", "min_brake_pad_mm"},
                             {"battery_soh_pct", "battery_health.soh_pct"},
                             {"brake_pad_fl_mm", "telemetry.brake_pad_mm.value.0"},
                             {"tire_pressure_rr_kpa", "telemetry.tire_pressure_kpa.value.3"},
                             {"rev", "rev"}};
    for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++) {
      double want;
      const char *got = dstr(r, nums[k][0]);
      assert_non_null(got);
      if (dnum(d, nums[k][1], &want)) {
        if (strtod(got, NULL) != want)
          fail_msg("%s %s: csv '%s', stored %.17g", dstr(d, "_id"), nums[k][0], got, want);
      } else {
        assert_string_equal(got, "");
      }
    }
    char buf[2000];
    joined(d, "active_dtcs", ";", buf, sizeof buf);
    assert_string_equal(dstr(r, "active_dtcs"), buf);
    joined(d, "open_recalls", ";", buf, sizeof buf);
    assert_string_equal(dstr(r, "open_recalls"), buf);
    double n_alerts = atof(dstr(r, "n_active_alerts"));
    assert_true(n_alerts == array_len(d, "alerts.active"));
    assert_non_null(dstr(r, "updated_at"));
    assert_true(contains(dstr(r, "updated_at"), "Z"));
    bson_destroy(r);
  }
  free(lines);
  free(text);
  /* RFC 4180 line ends. */
  text = h_slurp(path);
  assert_true(contains(text, "\r\n"));
  free(text);
}

static void test_export_zstd(void **state) {
  (void)state;
  char plain[400], zst[400], meta[420];
  const char *formats[] = {"ndjson", "csv"};
  for (int f = 0; f < 2; f++) {
    snprintf(plain, sizeof plain, "%s/z.%s", g_s.logdir, formats[f]);
    snprintf(zst, sizeof zst, "%s/z.%s.zst", g_s.logdir, formats[f]);
    assert_int_equal(ctl(NULL, NULL, "export --format %s --out %s", formats[f], plain), 0);
    assert_int_equal(ctl(NULL, NULL, "export --format %s --out %s --compress zstd", formats[f], zst), 0);
    assert_int_equal(sh("zstd -q -t %s", zst), 0);
    assert_int_equal(sh("zstd -q -dc %s | cmp -s - %s", zst, plain), 0);
    snprintf(meta, sizeof meta, "%s.meta.json", zst);
    check_meta(meta, formats[f], g_n);
  }
}

static void test_export_errors(void **state) {
  (void)state;
  char path[400], *err = NULL;
  /* An output folder that does not exist: exit 1 naming the file, nothing written. */
  snprintf(path, sizeof path, "%s/no-such-dir/x.csv", g_s.logdir);
  assert_int_equal(ctl(NULL, &err, "export --format csv --out %s", path), 1);
  assert_true(contains(err, "no-such-dir"));
  free(err);
  /* MongoDB unreachable: exit 1, neither the file nor its temporary left. */
  snprintf(path, sizeof path, "%s/down.ndjson", g_s.logdir);
  assert_int_equal(ctl(NULL, &err,
                       "--mongo-uri 'mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500' "
                       "export --format ndjson --out %s",
                       path),
                   1);
  assert_true(contains(err, "twinctl:"));
  free(err);
  char tmp[420];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  assert_false(exists(path));
  assert_false(exists(tmp));
  /* get against an unreachable server: exit 1 too. */
  assert_int_equal(ctl(NULL, NULL, "--mongo-uri 'mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500' get X"),
                   1);
}

/* ---- changed documents (runs last) ---------------------------------------------- */

/* Gives two twins an active alert in the shape the rules write
 * (alerts.active[]), and one an owner that CSV must quote. */
static void test_alerts_and_quoting(void **state) {
  (void)state;
  mongoc_client_t *c = client();
  mongoc_collection_t *col = mongoc_client_get_collection(c, g_s.database, "twins");
  const char *ids[2] = {dstr(g_docs[1], "_id"), dstr(g_docs[3], "_id")};
  char id_copy[2][300];
  for (int i = 0; i < 2; i++) {
    snprintf(id_copy[i], sizeof id_copy[i], "%s", ids[i]);
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set, arr, al;
    BSON_APPEND_UTF8(&sel, "_id", id_copy[i]);
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
    BSON_APPEND_ARRAY_BEGIN(&set, "alerts.active", &arr);
    BSON_APPEND_DOCUMENT_BEGIN(&arr, "0", &al);
    BSON_APPEND_UTF8(&al, "rule", "ctl_test_rule");
    BSON_APPEND_UTF8(&al, "alert_id", "ctl-test-1");
    BSON_APPEND_UTF8(&al, "severity", "CRITICAL");
    BSON_APPEND_INT64(&al, "since", 1767225600000);
    BSON_APPEND_DOUBLE(&al, "value", 2.5);
    BSON_APPEND_DOUBLE(&al, "threshold", 3.0);
    BSON_APPEND_UTF8(&al, "unit", "mm");
    BSON_APPEND_INT64(&al, "predicted_at_ms", 1769904000000);
    BSON_APPEND_UTF8(&al, "message", "ctl test: brake pads nearly worn");
    bson_append_document_end(&arr, &al);
    bson_append_array_end(&set, &arr);
    if (i == 1) BSON_APPEND_UTF8(&set, "owner", "ACME, \"Fleet\"\nDept");
    bson_append_document_end(&upd, &set);
    bson_error_t e;
    if (!mongoc_collection_update_one(col, &sel, &upd, NULL, NULL, &e)) fail_msg("update: %s", e.message);
    bson_destroy(&sel);
    bson_destroy(&upd);
  }
  mongoc_collection_destroy(col);
  mongoc_client_destroy(c);
  load_docs();

  /* list --alert finds exactly those two. */
  char *out = NULL, **lines;
  assert_int_equal(ctl(&out, NULL, "list --alert ctl_test_rule --json"), 0);
  assert_int_equal(split_lines(out, &lines), 2);
  assert_true(contains(lines[0], id_copy[0]) && contains(lines[1], id_copy[1]));
  free(lines);
  free(out);
  assert_int_equal(ctl(&out, NULL, "list --alert ctl_test_rule"), 0);
  assert_true(contains(out, id_copy[0]));
  free(out);

  /* get shows the alert with its unit; --json is still the stored document. */
  assert_int_equal(ctl(&out, NULL, "get %s", id_copy[0]), 0);
  assert_true(contains(out, "ctl_test_rule") && contains(out, "CRITICAL") && contains(out, "2.5 mm") &&
              contains(out, "brake pads nearly worn") && contains(out, "2026-01-01T00:00:00Z"));
  free(out);
  assert_int_equal(ctl(&out, NULL, "get --json %s", id_copy[1]), 0);
  char *want = doc_json(find_doc(id_copy[1]));
  assert_true(strncmp(out, want, strlen(want)) == 0);
  bson_free(want);
  free(out);

  /* CSV: the alert columns, and the owner back byte for byte through quoting. */
  char path[400], parsed[420];
  snprintf(path, sizeof path, "%s/alerts.csv", g_s.logdir);
  snprintf(parsed, sizeof parsed, "%s/alerts.csv.jsonl", g_s.logdir);
  assert_int_equal(ctl(NULL, NULL, "export --format csv --out %s --alert ctl_test_rule", path), 0);
  assert_int_equal(sh("/usr/bin/python3 -c 'import csv, json, sys\n"
                      "for r in csv.DictReader(open(sys.argv[1], newline=\"\", encoding=\"utf-8\")): "
                      "print(json.dumps(r))' %s > %s",
                      path, parsed),
                   0);
  char *text = h_slurp(parsed);
  assert_int_equal(split_lines(text, &lines), 2);
  for (int i = 0; i < 2; i++) {
    bson_t *r = bson_new_from_json((const uint8_t *)lines[i], -1, NULL);
    assert_non_null(r);
    assert_string_equal(dstr(r, "product_id"), id_copy[i]);
    assert_string_equal(dstr(r, "n_active_alerts"), "1");
    assert_string_equal(dstr(r, "alert_rules"), "ctl_test_rule");
    if (i == 1) assert_string_equal(dstr(r, "owner"), "ACME, \"Fleet\"\nDept");
    bson_destroy(r);
  }
  free(lines);
  free(text);
}

int main(void) {
  mongoc_init();
  tw_log_route_mongoc();
  if (getenv("TWIN_TEST_FILTER")) cmocka_set_test_filter(getenv("TWIN_TEST_FILTER"));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_help),
      cmocka_unit_test(test_get),
      cmocka_unit_test(test_list_filters),
      cmocka_unit_test(test_list_pages),
      cmocka_unit_test(test_timeline),
      cmocka_unit_test(test_bad_flags),
      cmocka_unit_test(test_export_ndjson),
      cmocka_unit_test(test_export_csv),
      cmocka_unit_test(test_export_zstd),
      cmocka_unit_test(test_export_errors),
      cmocka_unit_test(test_alerts_and_quoting),
  };
  int rc = cmocka_run_group_tests(tests, setup_fleet, teardown_fleet);
  mongoc_cleanup();
  return rc;
}
