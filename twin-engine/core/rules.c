/* rules.c - maintenance-alert rules: parse, compile, evaluate (rules.h).
 *
 * A condition compiles to a small tree of comparisons; evaluating it reads
 * the twin and nothing else. Rules keep their state in the twin
 * (t->alerts), so an alert that is active stays active across restarts and
 * is never raised twice. */
#include "twin/rules.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "twin_int.h"
#include "util.h"

#define DAY_MS 86400000.0
#define WEAR_MIN_SAMPLES 6
#define MSG_MAX 1024

/* ---- Signals --------------------------------------------------------------- */

typedef enum {
  S_SCALAR = 0, /* + tw_scalar_field_t */
  S_PAD_MIN = TW_F_SCALAR_COUNT,
  S_PAD_MAX,
  S_TIRE_MIN,
  S_TIRE_MAX,
  S_METRIC,
  S_DTC_COUNT,
  S_RECALLS_OPEN,
  S_SVC_KM,
  S_SVC_DAYS,
  S_PAD_DAYS,
  S_COUNT
} signal_t;

static const char *const scalar_units[TW_F_SCALAR_COUNT] = {"km",  "km/h", "%", "%",    "degC", "deg",
                                                            "deg", "%",    "V", "degC", "km"};

static const struct {
  const char *name, *unit;
} named_signals[] = {
    [S_PAD_MIN - S_PAD_MIN] = {"brake_pad_mm.min", "mm"},
    [S_PAD_MAX - S_PAD_MIN] = {"brake_pad_mm.max", "mm"},
    [S_TIRE_MIN - S_PAD_MIN] = {"tire_pressure_kpa.min", "kPa"},
    [S_TIRE_MAX - S_PAD_MIN] = {"tire_pressure_kpa.max", "kPa"},
    [S_METRIC - S_PAD_MIN] = {"metrics.", ""},
    [S_DTC_COUNT - S_PAD_MIN] = {"dtc.count", "codes"},
    [S_RECALLS_OPEN - S_PAD_MIN] = {"recalls.open", "recalls"},
    [S_SVC_KM - S_PAD_MIN] = {"service.km_since", "km"},
    [S_SVC_DAYS - S_PAD_MIN] = {"service.days_since", "days"},
    [S_PAD_DAYS - S_PAD_MIN] = {"brake_pad_mm.days_to_limit", "days"},
};

/* The TW_SIG_* classes of the twin a signal's value depends on. */
static uint32_t signal_reads(int sig) {
  if (sig < TW_F_SCALAR_COUNT) return TW_SIG_SCALAR(sig);
  switch ((signal_t)sig) {
  case S_PAD_MIN:
  case S_PAD_MAX: return TW_SIG_PADS;
  case S_TIRE_MIN:
  case S_TIRE_MAX: return TW_SIG_TIRES;
  case S_METRIC: return TW_SIG_METRICS;
  case S_DTC_COUNT: return TW_SIG_DTCS;
  case S_RECALLS_OPEN: return TW_SIG_RECALLS;
  case S_SVC_KM: return TW_SIG_SERVICE | TW_SIG_SCALAR(TW_F_ODOMETER_KM);
  case S_SVC_DAYS: return TW_SIG_SERVICE | TW_SIG_TIME;
  case S_PAD_DAYS: return TW_SIG_WEAR | TW_SIG_TIME;
  default: return TW_SIG_ALL;
  }
}

static const char *signal_unit(int sig) {
  return sig < S_PAD_MIN ? scalar_units[sig] : named_signals[sig - S_PAD_MIN].unit;
}

/* Resolves a signal name; metric receives the metric name for metrics.X. */
static bool signal_parse(const char *name, int *sig, char **metric) {
  for (int i = 0; i < TW_F_SCALAR_COUNT; i++) {
    if (strcmp(name, tw_scalar_field_name((tw_scalar_field_t)i)) == 0) {
      *sig = i;
      return true;
    }
  }
  if (strncmp(name, "metrics.", 8) == 0 && name[8]) {
    *sig = S_METRIC;
    *metric = tw_xstrdup(name + 8);
    return true;
  }
  for (int i = S_PAD_MIN; i < S_COUNT; i++) {
    if (i != S_METRIC && strcmp(name, named_signals[i - S_PAD_MIN].name) == 0) {
      *sig = i;
      return true;
    }
  }
  return false;
}

static bool vec_extreme(const tw_vec_t *v, bool max, double *out) {
  if (!tw_stamp_set(&v->st) || v->n == 0) return false;
  double m = v->v[0];
  for (uint32_t i = 1; i < v->n; i++)
    if (max ? v->v[i] > m : v->v[i] < m) m = v->v[i];
  *out = m;
  return true;
}

/* Looks a metric up without inserting it (tw_telemetry_metric inserts). */
static const tw_metric_t *metric_find(const tw_telemetry_t *t, const char *name) {
  uint32_t lo = 0, hi = t->n_metrics;
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    int c = strcmp(t->metrics[mid].name, name);
    if (c == 0) return &t->metrics[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

bool tw_wear_predict(const tw_twin_t *t, double limit_mm, int64_t *at_ms, double *at_km) {
  const tw_wear_t *w = &tw_twin_tel(t)->brake_wear;
  double n = (double)w->n;
  if (w->n < WEAR_MIN_SAMPLES) return false;
  /* A brake service after these pads' first sample, and no sample since:
   * the pads may be new, so the old fit says nothing until data shows. */
  if (t->last_brake_service_ms >= w->t0_ms && t->last_brake_service_ms >= w->t_last) return false;
  double den = n * w->stt - w->st * w->st;
  /* The samples must span some time (variance of t at least a quarter day²). */
  if (den <= 0 || den / (n * n) < 0.25) return false;
  double b = (n * w->sty - w->st * w->sy) / den;
  if (!(b < 0)) return false; /* no wear measured: no crossing to predict */
  double a = (w->sy - b * w->st) / n;
  double days = (limit_mm - a) / b;
  if (!isfinite(days) || fabs(days) > 3650000.0) return false;
  *at_ms = w->t0_ms + (int64_t)llround(days * DAY_MS);
  *at_km = NAN;
  double nk = (double)w->nk;
  double denk = nk * w->skk - w->sk * w->sk;
  if (w->nk >= WEAR_MIN_SAMPLES && denk > 0) {
    double bk = (nk * w->sky - w->sk * w->syk) / denk;
    double ak = (w->syk - bk * w->sk) / nk;
    if (bk < 0) *at_km = w->k0 + (limit_mm - ak) / bk;
  }
  return true;
}

/* The base of "service due": the last service visit, else the delivery. */
static bool service_base(const tw_twin_t *t, int64_t *at_ms, bool *has_odo, double *odo) {
  if (t->last_service.set) {
    *at_ms = t->last_service.at_ms;
    *has_odo = t->last_service.has_odometer;
    *odo = t->last_service.odometer_km;
    return true;
  }
  if (t->delivered) {
    *at_ms = t->delivered_ms;
    /* A delivery without a reading is a new vehicle: 0 km. */
    *has_odo = true;
    *odo = t->delivered_has_odometer ? t->delivered_odometer_km : 0.0;
    return true;
  }
  return false;
}

typedef struct rule rule_t;

/* Current value of a signal; false when the twin has none. */
static bool signal_value(const rule_t *r, int sig, const char *metric, const tw_twin_t *t, double *v);

/* ---- Expressions ----------------------------------------------------------- */

typedef enum { N_OR, N_AND, N_CMP, N_STAGE } node_kind_t;
typedef enum { OP_LT, OP_LE, OP_GT, OP_GE, OP_EQ, OP_NE } op_t;
static const char *const op_names[] = {"<", "<=", ">", ">=", "==", "!="};

typedef struct node {
  node_kind_t kind;
  struct node *a, *b; /* N_OR, N_AND */
  int sig;            /* N_CMP */
  char *metric;       /* N_CMP on metrics.X */
  char *sig_name;     /* N_CMP: as written */
  op_t op;
  double num;    /* N_CMP */
  tw_stage_t st; /* N_STAGE */
  int leaf;      /* N_CMP: index among the condition's comparisons */
} node_t;

static void node_free(node_t *n) {
  if (!n) return;
  node_free(n->a);
  node_free(n->b);
  free(n->metric);
  free(n->sig_name);
  free(n);
}

typedef struct {
  const char *s, *p;
  char *err;
  size_t cap;
  const char *what; /* "condition" / "clear" */
  const char *rule;
  bool failed;
  int leaves;
} parser_t;

static void perr(parser_t *ps, const char *fmt, ...) {
  if (ps->failed) return;
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(ps->err, ps->cap, "rule %s: %s '%s': %s at position %d", ps->rule, ps->what, ps->s, msg,
           (int)(ps->p - ps->s) + 1);
  ps->failed = true;
}

static void skip_ws(parser_t *ps) {
  while (isspace((unsigned char)*ps->p)) ps->p++;
}

/* An identifier: letters, digits, '_', '.', '-'. */
static size_t ident_len(const char *p) {
  size_t n = 0;
  if (!isalpha((unsigned char)p[0]) && p[0] != '_') return 0;
  while (isalnum((unsigned char)p[n]) || p[n] == '_' || p[n] == '.' || p[n] == '-') n++;
  return n;
}

static bool keyword(parser_t *ps, const char *kw) {
  skip_ws(ps);
  size_t n = ident_len(ps->p);
  if (n == strlen(kw) && strncmp(ps->p, kw, n) == 0) {
    ps->p += n;
    return true;
  }
  return false;
}

static node_t *parse_or(parser_t *ps);

static bool parse_op(parser_t *ps, op_t *op) {
  skip_ws(ps);
  const char *p = ps->p;
  if (p[0] == '<' && p[1] == '=')
    *op = OP_LE, ps->p += 2;
  else if (p[0] == '>' && p[1] == '=')
    *op = OP_GE, ps->p += 2;
  else if (p[0] == '=' && p[1] == '=')
    *op = OP_EQ, ps->p += 2;
  else if (p[0] == '!' && p[1] == '=')
    *op = OP_NE, ps->p += 2;
  else if (p[0] == '<')
    *op = OP_LT, ps->p += 1;
  else if (p[0] == '>')
    *op = OP_GT, ps->p += 1;
  else
    return false;
  return true;
}

static node_t *parse_primary(parser_t *ps) {
  skip_ws(ps);
  if (*ps->p == '(') {
    ps->p++;
    node_t *n = parse_or(ps);
    skip_ws(ps);
    if (!ps->failed && *ps->p != ')') perr(ps, "expected ')'");
    if (ps->failed) {
      node_free(n);
      return NULL;
    }
    ps->p++;
    return n;
  }
  size_t len = ident_len(ps->p);
  if (!len) {
    perr(ps, "expected a signal name or '('");
    return NULL;
  }
  char name[160];
  snprintf(name, sizeof name, "%.*s", (int)len, ps->p);
  ps->p += len;
  node_t *n = tw_xcalloc(1, sizeof *n);
  op_t op;
  if (!parse_op(ps, &op)) {
    perr(ps, "expected a comparison (< <= > >= == !=) after '%s'", name);
    node_free(n);
    return NULL;
  }
  skip_ws(ps);
  if (strcmp(name, "stage") == 0) {
    size_t sl = ident_len(ps->p);
    char sname[64];
    snprintf(sname, sizeof sname, "%.*s", (int)sl, ps->p);
    if (op != OP_EQ && op != OP_NE) {
      perr(ps, "stage is compared with == or != only");
    } else if (!sl || !tw_stage_parse(sname, &n->st)) {
      perr(ps, "expected a stage name (ORDERED, IN_PRODUCTION, BUILT, IN_TRANSIT, AT_DEALER, IN_SERVICE, "
               "DECOMMISSIONED)");
    }
    ps->p += sl;
    n->kind = N_STAGE;
    n->op = op;
    if (ps->failed) {
      node_free(n);
      return NULL;
    }
    return n;
  }
  n->kind = N_CMP;
  n->op = op;
  n->sig_name = tw_xstrdup(name);
  if (!signal_parse(name, &n->sig, &n->metric)) {
    ps->p -= len;
    perr(ps, "unknown signal '%s' (see README \"Maintenance alerts\" for the list)", name);
    node_free(n);
    return NULL;
  }
  char *end;
  n->num = strtod(ps->p, &end);
  if (end == ps->p || !isfinite(n->num)) {
    perr(ps, "expected a number after '%s %s'", name, op_names[op]);
    node_free(n);
    return NULL;
  }
  ps->p = end;
  n->leaf = ps->leaves++;
  return n;
}

static node_t *parse_and(parser_t *ps) {
  node_t *l = parse_primary(ps);
  while (l && !ps->failed && keyword(ps, "and")) {
    node_t *r = parse_primary(ps);
    if (!r) {
      node_free(l);
      return NULL;
    }
    node_t *n = tw_xcalloc(1, sizeof *n);
    n->kind = N_AND;
    n->a = l;
    n->b = r;
    l = n;
  }
  return l;
}

static node_t *parse_or(parser_t *ps) {
  node_t *l = parse_and(ps);
  while (l && !ps->failed && keyword(ps, "or")) {
    node_t *r = parse_and(ps);
    if (!r) {
      node_free(l);
      return NULL;
    }
    node_t *n = tw_xcalloc(1, sizeof *n);
    n->kind = N_OR;
    n->a = l;
    n->b = r;
    l = n;
  }
  return l;
}

static node_t *parse_expr(const char *rule, const char *what, const char *s, char *err, size_t cap) {
  parser_t ps = {s, s, err, cap, what, rule, false, 0};
  node_t *n = parse_or(&ps);
  skip_ws(&ps);
  if (n && !ps.failed && *ps.p) perr(&ps, "unexpected text (join comparisons with 'and' / 'or')");
  if (ps.failed) {
    node_free(n);
    return NULL;
  }
  return n;
}

/* ---- Rules ----------------------------------------------------------------- */

/* A message template, compiled: literal text and placeholders in order. */
typedef struct {
  int ph;       /* PH_* */
  char *text;   /* PH_TEXT: the literal; PH_SIGNAL: the signal's name */
  int sig;      /* PH_SIGNAL */
  char *metric; /* PH_SIGNAL on metrics.X */
} tpl_part_t;

typedef struct {
  tpl_part_t *v;
  size_t n;
} tpl_t;

struct rule {
  char *id;
  int severity;
  node_t *cond, *clear;
  node_t **leaves; /* the condition's comparisons, by leaf index */
  int n_leaves;
  tpl_t message, clear_message;
  double limit;   /* brake_pad_mm.days_to_limit */
  uint32_t reads; /* TW_SIG_* classes it reads; TW_SIG_ALL: evaluated on every event */
};

static void tpl_free(tpl_t *t);

struct tw_rules {
  rule_t *v;
  size_t n;
  uint64_t gen; /* unique per compiled set (tw_twin_t.rules_gen) */
};

static bool signal_value(const rule_t *r, int sig, const char *metric, const tw_twin_t *t, double *v) {
  const tw_telemetry_t *tel = tw_twin_tel(t);
  if (sig < TW_F_SCALAR_COUNT) {
    if (!tw_stamp_set(&tel->scalars[sig].st)) return false;
    *v = tel->scalars[sig].value;
    return true;
  }
  switch ((signal_t)sig) {
  case S_PAD_MIN: return vec_extreme(&tel->brake_pad_mm, false, v);
  case S_PAD_MAX: return vec_extreme(&tel->brake_pad_mm, true, v);
  case S_TIRE_MIN: return vec_extreme(&tel->tire_pressure_kpa, false, v);
  case S_TIRE_MAX: return vec_extreme(&tel->tire_pressure_kpa, true, v);
  case S_METRIC: {
    const tw_metric_t *m = metric_find(tel, metric);
    if (!m || !tw_stamp_set(&m->val.st)) return false;
    *v = m->val.value;
    return true;
  }
  case S_DTC_COUNT:
    if (!tw_stamp_set(&tel->dtc_codes.st)) return false;
    *v = tel->dtc_codes.n;
    return true;
  case S_RECALLS_OPEN: *v = t->n_open_recalls; return true;
  case S_SVC_KM: {
    int64_t at;
    bool has;
    double odo;
    if (!service_base(t, &at, &has, &odo) || !has || !tw_stamp_set(&tel->scalars[TW_F_ODOMETER_KM].st))
      return false;
    /* A reading older than the visit's own is no distance driven since. */
    *v = fmax(0.0, tel->scalars[TW_F_ODOMETER_KM].value - odo);
    return true;
  }
  case S_SVC_DAYS: {
    int64_t at;
    bool has;
    double odo;
    if (!service_base(t, &at, &has, &odo)) return false;
    *v = fmax(0.0, (double)(t->last_event_ms - at) / DAY_MS);
    return true;
  }
  case S_PAD_DAYS: {
    int64_t at;
    double km;
    if (!tw_wear_predict(t, r->limit, &at, &km)) return false;
    *v = (double)(at - t->last_event_ms) / DAY_MS;
    return true;
  }
  default: return false;
  }
}

static bool compare(op_t op, double a, double b) {
  switch (op) {
  case OP_LT: return a < b;
  case OP_LE: return a <= b;
  case OP_GT: return a > b;
  case OP_GE: return a >= b;
  case OP_EQ: return a == b;
  default: return a != b;
  }
}

/* Evaluates n; *hit receives the first comparison that held on the path
 * that made the result true (-1: none, e.g. only a stage test). */
static bool eval(const rule_t *r, const node_t *n, const tw_twin_t *t, int *hit) {
  int ha = -1, hb = -1;
  double v;
  *hit = -1;
  switch (n->kind) {
  case N_OR:
    if (eval(r, n->a, t, &ha)) {
      *hit = ha;
      return true;
    }
    if (eval(r, n->b, t, &hb)) {
      *hit = hb;
      return true;
    }
    return false;
  case N_AND:
    if (!eval(r, n->a, t, &ha) || !eval(r, n->b, t, &hb)) return false;
    *hit = ha >= 0 ? ha : hb;
    return true;
  case N_STAGE: return (t->stage == n->st) == (n->op == OP_EQ);
  case N_CMP:
    if (!signal_value(r, n->sig, n->metric, t, &v) || !compare(n->op, v, n->num)) return false;
    *hit = n->leaf;
    return true;
  }
  return false;
}

/* ---- Which rules cannot raise yet ----------------------------------------- *
 *
 * service_due and brake_wear_predicted read the twin's time, which nearly
 * every event moves, and service_due also reads the odometer, which nearly
 * every telemetry report moves. Both were evaluated on every event, and
 * almost always did not hold. A condition that does not hold can only come
 * to hold through one of its comparisons; on the time and the odometer that
 * happens at a computable point: service.days_since grows with the time
 * (clamped at 0) and days_to_limit shrinks with it (the predicted date
 * depends on the wear fit alone), service.km_since and odometer_km grow
 * with the reading (which may also go down: only an upward crossing is
 * bounded). Whether the time signals have a value does not depend on the
 * time; the odometer ones may get one with a first reading (not bounded). */

/* A condition that does not hold cannot while last_event_ms < ms and the
 * odometer reading < km (no reading counts as -inf). */
typedef struct {
  int64_t ms;
  double km;
} wake_t;

#define WAKE_HOLDS ((wake_t){INT64_MIN, -INFINITY}) /* it holds now */
#define WAKE_NEVER ((wake_t){INT64_MAX, INFINITY})  /* not while only time and reading move */

static bool wake_holds(wake_t w) { return w.ms == INT64_MIN; }

/* Both bounds: where neither of two conditions can hold. */
static wake_t wake_min(wake_t a, wake_t b) {
  return (wake_t){a.ms < b.ms ? a.ms : b.ms, a.km < b.km ? a.km : b.km};
}

/* Whether n holds at the twin's now (exactly when eval() is true), and if
 * not, bounds below which it cannot hold. Not known: the current time, which
 * any event that moves the time passes. */
static wake_t hold_wake(const rule_t *r, const node_t *n, const tw_twin_t *t) {
  wake_t unknown = {t->last_event_ms, -INFINITY}, wa, wb;
  double v;
  switch (n->kind) {
  case N_OR:
    if (wake_holds(wa = hold_wake(r, n->a, t))) return wa;
    if (wake_holds(wb = hold_wake(r, n->b, t))) return wb;
    return wake_min(wa, wb);
  case N_AND: /* both must hold: either's bounds will do */
    wa = hold_wake(r, n->a, t);
    if (wa.ms == INT64_MAX && wa.km == INFINITY) return wa;
    wb = hold_wake(r, n->b, t);
    if (wake_holds(wa) || wake_holds(wb)) return wake_holds(wa) ? wb : wa;
    return wa.ms >= wb.ms ? wa : wb;
  case N_STAGE: return (t->stage == n->st) == (n->op == OP_EQ) ? WAKE_HOLDS : WAKE_NEVER;
  case N_CMP: {
    bool odo = n->sig == TW_F_ODOMETER_KM || n->sig == S_SVC_KM;
    if (!signal_value(r, n->sig, n->metric, t, &v)) return odo ? unknown : WAKE_NEVER; /* a first reading */
    if (compare(n->op, v, n->num)) return WAKE_HOLDS;
    if (!odo && n->sig != S_SVC_DAYS && n->sig != S_PAD_DAYS) return WAKE_NEVER;
    if (n->op == OP_EQ || n->op == OP_NE || fabs(n->num) > 1e9 || fabs(v) > 1e9) return unknown;
    bool rises = n->sig != S_PAD_DAYS, upward = n->op == OP_GT || n->op == OP_GE;
    if (rises != upward) return odo ? unknown : WAKE_NEVER; /* a reading may also go down */
    /* The distance to the threshold, less a margin far above rounding. */
    double gap = rises ? n->num - v : v - n->num;
    if (odo) {
      double km = tw_twin_tel(t)->scalars[TW_F_ODOMETER_KM].value + gap - 1e-6 * (1 + fabs(n->num));
      return (wake_t){INT64_MAX, km};
    }
    double ms = (double)t->last_event_ms + gap * DAY_MS - 2.0;
    return (wake_t){ms < 9.0e18 ? (int64_t)ms : INT64_MAX, INFINITY};
  }
  }
  return unknown;
}

static void collect_leaves(rule_t *r, node_t *n) {
  if (!n) return;
  if (n->kind == N_CMP) r->leaves[n->leaf] = n;
  collect_leaves(r, n->a);
  collect_leaves(r, n->b);
}

static bool any_signal(const rule_t *r, const tw_twin_t *t) {
  double v;
  for (int i = 0; i < r->n_leaves; i++)
    if (signal_value(r, r->leaves[i]->sig, r->leaves[i]->metric, t, &v)) return true;
  return r->n_leaves == 0;
}

static void rule_cleanup(rule_t *r) {
  free(r->id);
  node_free(r->cond);
  node_free(r->clear);
  free(r->leaves);
  tpl_free(&r->message);
  tpl_free(&r->clear_message);
}

/* ---- Which rules an event can affect -------------------------------------- *
 *
 * An event that changes none of the classes a rule reads (TW_SIG_*) leaves
 * the rule's inputs exactly as at its last evaluation, so evaluating it
 * again can only repeat that evaluation's outcome: no transition, and the
 * same value and prediction for an active alert. That holds when a second
 * evaluation on the same inputs is a no-op, i.e. the condition and "clear"
 * (the clear condition, or no signal left) never hold together: else a
 * raise would be followed by a clear on the next event, and so on. Rules for
 * which that is not proven here read TW_SIG_ALL and run on every event. */

static uint32_t node_reads(const node_t *n) {
  if (!n) return 0;
  if (n->kind == N_CMP) return signal_reads(n->sig);
  if (n->kind == N_STAGE) return TW_SIG_STAGE;
  return node_reads(n->a) | node_reads(n->b);
}

/* True when n can only hold while one of its comparisons holds, which
 * requires that comparison's signal to have a value. */
static bool needs_comparison(const node_t *n) {
  switch (n->kind) {
  case N_CMP: return true;
  case N_STAGE: return false;
  case N_AND: return needs_comparison(n->a) || needs_comparison(n->b);
  default: return needs_comparison(n->a) && needs_comparison(n->b);
  }
}

/* The values a comparison accepts as an interval of the extended reals
 * (NaN satisfies no ordered comparison); false for != (not an interval). */
static bool cmp_interval(const node_t *n, double *lo, bool *lo_in, double *hi, bool *hi_in) {
  *lo = -INFINITY, *hi = INFINITY;
  *lo_in = *hi_in = true;
  switch (n->op) {
  case OP_LT: *hi = n->num, *hi_in = false; return true;
  case OP_LE: *hi = n->num; return true;
  case OP_GT: *lo = n->num, *lo_in = false; return true;
  case OP_GE: *lo = n->num; return true;
  case OP_EQ: *lo = *hi = n->num; return true;
  default: return false;
  }
}

static bool same_signal(const node_t *a, const node_t *b) {
  return a->sig == b->sig && (a->sig != S_METRIC || strcmp(a->metric, b->metric) == 0);
}

/* True when a and b can never hold on the same twin (sound, not complete). */
static bool disjoint(const node_t *a, const node_t *b) {
  if (a->kind == N_OR) return disjoint(a->a, b) && disjoint(a->b, b);
  if (b->kind == N_OR) return disjoint(a, b->a) && disjoint(a, b->b);
  if (a->kind == N_AND) return disjoint(a->a, b) || disjoint(a->b, b);
  if (b->kind == N_AND) return disjoint(a, b->a) || disjoint(a, b->b);
  if (a->kind == N_STAGE && b->kind == N_STAGE) {
    if (a->st == b->st) return a->op != b->op;
    return a->op == OP_EQ && b->op == OP_EQ;
  }
  if (a->kind != N_CMP || b->kind != N_CMP || !same_signal(a, b)) return false;
  double alo, ahi, blo, bhi;
  bool alo_in, ahi_in, blo_in, bhi_in;
  if (!cmp_interval(a, &alo, &alo_in, &ahi, &ahi_in) || !cmp_interval(b, &blo, &blo_in, &bhi, &bhi_in))
    return false;
  double lo = fmax(alo, blo), hi = fmin(ahi, bhi);
  bool lo_in = alo == blo ? alo_in && blo_in : (alo > blo ? alo_in : blo_in);
  bool hi_in = ahi == bhi ? ahi_in && bhi_in : (ahi < bhi ? ahi_in : bhi_in);
  return lo > hi || (lo == hi && !(lo_in && hi_in));
}

static uint32_t rule_reads(const rule_t *r) {
  /* "No signal left" clears: the condition must need a signal (any_signal()
   * is true for a condition without comparisons). */
  bool settles = r->n_leaves == 0 || needs_comparison(r->cond);
  /* Without a clear condition, clearing is "the condition does not hold". */
  if (r->clear && !disjoint(r->cond, r->clear)) settles = false;
  return settles ? node_reads(r->cond) | node_reads(r->clear) : TW_SIG_ALL;
}

/* ---- Built-in rules -------------------------------------------------------- */

static const tw_rule_spec_t DEFAULTS[] = {
    {.id = "battery_health_low",
     .severity = "WARNING",
     .condition = "battery_soh_pct < 80",
     .clear = "battery_soh_pct >= 81",
     .message = "Traction battery health is {value} %, below {threshold} %: check the battery",
     .clear_message = "Traction battery health back to {value} %"},
    {.id = "battery_temp_high",
     .severity = "CRITICAL",
     .condition = "battery_temp_c > 60",
     .clear = "battery_temp_c <= 55",
     .message = "Traction battery at {value} degC, above {threshold} degC: stop charging and inspect",
     .clear_message = "Traction battery temperature back to {value} degC"},
    {.id = "brake_pad_low",
     .severity = "CRITICAL",
     .condition = "brake_pad_mm.min < 3.0",
     .clear = "brake_pad_mm.min >= 3.5",
     .message = "Brake pad at {value} mm, below the {threshold} mm minimum: replace the pads",
     .clear_message = "Thinnest brake pad now {value} mm"},
    {.id = "dtc_active",
     .severity = "WARNING",
     .condition = "dtc.count > 0",
     .message = "Active diagnostic trouble codes: {dtc_codes}",
     .clear_message = "No active diagnostic trouble codes"},
    {.id = "service_due",
     .severity = "INFO",
     .condition = "stage == IN_SERVICE and (service.km_since > 15000 or service.days_since > 365)",
     .message = "Service due: {service.km_since} km and {service.days_since} days since the last service "
                "(due every 15000 km or 365 days)",
     .clear_message =
         "Service done: {service.km_since} km and {service.days_since} days since the last service"},
    {.id = "brake_wear_predicted",
     .severity = "WARNING",
     .condition = "brake_pad_mm.days_to_limit < 30",
     .clear = "brake_pad_mm.days_to_limit >= 45",
     .limit = "3.0",
     .message = "Brake pads projected to reach {limit} mm on {predicted_date} (in {value} days, at about "
                "{predicted_km} km): schedule a brake service",
     .clear_message = "Brake pads no longer projected to reach {limit} mm within 30 days"},
    {.id = "recall_open",
     .severity = "WARNING",
     .condition = "recalls.open > 0 and stage == IN_SERVICE",
     .message = "Open recall on a vehicle in service: {recalls}",
     .clear_message = "No open recall"},
};
#define N_DEFAULTS (sizeof DEFAULTS / sizeof DEFAULTS[0])

size_t tw_rules_default_specs(const tw_rule_spec_t **out) {
  *out = DEFAULTS;
  return N_DEFAULTS;
}

/* ---- Messages -------------------------------------------------------------- */

static void fmt_date(int64_t ms, char *buf, size_t cap) {
  time_t s = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&s, &tm);
  strftime(buf, cap, "%Y-%m-%d", &tm);
}

typedef struct {
  const rule_t *r;
  const tw_twin_t *t;
  double value, threshold;
  const char *unit, *signal;
  bool has_pred;
  int64_t pred_ms;
  double pred_km;
} msg_ctx_t;

static void join(char *buf, size_t cap, char *const *v, uint32_t n, const char *none) {
  size_t o = 0;
  buf[0] = '\0';
  for (uint32_t i = 0; i < n && o + 1 < cap; i++)
    o += (size_t)snprintf(buf + o, cap - o, "%s%s", i ? ", " : "", v[i]);
  if (n == 0) snprintf(buf, cap, "%s", none);
}

enum {
  PH_TEXT,
  PH_SIGNAL,
  /* the fixed names, in the order of PH_NAMES */
  PH_VALUE,
  PH_THRESHOLD,
  PH_UNIT,
  PH_RULE,
  PH_PRODUCT_ID,
  PH_SIGNAL_NAME,
  PH_LIMIT,
  PH_PREDICTED_DATE,
  PH_PREDICTED_KM,
  PH_DTC_CODES,
  PH_RECALLS,
};
static const char *const PH_NAMES[] = {"value",        "threshold", "unit",   "rule",
                                       "product_id",   "signal",    "limit",  "predicted_date",
                                       "predicted_km", "dtc_codes", "recalls"};

static void tpl_free(tpl_t *t) {
  for (size_t i = 0; i < t->n; i++) {
    free(t->v[i].text);
    free(t->v[i].metric);
  }
  free(t->v);
  *t = (tpl_t){0};
}

static void tpl_add(tpl_t *t, tpl_part_t part) {
  t->v = tw_xrealloc(t->v, (t->n + 1) * sizeof *t->v);
  t->v[t->n++] = part;
}

/* Compiles a message template once, at start-up: placeholder names are
 * resolved here, so raising an alert only formats values. */
static bool tpl_compile(const char *src, tpl_t *t, char *err, size_t err_cap) {
  *t = (tpl_t){0};
  for (const char *p = src; *p;) {
    if (*p != '{') {
      size_t n = strcspn(p, "{");
      tpl_add(t, (tpl_part_t){.ph = PH_TEXT, .text = tw_xstrndup(p, n)});
      p += n;
      continue;
    }
    const char *close = strchr(p, '}');
    if (!close || close - p - 1 >= 96) {
      tpl_free(t);
      return tw_fail(err, err_cap, "message: '{' without a closing '}'");
    }
    char *name = tw_xstrndup(p + 1, (size_t)(close - p - 1));
    tpl_part_t part = {.ph = -1};
    if (signal_parse(name, &part.sig, &part.metric)) {
      part.ph = PH_SIGNAL;
      part.text = name;
    } else {
      for (size_t i = 0; i < sizeof PH_NAMES / sizeof PH_NAMES[0]; i++)
        if (strcmp(name, PH_NAMES[i]) == 0) part.ph = PH_VALUE + (int)i;
      if (part.ph < 0) {
        tw_fail(err, err_cap,
                "message: unknown placeholder {%s} (allowed: {value} {threshold} {unit} {signal} {rule} "
                "{product_id} {limit} {predicted_date} {predicted_km} {dtc_codes} {recalls} and any "
                "signal name)",
                name);
        free(name);
        tpl_free(t);
        return false;
      }
      free(name);
    }
    tpl_add(t, part);
    p = close + 1;
  }
  return true;
}

/* Expands one placeholder into out. */
static void placeholder(const msg_ctx_t *c, const tpl_part_t *part, char *out, size_t cap) {
  double v;
  switch (part->ph) {
  case PH_SIGNAL:
    if (signal_value(c->r, part->sig, part->metric, c->t, &v))
      tw_fmt_num(v, out, cap);
    else
      snprintf(out, cap, "?");
    break;
  case PH_VALUE: tw_fmt_num(c->value, out, cap); break;
  case PH_THRESHOLD: tw_fmt_num(c->threshold, out, cap); break;
  case PH_UNIT: snprintf(out, cap, "%s", c->unit); break;
  case PH_SIGNAL_NAME: snprintf(out, cap, "%s", c->signal ? c->signal : "?"); break;
  case PH_RULE: snprintf(out, cap, "%s", c->r->id); break;
  case PH_PRODUCT_ID: snprintf(out, cap, "%s", c->t->product_id); break;
  case PH_LIMIT: tw_fmt_num(c->r->limit, out, cap); break;
  case PH_PREDICTED_DATE:
    if (c->has_pred)
      fmt_date(c->pred_ms, out, cap);
    else
      snprintf(out, cap, "?");
    break;
  case PH_PREDICTED_KM: tw_fmt_num(c->has_pred ? round(c->pred_km) : NAN, out, cap); break;
  case PH_DTC_CODES:
    join(out, cap, tw_twin_tel(c->t)->dtc_codes.s, tw_twin_tel(c->t)->dtc_codes.n, "none");
    break;
  default: join(out, cap, c->t->open_recalls, c->t->n_open_recalls, "none"); break;
  }
}

/* Renders a compiled template into out (truncated to cap). */
static void render(const msg_ctx_t *c, const tpl_t *tpl, char *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < tpl->n; i++) {
    const tpl_part_t *part = &tpl->v[i];
    char val[512];
    const char *v = part->text;
    if (part->ph != PH_TEXT) {
      placeholder(c, part, val, sizeof val);
      v = val;
    }
    size_t n = strlen(v);
    if (n > cap - 1 - o) n = cap - 1 - o;
    memcpy(out + o, v, n);
    o += n;
  }
  out[o] = '\0';
}

/* ---- Compiling ------------------------------------------------------------- */

static bool parse_severity(const char *s, int *out) {
  static const struct {
    const char *name;
    int v;
  } sev[] = {{"info", TWIN__V1__SEVERITY__INFO},
             {"warning", TWIN__V1__SEVERITY__WARNING},
             {"critical", TWIN__V1__SEVERITY__CRITICAL}};
  for (size_t i = 0; i < 3; i++) {
    if (strcasecmp(s, sev[i].name) == 0) {
      *out = sev[i].v;
      return true;
    }
  }
  return false;
}

static bool rule_compile(const tw_rule_spec_t *sp, rule_t *r, char *err, size_t cap) {
  char sub[512];
  const char *where = sp->origin ? sp->origin : "built-in";
  memset(r, 0, sizeof *r);
  if (!sp->id || !*sp->id) return tw_fail(err, cap, "%s: alerts.rules: a rule without id", where);
  for (const char *p = sp->id; *p; p++)
    if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.')
      return tw_fail(err, cap, "%s: alerts.rules: id '%s' is not allowed: use letters, digits, '_', '-', '.'",
                     where, sp->id);
  r->id = tw_xstrdup(sp->id);
  r->severity = TWIN__V1__SEVERITY__WARNING;
  if (sp->severity && !parse_severity(sp->severity, &r->severity)) {
    tw_fail(err, cap, "%s: rule %s: severity = '%s' is not allowed: expected one of INFO, WARNING, CRITICAL",
            where, sp->id, sp->severity);
    goto fail;
  }
  if (!sp->condition || !*sp->condition) {
    tw_fail(err, cap, "%s: rule %s: condition is missing (e.g. condition: \"battery_temp_c > 60\")", where,
            sp->id);
    goto fail;
  }
  if (!(r->cond = parse_expr(sp->id, "condition", sp->condition, sub, sizeof sub))) {
    tw_fail(err, cap, "%s: %s", where, sub);
    goto fail;
  }
  if (sp->clear && !(r->clear = parse_expr(sp->id, "clear", sp->clear, sub, sizeof sub))) {
    tw_fail(err, cap, "%s: %s", where, sub);
    goto fail;
  }
  /* Leaves: count them again (parse_expr numbered them from 0). */
  int n = 0;
  node_t *stack[64];
  int sp_n = 0;
  stack[sp_n++] = r->cond;
  while (sp_n) {
    node_t *x = stack[--sp_n];
    if (x->kind == N_CMP) n++;
    if (x->a && sp_n < 64) stack[sp_n++] = x->a;
    if (x->b && sp_n < 64) stack[sp_n++] = x->b;
  }
  r->n_leaves = n;
  r->leaves = tw_xcalloc((size_t)(n ? n : 1), sizeof *r->leaves);
  collect_leaves(r, r->cond);
  r->reads = rule_reads(r);
  r->limit = 3.0;
  if (sp->limit) {
    char *end;
    r->limit = strtod(sp->limit, &end);
    if (end == sp->limit || *end || !isfinite(r->limit)) {
      tw_fail(err, cap, "%s: rule %s: limit = '%s' is not allowed: expected a number (mm)", where, sp->id,
              sp->limit);
      goto fail;
    }
  }
  const char *msg =
      sp->message ? sp->message : "{rule}: {signal} is {value} {unit} (threshold {threshold} {unit})";
  const char *clear_msg = sp->clear_message ? sp->clear_message : "Cleared: {signal} is now {value} {unit}";
  if (!tpl_compile(msg, &r->message, sub, sizeof sub) ||
      !tpl_compile(clear_msg, &r->clear_message, sub, sizeof sub)) {
    tw_fail(err, cap, "%s: rule %s: %s", where, sp->id, sub);
    goto fail;
  }
  return true;
fail:
  rule_cleanup(r);
  return false;
}

static bool spec_disabled(const tw_rule_spec_t *sp, bool *bad) {
  *bad = false;
  if (!sp->enabled) return false;
  if (strcmp(sp->enabled, "false") == 0 || strcmp(sp->enabled, "no") == 0) return true;
  if (strcmp(sp->enabled, "true") == 0 || strcmp(sp->enabled, "yes") == 0) return false;
  *bad = true;
  return false;
}

tw_rules_t *tw_rules_compile(bool with_defaults, const tw_rule_spec_t *specs, size_t n, char *err,
                             size_t cap) {
  tw_rules_t *rs = tw_xcalloc(1, sizeof *rs);
  rs->v = tw_xcalloc(N_DEFAULTS + n + 1, sizeof *rs->v);
  const tw_rule_spec_t **use = tw_xcalloc(N_DEFAULTS + n + 1, sizeof *use);
  size_t nu = 0;
  if (with_defaults)
    for (size_t i = 0; i < N_DEFAULTS; i++) use[nu++] = &DEFAULTS[i];
  for (size_t i = 0; i < n; i++) {
    const tw_rule_spec_t *sp = &specs[i];
    bool bad;
    const char *where = sp->origin ? sp->origin : "alerts.rules";
    if (!sp->id || !*sp->id) {
      tw_fail(err, cap, "%s: alerts.rules: a rule without id", where);
      goto fail;
    }
    bool off = spec_disabled(sp, &bad);
    if (bad) {
      tw_fail(err, cap, "%s: rule %s: enabled = '%s' is not allowed: expected true or false", where, sp->id,
              sp->enabled);
      goto fail;
    }
    size_t j = 0;
    while (j < nu && strcmp(use[j]->id, sp->id) != 0) j++;
    bool is_default = j < nu && use[j] >= DEFAULTS && use[j] < DEFAULTS + N_DEFAULTS;
    if (j < nu && !is_default) {
      tw_fail(err, cap, "%s: rule %s: the id is used twice in alerts.rules", where, sp->id);
      goto fail;
    }
    if (off) {
      if (j < nu) {
        memmove(&use[j], &use[j + 1], (nu - j - 1) * sizeof *use);
        nu--;
      }
      continue;
    }
    if (j < nu)
      use[j] = sp;
    else
      use[nu++] = sp;
  }
  for (size_t i = 0; i < nu; i++) {
    const tw_rule_spec_t *sp = use[i];
    tw_rule_spec_t merged;
    if (!sp->condition) {
      /* An override of a built-in without a condition: merge with it. */
      const tw_rule_spec_t *d = NULL;
      for (size_t k = 0; k < N_DEFAULTS && !d; k++)
        if (strcmp(DEFAULTS[k].id, sp->id) == 0) d = &DEFAULTS[k];
      if (d) {
        merged = *d;
        if (sp->severity) merged.severity = sp->severity;
        if (sp->clear) merged.clear = sp->clear;
        if (sp->message) merged.message = sp->message;
        if (sp->clear_message) merged.clear_message = sp->clear_message;
        if (sp->limit) merged.limit = sp->limit;
        merged.origin = sp->origin;
        sp = &merged;
      }
    }
    if (!rule_compile(sp, &rs->v[rs->n], err, cap)) goto fail;
    rs->n++;
  }
  /* Evaluated and stored in id order, so documents do not depend on the
   * order of the config file. */
  for (size_t i = 1; i < rs->n; i++) {
    rule_t x = rs->v[i];
    size_t j = i;
    while (j > 0 && strcmp(rs->v[j - 1].id, x.id) > 0) {
      rs->v[j] = rs->v[j - 1];
      j--;
    }
    rs->v[j] = x;
  }
  static atomic_uint_fast64_t generations;
  rs->gen = (uint64_t)atomic_fetch_add(&generations, 1) + 1;
  free(use);
  return rs;
fail:
  free(use);
  tw_rules_destroy(rs);
  return NULL;
}

void tw_rules_destroy(tw_rules_t *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n; i++) rule_cleanup(&r->v[i]);
  free(r->v);
  free(r);
}

size_t tw_rules_count(const tw_rules_t *r) { return r ? r->n : 0; }
const char *tw_rules_id(const tw_rules_t *r, size_t i) { return r->v[i].id; }
uint32_t tw_rules_reads(const tw_rules_t *r, size_t i) { return r->v[i].reads; }

/* ---- Evaluating ------------------------------------------------------------ */

static int alert_find(const tw_twin_t *t, const char *rule, bool *found) {
  uint32_t lo = 0, hi = t->n_alerts;
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    int c = strcmp(t->alerts[mid].rule, rule);
    if (c == 0) {
      *found = true;
      return (int)mid;
    }
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  *found = false;
  return (int)lo;
}

/* Value and threshold reported for leaf (NAN value when it has none now). */
static void leaf_report(const rule_t *r, int leaf, const tw_twin_t *t, msg_ctx_t *c) {
  c->value = NAN;
  c->threshold = 0;
  c->unit = "";
  c->has_pred = false;
  c->pred_km = NAN;
  if (leaf < 0 || leaf >= r->n_leaves) return;
  const node_t *n = r->leaves[leaf];
  double v;
  if (signal_value(r, n->sig, n->metric, t, &v)) c->value = v;
  c->threshold = n->num;
  c->unit = n->sig == S_METRIC ? "" : signal_unit(n->sig);
  c->signal = n->sig_name;
  if (n->sig == S_PAD_DAYS) c->has_pred = tw_wear_predict(t, r->limit, &c->pred_ms, &c->pred_km);
}

/* Index of the first comparison whose signal has a value (-1: none). */
static int first_defined_leaf(const rule_t *r, const tw_twin_t *t) {
  double v;
  for (int i = 0; i < r->n_leaves; i++)
    if (signal_value(r, r->leaves[i]->sig, r->leaves[i]->metric, t, &v)) return i;
  return -1;
}

/* Counts one more raise of rule on t and returns its number (1, 2, ...). */
static uint32_t cycle_next(tw_twin_t *t, const char *rule) {
  uint32_t lo = 0, hi = t->n_alert_cycles;
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    int c = strcmp(t->alert_cycles[mid].rule, rule);
    if (c == 0) return ++t->alert_cycles[mid].n;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  t->alert_cycles = tw_xrealloc(t->alert_cycles, (t->n_alert_cycles + 1) * sizeof *t->alert_cycles);
  memmove(&t->alert_cycles[lo + 1], &t->alert_cycles[lo], (t->n_alert_cycles - lo) * sizeof *t->alert_cycles);
  t->n_alert_cycles++;
  t->alert_cycles[lo] = (tw_alert_cycle_t){tw_xstrdup(rule), 1};
  return 1;
}

static size_t rules_eval(const tw_rules_t *rs, tw_twin_t *t, const tw_rule_event_t *ev, uint32_t changed,
                         tw_alert_cb cb, void *ud);

tw_outcome_t tw_apply_event(const tw_rules_t *r, tw_twin_t *t, const Twin__V1__Envelope *env,
                            const char **reason, tw_alert_cb cb, void *ud) {
  tw_outcome_t o = tw_reduce(t, env, reason);
  if (r && (o == TW_OUT_APPLIED || o == TW_OUT_STALE)) {
    tw_rule_event_t ev = {env->event_time_ms, env->source, env->seq};
    /* Another rule set (or none) last evaluated this twin: run them all. */
    rules_eval(r, t, &ev, (t->rules_gen == r->gen ? t->rule_inputs : TW_SIG_ALL) | TW_SIG_EVENT, cb, ud);
  }
  return o;
}

/* The alert message's common fields (built only on a transition). */
static Twin__V1__MaintenanceAlert alert_msg(const tw_twin_t *t, const rule_t *r, const tw_rule_event_t *ev) {
  Twin__V1__MaintenanceAlert al = TWIN__V1__MAINTENANCE_ALERT__INIT;
  al.product_id = t->product_id;
  al.rule_id = r->id;
  al.severity = (Twin__V1__Severity)r->severity;
  al.event_time_ms = ev->event_time_ms;
  return al;
}

size_t tw_rules_eval(const tw_rules_t *rs, tw_twin_t *t, const tw_rule_event_t *ev, tw_alert_cb cb,
                     void *ud) {
  return rs ? rules_eval(rs, t, ev, TW_SIG_ALL, cb, ud) : 0;
}

/* out = "product:rule:cycle", cut at cap like snprintf (which took 1,200
 * instructions of the reducer's ~5,000 per event where alerts flap). */
static void alert_id(char *out, size_t cap, const char *product, const char *rule, uint32_t cycle) {
  char num[20];
  size_t n = tw_utoa(cycle, 1, num), o = 0;
  for (const char *p = product; *p && o + 1 < cap; p++) out[o++] = *p;
  if (o + 1 < cap) out[o++] = ':';
  for (const char *p = rule; *p && o + 1 < cap; p++) out[o++] = *p;
  if (o + 1 < cap) out[o++] = ':';
  for (size_t i = 0; i < n && o + 1 < cap; i++) out[o++] = num[i];
  out[o] = '\0';
}

/* Evaluates the rules that read a class in changed (all for TW_SIG_ALL). */
static size_t rules_eval(const tw_rules_t *rs, tw_twin_t *t, const tw_rule_event_t *ev, uint32_t changed,
                         tw_alert_cb cb, void *ud) {
  size_t transitions = 0;
  t->rule_inputs = 0;
  t->rules_gen = rs->gen;
  /* Rules that read the time or the odometer and cannot raise below the
   * twin's bounds are skipped while nothing else they read changes; the
   * new bounds are where none of them can (a skipped rule's own bounds are
   * at least the old ones). */
  const uint32_t moving = TW_SIG_TIME | TW_SIG_SCALAR(TW_F_ODOMETER_KM);
  const tw_scalar_t *odo = &tw_twin_tel(t)->scalars[TW_F_ODOMETER_KM];
  wake_t old = {t->rules_wake_s == UINT32_MAX ? INT64_MAX : (int64_t)t->rules_wake_s * 1000,
                t->rules_wake_km},
         wake = WAKE_NEVER;
  bool asleep = t->last_event_ms < old.ms && (tw_stamp_set(&odo->st) ? odo->value : -INFINITY) < old.km;
  for (size_t i = 0; i < rs->n; i++) {
    const rule_t *r = &rs->v[i];
    bool bounded = r->reads & moving;
    if (!(r->reads & changed)) {
      if (bounded) wake = wake_min(wake, old);
      continue;
    }
    bool active;
    int pos = alert_find(t, r->id, &active);
    int hit;
    msg_ctx_t c; /* set once a message may be needed: most evaluations change nothing */
    char msg[MSG_MAX];
    if (!active) {
      if (bounded) {
        wake_t w = old;
        if (!asleep || (r->reads & changed & ~moving)) w = hold_wake(r, r->cond, t);
        if (!wake_holds(w)) {
          wake = wake_min(wake, w);
          continue;
        }
      }
      if (!eval(r, r->cond, t, &hit)) continue;
      c = (msg_ctx_t){.r = r, .t = t};
      if (hit < 0) hit = first_defined_leaf(r, t);
      leaf_report(r, hit, t, &c);
      render(&c, &r->message, msg, sizeof msg);
      /* product:rule:cycle - the same id whichever event raises the n-th
       * cycle, so a replay after a crash repeats ids instead of minting new
       * ones. */
      char id[TW_PRODUCT_ID_MAX + 256];
      alert_id(id, sizeof id, t->product_id, r->id, cycle_next(t, r->id));
      t->alerts = tw_xrealloc(t->alerts, (t->n_alerts + 1) * sizeof *t->alerts);
      memmove(&t->alerts[pos + 1], &t->alerts[pos], (t->n_alerts - (uint32_t)pos) * sizeof *t->alerts);
      t->n_alerts++;
      tw_alert_t *a = &t->alerts[pos];
      *a = (tw_alert_t){.rule = r->id,
                        .alert_id = id,
                        .message = msg,
                        .unit = (char *)c.unit,
                        .severity = r->severity,
                        .since_ms = ev->event_time_ms,
                        .leaf = hit,
                        .value = isfinite(c.value) ? c.value : 0,
                        .threshold = c.threshold,
                        .has_predicted = c.has_pred,
                        .predicted_at_ms = c.has_pred ? c.pred_ms : 0};
      tw_alert_own(a);
      Twin__V1__MaintenanceAlert al = alert_msg(t, r, ev);
      al.alert_id = a->alert_id;
      al.state = TWIN__V1__ALERT_STATE__RAISED;
      al.message = a->message;
      al.value = a->value;
      al.threshold = a->threshold;
      al.unit = a->unit;
      al.raised_at_ms = a->since_ms;
      if (a->has_predicted) {
        al._predicted_at_ms_case = TWIN__V1__MAINTENANCE_ALERT___PREDICTED_AT_MS_PREDICTED_AT_MS;
        al.predicted_at_ms = a->predicted_at_ms;
      }
      transitions++;
      if (cb) cb(ud, &al);
      continue;
    }

    tw_alert_t *a = &t->alerts[pos];
    bool clear;
    if (!any_signal(r, t))
      clear = true;
    else if (r->clear)
      clear = eval(r, r->clear, t, &hit);
    else
      clear = !eval(r, r->cond, t, &hit);
    c = (msg_ctx_t){.r = r, .t = t};
    leaf_report(r, a->leaf, t, &c);
    if (!clear) {
      /* Still active: keep the reported value and prediction current. */
      if (isfinite(c.value)) a->value = c.value;
      a->has_predicted = c.has_pred;
      a->predicted_at_ms = c.has_pred ? c.pred_ms : 0;
      continue;
    }
    if (!isfinite(c.value)) c.value = a->value;
    render(&c, &r->clear_message, msg, sizeof msg);
    Twin__V1__MaintenanceAlert al = alert_msg(t, r, ev);
    al.alert_id = a->alert_id;
    al.state = TWIN__V1__ALERT_STATE__CLEARED;
    al.message = msg;
    al.value = c.value;
    al.threshold = a->threshold;
    al.unit = a->unit;
    al.raised_at_ms = a->since_ms;
    transitions++;
    if (cb) cb(ud, &al);
    tw_alert_cleanup(a);
    memmove(&t->alerts[pos], &t->alerts[pos + 1], (t->n_alerts - (uint32_t)pos - 1) * sizeof *t->alerts);
    t->n_alerts--;
    if (bounded) wake = WAKE_HOLDS; /* its bounds are not known: the next event evaluates it */
  }
  /* Rounded down, so the stored bounds are never above the computed ones
   * (event times end before 2100, below UINT32_MAX seconds). */
  t->rules_wake_s = wake.ms <= 0 ? 0 : wake.ms / 1000 >= UINT32_MAX ? UINT32_MAX : (uint32_t)(wake.ms / 1000);
  float km = (float)wake.km;
  t->rules_wake_km = (double)km > wake.km ? nextafterf(km, -INFINITY) : km;
  return transitions;
}
