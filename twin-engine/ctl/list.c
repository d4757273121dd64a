/* list.c - `twinctl list`: the twins matching filters, one page at a time,
 * as a table or as JSON lines, sorted by product id. Pages are cursors on
 * _id (--after LAST_ID), so a page never skips or repeats a twin however
 * many pages come before it. */
#include <string.h>

#include "ctl.h"

static const char list_help[] =
    "usage: twinctl list [filters] [--limit N] [--after ID] [--json]\n"
    "\n"
    "Lists the twins matching every filter given, sorted by product id: a table of product id,\n"
    "model, stage, owner, odometer (km), battery state of health (%), thinnest brake pad (mm),\n"
    "active alerts and active DTCs; or with --json the whole documents, one per line.\n"
    "\n" CTL_FILTER_HELP "\n"
    "paging:\n"
    "  --limit N            at most N twins, 1..10000 (default 50)\n"
    "  --after ID           only twins whose product id sorts after ID: pass the last id of a page\n"
    "                       to get the next one (the table mode prints it when more may follow)\n"
    "output:\n"
    "  --json               one document per line, relaxed extended JSON (as `get --json`)\n" CTL_DB_HELP "\n"
    "examples:\n"
    "  twinctl list --stage IN_SERVICE --brake-below 3 --limit 10\n"
    "  twinctl list --recall RC-2025-321-A --json | jq -r ._id\n"
    "  twinctl list --site DLR-0040 --after W1TAU2E40LUKKF3MD\n"
    "\n"
    "Exit status: 0 listed (also when nothing matches), 1 a MongoDB error, 2 bad usage.\n";

/* Only what the table shows; timelines are most of a document's bytes. */
static void table_projection(bson_t *opts) {
  static const char *fields[] = {"model",
                                 "stage",
                                 "owner",
                                 "telemetry.odometer_km.value",
                                 "battery_health.soh_pct",
                                 "min_brake_pad_mm",
                                 "alerts.active",
                                 "active_dtcs"};
  bson_t p;
  BSON_APPEND_DOCUMENT_BEGIN(opts, "projection", &p);
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) BSON_APPEND_INT32(&p, fields[i], 1);
  bson_append_document_end(opts, &p);
}

static void add_row(ctl_table_t *t, const bson_t *doc) {
  char odo[32] = "", soh[32] = "", pad[32] = "", alerts[16], dtcs[16];
  double v;
  if (ctl_num(doc, "telemetry.odometer_km.value", &v)) snprintf(odo, sizeof odo, "%.1f", v);
  if (ctl_num(doc, "battery_health.soh_pct", &v)) snprintf(soh, sizeof soh, "%.2f", v);
  if (ctl_num(doc, "min_brake_pad_mm", &v)) snprintf(pad, sizeof pad, "%.2f", v);
  snprintf(alerts, sizeof alerts, "%u", ctl_array_len(doc, "alerts.active"));
  snprintf(dtcs, sizeof dtcs, "%u", ctl_array_len(doc, "active_dtcs"));
  ctl_table_add(t, (const char *[]){ctl_str(doc, "_id"), ctl_str(doc, "model"), ctl_str(doc, "stage"),
                                    ctl_str(doc, "owner"), odo, soh, pad, alerts, dtcs});
}

int ctl_cmd_list(ctl_db_t *db, int argc, char **argv) {
  ctl_filter_t f;
  int64_t limit = 50;
  const char *after = NULL;
  bool json = false;
  int n_pos;
  ctl_filter_init(&f);
  ctl_opts_t opts = {0};
  ctl_opts_filter(&opts, &f);
  ctl_opt(&opts, "--limit", CTL_OPT_INT, &limit, 1, 10000, NULL);
  ctl_opt(&opts, "--after", CTL_OPT_STR, &after, 0, 0, NULL);
  ctl_opt(&opts, "--json", CTL_OPT_FLAG, &json, 0, 0, NULL);
  ctl_opts_db(&opts, db);
  switch (ctl_parse("list", argc, argv, &opts, NULL, 0, &n_pos)) {
  case CTL_PARSE_HELP: fputs(list_help, stdout); return CTL_OK;
  case CTL_PARSE_ERROR: return CTL_USAGE;
  case CTL_PARSE_OK: break;
  }
  int rc = ctl_db_open(db, "list");
  if (rc != CTL_OK) return rc;

  bson_t q = BSON_INITIALIZER, o = BSON_INITIALIZER, sort, gt;
  ctl_filter_to_bson(&f, &q);
  if (after) {
    BSON_APPEND_DOCUMENT_BEGIN(&q, "_id", &gt);
    BSON_APPEND_UTF8(&gt, "$gt", after);
    bson_append_document_end(&q, &gt);
  }
  BSON_APPEND_DOCUMENT_BEGIN(&o, "sort", &sort);
  BSON_APPEND_INT32(&sort, "_id", 1);
  bson_append_document_end(&o, &sort);
  BSON_APPEND_INT64(&o, "limit", limit);
  if (!json) table_projection(&o);

  static const char *heads[] = {"PRODUCT_ID", "MODEL",      "STAGE",  "OWNER", "ODOMETER_KM",
                                "SOH_PCT",    "MIN_PAD_MM", "ALERTS", "DTCS"};
  ctl_table_t t;
  ctl_table_init(&t, 9, heads, 0xF0u | 0x100u);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(db->twins, &q, &o, NULL);
  const bson_t *doc;
  char last[300] = "";
  int64_t n = 0;
  while (mongoc_cursor_next(cur, &doc)) {
    n++;
    if (json) {
      char *s = bson_as_relaxed_extended_json(doc, NULL);
      printf("%s\n", s);
      bson_free(s);
    } else {
      add_row(&t, doc);
      const char *id = ctl_str(doc, "_id");
      snprintf(last, sizeof last, "%s", id ? id : "");
    }
  }
  bson_error_t err;
  if (mongoc_cursor_error(cur, &err)) {
    rc = ctl_fail("reading %s.twins: %s", db->database, err.message);
  } else if (!json) {
    if (n == 0) {
      printf("no twins match\n");
    } else {
      ctl_table_print(&t, stdout);
      /* On stderr, so the table itself stays clean for `| sort` and friends. */
      if (n == limit) fprintf(stderr, "%lld twins; more may follow: add --after %s\n", (long long)n, last);
    }
  }
  if (fflush(stdout) != 0 && rc == CTL_OK) rc = ctl_fail("writing to standard output failed");
  mongoc_cursor_destroy(cur);
  ctl_table_cleanup(&t);
  bson_destroy(&q);
  bson_destroy(&o);
  ctl_db_close(db);
  return rc;
}
