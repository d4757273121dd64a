/* args.c - twinctl's option parsing and validation, and the filters that
 * list and export share.
 *
 * Every command describes its options in a table (name, kind, range or
 * choices); one parser validates them all, so each bad value gets the same
 * kind of message: the option, the value and what is allowed. */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "twin/twin.h"

/* ---- Messages ------------------------------------------------------------------ */

int ctl_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  const char *sp = *cmd ? " " : ""; /* "" = before the command */
  fprintf(stderr, "twinctl%s%s: ", sp, cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nRun 'twinctl%s%s --help' for the options.\n", sp, cmd);
  return CTL_USAGE;
}

int ctl_fail(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "twinctl: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return CTL_FAIL;
}

const char *const *ctl_stage_names(void) {
  static const char *names[TW_STAGE_COUNT + 1];
  if (!names[0])
    for (int i = 0; i < TW_STAGE_COUNT; i++) names[i] = tw_stage_name((tw_stage_t)i);
  return names;
}

/* ---- Parsing ------------------------------------------------------------------- */

/* "an integer from 1 to 10000", "one of A, B, C", ... */
static void describe(const ctl_opt_t *o, char *buf, size_t cap) {
  switch (o->kind) {
  case CTL_OPT_FLAG: snprintf(buf, cap, "no value"); break;
  case CTL_OPT_STR: snprintf(buf, cap, "a non-empty UTF-8 string"); break;
  case CTL_OPT_INT: snprintf(buf, cap, "an integer from %.0f to %.0f", o->min, o->max); break;
  case CTL_OPT_NUM: snprintf(buf, cap, "a number from %g to %g", o->min, o->max); break;
  case CTL_OPT_CHOICE: {
    size_t n = (size_t)snprintf(buf, cap, "one of");
    for (const char *const *c = o->choices; *c && n < cap; c++)
      n += (size_t)snprintf(buf + n, cap - n, "%s %s", c == o->choices ? "" : ",", *c);
    break;
  }
  }
}

static bool set_value(const ctl_opt_t *o, const char *v) {
  char *end;
  switch (o->kind) {
  case CTL_OPT_FLAG: return false;
  case CTL_OPT_STR:
    if (!*v || !bson_utf8_validate(v, strlen(v), false)) return false;
    *(const char **)o->dst = v;
    return true;
  case CTL_OPT_INT: {
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < (long long)o->min || x > (long long)o->max) return false;
    *(int64_t *)o->dst = x;
    return true;
  }
  case CTL_OPT_NUM: {
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < o->min || x > o->max) return false;
    *(double *)o->dst = x;
    return true;
  }
  case CTL_OPT_CHOICE:
    for (const char *const *c = o->choices; *c; c++) {
      if (strcmp(v, *c) == 0) {
        *(const char **)o->dst = *c;
        return true;
      }
    }
    return false;
  }
  return false;
}

void ctl_opt(ctl_opts_t *o, const char *name, ctl_opt_kind_t kind, void *dst, double min, double max,
             const char *const *choices) {
  assert(o->n < CTL_OPTS_MAX);
  o->v[o->n++] = (ctl_opt_t){name, kind, dst, min, max, choices};
}

ctl_parse_t ctl_parse(const char *cmd, int argc, char **argv, const ctl_opts_t *options, const char **pos,
                      int max_pos, int *n_pos) {
  const ctl_opt_t *opts = options->v;
  char allowed[256];
  uint64_t given = 0; /* bit per option: each may appear once */
  _Static_assert(CTL_OPTS_MAX <= 64, "given is a 64-bit mask");
  *n_pos = 0;
  for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return CTL_PARSE_HELP;

  bool options_done = false;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (options_done || a[0] != '-' || a[1] == '\0') {
      if (*n_pos >= max_pos) {
        ctl_usage_error(cmd, "unexpected argument '%s'", a);
        return CTL_PARSE_ERROR;
      }
      pos[(*n_pos)++] = a;
      continue;
    }
    if (strcmp(a, "--") == 0) {
      options_done = true;
      continue;
    }
    const char *eq = strchr(a, '=');
    size_t name_len = eq ? (size_t)(eq - a) : strlen(a);
    int k = 0;
    for (; k < options->n; k++)
      if (strlen(opts[k].name) == name_len && strncmp(opts[k].name, a, name_len) == 0) break;
    if (k == options->n) {
      ctl_usage_error(cmd, "unknown option '%.*s'", (int)name_len, a);
      return CTL_PARSE_ERROR;
    }
    const ctl_opt_t *o = &opts[k];
    if (given & (UINT64_C(1) << k)) {
      ctl_usage_error(cmd, "%s is given twice", o->name);
      return CTL_PARSE_ERROR;
    }
    given |= UINT64_C(1) << k;
    if (o->kind == CTL_OPT_FLAG) {
      if (eq) {
        ctl_usage_error(cmd, "%s takes no value", o->name);
        return CTL_PARSE_ERROR;
      }
      *(bool *)o->dst = true;
      continue;
    }
    describe(o, allowed, sizeof allowed);
    const char *v = eq ? eq + 1 : NULL;
    if (!v) {
      /* A following option is not taken for a value: `--owner --json` is a
       * forgotten value, not an owner called "--json". */
      if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0) {
        ctl_usage_error(cmd, "%s needs a value: %s", o->name, allowed);
        return CTL_PARSE_ERROR;
      }
      v = argv[++i];
    }
    if (!set_value(o, v)) {
      ctl_usage_error(cmd, "%s '%s' is not allowed: expected %s", o->name, v, allowed);
      return CTL_PARSE_ERROR;
    }
  }
  return CTL_PARSE_OK;
}

/* ---- Filters ------------------------------------------------------------------- */

void ctl_filter_init(ctl_filter_t *f) {
  memset(f, 0, sizeof *f);
  f->brake_below = NAN;
}

void ctl_opts_filter(ctl_opts_t *o, ctl_filter_t *f) {
  ctl_opt(o, "--stage", CTL_OPT_CHOICE, &f->stage, 0, 0, ctl_stage_names());
  ctl_opt(o, "--owner", CTL_OPT_STR, &f->owner, 0, 0, NULL);
  ctl_opt(o, "--site", CTL_OPT_STR, &f->site, 0, 0, NULL);
  ctl_opt(o, "--alert", CTL_OPT_STR, &f->alert, 0, 0, NULL);
  ctl_opt(o, "--recall", CTL_OPT_STR, &f->recall, 0, 0, NULL);
  ctl_opt(o, "--dtc", CTL_OPT_STR, &f->dtc, 0, 0, NULL);
  ctl_opt(o, "--brake-below", CTL_OPT_NUM, &f->brake_below, 0, 1000, NULL);
}

void ctl_filter_to_bson(const ctl_filter_t *f, bson_t *q) {
  if (f->stage) BSON_APPEND_UTF8(q, "stage", f->stage);
  if (f->owner) BSON_APPEND_UTF8(q, "owner", f->owner);
  /* Any timeline entry: every place the product has been reported at. */
  if (f->site) BSON_APPEND_UTF8(q, "timeline.site", f->site);
  if (f->alert) BSON_APPEND_UTF8(q, "alerts.active.rule", f->alert);
  if (f->recall) BSON_APPEND_UTF8(q, "open_recalls", f->recall);
  if (f->dtc) BSON_APPEND_UTF8(q, "active_dtcs", f->dtc);
  if (!isnan(f->brake_below)) {
    bson_t lt;
    BSON_APPEND_DOCUMENT_BEGIN(q, "min_brake_pad_mm", &lt);
    BSON_APPEND_DOUBLE(&lt, "$lt", f->brake_below);
    bson_append_document_end(q, &lt);
  }
}
