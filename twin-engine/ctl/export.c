/* export.c - `twinctl export`: every matching twin to a file, as NDJSON
 * (whole documents) or CSV (a flat row per twin for spreadsheets and
 * DuckDB), optionally zstd-compressed, with a FILE.meta.json side file
 * that records the checkpoint offsets the export corresponds to.
 *
 * A file that looks complete is complete: data and meta are written to
 * FILE.tmp and FILE.meta.json.tmp, flushed to disk, and only then renamed
 * into place; any error or Ctrl-C removes the temporaries instead. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "ctl.h"
#include "store.h"
#include "util.h"

static const char export_help[] =
    "usage: twinctl export --format ndjson|csv --out FILE [--compress zstd] [filters]\n"
    "\n"
    "Writes every twin matching the filters to FILE, sorted by product id:\n"
    "  ndjson   the whole stored documents, one per line, relaxed extended JSON (as `get --json`);\n"
    "           each line is valid against schemas/twin.schema.json\n"
    "  csv      RFC 4180 (header row, CRLF line ends, fields quoted when needed), one row per twin:\n"
    "           product_id, model, stage, owner, quality_hold, odometer_km, battery_soc_pct,\n"
    "           battery_soh_pct, battery_soh_trend_pct_per_year, battery_temp_c, range_km, latitude,\n"
    "           longitude, firmware_version, telemetry_at, min_brake_pad_mm, brake_pad_{fl,fr,rl,rr}_mm,\n"
    "           tire_pressure_{fl,fr,rl,rr}_kpa, active_dtcs, n_active_dtcs, open_recalls,\n"
    "           n_open_recalls, n_active_alerts, alert_rules, last_service_at, last_service_odometer_km,\n"
    "           last_service_site, odometer_since_service_km, rev, updated_at.\n"
    "           Lists are joined with ';'; times are ISO-8601 UTC with milliseconds; a value the twin\n"
    "           does not have is an empty field.\n"
    "\n"
    "Next to FILE it writes FILE.meta.json: {exported_at, finished_at, database, format, compression,\n"
    "filter, count, checkpoints: [{group, topic, partition, offset}]}, the engine's checkpoints (next\n"
    "offset per input partition). The export is exactly the state at those offsets, also while\n"
    "engines consume: it holds the export fence (collection `fence`) while it reads, and engines\n"
    "defer their snapshot writes until it is done. Both files are written under a .tmp name and\n"
    "renamed when complete; on an error or Ctrl-C nothing is left behind. On a terminal a progress\n"
    "line (count, rate, ETA) goes to stderr.\n"
    "\n"
    "options:\n"
    "  --format ndjson|csv  output format (required)\n"
    "  --out FILE           output file (required); replaced if it exists\n"
    "  --compress zstd      compress FILE with zstd (name it FILE.zst; read with zstd -dc)\n"
    "\n" CTL_FILTER_HELP CTL_DB_HELP "\n"
    "examples:\n"
    "  twinctl export --format ndjson --out fleet.ndjson.zst --compress zstd\n"
    "  twinctl export --format csv --out in-service.csv --stage IN_SERVICE\n"
    "  duckdb -c \"SELECT model, avg(battery_soh_pct) FROM 'in-service.csv' GROUP BY model\"\n"
    "\n"
    "Exit status: 0 written, 1 a MongoDB or file error (nothing written), 2 bad usage.\n";

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig) {
  (void)sig;
  g_interrupted = 1;
}

/* ---- Output: a file, optionally through zstd ----------------------------------- */

typedef struct {
  FILE *f;
  const char *path;
  ZSTD_CCtx *z; /* NULL: plain */
  uint8_t *zbuf;
  size_t zcap;
  char err[512];
} sink_t;

static bool sink_fail(sink_t *s, const char *what) {
  if (!s->err[0]) snprintf(s->err, sizeof s->err, "%s %s: %s", what, s->path, strerror(errno));
  return false;
}

static bool sink_open(sink_t *s, const char *path, bool zstd) {
  memset(s, 0, sizeof *s);
  s->path = path;
  s->f = fopen(path, "wb");
  if (!s->f) return sink_fail(s, "cannot create");
  if (zstd) {
    s->z = ZSTD_createCCtx();
    if (!s->z) {
      snprintf(s->err, sizeof s->err, "zstd: out of memory");
      return false;
    }
    ZSTD_CCtx_setParameter(s->z, ZSTD_c_compressionLevel, ZSTD_CLEVEL_DEFAULT);
    ZSTD_CCtx_setParameter(s->z, ZSTD_c_checksumFlag, 1);
    s->zcap = ZSTD_CStreamOutSize();
    s->zbuf = tw_xmalloc(s->zcap);
  }
  return true;
}

static bool zstd_step(sink_t *s, ZSTD_inBuffer *in, ZSTD_EndDirective mode, size_t *left) {
  ZSTD_outBuffer out = {s->zbuf, s->zcap, 0};
  *left = ZSTD_compressStream2(s->z, &out, in, mode);
  if (ZSTD_isError(*left)) {
    snprintf(s->err, sizeof s->err, "zstd: %s", ZSTD_getErrorName(*left));
    return false;
  }
  if (out.pos && fwrite(s->zbuf, 1, out.pos, s->f) != out.pos) return sink_fail(s, "writing");
  return true;
}

static bool sink_write(sink_t *s, const void *p, size_t n) {
  if (!s->z) return fwrite(p, 1, n, s->f) == n || sink_fail(s, "writing");
  ZSTD_inBuffer in = {p, n, 0};
  size_t left;
  while (in.pos < in.size)
    if (!zstd_step(s, &in, ZSTD_e_continue, &left)) return false;
  return true;
}

/* Ends the zstd frame and makes the file durable; closes it either way. */
static bool sink_close(sink_t *s) {
  bool ok = true;
  if (s->z) {
    ZSTD_inBuffer in = {NULL, 0, 0};
    size_t left = 1;
    while (ok && left) ok = zstd_step(s, &in, ZSTD_e_end, &left);
  }
  if (ok && fflush(s->f) != 0) ok = sink_fail(s, "writing");
  if (ok && fsync(fileno(s->f)) != 0) ok = sink_fail(s, "flushing");
  if (fclose(s->f) != 0 && ok) ok = sink_fail(s, "closing");
  s->f = NULL;
  ZSTD_freeCCtx(s->z);
  s->z = NULL;
  free(s->zbuf);
  s->zbuf = NULL;
  return ok;
}

static void sink_abort(sink_t *s) {
  if (s->f) fclose(s->f);
  ZSTD_freeCCtx(s->z);
  free(s->zbuf);
  s->f = NULL;
  s->z = NULL;
  s->zbuf = NULL;
}

/* ---- Rows ---------------------------------------------------------------------- */

typedef struct {
  sink_t *sink;
  bool csv;
  bson_string_t *line;
} writer_t;

static bool write_ndjson(writer_t *w, const bson_t *doc) {
  size_t len;
  char *s = bson_as_relaxed_extended_json(doc, &len);
  if (!s) {
    snprintf(w->sink->err, sizeof w->sink->err, "a twin cannot be rendered as JSON");
    return false;
  }
  bool ok = sink_write(w->sink, s, len) && sink_write(w->sink, "\n", 1);
  bson_free(s);
  return ok;
}

static const char *csv_header =
    "product_id,model,stage,owner,quality_hold,odometer_km,battery_soc_pct,battery_soh_pct,"
    "battery_soh_trend_pct_per_year,battery_temp_c,range_km,latitude,longitude,firmware_version,"
    "telemetry_at,min_brake_pad_mm,brake_pad_fl_mm,brake_pad_fr_mm,brake_pad_rl_mm,brake_pad_rr_mm,"
    "tire_pressure_fl_kpa,tire_pressure_fr_kpa,tire_pressure_rl_kpa,tire_pressure_rr_kpa,active_dtcs,"
    "n_active_dtcs,open_recalls,n_open_recalls,n_active_alerts,alert_rules,last_service_at,"
    "last_service_odometer_km,last_service_site,odometer_since_service_km,rev,updated_at\r\n";

/* RFC 4180: quoted when it holds a comma, a quote or a line break; quotes
 * doubled. Each field ends with a comma; the row's last one becomes CRLF. */
static void csv_field(bson_string_t *l, const char *v) {
  if (v && strpbrk(v, ",\"\r\n")) {
    bson_string_append_c(l, '"');
    for (; *v; v++) {
      if (*v == '"') bson_string_append_c(l, '"');
      bson_string_append_c(l, *v);
    }
    bson_string_append_c(l, '"');
  } else if (v) {
    bson_string_append(l, v);
  }
  bson_string_append_c(l, ',');
}

static void csv_num(bson_string_t *l, const bson_t *doc, const char *path) {
  double v;
  char buf[40];
  if (ctl_num(doc, path, &v) && isfinite(v)) {
    ctl_fmt_double(buf, sizeof buf, v);
    csv_field(l, buf);
  } else {
    csv_field(l, NULL);
  }
}

static void csv_time(bson_string_t *l, bool set, int64_t ms) {
  char buf[40];
  if (set) ctl_fmt_time(buf, sizeof buf, ms, true);
  csv_field(l, set ? buf : NULL);
}

static void csv_count(bson_string_t *l, uint32_t n) {
  char buf[16];
  snprintf(buf, sizeof buf, "%u", n);
  csv_field(l, buf);
}

static void csv_joined(bson_string_t *l, const bson_t *doc, const char *path) {
  bson_string_t *s = bson_string_new(NULL);
  ctl_append_joined(s, doc, path, ";");
  csv_field(l, s->str);
  bson_string_free(s, true);
}

/* The four wheels FL FR RL RR; empty fields when not reported. */
static void csv_wheels(bson_string_t *l, const bson_t *doc, const char *path) {
  double v[4];
  uint32_t n = ctl_numbers(doc, path, v, 4);
  char buf[40];
  for (uint32_t i = 0; i < 4; i++) {
    if (i < n) ctl_fmt_double(buf, sizeof buf, v[i]);
    csv_field(l, i < n ? buf : NULL);
  }
}

/* Latest event time of any telemetry value: when the product last reported. */
static bool telemetry_at(const bson_t *doc, int64_t *out) {
  bson_iter_t it, t, f;
  bool any = false;
  if (!ctl_find(doc, "telemetry", &it) || !bson_iter_recurse(&it, &t)) return false;
  while (bson_iter_next(&t)) {
    int64_t ms;
    if (bson_iter_recurse(&t, &f) && bson_iter_find(&f, "at_ms") && ctl_iter_ms(&f, &ms) &&
        (!any || ms > *out)) {
      *out = ms;
      any = true;
    }
  }
  return any;
}

static bool write_csv(writer_t *w, const bson_t *doc) {
  bson_string_t *l = w->line;
  bson_iter_t it;
  int64_t ms = 0;
  bool set;
  bson_string_truncate(l, 0);
  csv_field(l, ctl_str(doc, "_id"));
  csv_field(l, ctl_str(doc, "model"));
  csv_field(l, ctl_str(doc, "stage"));
  csv_field(l, ctl_str(doc, "owner"));
  csv_field(l, ctl_find(doc, "quality_hold", &it) && BSON_ITER_HOLDS_BOOL(&it)
                   ? (bson_iter_bool(&it) ? "true" : "false")
                   : NULL);
  csv_num(l, doc, "telemetry.odometer_km.value");
  csv_num(l, doc, "telemetry.battery_soc_pct.value");
  csv_num(l, doc, "battery_health.soh_pct");
  csv_num(l, doc, "battery_health.trend_pct_per_year");
  csv_num(l, doc, "telemetry.battery_temp_c.value");
  csv_num(l, doc, "telemetry.range_km.value");
  csv_num(l, doc, "telemetry.latitude.value");
  csv_num(l, doc, "telemetry.longitude.value");
  csv_field(l, ctl_str(doc, "telemetry.firmware_version.value"));
  set = telemetry_at(doc, &ms);
  csv_time(l, set, ms);
  csv_num(l, doc, "min_brake_pad_mm");
  csv_wheels(l, doc, "telemetry.brake_pad_mm.value");
  csv_wheels(l, doc, "telemetry.tire_pressure_kpa.value");
  csv_joined(l, doc, "active_dtcs");
  csv_count(l, ctl_array_len(doc, "active_dtcs"));
  csv_joined(l, doc, "open_recalls");
  csv_count(l, ctl_array_len(doc, "open_recalls"));
  csv_count(l, ctl_array_len(doc, "alerts.active"));
  /* alert rules: the `rule` of each active alert */
  bson_string_t *rules = bson_string_new(NULL);
  bson_iter_t a;
  if (ctl_find(doc, "alerts.active", &it) && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &a)) {
    while (bson_iter_next(&a)) {
      bson_iter_t r;
      if (!bson_iter_recurse(&a, &r) || !bson_iter_find(&r, "rule") || !BSON_ITER_HOLDS_UTF8(&r)) continue;
      bson_string_append_printf(rules, "%s%s", rules->len ? ";" : "", bson_iter_utf8(&r, NULL));
    }
  }
  csv_field(l, rules->str);
  bson_string_free(rules, true);
  set = ctl_ms(doc, "last_service.at_ms", &ms);
  csv_time(l, set, ms);
  csv_num(l, doc, "last_service.odometer_km");
  csv_field(l, ctl_str(doc, "last_service.site"));
  csv_num(l, doc, "odometer_since_service_km");
  csv_num(l, doc, "rev");
  set = ctl_ms(doc, "updated_at", &ms);
  csv_time(l, set, ms);
  bson_string_truncate(l, l->len - 1); /* the last comma */
  bson_string_append(l, "\r\n");
  return sink_write(w->sink, l->str, l->len);
}

static bool write_row(writer_t *w, const bson_t *doc) {
  return w->csv ? write_csv(w, doc) : write_ndjson(w, doc);
}

/* ---- Progress (a terminal only) ------------------------------------------------- */

typedef struct {
  bool on;
  int64_t total; /* countDocuments estimate; -1 unknown */
  int64_t t0, last;
} progress_t;

static void fmt_duration(char *buf, size_t cap, double s) {
  long x = (long)(s + 0.5);
  if (x >= 3600)
    snprintf(buf, cap, "%ld:%02ld:%02ld", x / 3600, x / 60 % 60, x % 60);
  else
    snprintf(buf, cap, "%ld:%02ld", x / 60, x % 60);
}

static void progress(progress_t *p, int64_t n, bool final) {
  if (!p->on) return;
  int64_t now = tw_mono_ms();
  if (!final && now - p->last < 250) return;
  p->last = now;
  double secs = (double)(now - p->t0) / 1000.0;
  double rate = secs > 0 ? (double)n / secs : 0;
  char eta[32] = "?";
  if (final) {
    fprintf(stderr, "\r\033[Kexport: %lld twins in %.1f s (%.0f/s)\n", (long long)n, secs, rate);
    return;
  }
  if (p->total >= 0 && rate > 0)
    fmt_duration(eta, sizeof eta, (double)(p->total > n ? p->total - n : 0) / rate);
  if (p->total >= 0)
    fprintf(stderr, "\r\033[Kexport: %lld of ~%lld twins, %.0f/s, ETA %s", (long long)n, (long long)p->total,
            rate, eta);
  else
    fprintf(stderr, "\r\033[Kexport: %lld twins, %.0f/s", (long long)n, rate);
}

/* ---- The snapshot: checkpoints, then twins ------------------------------------------ */

static int read_checkpoints(ctl_db_t *db, bson_t *out) {
  bson_t q = BSON_INITIALIZER, o = BSON_INITIALIZER, sort;
  BSON_APPEND_DOCUMENT_BEGIN(&o, "sort", &sort);
  BSON_APPEND_INT32(&sort, "_id", 1);
  bson_append_document_end(&o, &sort);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(db->checkpoints, &q, &o, NULL);
  const bson_t *doc;
  uint32_t i = 0;
  while (mongoc_cursor_next(cur, &doc)) {
    bson_t cp;
    char key[16];
    const char *kp;
    bson_iter_t it;
    double v;
    bson_uint32_to_string(i++, &kp, key, sizeof key);
    BSON_APPEND_DOCUMENT_BEGIN(out, kp, &cp);
    const char *group = ctl_str(doc, "group"), *topic = ctl_str(doc, "topic");
    if (group) BSON_APPEND_UTF8(&cp, "group", group);
    if (topic) BSON_APPEND_UTF8(&cp, "topic", topic);
    if (ctl_num(doc, "partition", &v)) BSON_APPEND_INT32(&cp, "partition", (int32_t)v);
    if (bson_iter_init_find(&it, doc, "offset") && BSON_ITER_HOLDS_NUMBER(&it))
      BSON_APPEND_INT64(&cp, "offset", bson_iter_as_int64(&it));
    bson_append_document_end(out, &cp);
  }
  bson_error_t err;
  int rc = CTL_OK;
  if (mongoc_cursor_error(cur, &err)) rc = ctl_fail("reading %s.checkpoints: %s", db->database, err.message);
  mongoc_cursor_destroy(cur);
  bson_destroy(&q);
  bson_destroy(&o);
  return rc;
}

/* Reads the checkpoints into *checkpoints (an array, caller-initialised),
 * then hands every twin matching q, in _id order, to w, holding the export
 * fence (twin-engine/core/store.h) throughout: engines defer their
 * snapshot flushes while it is held, and it is taken only once no flush is
 * in progress, so the twins are exactly the state at those checkpoints.
 * The lease is renewed while the export runs and released at the end; if
 * twinctl dies it expires after FENCE_LEASE_MS. */
#define FENCE_LEASE_MS 60000
static int take_fence(tw_store_t *fs, const char *holder) {
  bson_error_t err;
  bool taken = false;
  int64_t give_up = tw_now_ms() + 2 * FENCE_LEASE_MS;
  for (;;) {
    if (!tw_store_export_take(fs, holder, tw_now_ms(), FENCE_LEASE_MS, &taken, &err))
      return ctl_fail("cannot take the export fence: %s", err.message);
    if (taken) break;
    if (tw_now_ms() > give_up || g_interrupted)
      return ctl_fail("another export holds the export fence (collection `fence`); try again later");
    usleep(200000);
  }
  /* Flushes that entered before the fence was taken finish first. */
  give_up = tw_now_ms() + TW_FENCE_FLUSH_MS + 5000;
  for (;;) {
    int inflight = 0;
    if (!tw_store_export_inflight(fs, tw_now_ms(), &inflight, &err))
      return ctl_fail("cannot read the export fence: %s", err.message);
    if (inflight == 0) return CTL_OK;
    if (tw_now_ms() > give_up || g_interrupted) return ctl_fail("engine flushes did not finish; giving up");
    usleep(50000);
  }
}

static int read_snapshot(ctl_db_t *db, const bson_t *q, bson_t *checkpoints, writer_t *w, progress_t *pr,
                         int64_t *count) {
  *count = 0;
  bson_error_t ferr;
  tw_store_t *fs = tw_store_new(db->uri, db->database, "twinctl-export", &ferr);
  if (!fs) return ctl_fail("MongoDB: %s", ferr.message);
  char holder[160], host[64] = "?";
  gethostname(host, sizeof host - 1);
  snprintf(holder, sizeof holder, "twinctl export %s:%d", host, (int)getpid());
  int rc = take_fence(fs, holder);
  if (rc == CTL_OK) rc = read_checkpoints(db, checkpoints);
  if (rc != CTL_OK) {
    tw_store_export_release(fs, holder, &ferr);
    tw_store_destroy(fs);
    return rc;
  }
  int64_t renewed = tw_now_ms();

  bson_error_t err;
  if (pr->on) pr->total = mongoc_collection_count_documents(db->twins, q, NULL, NULL, NULL, &err);
  bson_t o = BSON_INITIALIZER, sort;
  BSON_APPEND_DOCUMENT_BEGIN(&o, "sort", &sort);
  BSON_APPEND_INT32(&sort, "_id", 1);
  bson_append_document_end(&o, &sort);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(db->twins, q, &o, NULL);
  const bson_t *doc;
  while (!g_interrupted && mongoc_cursor_next(cur, &doc)) {
    if (!write_row(w, doc)) {
      rc = ctl_fail("%s", w->sink->err);
      break;
    }
    (*count)++;
    progress(pr, *count, false);
    if (tw_now_ms() - renewed > FENCE_LEASE_MS / 6) {
      bool taken = false,
           called = tw_store_export_take(fs, holder, tw_now_ms(), FENCE_LEASE_MS, &taken, &ferr);
      if (!called || !taken) {
        rc = ctl_fail("lost the export fence (%s); the export would not be consistent",
                      called ? "it expired and another export took it" : ferr.message);
        break;
      }
      renewed = tw_now_ms();
    }
  }
  if (rc == CTL_OK && g_interrupted)
    rc = ctl_fail("interrupted");
  else if (rc == CTL_OK && mongoc_cursor_error(cur, &err))
    rc = ctl_fail("reading %s.twins: %s", db->database, err.message);
  if (pr->on) {
    if (rc == CTL_OK)
      progress(pr, *count, true);
    else
      fputs("\r\033[K", stderr);
  }
  mongoc_cursor_destroy(cur);
  bson_destroy(&o);
  if (!tw_store_export_release(fs, holder, &ferr))
    fprintf(stderr, "twinctl export: could not release the export fence (%s); it expires in %d s\n",
            ferr.message, FENCE_LEASE_MS / 1000);
  tw_store_destroy(fs);
  return rc;
}

/* ---- Files ------------------------------------------------------------------------ */

static bool write_meta(const char *path, const bson_t *meta, char *err, size_t cap) {
  size_t len;
  char *json = bson_as_relaxed_extended_json(meta, &len);
  sink_t s;
  bool ok = sink_open(&s, path, false) && sink_write(&s, json, len) && sink_write(&s, "\n", 1);
  if (s.f) ok = sink_close(&s) && ok;
  if (!ok) snprintf(err, cap, "%s", s.err);
  bson_free(json);
  return ok;
}

/* Moves the finished temporaries into place. The old side file goes
 * first: FILE must never sit next to another export's meta. The renames
 * are durable once the directory is synced. */
static int publish(const char *tmp, const char *out, const char *meta_tmp, const char *meta_path) {
  if (unlink(meta_path) != 0 && errno != ENOENT)
    return ctl_fail("cannot remove %s: %s", meta_path, strerror(errno));
  if (rename(tmp, out) != 0) return ctl_fail("cannot rename %s to %s: %s", tmp, out, strerror(errno));
  if (rename(meta_tmp, meta_path) != 0)
    return ctl_fail("cannot rename %s to %s: %s", meta_tmp, meta_path, strerror(errno));
  char *copy = tw_xstrdup(out);
  int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  free(copy);
  return CTL_OK;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

int ctl_cmd_export(ctl_db_t *db, int argc, char **argv) {
  static const char *formats[] = {"ndjson", "csv", NULL}, *codecs[] = {"zstd", NULL};
  ctl_filter_t f;
  const char *format = NULL, *out = NULL, *compress = NULL;
  int n_pos;
  ctl_filter_init(&f);
  ctl_opts_t opts = {0};
  ctl_opt(&opts, "--format", CTL_OPT_CHOICE, &format, 0, 0, formats);
  ctl_opt(&opts, "--out", CTL_OPT_STR, &out, 0, 0, NULL);
  ctl_opt(&opts, "--compress", CTL_OPT_CHOICE, &compress, 0, 0, codecs);
  ctl_opts_filter(&opts, &f);
  ctl_opts_db(&opts, db);
  switch (ctl_parse("export", argc, argv, &opts, NULL, 0, &n_pos)) {
  case CTL_PARSE_HELP: fputs(export_help, stdout); return CTL_OK;
  case CTL_PARSE_ERROR: return CTL_USAGE;
  case CTL_PARSE_OK: break;
  }
  if (!format) return ctl_usage_error("export", "--format is required: one of ndjson, csv");
  if (!out) return ctl_usage_error("export", "--out FILE is required");
  if (ends_with(out, "/"))
    return ctl_usage_error("export", "--out '%s' is a directory; give a file name", out);
  bool zstd = compress != NULL;
  if (zstd && !ends_with(out, ".zst"))
    fprintf(stderr, "twinctl export: note: %s will hold zstd data; a name ending in .zst says so\n", out);
  if (!zstd && ends_with(out, ".zst"))
    fprintf(stderr, "twinctl export: note: %s is not compressed (add --compress zstd)\n", out);
  int rc = ctl_db_open(db, "export");
  if (rc != CTL_OK) return rc;

  size_t n = strlen(out) + 32;
  char *tmp = tw_xmalloc(n), *meta_path = tw_xmalloc(n), *meta_tmp = tw_xmalloc(n);
  snprintf(tmp, n, "%s.tmp", out);
  snprintf(meta_path, n, "%s.meta.json", out);
  snprintf(meta_tmp, n, "%s.meta.json.tmp", out);

  struct sigaction sa = {0}, old_int, old_term;
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  bson_t q = BSON_INITIALIZER, meta = BSON_INITIALIZER, cps;
  ctl_filter_to_bson(&f, &q);
  char when[40], err[600];
  int64_t count = 0;
  ctl_fmt_time(when, sizeof when, tw_now_ms(), true);
  BSON_APPEND_UTF8(&meta, "exported_at", when);
  BSON_APPEND_UTF8(&meta, "database", db->database);
  BSON_APPEND_UTF8(&meta, "collection", "twins");
  BSON_APPEND_UTF8(&meta, "format", format);
  BSON_APPEND_UTF8(&meta, "compression", zstd ? "zstd" : "none");
  BSON_APPEND_DOCUMENT(&meta, "filter", &q);

  sink_t sink;
  writer_t w = {&sink, strcmp(format, "csv") == 0, bson_string_new(NULL)};
  int64_t t0 = tw_mono_ms();
  progress_t pr = {isatty(STDERR_FILENO) == 1, -1, t0, t0}; /* first line after 250 ms */
  bool opened = sink_open(&sink, tmp, zstd);
  if (!opened) {
    rc = ctl_fail("%s", sink.err);
  } else if (w.csv && !sink_write(&sink, csv_header, strlen(csv_header))) {
    rc = ctl_fail("%s", sink.err);
  } else {
    bson_init(&cps);
    rc = read_snapshot(db, &q, &cps, &w, &pr, &count);
    ctl_fmt_time(when, sizeof when, tw_now_ms(), true);
    BSON_APPEND_UTF8(&meta, "finished_at", when);
    BSON_APPEND_INT64(&meta, "count", count);
    BSON_APPEND_ARRAY(&meta, "checkpoints", &cps);
    bson_destroy(&cps);
  }
  if (rc == CTL_OK) {
    bool ok = sink_close(&sink);
    if (!ok) rc = ctl_fail("%s", sink.err);
  }
  if (rc == CTL_OK && !write_meta(meta_tmp, &meta, err, sizeof err)) rc = ctl_fail("%s", err);
  if (rc == CTL_OK) rc = publish(tmp, out, meta_tmp, meta_path);
  if (rc == CTL_OK) {
    if (pr.on) fprintf(stderr, "export: wrote %s and %s\n", out, meta_path);
  } else {
    sink_abort(&sink);
    unlink(tmp);
    unlink(meta_tmp);
  }

  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  bson_string_free(w.line, true);
  bson_destroy(&q);
  bson_destroy(&meta);
  free(tmp);
  free(meta_path);
  free(meta_tmp);
  ctl_db_close(db);
  return rc;
}
