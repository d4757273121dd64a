/* validate.c - what an envelope must satisfy before the reducer sees it.
 *
 * Everything rejected here goes to the dead-letter topic with the reason
 * written into err; nothing here allocates or keeps state. The rules keep
 * the snapshot document storable (valid UTF-8, field names MongoDB accepts,
 * finite numbers) and the reducer's assumptions true (a payload, seq >= 1). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "decode.h"
#include "twin/twin.h"
#include "util.h"

#define LIST_MAX 1024
#define TEXT_MAX 4096

/* plain: the decoder found every string printable ASCII of at most
 * TW_NAME_MAX bytes, every name non-empty, without '.' and not starting
 * with '$', and every double finite (decode.h), so those checks hold; the
 * others (counts, kinds, seq, times, the key) still run. The verdict and
 * the reason are the same either way (test_bad_input). */

static bool utf8_ok(const char *s, size_t max, bool plain) {
  if (plain) return true;
  size_t n = strlen(s);
  return n <= max && tw_utf8_valid(s, n);
}

/* A name used as a document field name: metric names, attribute keys. */
static bool name_ok(const char *s, bool plain) {
  if (plain) return true;
  size_t n = strlen(s);
  if (n == 0 || n > TW_NAME_MAX || s[0] == '$' || strchr(s, '.')) return false;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20) return false;
  return tw_utf8_valid(s, n);
}

static bool text_field(const char *what, const char *s, bool plain, char *err, size_t cap) {
  if (!utf8_ok(s, TEXT_MAX, plain))
    return tw_fail(err, cap, "%s is not valid UTF-8 of at most %d bytes", what, TEXT_MAX);
  return true;
}

#define FINITE(name, v)                                                                      \
  do {                                                                                       \
    if (!isfinite(v)) return tw_fail(err, cap, "telemetry.%s is not a finite number", name); \
  } while (0)

static bool scalars_ok(const Twin__V1__Telemetry *t, char *err, size_t cap) {
  if (t->_odometer_km_case) FINITE("odometer_km", t->odometer_km);
  if (t->_speed_kph_case) FINITE("speed_kph", t->speed_kph);
  if (t->_battery_soc_pct_case) FINITE("battery_soc_pct", t->battery_soc_pct);
  if (t->_battery_soh_pct_case) FINITE("battery_soh_pct", t->battery_soh_pct);
  if (t->_battery_temp_c_case) FINITE("battery_temp_c", t->battery_temp_c);
  if (t->_latitude_case) FINITE("latitude", t->latitude);
  if (t->_longitude_case) FINITE("longitude", t->longitude);
  if (t->_fuel_level_pct_case) FINITE("fuel_level_pct", t->fuel_level_pct);
  if (t->_aux_battery_v_case) FINITE("aux_battery_v", t->aux_battery_v);
  if (t->_ambient_temp_c_case) FINITE("ambient_temp_c", t->ambient_temp_c);
  if (t->_range_km_case) FINITE("range_km", t->range_km);
  return true;
}

static bool telemetry_ok(const Twin__V1__Telemetry *t, bool plain, char *err, size_t cap) {
  if (!plain && !scalars_ok(t, err, cap)) return false;
  if (t->n_tire_pressure_kpa > 64 || t->n_brake_pad_mm > 64)
    return tw_fail(err, cap, "telemetry has more than 64 wheel values");
  if (!plain) {
    for (size_t i = 0; i < t->n_tire_pressure_kpa; i++) FINITE("tire_pressure_kpa", t->tire_pressure_kpa[i]);
    for (size_t i = 0; i < t->n_brake_pad_mm; i++) FINITE("brake_pad_mm", t->brake_pad_mm[i]);
  }
  if (t->n_dtc_codes > LIST_MAX) return tw_fail(err, cap, "telemetry has more than %d dtc_codes", LIST_MAX);
  for (size_t i = 0; i < t->n_dtc_codes; i++)
    if (!utf8_ok(t->dtc_codes[i], TW_NAME_MAX, plain) || !t->dtc_codes[i][0])
      return tw_fail(err, cap, "telemetry.dtc_codes[%zu] is empty, too long or not UTF-8", i);
  if (t->_firmware_version_case &&
      !text_field("telemetry.firmware_version", t->firmware_version, plain, err, cap))
    return false;
  if (t->n_metrics > LIST_MAX) return tw_fail(err, cap, "telemetry has more than %d metrics", LIST_MAX);
  for (size_t i = 0; !plain && i < t->n_metrics; i++) {
    const char *k = t->metrics[i]->key;
    if (!name_ok(k, plain))
      return tw_fail(
          err, cap,
          "telemetry metric name %zu is not allowed (1..%d bytes of UTF-8, no '.', not starting with '$')", i,
          TW_NAME_MAX);
    if (!isfinite(t->metrics[i]->value))
      return tw_fail(err, cap, "telemetry metric '%s' is not a finite number", k);
  }
  return true;
}

static bool lifecycle_ok(const Twin__V1__LifecycleEvent *l, bool plain, char *err, size_t cap) {
  if (!tw_lifecycle_kind_name((int)l->kind))
    return tw_fail(err, cap, "lifecycle.kind %d is not a known LifecycleKind", (int)l->kind);
  if (!text_field("lifecycle.site", l->site, plain, err, cap) ||
      !text_field("lifecycle.actor", l->actor, plain, err, cap) ||
      !text_field("lifecycle.detail", l->detail, plain, err, cap) ||
      !text_field("lifecycle.work_order", l->work_order, plain, err, cap) ||
      !text_field("lifecycle.recall_id", l->recall_id, plain, err, cap) ||
      !text_field("lifecycle.owner_id", l->owner_id, plain, err, cap) ||
      !text_field("lifecycle.model", l->model, plain, err, cap))
    return false;
  if (!plain && l->_odometer_km_case && !isfinite(l->odometer_km))
    return tw_fail(err, cap, "lifecycle.odometer_km is not a finite number");
  if (l->n_parts_replaced > LIST_MAX)
    return tw_fail(err, cap, "lifecycle has more than %d parts_replaced", LIST_MAX);
  for (size_t i = 0; i < l->n_parts_replaced; i++)
    if (!text_field("lifecycle.parts_replaced", l->parts_replaced[i], plain, err, cap)) return false;
  if (l->n_attributes > LIST_MAX) return tw_fail(err, cap, "lifecycle has more than %d attributes", LIST_MAX);
  for (size_t i = 0; i < l->n_attributes; i++) {
    if (!name_ok(l->attributes[i]->key, plain))
      return tw_fail(
          err, cap,
          "lifecycle attribute key %zu is not allowed (1..%d bytes of UTF-8, no '.', not starting with '$')",
          i, TW_NAME_MAX);
    if (!text_field("lifecycle attribute value", l->attributes[i]->value, plain, err, cap)) return false;
  }
  return true;
}

static bool envelope_ok(const Twin__V1__Envelope *env, const void *key, size_t key_len, bool plain, char *err,
                        size_t cap) {
  size_t idn = strlen(env->product_id);
  if (idn == 0) return tw_fail(err, cap, "product_id is empty");
  if (!plain) {
    if (idn > TW_PRODUCT_ID_MAX)
      return tw_fail(err, cap, "product_id is longer than %d bytes", TW_PRODUCT_ID_MAX);
    if (!tw_utf8_valid(env->product_id, idn)) return tw_fail(err, cap, "product_id is not valid UTF-8");
    for (size_t i = 0; i < idn; i++)
      if ((unsigned char)env->product_id[i] < 0x20)
        return tw_fail(err, cap, "product_id contains control characters");
  }
  if (key && (key_len != idn || memcmp(key, env->product_id, idn) != 0))
    return tw_fail(err, cap, "message key does not equal product_id");
  if (!key) return tw_fail(err, cap, "message has no key (the key must equal product_id)");
  if (!name_ok(env->source, plain))
    return tw_fail(err, cap, "source is empty, too long, not UTF-8 or contains '.'");
  if (env->seq == 0) return tw_fail(err, cap, "seq must be at least 1");
  if (env->event_time_ms < TW_EVENT_TIME_MIN_MS || env->event_time_ms >= TW_EVENT_TIME_MAX_MS)
    return tw_fail(err, cap,
                   "event_time_ms %lld is outside 1970-01-01..2100-01-01 (milliseconds since the Unix epoch)",
                   (long long)env->event_time_ms);
  switch (env->payload_case) {
  case TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY: return telemetry_ok(env->telemetry, plain, err, cap);
  case TWIN__V1__ENVELOPE__PAYLOAD_LIFECYCLE: return lifecycle_ok(env->lifecycle, plain, err, cap);
  default: return tw_fail(err, cap, "envelope has no payload (neither telemetry nor lifecycle)");
  }
}

bool tw_envelope_validate(const Twin__V1__Envelope *env, const void *key, size_t key_len, char *err,
                          size_t cap) {
  return envelope_ok(env, key, key_len, false, err, cap);
}

/* ---- Decoding ---------------------------------------------------------------- */

static bool wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  *v = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

/* protobuf-c turns a string field into a C string, so "VIN1\0x" would become
 * "VIN1". Walks the wire bytes of a message that protobuf-c decoded and
 * fails on a NUL inside any string field the schema knows (the nesting is
 * bounded by the schema: Envelope > Telemetry > MetricsEntry). */
static bool strings_nul_free(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len,
                             const char *prefix, char *err, size_t cap) {
  const uint8_t *end = p + len;
  while (p < end) {
    uint64_t tag, v;
    if (!wire_varint(&p, end, &tag)) return true; /* protobuf-c has judged the framing */
    switch (tag & 7) {
    case 0:
      if (!wire_varint(&p, end, &v)) return true;
      break;
    case 1:
      if (end - p < 8) return true;
      p += 8;
      break;
    case 5:
      if (end - p < 4) return true;
      p += 4;
      break;
    case 2: {
      if (!wire_varint(&p, end, &v) || v > (uint64_t)(end - p)) return true;
      const ProtobufCFieldDescriptor *f =
          tag >> 3 <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3)) : NULL;
      if (f && f->type == PROTOBUF_C_TYPE_STRING && memchr(p, 0, (size_t)v))
        return tw_fail(err, cap, "%s%s contains a NUL byte", prefix, f->name);
      if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
        char sub[96];
        snprintf(sub, sizeof sub, "%s%s.", prefix, f->name);
        if (!strings_nul_free(f->descriptor, p, (size_t)v, sub, err, cap)) return false;
      }
      p += v;
      break;
    }
    default: return true;
    }
  }
  return true;
}

Twin__V1__Envelope *tw_envelope_decode(ProtobufCAllocator *alloc, const void *value, size_t len,
                                       const void *key, size_t key_len, size_t max_bytes, char *err,
                                       size_t cap) {
  if (len > max_bytes) {
    tw_fail(err, cap, "message is %zu bytes, more than message.max.bytes (%zu)", len, max_bytes);
    return NULL;
  }
  int nul;
  bool plain;
  Twin__V1__Envelope *env = tw_envelope_unpack(alloc, value, len, &nul, &plain);
  if (!env) {
    tw_fail(err, cap, "not a twin.v1.Envelope: protobuf decoding failed (%zu bytes)", len);
    return NULL;
  }
  /* The fast decoder knows whether a string held a NUL; after protobuf-c
   * the wire bytes are walked again to find out. The walk names the field. */
  if ((nul != 0 && !strings_nul_free(&twin__v1__envelope__descriptor, value, len, "", err, cap)) ||
      !envelope_ok(env, key, key_len, plain, err, cap)) {
    twin__v1__envelope__free_unpacked(env, alloc);
    return NULL;
  }
  return env;
}
