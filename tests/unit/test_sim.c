/* test_sim.c - twin-sim and the record file format.
 *
 * Runs build/bin/twin-sim (TWIN_BIN_DIR) with --no-kafka and checks:
 * determinism (same seed, same bytes; other seed, other bytes), the record
 * reader/writer round trip, and that the truth file agrees with an
 * independent recount from the record file: per product, the events a
 * correct engine applies (64-seq window per source), the duplicates and
 * too-late ones, the garbage, the lifecycle order (every impossible
 * transition is one the simulator says it injected), stage, owner, open
 * recalls, last service and the last-writer-wins odometer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "twin/record.h"
#include "twin/v1/events.pb-c.h"

static char g_dir[256];

static const char *bin_dir(void) {
  const char *d = getenv("TWIN_BIN_DIR");
  return d && *d ? d : "build/bin";
}

static int run_sim(const char *args) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "cd %s && %s/twin-sim --no-kafka --quiet %s", g_dir, bin_dir(), args);
  int rc = system(cmd);
  return rc == -1 ? -1 : WEXITSTATUS(rc);
}

static char *path_in(const char *name) {
  static char buf[4][512];
  static int i;
  i = (i + 1) % 4;
  snprintf(buf[i], sizeof buf[i], "%s/%s", g_dir, name);
  return buf[i];
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  size_t got = fread(b, 1, (size_t)n, f);
  fclose(f);
  b[got] = 0;
  *len = got;
  return b;
}

static bool same_file(const char *a, const char *b) {
  size_t na = 0, nb = 0;
  char *x = slurp(a, &na), *y = slurp(b, &nb);
  bool same = x && y && na == nb && memcmp(x, y, na) == 0;
  free(x);
  free(y);
  return same;
}

static int setup(void **state) {
  (void)state;
  snprintf(g_dir, sizeof g_dir, "/tmp/test_sim.XXXXXX");
  return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
  return system(cmd) == 0 ? 0 : -1;
}

/* ---- Record file ----------------------------------------------------------- */

static void test_record_round_trip(void **state) {
  (void)state;
  char err[256];
  tw_record_writer_t *w;
  const char *p = path_in("rt.rec");
  assert_true(tw_record_writer_open(p, &w, err, sizeof err));
  uint8_t bin[300];
  for (int i = 0; i < 300; i++) bin[i] = (uint8_t)(i * 7);
  for (int i = 0; i < 1000; i++) {
    char key[32];
    snprintf(key, sizeof key, "KEY-%d", i);
    const char *topic = i % 2 ? "twin.lifecycle" : "twin.telemetry";
    size_t vn = (size_t)(i % 300);
    assert_true(tw_record_writer_write(w, topic, strlen(topic), key, i % 10 == 0 ? 0 : strlen(key), bin, vn,
                                       err, sizeof err));
  }
  assert_true(tw_record_writer_close(w, err, sizeof err));

  tw_record_reader_t *r;
  assert_true(tw_record_reader_open(p, &r, err, sizeof err));
  tw_record_t rec;
  bool eof;
  for (int i = 0; i < 1000; i++) {
    assert_true(tw_record_reader_next(r, &rec, &eof, err, sizeof err));
    assert_false(eof);
    char key[32];
    snprintf(key, sizeof key, "KEY-%d", i);
    assert_string_equal(rec.topic, i % 2 ? "twin.lifecycle" : "twin.telemetry");
    assert_int_equal(rec.key_len, i % 10 == 0 ? 0 : strlen(key));
    if (rec.key_len) assert_memory_equal(rec.key, key, rec.key_len);
    assert_int_equal(rec.value_len, (size_t)(i % 300));
    if (rec.value_len) assert_memory_equal(rec.value, bin, rec.value_len);
  }
  assert_true(tw_record_reader_next(r, &rec, &eof, err, sizeof err));
  assert_true(eof);
  assert_int_equal(tw_record_reader_count(r), 1000);
  tw_record_reader_close(r);

  /* cut off in the middle of a record: an error, not a clean end */
  size_t n = 0;
  char *all = slurp(p, &n);
  FILE *f = fopen(path_in("cut.rec"), "wb");
  fwrite(all, 1, n - 5, f);
  fclose(f);
  free(all);
  assert_true(tw_record_reader_open(path_in("cut.rec"), &r, err, sizeof err));
  bool ok = true;
  while ((ok = tw_record_reader_next(r, &rec, &eof, err, sizeof err)) && !eof) {
  }
  assert_false(ok);
  assert_non_null(strstr(err, "truncated"));
  tw_record_reader_close(r);

  /* not a record file */
  f = fopen(path_in("bad.rec"), "wb");
  fputs("NOTAREC!", f);
  fclose(f);
  assert_false(tw_record_reader_open(path_in("bad.rec"), &r, err, sizeof err));
  assert_null(r);
  assert_non_null(strstr(err, "TWINREC1"));
}

/* ---- Determinism ---------------------------------------------------------------- */

#define INJECT "--duplicates 0.02 --garbage 0.02 --invalid 0.01 --reorder 0.03 --late 0.01"

static void test_determinism(void **state) {
  (void)state;
  assert_int_equal(run_sim("--products 300 --events 30000 " INJECT " --record d1.rec --truth d1.json"), 0);
  assert_int_equal(run_sim("--products 300 --events 30000 " INJECT " --record d2.rec --truth d2.json"), 0);
  assert_int_equal(
      run_sim("--seed 2 --products 300 --events 30000 " INJECT " --record d3.rec --truth d3.json"), 0);
  assert_true(same_file(path_in("d1.rec"), path_in("d2.rec")));
  assert_true(same_file(path_in("d1.json"), path_in("d2.json")));
  assert_false(same_file(path_in("d1.rec"), path_in("d3.rec")));
  /* pacing changes timing, not content */
  assert_int_equal(run_sim("--products 300 --rate 200000 --duration 0.15 " INJECT " --record d4.rec"), 0);
  assert_true(same_file(path_in("d1.rec"), path_in("d4.rec")));
}

static void test_bad_options(void **state) {
  (void)state;
  char cmd[1024];
  const char *cases[][2] = {{"--products 0", "--products"}, {"--duplicates 2", "--duplicates"},
                            {"--rate -1", "--rate"},        {"--duration 5", "--duration"},
                            {"--set foo=bar", "--set"},     {"--start-ms yesterday", "--start-ms"},
                            {"--bogus", "--bogus"}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    snprintf(cmd, sizeof cmd, "%s/twin-sim --no-kafka %s 2>%s/err.txt", bin_dir(), cases[i][0], g_dir);
    int rc = system(cmd);
    assert_int_equal(WEXITSTATUS(rc), 2);
    size_t n;
    char *e = slurp(path_in("err.txt"), &n);
    assert_non_null(e);
    if (!strstr(e, cases[i][1])) fail_msg("'%s': message does not name the option: %s", cases[i][0], e);
    free(e);
  }
  snprintf(cmd, sizeof cmd, "%s/twin-sim --help >%s/help.txt", bin_dir(), g_dir);
  assert_int_equal(WEXITSTATUS(system(cmd)), 0);
  size_t n;
  char *h = slurp(path_in("help.txt"), &n);
  const char *want[] = {
      "--seed",    "--products",        "--events",          "--rate", "--duration", "--start-ms",
      "--brokers", "--telemetry-topic", "--lifecycle-topic", "--set",  "--no-kafka", "--record",
      "--truth",   "--duplicates",      "--reorder",         "--late", "--garbage",  "--invalid",
      "--quiet",   "murmur2_random"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    if (!strstr(h, want[i])) fail_msg("--help does not mention %s", want[i]);
  free(h);
}

/* ---- Recount from the record ------------------------------------------------------- */

#define WINDOW 64
#define MAXP 4096
#define NSRC 8

typedef struct {
  char name[16];
  uint64_t hwm;
  uint64_t bits; /* bit i = seq hwm - i seen */
} src_t;

typedef struct {
  char id[64];
  bool used;
  src_t src[NSRC];
  int nsrc;
  uint64_t applied, not_applied, garbage, illegal;
  /* mini state machine */
  int stage; /* 0 none .. 7 decommissioned, as the sim's stage names */
  bool hold;
  char owner[32], last_wo[48];
  char recalls[8][32];
  int nrec;
  double odo;
  int64_t odo_at;
  uint64_t odo_seq;
  bool has_odo;
} prod_t;

static prod_t g_p[MAXP];

static prod_t *prod_get(const char *id) {
  uint64_t h = 1469598103934665603ULL;
  for (const char *c = id; *c; c++) h = (h ^ (uint8_t)*c) * 1099511628211ULL;
  for (size_t i = h % MAXP;; i = (i + 1) % MAXP) {
    if (!g_p[i].used) {
      g_p[i].used = true;
      snprintf(g_p[i].id, sizeof g_p[i].id, "%s", id);
      return &g_p[i];
    }
    if (strcmp(g_p[i].id, id) == 0) return &g_p[i];
  }
}

/* The engine's anti-replay window: 0 applied, 1 duplicate, 2 too late. */
static int admit(prod_t *p, const char *source, uint64_t seq) {
  src_t *s = NULL;
  for (int i = 0; i < p->nsrc; i++)
    if (strcmp(p->src[i].name, source) == 0) s = &p->src[i];
  if (!s) {
    assert_true(p->nsrc < NSRC);
    s = &p->src[p->nsrc++];
    snprintf(s->name, sizeof s->name, "%s", source);
  }
  if (seq > s->hwm) {
    uint64_t d = seq - s->hwm;
    s->bits = d >= 64 ? 0 : s->bits << d;
    s->bits |= 1;
    s->hwm = seq;
    return 0;
  }
  uint64_t i = s->hwm - seq;
  if (i >= WINDOW) return 2;
  if (s->bits & (1ULL << i)) return 1;
  s->bits |= 1ULL << i;
  return 0;
}

enum { S_NONE, S_ORDERED, S_PROD, S_BUILT, S_TRANSIT, S_DEALER, S_SERVICE, S_DECOM };
static const char *stage_names[] = {"NONE",       "ORDERED",   "IN_PRODUCTION", "BUILT",
                                    "IN_TRANSIT", "AT_DEALER", "IN_SERVICE",    "DECOMMISSIONED"};

static int recall_index(prod_t *p, const char *id) {
  for (int i = 0; i < p->nrec; i++)
    if (strcmp(p->recalls[i], id) == 0) return i;
  return -1;
}

/* The legal order of the simulator's lifecycles (stricter than the engine:
 * the simulator never skips a step). Returns false for an illegal event. */
static bool lifecycle_step(prod_t *p, const Twin__V1__LifecycleEvent *lc) {
  int s = p->stage;
  if (s == S_DECOM) return false;
  switch (lc->kind) {
  case TWIN__V1__LIFECYCLE_KIND__ORDERED:
    if (s != S_NONE || !lc->model[0]) return false;
    p->stage = S_ORDERED;
    return true;
  case TWIN__V1__LIFECYCLE_KIND__BUILD_STARTED:
    if (s != S_ORDERED) return false;
    p->stage = S_PROD;
    return true;
  case TWIN__V1__LIFECYCLE_KIND__BUILD_STEP_COMPLETED: return s == S_PROD && lc->detail[0];
  case TWIN__V1__LIFECYCLE_KIND__QUALITY_GATE_FAILED:
    if (s != S_PROD) return false;
    p->hold = true;
    return true;
  case TWIN__V1__LIFECYCLE_KIND__QUALITY_GATE_PASSED:
    if (s != S_PROD) return false;
    p->hold = false;
    return true;
  case TWIN__V1__LIFECYCLE_KIND__BUILD_COMPLETED:
    if (s != S_PROD || p->hold) return false;
    p->stage = S_BUILT;
    return true;
  case TWIN__V1__LIFECYCLE_KIND__SHIPPED:
    if (s != S_BUILT) return false;
    p->stage = S_TRANSIT;
    return true;
  case TWIN__V1__LIFECYCLE_KIND__ARRIVED_AT_DEALER:
    if (s != S_TRANSIT || !lc->site[0]) return false;
    p->stage = S_DEALER;
    return true;
  case TWIN__V1__LIFECYCLE_KIND__DELIVERED:
    if (s != S_DEALER || !lc->owner_id[0]) return false;
    p->stage = S_SERVICE;
    snprintf(p->owner, sizeof p->owner, "%s", lc->owner_id);
    return true;
  case TWIN__V1__LIFECYCLE_KIND__SERVICE_VISIT:
    if (s != S_SERVICE || !lc->work_order[0] || !lc->_odometer_km_case) return false;
    snprintf(p->last_wo, sizeof p->last_wo, "%s", lc->work_order);
    return true;
  case TWIN__V1__LIFECYCLE_KIND__WARRANTY_CLAIM: return s == S_SERVICE && lc->work_order[0];
  case TWIN__V1__LIFECYCLE_KIND__OWNERSHIP_TRANSFERRED:
    if (s != S_SERVICE || !lc->owner_id[0]) return false;
    snprintf(p->owner, sizeof p->owner, "%s", lc->owner_id);
    return true;
  case TWIN__V1__LIFECYCLE_KIND__RECALL_ISSUED:
    if (s != S_SERVICE || !lc->recall_id[0] || recall_index(p, lc->recall_id) >= 0 || p->nrec == 8)
      return false;
    snprintf(p->recalls[p->nrec++], sizeof p->recalls[0], "%s", lc->recall_id);
    return true;
  case TWIN__V1__LIFECYCLE_KIND__RECALL_COMPLETED: {
    int i = recall_index(p, lc->recall_id);
    if (i < 0) return false;
    memmove(p->recalls[i], p->recalls[i + 1], (size_t)(p->nrec - i - 1) * sizeof p->recalls[0]);
    p->nrec--;
    return true;
  }
  case TWIN__V1__LIFECYCLE_KIND__DECOMMISSIONED:
    if (s != S_SERVICE) return false;
    p->stage = S_DECOM;
    return true;
  default: return false;
  }
}

typedef struct {
  uint64_t messages, garbage, applied, not_applied, illegal, telemetry_before_delivery;
} recount_t;

static void recount(const char *rec_path, recount_t *rc) {
  memset(g_p, 0, sizeof g_p);
  memset(rc, 0, sizeof *rc);
  char err[256];
  tw_record_reader_t *r;
  if (!tw_record_reader_open(rec_path, &r, err, sizeof err)) fail_msg("%s", err);
  tw_record_t rec;
  bool eof;
  while (tw_record_reader_next(r, &rec, &eof, err, sizeof err) && !eof) {
    rc->messages++;
    bool tel_topic = strcmp(rec.topic, "twin.telemetry") == 0;
    assert_true(tel_topic || strcmp(rec.topic, "twin.lifecycle") == 0);
    Twin__V1__Envelope *e = twin__v1__envelope__unpack(NULL, rec.value_len, rec.value);
    bool valid = e && e->product_id[0] && strlen(e->product_id) == rec.key_len &&
                 memcmp(e->product_id, rec.key, rec.key_len) == 0 && e->seq > 0 &&
                 e->payload_case != TWIN__V1__ENVELOPE__PAYLOAD__NOT_SET;
    if (!valid) {
      /* garbage is counted for the envelope's product, else the key's */
      char id[64];
      if (e && e->product_id[0])
        snprintf(id, sizeof id, "%s", e->product_id);
      else
        snprintf(id, sizeof id, "%.*s", (int)(rec.key_len < 63 ? rec.key_len : 63), (const char *)rec.key);
      prod_get(id)->garbage++;
      rc->garbage++;
      if (e) twin__v1__envelope__free_unpacked(e, NULL);
      continue;
    }
    prod_t *p = prod_get(e->product_id);
    bool is_tel = e->payload_case == TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY;
    assert_true(is_tel == tel_topic); /* telemetry and lifecycle on their own topics */
    assert_string_equal(e->source, is_tel ? "tcu" : e->source);
    int a = admit(p, e->source, e->seq);
    if (a != 0) {
      p->not_applied++;
      rc->not_applied++;
    } else {
      p->applied++;
      rc->applied++;
      if (is_tel) {
        if (p->stage < S_SERVICE) rc->telemetry_before_delivery++;
        const Twin__V1__Telemetry *t = e->telemetry;
        if (t->_odometer_km_case && (!p->has_odo || e->event_time_ms > p->odo_at ||
                                     (e->event_time_ms == p->odo_at && e->seq > p->odo_seq))) {
          p->odo = t->odometer_km;
          p->odo_at = e->event_time_ms;
          p->odo_seq = e->seq;
          p->has_odo = true;
        }
      } else if (!lifecycle_step(p, e->lifecycle)) {
        p->illegal++;
        rc->illegal++;
      }
    }
    twin__v1__envelope__free_unpacked(e, NULL);
  }
  if (!eof) fail_msg("%s", err);
  tw_record_reader_close(r);
}

/* Tiny JSON field readers for the truth lines (flat, known layout). */
static const char *jfield(const char *line, const char *name) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", name);
  const char *p = strstr(line, pat);
  if (!p) fail_msg("truth line has no %s: %s", name, line);
  return p + strlen(pat);
}
static uint64_t jnum(const char *line, const char *name) { return strtoull(jfield(line, name), NULL, 10); }
static double jdouble(const char *line, const char *name) { return strtod(jfield(line, name), NULL); }
static void jstr(const char *line, const char *name, char *out, size_t cap) {
  const char *p = jfield(line, name);
  if (strncmp(p, "null", 4) == 0) {
    out[0] = 0;
    return;
  }
  assert_true(*p == '"');
  const char *q = strchr(p + 1, '"');
  snprintf(out, cap, "%.*s", (int)(q - p - 1), p + 1);
}

static int cmp_rec(const void *a, const void *b) { return strcmp((const char *)a, (const char *)b); }

static void check_truth(const char *args, const char *rec_name, const char *truth_name) {
  char full[1024];
  snprintf(full, sizeof full, "%s --record %s --truth %s", args, rec_name, truth_name);
  assert_int_equal(run_sim(full), 0);
  recount_t rc;
  recount(path_in(rec_name), &rc);
  assert_int_equal(rc.telemetry_before_delivery, 0);

  FILE *f = fopen(path_in(truth_name), "r");
  assert_non_null(f);
  char line[8192];
  uint64_t lines = 0, checked_stage = 0, sum_dup = 0, sum_late = 0, sum_inv = 0, sum_gar = 0;
  bool summary = false;
  while (fgets(line, sizeof line, f)) {
    if (strstr(line, "\"summary\":true")) {
      summary = true;
      assert_int_equal(jnum(line, "events_sent"), rc.messages);
      assert_int_equal(jnum(line, "garbage"), rc.garbage);
      assert_int_equal(jnum(line, "duplicates") + jnum(line, "late"), rc.not_applied);
      assert_int_equal(jnum(line, "accepted") + jnum(line, "invalid"), rc.applied);
      assert_int_equal(jnum(line, "invalid"), rc.illegal);
      assert_int_equal(jnum(line, "events_sent"), jnum(line, "telemetry") + jnum(line, "lifecycle") +
                                                      jnum(line, "duplicates") + jnum(line, "garbage") +
                                                      jnum(line, "invalid"));
      continue;
    }
    lines++;
    char id[64], stage[32], owner[48], wo[48];
    jstr(line, "product_id", id, sizeof id);
    prod_t *p = prod_get(id);
    uint64_t acc = jnum(line, "accepted"), dup = jnum(line, "duplicates_sent"),
             late = jnum(line, "late_sent"), inv = jnum(line, "invalid_sent"),
             gar = jnum(line, "garbage_sent");
    sum_dup += dup;
    sum_late += late;
    sum_inv += inv;
    sum_gar += gar;
    if (p->applied != acc + inv || p->not_applied != dup + late || p->garbage != gar || p->illegal != inv)
      fail_msg("%s: recount applied %llu not-applied %llu garbage %llu illegal %llu; truth: %s", id,
               (unsigned long long)p->applied, (unsigned long long)p->not_applied,
               (unsigned long long)p->garbage, (unsigned long long)p->illegal, line);
    jstr(line, "stage", stage, sizeof stage);
    if (acc) {
      assert_string_equal(stage, stage_names[p->stage]);
      checked_stage++;
    }
    jstr(line, "owner", owner, sizeof owner);
    assert_string_equal(owner, p->owner);
    jstr(line, "last_service_work_order", wo, sizeof wo);
    assert_string_equal(wo, p->last_wo);
    if (p->has_odo) {
      assert_true(jdouble(line, "odometer_km") == p->odo);
    } else {
      assert_non_null(strstr(line, "\"odometer_km\":null"));
    }
    /* open recalls, sorted */
    char want[512] = "\"open_recalls\":[";
    qsort(p->recalls, (size_t)p->nrec, sizeof p->recalls[0], cmp_rec);
    for (int i = 0; i < p->nrec; i++) {
      strcat(want, i ? ",\"" : "\"");
      strcat(want, p->recalls[i]);
      strcat(want, "\"");
    }
    strcat(want, "]");
    if (!strstr(line, want)) fail_msg("%s: expected %s in %s", id, want, line);
  }
  fclose(f);
  assert_true(summary);
  assert_true(lines > 0);
  assert_true(checked_stage > 0);
  /* every product in the record has a truth line */
  uint64_t in_record = 0;
  for (int i = 0; i < MAXP; i++) in_record += g_p[i].used;
  assert_int_equal(in_record, lines);
  (void)sum_dup;
  (void)sum_late;
  (void)sum_inv;
  (void)sum_gar;
}

static void test_truth_small_fleet(void **state) {
  (void)state;
  check_truth("--products 200 --events 20000 " INJECT, "t1.rec", "t1.json");
  /* the injected fractions are roughly what was asked for */
  size_t n;
  char *t = slurp(path_in("t1.json"), &n);
  const char *s = strstr(t, "\"summary\":true");
  assert_non_null(s);
  double ev = (double)jnum(s, "events_sent"), tel = (double)jnum(s, "telemetry");
  assert_int_equal((uint64_t)ev, 20000);
  double dup = (double)jnum(s, "duplicates") / ev, gar = (double)jnum(s, "garbage") / ev,
         inv = (double)jnum(s, "invalid") / ev, reo = (double)jnum(s, "reordered") / tel;
  if (dup < 0.015 || dup > 0.025) fail_msg("duplicates fraction %.4f", dup);
  if (gar < 0.015 || gar > 0.025) fail_msg("garbage fraction %.4f", gar);
  if (inv < 0.006 || inv > 0.014) fail_msg("invalid fraction %.4f", inv);
  if (reo < 0.02 || reo > 0.04) fail_msg("reordered fraction %.4f", reo);
  free(t);
}

/* Few products, many events each: late events (> 200 seqs behind) happen. */
static void test_truth_late(void **state) {
  (void)state;
  check_truth("--seed 7 --products 20 --events 30000 --late 0.02 --reorder 0.05 --duplicates 0.01", "t2.rec",
              "t2.json");
  size_t n;
  char *t = slurp(path_in("t2.json"), &n);
  const char *s = strstr(t, "\"summary\":true");
  assert_true(jnum(s, "late") > 100);
  free(t);
}

/* No injection: every message is applied and the lifecycles are legal. */
static void test_clean_stream(void **state) {
  (void)state;
  check_truth("--seed 3 --products 500 --events 40000", "t3.rec", "t3.json");
  recount_t rc;
  recount(path_in("t3.rec"), &rc);
  assert_int_equal(rc.messages, 40000);
  assert_int_equal(rc.applied, 40000);
  assert_int_equal(rc.illegal, 0);
  /* the fleet spans the stages */
  int stages[8] = {0};
  for (int i = 0; i < MAXP; i++)
    if (g_p[i].used) stages[g_p[i].stage]++;
  assert_true(stages[S_SERVICE] > 250);
  assert_true(stages[S_ORDERED] + stages[S_PROD] + stages[S_BUILT] + stages[S_TRANSIT] + stages[S_DEALER] >
              0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_record_round_trip), cmocka_unit_test(test_determinism),
      cmocka_unit_test(test_bad_options),       cmocka_unit_test(test_truth_small_fleet),
      cmocka_unit_test(test_truth_late),        cmocka_unit_test(test_clean_stream),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
