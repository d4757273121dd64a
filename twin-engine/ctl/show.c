/* show.c - `twinctl get ID` and `twinctl timeline ID`: one twin for a
 * person (sections and tables with units) or for a script (--json: the
 * stored document, or one timeline entry per line, as relaxed extended
 * JSON). */
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

#define LABEL "  %-22s "

/* ---- get ----------------------------------------------------------------------- */

static const char get_help[] =
    "usage: twinctl get [--json] ID\n"
    "\n"
    "Shows one twin: identity, stage and owner; the latest telemetry with units and when each value\n"
    "was observed; brake pads and tire pressures per wheel (FL FR RL RR); active DTCs; open recalls;\n"
    "the last service; active maintenance alerts; event counters. Times are ISO-8601 UTC.\n"
    "\n"
    "options:\n"
    "  --json               print the stored document instead, as one line of relaxed extended JSON\n"
    "                       (the format of `list --json` and `export --format ndjson`)\n" CTL_DB_HELP "\n"
    "Exit status: 0 shown, 1 no such twin or a MongoDB error, 2 bad usage.\n";

typedef struct {
  const char *field, *label, *unit;
  int decimals;
} signal_t;

static const signal_t signals[] = {
    {"odometer_km", "odometer", "km", 1},
    {"speed_kph", "speed", "km/h", 1},
    {"battery_soc_pct", "battery charge (SoC)", "%", 1},
    {"battery_soh_pct", "battery health (SoH)", "%", 2},
    {"battery_temp_c", "battery temperature", "°C", 1},
    {"fuel_level_pct", "fuel level", "%", 1},
    {"aux_battery_v", "12 V battery", "V", 2},
    {"ambient_temp_c", "outside temperature", "°C", 1},
    {"range_km", "range", "km", 1},
    {"latitude", "latitude", "°", 5},
    {"longitude", "longitude", "°", 5},
};

static void observed(const bson_t *doc, const char *field, char *buf, size_t cap) {
  char path[160];
  int64_t ms;
  snprintf(path, sizeof path, "telemetry.%s.at_ms", field);
  if (ctl_ms(doc, path, &ms))
    ctl_fmt_time(buf, cap, ms, false);
  else
    buf[0] = '\0';
}

static void print_telemetry(const bson_t *doc) {
  static const char *heads[] = {"SIGNAL", "VALUE", "UNIT", "OBSERVED"};
  ctl_table_t t;
  char path[200], val[64], at[40];
  ctl_table_init(&t, 4, heads, 1u << 1);
  t.empty = "";
  t.indent = 2;
  for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) {
    double v;
    snprintf(path, sizeof path, "telemetry.%s.value", signals[i].field);
    if (!ctl_num(doc, path, &v)) continue;
    snprintf(val, sizeof val, "%.*f", signals[i].decimals, v);
    observed(doc, signals[i].field, at, sizeof at);
    ctl_table_add(&t, (const char *[]){signals[i].label, val, signals[i].unit, at});
  }
  double trend;
  if (ctl_num(doc, "battery_health.trend_pct_per_year", &trend)) {
    snprintf(val, sizeof val, "%+.2f", trend);
    ctl_table_add(&t, (const char *[]){"battery health trend", val, "%/year", ""});
  }
  /* metrics: free-form signals whose unit is part of the name. */
  bson_iter_t it, m;
  if (ctl_find(doc, "telemetry.metrics", &it) && BSON_ITER_HOLDS_DOCUMENT(&it) &&
      bson_iter_recurse(&it, &m)) {
    while (bson_iter_next(&m)) {
      bson_iter_t f;
      double v;
      if (!bson_iter_recurse(&m, &f) || !bson_iter_find(&f, "value") || !ctl_iter_num(&f, &v)) continue;
      ctl_fmt_double(val, sizeof val, v);
      at[0] = '\0';
      int64_t ms;
      if (bson_iter_recurse(&m, &f) && bson_iter_find(&f, "at_ms") && ctl_iter_ms(&f, &ms))
        ctl_fmt_time(at, sizeof at, ms, false);
      ctl_table_add(&t, (const char *[]){bson_iter_key(&m), val, "", at});
    }
  }
  if (t.nrows == 0) {
    printf("\nTelemetry: none reported yet\n");
  } else {
    printf("\nTelemetry\n");
    ctl_table_print(&t, stdout);
  }
  ctl_table_cleanup(&t);
}

/* "FL 3.68  FR 3.43  RL 6.68  RR 6.66 mm" and when it was reported. */
static void print_wheels(const bson_t *doc, const char *label, const char *field, const char *unit,
                         int decimals) {
  double v[32];
  char path[160], at[40];
  snprintf(path, sizeof path, "telemetry.%s.value", field);
  uint32_t n = ctl_numbers(doc, path, v, 32);
  if (n == 0) {
    printf(LABEL "not reported\n", label);
    return;
  }
  printf(LABEL, label);
  for (uint32_t i = 0; i < n; i++) {
    char w[16];
    ctl_wheel_label(w, sizeof w, i);
    printf("%s%s %.*f", i ? "  " : "", w, decimals, v[i]);
  }
  observed(doc, field, at, sizeof at);
  printf(" %s   (%s)\n", unit, at);
}

static void print_strings(const bson_t *doc, const char *label, const char *path) {
  bson_string_t *s = bson_string_new(NULL);
  ctl_append_joined(s, doc, path, ", ");
  printf(LABEL "%s\n", label, s->len ? s->str : "none");
  bson_string_free(s, true);
}

static void print_service(const bson_t *doc) {
  int64_t at;
  char when[40];
  if (!ctl_ms(doc, "last_service.at_ms", &at)) {
    printf(LABEL "never\n", "last service");
    return;
  }
  ctl_fmt_time(when, sizeof when, at, false);
  bson_string_t *s = bson_string_new(when);
  const char *site = ctl_str(doc, "last_service.site"), *wo = ctl_str(doc, "last_service.work_order");
  double km, since;
  if (site) bson_string_append_printf(s, " at %s", site);
  if (wo) bson_string_append_printf(s, ", work order %s", wo);
  if (ctl_num(doc, "last_service.odometer_km", &km)) bson_string_append_printf(s, ", odometer %.1f km", km);
  if (ctl_num(doc, "odometer_since_service_km", &since))
    bson_string_append_printf(s, " (%.1f km since)", since);
  printf(LABEL "%s\n", "last service", s->str);
  int64_t brakes;
  if (ctl_ms(doc, "last_brake_service_ms", &brakes)) {
    ctl_fmt_time(when, sizeof when, brakes, false);
    printf(LABEL "%s\n", "brake pads replaced", when);
  }
  bson_string_free(s, true);
}

/* "2.95 mm", "30 days": two decimals at most, no trailing zeros. */
static void with_unit(char *buf, size_t cap, double v, const char *unit) {
  char num[64];
  snprintf(num, sizeof num, "%.2f", v);
  char *end = num + strlen(num);
  while (end > num && end[-1] == '0') *--end = '\0';
  if (end > num && end[-1] == '.') *--end = '\0';
  snprintf(buf, cap, "%s%s%s", num, unit && *unit ? " " : "", unit ? unit : "");
}

/* alerts.active: [{rule, severity, since, value, threshold, unit, alert_id,
 * message, predicted_at_ms?}]. Documents from engines without alerts have
 * no `alerts` at all. */
static void print_alerts(const bson_t *doc) {
  bson_iter_t it, a;
  if (!ctl_find(doc, "alerts.active", &it) || !BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &a) ||
      ctl_array_len(doc, "alerts.active") == 0) {
    printf("\nActive alerts: none\n");
    return;
  }
  static const char *heads[] = {"SEVERITY", "RULE", "VALUE", "THRESHOLD", "SINCE", "PREDICTED", "MESSAGE"};
  ctl_table_t t;
  ctl_table_init(&t, 7, heads, (1u << 2) | (1u << 3));
  t.indent = 2;
  while (bson_iter_next(&a)) {
    bson_t al;
    uint32_t len;
    const uint8_t *data;
    if (!BSON_ITER_HOLDS_DOCUMENT(&a)) continue;
    bson_iter_document(&a, &len, &data);
    if (!bson_init_static(&al, data, len)) continue;
    char sev_buf[16], val[64] = "", thr[64] = "", since[40] = "", pred[40] = "";
    const char *unit = ctl_str(&al, "unit");
    double x;
    int64_t ms;
    bson_iter_t f;
    const char *sev = ctl_find(&al, "severity", &f) ? ctl_severity(&f, sev_buf, sizeof sev_buf) : NULL;
    if (ctl_num(&al, "value", &x)) with_unit(val, sizeof val, x, unit);
    if (ctl_num(&al, "threshold", &x)) with_unit(thr, sizeof thr, x, unit);
    if (ctl_ms(&al, "since", &ms)) ctl_fmt_time(since, sizeof since, ms, false);
    if (ctl_ms(&al, "predicted_at_ms", &ms)) ctl_fmt_time(pred, sizeof pred, ms, false);
    ctl_table_add(
        &t, (const char *[]){sev, ctl_str(&al, "rule"), val, thr, since, pred, ctl_str(&al, "message")});
  }
  printf("\nActive alerts (%zu)\n", t.nrows);
  ctl_table_print(&t, stdout);
  ctl_table_cleanup(&t);
}

static void print_counters(const bson_t *doc) {
  static const char *names[] = {"telemetry", "lifecycle", "duplicates",
                                "too_late",  "rejected",  "stale_fields"};
  bson_string_t *s = bson_string_new(NULL);
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char path[64];
    double v;
    snprintf(path, sizeof path, "counters.%s", names[i]);
    if (!ctl_num(doc, path, &v)) continue;
    bson_string_append_printf(s, "%s%s %.0f", s->len ? ", " : "", names[i], v);
  }
  printf(LABEL "%s\n", "events", s->len ? s->str : "-");
  bson_string_free(s, true);
}

static void print_twin(const bson_t *doc) {
  const char *id = ctl_str(doc, "_id"), *model = ctl_str(doc, "model"), *owner = ctl_str(doc, "owner");
  const char *stage = ctl_str(doc, "stage");
  bson_iter_t it;
  double rev = 0, seen = 0, min_pad;
  int64_t updated;
  char when[40] = "?";
  printf("Twin %s\n", id ? id : "?");
  printf(LABEL "%s\n", "model", model ? model : "-");
  printf(LABEL "%s\n", "stage", stage ? stage : "-");
  printf(LABEL "%s\n", "owner", owner ? owner : "-");
  bool hold = ctl_find(doc, "quality_hold", &it) && BSON_ITER_HOLDS_BOOL(&it) && bson_iter_bool(&it);
  printf(LABEL "%s\n", "quality hold", hold ? "yes (the last quality gate failed)" : "no");
  ctl_num(doc, "rev", &rev);
  ctl_num(doc, "seen", &seen);
  if (ctl_ms(doc, "updated_at", &updated)) ctl_fmt_time(when, sizeof when, updated, false);
  printf(LABEL "%.0f events accepted of %.0f seen; snapshot written %s\n", "revision", rev, seen, when);
  int64_t ms;
  const char *fw = ctl_str(doc, "telemetry.firmware_version.value");
  if (fw) {
    observed(doc, "firmware_version", when, sizeof when);
    printf(LABEL "%s (reported %s)\n", "firmware", fw, when);
  }
  if (ctl_ms(doc, "delivered.at_ms", &ms)) {
    double km;
    ctl_fmt_time(when, sizeof when, ms, false);
    printf(LABEL "%s", "delivered", when);
    if (ctl_num(doc, "delivered.odometer_km", &km)) printf(" at %.1f km", km);
    printf("\n");
  }

  print_telemetry(doc);

  printf("\nCondition\n");
  print_wheels(doc, "brake pads", "brake_pad_mm", "mm", 2);
  if (ctl_num(doc, "min_brake_pad_mm", &min_pad)) printf(LABEL "%.2f mm\n", "thinnest brake pad", min_pad);
  double per_km, per_day;
  bool has_km = ctl_num(doc, "brake_wear.mm_per_1000_km", &per_km);
  bool has_day = ctl_num(doc, "brake_wear.mm_per_day", &per_day);
  if (has_km || has_day) {
    printf(LABEL, "brake pad wear");
    if (has_km) printf("%.3f mm per 1000 km%s", per_km, has_day ? ", " : "");
    if (has_day) printf("%.4f mm per day", per_day);
    printf("\n");
  }
  print_wheels(doc, "tire pressures", "tire_pressure_kpa", "kPa", 1);
  print_strings(doc, "active DTCs", "active_dtcs");
  print_strings(doc, "open recalls", "open_recalls");
  print_service(doc);
  print_counters(doc);

  print_alerts(doc);
}

#define CTL_HELP (-1) /* fetch_one printed the help */

/* The options get and timeline share (ID, --json, connection), then the
 * twin's document into *doc. */
static int fetch_one(ctl_db_t *db, const char *cmd, const char *help, int argc, char **argv, bool *json,
                     bson_t **doc) {
  const char *pos[1];
  int n_pos;
  ctl_opts_t opts = {0};
  ctl_opt(&opts, "--json", CTL_OPT_FLAG, json, 0, 0, NULL);
  ctl_opts_db(&opts, db);
  switch (ctl_parse(cmd, argc, argv, &opts, pos, 1, &n_pos)) {
  case CTL_PARSE_HELP: fputs(help, stdout); return CTL_HELP;
  case CTL_PARSE_ERROR: return CTL_USAGE;
  case CTL_PARSE_OK: break;
  }
  if (n_pos != 1) return ctl_usage_error(cmd, "missing the twin's ID (its product_id, e.g. a VIN)");
  int rc = ctl_db_open(db, cmd);
  if (rc == CTL_OK) rc = ctl_db_get_twin(db, pos[0], doc);
  return rc;
}

int ctl_cmd_get(ctl_db_t *db, int argc, char **argv) {
  bool json = false;
  bson_t *doc = NULL;
  int rc = fetch_one(db, "get", get_help, argc, argv, &json, &doc);
  if (rc == CTL_HELP) return CTL_OK;
  if (rc == CTL_OK) {
    if (json) {
      char *s = bson_as_relaxed_extended_json(doc, NULL);
      printf("%s\n", s);
      bson_free(s);
    } else {
      print_twin(doc);
    }
    if (fflush(stdout) != 0) rc = ctl_fail("writing to standard output failed");
  }
  if (doc) bson_destroy(doc);
  ctl_db_close(db);
  return rc;
}

/* ---- timeline ------------------------------------------------------------------ */

static const char timeline_help[] =
    "usage: twinctl timeline [--json] ID\n"
    "\n"
    "Shows a twin's lifecycle history oldest first (by event time; events with the same time in the\n"
    "order the engine applied them): time (ISO-8601 UTC), kind, site, actor, work order, recall,\n"
    "parts replaced, odometer and detail. Events the engine rejected as impossible transitions are\n"
    "kept in the history and marked \"[rejected: reason]\" in the detail column.\n"
    "\n"
    "options:\n"
    "  --json               one timeline entry per line as stored (relaxed extended JSON), same "
    "order\n" CTL_DB_HELP "\n"
    "Exit status: 0 shown, 1 no such twin or a MongoDB error, 2 bad usage.\n";

typedef struct {
  int64_t at_ms;
  uint32_t index; /* position in the stored timeline: the applied order */
  /* The entry's bytes inside the twin's document. (Not a bson_t: libbson
   * aligns those to 128 bytes, more than malloc gives an array.) */
  const uint8_t *data;
  uint32_t len;
} entry_t;

/* A static bson_t over entry e, in storage the caller owns (aligned). */
static const bson_t *entry_doc(const entry_t *e, bson_t *out) {
  if (!bson_init_static(out, e->data, e->len)) bson_init(out);
  return out;
}

static int cmp_entry(const void *a, const void *b) {
  const entry_t *x = a, *y = b;
  if (x->at_ms != y->at_ms) return x->at_ms < y->at_ms ? -1 : 1;
  return x->index < y->index ? -1 : x->index > y->index;
}

/* The timeline's entries, oldest first; *n entries (caller frees the array). */
static entry_t *sorted_entries(const bson_t *doc, uint32_t *n) {
  bson_iter_t it, a;
  entry_t *e = NULL;
  *n = 0;
  if (!ctl_find(doc, "timeline", &it) || !BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &a))
    return NULL;
  uint32_t cap = ctl_array_len(doc, "timeline");
  e = bson_malloc0((cap ? cap : 1) * sizeof *e);
  while (bson_iter_next(&a) && *n < cap) {
    uint32_t len;
    const uint8_t *data;
    if (!BSON_ITER_HOLDS_DOCUMENT(&a)) continue;
    bson_iter_document(&a, &len, &data);
    bson_t d;
    if (!bson_init_static(&d, data, len)) continue;
    entry_t *x = &e[*n];
    x->data = data;
    x->len = len;
    x->index = *n;
    x->at_ms = 0;
    ctl_ms(&d, "event_time_ms", &x->at_ms);
    (*n)++;
  }
  qsort(e, *n, sizeof *e, cmp_entry);
  return e;
}

static void add_entry_row(ctl_table_t *t, const bson_t *e) {
  char when[40] = "", odo[32] = "";
  int64_t ms;
  double km;
  if (ctl_ms(e, "event_time_ms", &ms)) ctl_fmt_time(when, sizeof when, ms, false);
  if (ctl_num(e, "odometer_km", &km)) snprintf(odo, sizeof odo, "%.1f", km);
  bson_string_t *parts = bson_string_new(NULL), *detail = bson_string_new(NULL);
  ctl_append_joined(parts, e, "parts_replaced", ",");
  const char *status = ctl_str(e, "status"), *s;
  if (status && strcmp(status, "rejected") == 0) {
    s = ctl_str(e, "reason");
    bson_string_append_printf(detail, "[rejected: %s]", s ? s : "no reason stored");
  }
  if ((s = ctl_str(e, "detail"))) bson_string_append_printf(detail, "%s%s", detail->len ? " " : "", s);
  if ((s = ctl_str(e, "owner_id")))
    bson_string_append_printf(detail, "%sowner %s", detail->len ? "; " : "", s);
  if ((s = ctl_str(e, "model"))) bson_string_append_printf(detail, "%smodel %s", detail->len ? "; " : "", s);
  ctl_table_add(t, (const char *[]){when, ctl_str(e, "kind"), ctl_str(e, "site"), ctl_str(e, "actor"),
                                    ctl_str(e, "work_order"), ctl_str(e, "recall_id"), parts->str, odo,
                                    detail->str});
  bson_string_free(parts, true);
  bson_string_free(detail, true);
}

int ctl_cmd_timeline(ctl_db_t *db, int argc, char **argv) {
  bool json = false;
  bson_t *doc = NULL;
  int rc = fetch_one(db, "timeline", timeline_help, argc, argv, &json, &doc);
  if (rc == CTL_HELP) return CTL_OK;
  if (rc == CTL_OK) {
    uint32_t n;
    entry_t *e = sorted_entries(doc, &n);
    if (json) {
      for (uint32_t i = 0; i < n; i++) {
        bson_t d;
        char *s = bson_as_relaxed_extended_json(entry_doc(&e[i], &d), NULL);
        printf("%s\n", s);
        bson_free(s);
      }
    } else if (n == 0) {
      printf("Timeline of %s: no lifecycle events\n", ctl_str(doc, "_id"));
    } else {
      static const char *heads[] = {"TIME",   "KIND",  "SITE",        "ACTOR", "WORK_ORDER",
                                    "RECALL", "PARTS", "ODOMETER_KM", "DETAIL"};
      ctl_table_t t;
      uint32_t rejected = 0;
      ctl_table_init(&t, 9, heads, 1u << 7);
      for (uint32_t i = 0; i < n; i++) {
        bson_t d;
        const char *st = ctl_str(entry_doc(&e[i], &d), "status");
        if (st && strcmp(st, "rejected") == 0) rejected++;
        add_entry_row(&t, &d);
      }
      printf("Timeline of %s: %u events, %u rejected, oldest first\n", ctl_str(doc, "_id"), n, rejected);
      ctl_table_print(&t, stdout);
      ctl_table_cleanup(&t);
    }
    bson_free(e);
    if (fflush(stdout) != 0) rc = ctl_fail("writing to standard output failed");
  }
  if (doc) bson_destroy(doc);
  ctl_db_close(db);
  return rc;
}
