/* fixture.c - see fixture.h. */
#include "fixture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "twin/twin.h"

/* Everything allocated while building one envelope; freed together. */
typedef struct {
  void *p[4096];
  size_t n;
} arena_t;

static void *a_alloc(arena_t *a, size_t n) {
  void *p = calloc(1, n ? n : 1);
  if (a->n < sizeof a->p / sizeof a->p[0]) a->p[a->n++] = p;
  return p;
}

static char *a_str(arena_t *a, const bson_iter_t *it) {
  uint32_t n = 0;
  const char *s = BSON_ITER_HOLDS_UTF8(it) ? bson_iter_utf8(it, &n) : "";
  char *c = a_alloc(a, n + 1);
  memcpy(c, s, n);
  return c;
}

static double num(const bson_iter_t *it) {
  if (BSON_ITER_HOLDS_DOUBLE(it)) return bson_iter_double(it);
  if (BSON_ITER_HOLDS_INT32(it)) return bson_iter_int32(it);
  if (BSON_ITER_HOLDS_INT64(it)) return (double)bson_iter_int64(it);
  if (BSON_ITER_HOLDS_UTF8(it)) { /* "NaN", "Infinity" for bad-input tests */
    const char *s = bson_iter_utf8(it, NULL);
    if (strcmp(s, "NaN") == 0) return NAN;
    if (strcmp(s, "Infinity") == 0) return INFINITY;
  }
  return 0;
}

static size_t arr_len(const bson_iter_t *it) {
  bson_iter_t in;
  size_t n = 0;
  if (BSON_ITER_HOLDS_ARRAY(it) && bson_iter_recurse(it, &in))
    while (bson_iter_next(&in)) n++;
  return n;
}

static double *a_doubles(arena_t *a, const bson_iter_t *it, size_t *n) {
  bson_iter_t in;
  *n = arr_len(it);
  double *v = a_alloc(a, *n * sizeof *v);
  size_t i = 0;
  if (bson_iter_recurse(it, &in))
    while (bson_iter_next(&in)) v[i++] = num(&in);
  return v;
}

static char **a_strings(arena_t *a, const bson_iter_t *it, size_t *n) {
  bson_iter_t in;
  *n = arr_len(it);
  char **v = a_alloc(a, *n * sizeof *v);
  size_t i = 0;
  if (bson_iter_recurse(it, &in))
    while (bson_iter_next(&in)) v[i++] = a_str(a, &in);
  return v;
}

#define SET_OPT(msg, field, FIELD_CASE_ENUM, value) \
  do {                                              \
    (msg)->_##field##_case = FIELD_CASE_ENUM;       \
    (msg)->field = (value);                         \
  } while (0)

static bool build_telemetry(arena_t *a, const bson_iter_t *doc, Twin__V1__Telemetry *t, char *err,
                            size_t cap) {
  bson_iter_t it;
  twin__v1__telemetry__init(t);
  if (!bson_iter_recurse(doc, &it)) return false;
  while (bson_iter_next(&it)) {
    const char *k = bson_iter_key(&it);
#define OPT(name, CASE)               \
  if (strcmp(k, #name) == 0) {        \
    SET_OPT(t, name, CASE, num(&it)); \
    continue;                         \
  }
    OPT(odometer_km, TWIN__V1__TELEMETRY___ODOMETER_KM_ODOMETER_KM)
    OPT(speed_kph, TWIN__V1__TELEMETRY___SPEED_KPH_SPEED_KPH)
    OPT(battery_soc_pct, TWIN__V1__TELEMETRY___BATTERY_SOC_PCT_BATTERY_SOC_PCT)
    OPT(battery_soh_pct, TWIN__V1__TELEMETRY___BATTERY_SOH_PCT_BATTERY_SOH_PCT)
    OPT(battery_temp_c, TWIN__V1__TELEMETRY___BATTERY_TEMP_C_BATTERY_TEMP_C)
    OPT(latitude, TWIN__V1__TELEMETRY___LATITUDE_LATITUDE)
    OPT(longitude, TWIN__V1__TELEMETRY___LONGITUDE_LONGITUDE)
    OPT(fuel_level_pct, TWIN__V1__TELEMETRY___FUEL_LEVEL_PCT_FUEL_LEVEL_PCT)
    OPT(aux_battery_v, TWIN__V1__TELEMETRY___AUX_BATTERY_V_AUX_BATTERY_V)
    OPT(ambient_temp_c, TWIN__V1__TELEMETRY___AMBIENT_TEMP_C_AMBIENT_TEMP_C)
    OPT(range_km, TWIN__V1__TELEMETRY___RANGE_KM_RANGE_KM)
#undef OPT
    if (strcmp(k, "tire_pressure_kpa") == 0) {
      t->tire_pressure_kpa = a_doubles(a, &it, &t->n_tire_pressure_kpa);
    } else if (strcmp(k, "brake_pad_mm") == 0) {
      t->brake_pad_mm = a_doubles(a, &it, &t->n_brake_pad_mm);
    } else if (strcmp(k, "dtc_codes") == 0) {
      t->dtc_codes = a_strings(a, &it, &t->n_dtc_codes);
    } else if (strcmp(k, "dtc_codes_reported") == 0) {
      t->dtc_codes_reported = bson_iter_as_bool(&it);
    } else if (strcmp(k, "firmware_version") == 0) {
      SET_OPT(t, firmware_version, TWIN__V1__TELEMETRY___FIRMWARE_VERSION_FIRMWARE_VERSION, a_str(a, &it));
    } else if (strcmp(k, "metrics") == 0) {
      bson_iter_t m;
      size_t n = 0;
      if (!bson_iter_recurse(&it, &m)) continue;
      while (bson_iter_next(&m)) n++;
      t->metrics = a_alloc(a, n * sizeof *t->metrics);
      bson_iter_recurse(&it, &m);
      while (bson_iter_next(&m)) {
        Twin__V1__Telemetry__MetricsEntry *e = a_alloc(a, sizeof *e);
        twin__v1__telemetry__metrics_entry__init(e);
        size_t kl = strlen(bson_iter_key(&m));
        e->key = a_alloc(a, kl + 1);
        memcpy(e->key, bson_iter_key(&m), kl);
        e->value = num(&m);
        t->metrics[t->n_metrics++] = e;
      }
    } else {
      snprintf(err, cap, "fixture: unknown telemetry field '%s'", k);
      return false;
    }
  }
  return true;
}

static bool build_lifecycle(arena_t *a, const bson_iter_t *doc, Twin__V1__LifecycleEvent *l, char *err,
                            size_t cap) {
  bson_iter_t it;
  twin__v1__lifecycle_event__init(l);
  if (!bson_iter_recurse(doc, &it)) return false;
  while (bson_iter_next(&it)) {
    const char *k = bson_iter_key(&it);
    if (strcmp(k, "kind") == 0) {
      if (BSON_ITER_HOLDS_UTF8(&it)) {
        const char *name = bson_iter_utf8(&it, NULL);
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value_by_name(&twin__v1__lifecycle_kind__descriptor, name);
        if (!v) {
          snprintf(err, cap, "fixture: unknown lifecycle kind '%s'", name);
          return false;
        }
        l->kind = (Twin__V1__LifecycleKind)v->value;
      } else {
        l->kind = (Twin__V1__LifecycleKind)bson_iter_as_int64(&it);
      }
    } else if (strcmp(k, "site") == 0)
      l->site = a_str(a, &it);
    else if (strcmp(k, "actor") == 0)
      l->actor = a_str(a, &it);
    else if (strcmp(k, "detail") == 0)
      l->detail = a_str(a, &it);
    else if (strcmp(k, "work_order") == 0)
      l->work_order = a_str(a, &it);
    else if (strcmp(k, "recall_id") == 0)
      l->recall_id = a_str(a, &it);
    else if (strcmp(k, "owner_id") == 0)
      l->owner_id = a_str(a, &it);
    else if (strcmp(k, "model") == 0)
      l->model = a_str(a, &it);
    else if (strcmp(k, "odometer_km") == 0)
      SET_OPT(l, odometer_km, TWIN__V1__LIFECYCLE_EVENT___ODOMETER_KM_ODOMETER_KM, num(&it));
    else if (strcmp(k, "parts_replaced") == 0)
      l->parts_replaced = a_strings(a, &it, &l->n_parts_replaced);
    else if (strcmp(k, "attributes") == 0) {
      bson_iter_t m;
      size_t n = 0;
      if (!bson_iter_recurse(&it, &m)) continue;
      while (bson_iter_next(&m)) n++;
      l->attributes = a_alloc(a, n * sizeof *l->attributes);
      bson_iter_recurse(&it, &m);
      while (bson_iter_next(&m)) {
        Twin__V1__LifecycleEvent__AttributesEntry *e = a_alloc(a, sizeof *e);
        twin__v1__lifecycle_event__attributes_entry__init(e);
        size_t kl = strlen(bson_iter_key(&m));
        e->key = a_alloc(a, kl + 1);
        memcpy(e->key, bson_iter_key(&m), kl);
        e->value = a_str(a, &m);
        l->attributes[l->n_attributes++] = e;
      }
    } else {
      snprintf(err, cap, "fixture: unknown lifecycle field '%s'", k);
      return false;
    }
  }
  return true;
}

uint8_t *tw_fixture_encode(const bson_t *event, const char *default_product_id, size_t *len, char *err,
                           size_t cap) {
  arena_t *a = calloc(1, sizeof *a);
  Twin__V1__Envelope env;
  Twin__V1__Telemetry tel;
  Twin__V1__LifecycleEvent lc;
  bson_iter_t it;
  uint8_t *out = NULL;
  bool ok = true;
  twin__v1__envelope__init(&env);
  env.product_id = (char *)default_product_id;
  bson_iter_init(&it, event);
  while (ok && bson_iter_next(&it)) {
    const char *k = bson_iter_key(&it);
    if (strcmp(k, "product_id") == 0)
      env.product_id = a_str(a, &it);
    else if (strcmp(k, "source") == 0)
      env.source = a_str(a, &it);
    else if (strcmp(k, "seq") == 0)
      env.seq = (uint64_t)bson_iter_as_int64(&it);
    else if (strcmp(k, "t") == 0 || strcmp(k, "event_time_ms") == 0)
      env.event_time_ms = bson_iter_as_int64(&it);
    else if (strcmp(k, "telemetry") == 0) {
      ok = build_telemetry(a, &it, &tel, err, cap);
      env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY;
      env.telemetry = &tel;
    } else if (strcmp(k, "lifecycle") == 0) {
      ok = build_lifecycle(a, &it, &lc, err, cap);
      env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_LIFECYCLE;
      env.lifecycle = &lc;
    } else if (strcmp(k, "expect") == 0 || strcmp(k, "comment") == 0 || strcmp(k, "reason") == 0) {
      continue;
    } else {
      snprintf(err, cap, "fixture: unknown event field '%s'", k);
      ok = false;
    }
  }
  if (ok) {
    *len = twin__v1__envelope__get_packed_size(&env);
    out = malloc(*len ? *len : 1);
    twin__v1__envelope__pack(&env, out);
  }
  for (size_t i = 0; i < a->n; i++) free(a->p[i]);
  free(a);
  return out;
}

bson_t *tw_fixture_load_json(const char *path, char *err, size_t cap) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, cap, "cannot open %s", path);
    return NULL;
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  size_t got = fread(buf, 1, (size_t)n, f);
  fclose(f);
  buf[got] = '\0';
  bson_error_t e;
  bson_t *b = bson_new_from_json((const uint8_t *)buf, (ssize_t)got, &e);
  free(buf);
  if (!b) snprintf(err, cap, "%s: %s", path, e.message);
  return b;
}

static bool is_num(const bson_iter_t *it) {
  return BSON_ITER_HOLDS_DOUBLE(it) || BSON_ITER_HOLDS_INT32(it) || BSON_ITER_HOLDS_INT64(it);
}

static bool subset_iter(bson_iter_t *exp, const bson_iter_t *act_parent, bool array, const char *path,
                        char *why, size_t cap);

static bool value_eq(const bson_iter_t *e, const bson_iter_t *a, const char *path, char *why, size_t cap) {
  if (is_num(e) && is_num(a)) {
    double x = num(e), y = num(a);
    if (fabs(x - y) <= 1e-9 * (fabs(x) > 1 ? fabs(x) : 1)) return true;
    snprintf(why, cap, "%s: expected %.17g, got %.17g", path, x, y);
    return false;
  }
  if (BSON_ITER_HOLDS_UTF8(e) && BSON_ITER_HOLDS_UTF8(a)) {
    if (strcmp(bson_iter_utf8(e, NULL), bson_iter_utf8(a, NULL)) == 0) return true;
    snprintf(why, cap, "%s: expected \"%s\", got \"%s\"", path, bson_iter_utf8(e, NULL),
             bson_iter_utf8(a, NULL));
    return false;
  }
  if (BSON_ITER_HOLDS_NULL(e) && BSON_ITER_HOLDS_NULL(a)) return true;
  if (BSON_ITER_HOLDS_BOOL(e) && BSON_ITER_HOLDS_BOOL(a)) {
    if (bson_iter_bool(e) == bson_iter_bool(a)) return true;
    snprintf(why, cap, "%s: expected %s", path, bson_iter_bool(e) ? "true" : "false");
    return false;
  }
  if ((BSON_ITER_HOLDS_DOCUMENT(e) && BSON_ITER_HOLDS_DOCUMENT(a)) ||
      (BSON_ITER_HOLDS_ARRAY(e) && BSON_ITER_HOLDS_ARRAY(a))) {
    bson_iter_t ein;
    bson_iter_recurse(e, &ein);
    return subset_iter(&ein, a, BSON_ITER_HOLDS_ARRAY(e), path, why, cap);
  }
  snprintf(why, cap, "%s: different types (expected type 0x%02x, got 0x%02x)", path, bson_iter_type(e),
           bson_iter_type(a));
  return false;
}

static bool subset_iter(bson_iter_t *exp, const bson_iter_t *act_parent, bool array, const char *path,
                        char *why, size_t cap) {
  size_t ne = 0, na = 0;
  bson_iter_t act;
  while (bson_iter_next(exp)) {
    char p[512];
    snprintf(p, sizeof p, "%s%s%s", path, *path ? "." : "", bson_iter_key(exp));
    bson_iter_recurse(act_parent, &act);
    if (!bson_iter_find(&act, bson_iter_key(exp))) {
      snprintf(why, cap, "%s: missing", p);
      return false;
    }
    if (!value_eq(exp, &act, p, why, cap)) return false;
    ne++;
  }
  if (array) {
    bson_iter_recurse(act_parent, &act);
    while (bson_iter_next(&act)) na++;
    if (na != ne) {
      snprintf(why, cap, "%s: expected %zu elements, got %zu", path, ne, na);
      return false;
    }
  }
  return true;
}

bool tw_bson_subset(const bson_t *expect, const bson_t *actual, char *why, size_t cap) {
  /* Wrap both so the top level goes through the same path as nested documents. */
  bson_t we = BSON_INITIALIZER, wa = BSON_INITIALIZER;
  BSON_APPEND_DOCUMENT(&we, "doc", expect);
  BSON_APPEND_DOCUMENT(&wa, "doc", actual);
  bson_iter_t e, a;
  bson_iter_init_find(&e, &we, "doc");
  bson_iter_init_find(&a, &wa, "doc");
  bool ok = value_eq(&e, &a, "", why, cap);
  bson_destroy(&we);
  bson_destroy(&wa);
  return ok;
}

bool tw_bson_equal(const bson_t *expect, const bson_t *actual, char *why, size_t cap) {
  if (!tw_bson_subset(expect, actual, why, cap)) return false;
  if (tw_bson_subset(actual, expect, why, cap)) return true;
  char tmp[512];
  snprintf(tmp, sizeof tmp, "unexpected field: %s", why);
  snprintf(why, cap, "%s", tmp);
  return false;
}

void tw_alert_list_add(void *list, const Twin__V1__MaintenanceAlert *a) {
  tw_alert_list_t *c = list;
  bson_t d = BSON_INITIALIZER;
  tw_alert_to_bson(a, &d);
  char key[16];
  const char *kp;
  bson_uint32_to_string(c->n++, &kp, key, sizeof key);
  BSON_APPEND_DOCUMENT(&c->arr, kp, &d);
  bson_destroy(&d);
}

void tw_alert_to_bson(const Twin__V1__MaintenanceAlert *a, bson_t *out) {
  const ProtobufCEnumValue *sev =
      protobuf_c_enum_descriptor_get_value(&twin__v1__severity__descriptor, a->severity);
  const ProtobufCEnumValue *st =
      protobuf_c_enum_descriptor_get_value(&twin__v1__alert_state__descriptor, a->state);
  BSON_APPEND_UTF8(out, "alert_id", a->alert_id);
  BSON_APPEND_UTF8(out, "product_id", a->product_id);
  BSON_APPEND_UTF8(out, "rule_id", a->rule_id);
  BSON_APPEND_UTF8(out, "severity", sev ? sev->name : "?");
  BSON_APPEND_UTF8(out, "state", st ? st->name : "?");
  BSON_APPEND_UTF8(out, "message", a->message);
  BSON_APPEND_DOUBLE(out, "value", a->value);
  BSON_APPEND_DOUBLE(out, "threshold", a->threshold);
  if (a->_predicted_at_ms_case) BSON_APPEND_INT64(out, "predicted_at_ms", a->predicted_at_ms);
  BSON_APPEND_INT64(out, "event_time_ms", a->event_time_ms);
  BSON_APPEND_UTF8(out, "unit", a->unit);
  BSON_APPEND_INT64(out, "raised_at_ms", a->raised_at_ms);
}
