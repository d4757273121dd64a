/* decode.c - a direct decoder for the canonical encoding of an Envelope;
 * anything else goes to protobuf-c (see decode.h). */
#include "decode.h"

#include "twin/twin.h"

#include <string.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "decode.c copies doubles as little-endian bytes"
#endif

/* Wire types. */
enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

typedef struct {
  const uint8_t *p, *end;
} rd_t;

/* A varint of at most 10 bytes; false if truncated or longer. */
static inline bool rd_varint(rd_t *r, uint64_t *v) {
  const uint8_t *p = r->p;
  if (p < r->end && *p < 0x80) { /* the common one-byte case */
    *v = *p;
    r->p = p + 1;
    return true;
  }
  uint64_t x = 0;
  for (int shift = 0; shift < 70 && p < r->end; shift += 7) {
    uint8_t b = *p++;
    if (shift == 63 && b > 1) return false; /* would overflow 64 bits */
    x |= (uint64_t)(b & 0x7f) << shift;
    if (b < 0x80) {
      *v = x;
      r->p = p;
      return true;
    }
  }
  return false;
}

/* A length prefix: protobuf-c reads it as a 32-bit varint of at most 5
 * bytes and rejects longer (overlong) ones, so the direct path must leave
 * them to it, not accept them. */
static inline bool rd_varint32(rd_t *r, uint64_t *v) {
  const uint8_t *start = r->p;
  return rd_varint(r, v) && r->p - start <= 5;
}

/* A field's key (number << 3 | wire type) as producers write it: one byte
 * for fields 1..15, two for 16..2047. Longer or overlong keys are valid
 * but left to protobuf-c, as is field number 0 (invalid). */
static inline bool rd_key(rd_t *r, uint32_t *key) {
  const uint8_t *p = r->p;
  if (p < r->end && p[0] < 0x80) {
    *key = p[0];
    r->p = p + 1;
    return p[0] >= 8;
  }
  if (r->end - p >= 2 && (uint8_t)(p[1] - 1) < 0x7f) { /* second byte 1..0x7f */
    *key = (p[0] & 0x7fu) | (uint32_t)p[1] << 7;
    r->p = p + 2;
    return true;
  }
  return false;
}

static inline bool rd_tag(rd_t *r, uint32_t *field, uint32_t *wt) {
  uint32_t key;
  if (!rd_key(r, &key)) return false;
  *field = key >> 3;
  *wt = key & 7;
  return true;
}

#define KEY(field, wt) ((field) << 3 | (wt))

/* A length-delimited field's bytes. */
static inline bool rd_len(rd_t *r, rd_t *sub) {
  uint64_t n;
  if (!rd_varint32(r, &n) || n > (uint64_t)(r->end - r->p)) return false;
  sub->p = r->p;
  sub->end = r->p + n;
  r->p += n;
  return true;
}

/* The decoder's state: where it allocates, whether a string held a NUL
 * byte (protobuf-c's C strings would end there), and whether what it read
 * so far passes the validator's per-byte and per-number checks (decode.h,
 * *plain): found here while the bytes are in hand, so the validator need
 * not walk them again. */
typedef struct {
  tw_arena_t *a;
  bool nul;
  bool plain;
} dec_t;

/* The 8 bytes of a double on the wire (little-endian, as on every platform
 * we build for) hold a finite number: the exponent is not all ones. */
static inline bool finite_bits(uint64_t bits) {
  return (bits & UINT64_C(0x7ff0000000000000)) != UINT64_C(0x7ff0000000000000);
}

/* A double, noting whether it is finite. */
static inline bool rd_num(dec_t *d, rd_t *r, double *v) {
  if (r->end - r->p < 8) return false;
  uint64_t bits;
  memcpy(&bits, r->p, 8);
  memcpy(v, &bits, 8);
  d->plain &= finite_bits(bits);
  r->p += 8;
  return true;
}

/* Non-zero when a byte of w (ones: 0x01 in every byte of w's type) has the
 * high bit set or is below 0x20: the borrow trick is exact for "any byte
 * below n" with n <= 0x80. */
#define BAD_BYTES(w, ones) (((w) & (ones)*0x80) | (((w) - (ones)*0x20) & ~(w) & (ones)*0x80))

/* Non-zero when a byte of w is '.' (0x2e): a zero byte of w ^ '.'s, found
 * with the same borrow trick, exact for "any". */
#define DOT_BYTES(w, ones) ((((w) ^ (ones)*0x2e) - (ones)) & ~((w) ^ (ones)*0x2e) & (ones)*0x80)

/* Copies the n bytes at src to dst and returns true when they are all
 * 0x20..0x7f and, for a name (dots), none is '.': whole words, the last one
 * overlapping the one before, so a short string takes two loads and two
 * stores and no call. */
static bool copy_printable(char *dst, const uint8_t *src, size_t n, bool dots) {
  if (n >= 8) {
    const uint64_t ones = UINT64_C(0x0101010101010101);
    uint64_t w, bad = 0;
    for (size_t i = 0; i + 8 < n; i += 8) {
      memcpy(&w, src + i, 8);
      memcpy(dst + i, &w, 8);
      bad |= BAD_BYTES(w, ones) | (dots ? DOT_BYTES(w, ones) : 0);
    }
    memcpy(&w, src + n - 8, 8);
    memcpy(dst + n - 8, &w, 8);
    return !(bad | BAD_BYTES(w, ones) | (dots ? DOT_BYTES(w, ones) : 0));
  }
  if (n >= 4) {
    const uint32_t ones = UINT32_C(0x01010101);
    uint32_t a, b;
    memcpy(&a, src, 4);
    memcpy(&b, src + n - 4, 4);
    memcpy(dst, &a, 4);
    memcpy(dst + n - 4, &b, 4);
    return !(BAD_BYTES(a, ones) | BAD_BYTES(b, ones) | (dots ? DOT_BYTES(a, ones) | DOT_BYTES(b, ones) : 0));
  }
  bool ok = true;
  for (size_t i = 0; i < n; i++) {
    dst[i] = (char)src[i];
    ok &= src[i] >= 0x20 && src[i] < 0x80 && !(dots && src[i] == '.');
  }
  return ok;
}

/* A string field; a name (source, metric or attribute key: a document
 * field name) must also be non-empty, without '.' and not start with '$'
 * for the fast verdict to stand. */
static char *str_of(dec_t *d, const rd_t *s, bool name) {
  size_t n = (size_t)(s->end - s->p);
  char *c = tw_arena_alloc(d->a, n + 1);
  c[n] = '\0';
  if (n <= TW_NAME_MAX && copy_printable(c, s->p, n, name)) {
    if (name && (n == 0 || c[0] == '$')) d->plain = false;
    return c;
  }
  if (n > TW_NAME_MAX) memcpy(c, s->p, n); /* else copied already */
  d->plain = false;
  if (memchr(c, 0, n)) d->nul = true;
  return c;
}

static char *str(dec_t *d, const rd_t *s) { return str_of(d, s, false); }
static char *name(dec_t *d, const rd_t *s) { return str_of(d, s, true); }

/* Packed doubles; one occurrence only. */
static bool packed_doubles(dec_t *d, const rd_t *s, size_t *n, double **v) {
  size_t bytes = (size_t)(s->end - s->p);
  if (*n || bytes % 8) return false;
  *n = bytes / 8;
  if (*n) {
    *v = tw_arena_alloc(d->a, bytes);
    memcpy(*v, s->p, bytes);
    for (size_t i = 0; i < *n; i++) {
      uint64_t bits;
      memcpy(&bits, s->p + 8 * i, 8);
      d->plain &= finite_bits(bits);
    }
  }
  return true;
}

/* Collected string fields of a repeated field, copied out at the end. */
typedef struct {
  size_t n;
  rd_t v[TW_DECODE_MAX_REPEATED];
} strs_t;

static bool strs_add(strs_t *l, const rd_t *s) {
  if (l->n == TW_DECODE_MAX_REPEATED) return false;
  l->v[l->n++] = *s;
  return true;
}

static char **strs_copy(dec_t *d, const strs_t *l) {
  if (!l->n) return NULL;
  char **out = tw_arena_alloc(d->a, l->n * sizeof *out);
  for (size_t i = 0; i < l->n; i++) out[i] = str(d, &l->v[i]);
  return out;
}

#define SEEN(f)                           \
  do {                                    \
    if (seen & (1u << (f))) return false; \
    seen |= 1u << (f);                    \
  } while (0)

static bool metrics_entry(dec_t *d, rd_t r, Twin__V1__Telemetry__MetricsEntry **out) {
  Twin__V1__Telemetry__MetricsEntry *e = tw_arena_alloc(d->a, sizeof *e);
  *e = (Twin__V1__Telemetry__MetricsEntry)TWIN__V1__TELEMETRY__METRICS_ENTRY__INIT;
  uint32_t seen = 0, f, wt;
  while (r.p < r.end) {
    rd_t s;
    if (!rd_tag(&r, &f, &wt)) return false;
    if (f == 1 && wt == WT_LEN) {
      SEEN(1);
      if (!rd_len(&r, &s)) return false;
      e->key = name(d, &s);
    } else if (f == 2 && wt == WT_I64) {
      SEEN(2);
      if (!rd_num(d, &r, &e->value)) return false;
    } else {
      return false;
    }
  }
  if (!(seen & (1u << 1))) d->plain = false; /* no key: the empty name */
  *out = e;
  return true;
}

static bool attributes_entry(dec_t *d, rd_t r, Twin__V1__LifecycleEvent__AttributesEntry **out) {
  Twin__V1__LifecycleEvent__AttributesEntry *e = tw_arena_alloc(d->a, sizeof *e);
  *e = (Twin__V1__LifecycleEvent__AttributesEntry)TWIN__V1__LIFECYCLE_EVENT__ATTRIBUTES_ENTRY__INIT;
  uint32_t seen = 0, f, wt;
  while (r.p < r.end) {
    rd_t s;
    if (!rd_tag(&r, &f, &wt) || wt != WT_LEN || (f != 1 && f != 2)) return false;
    SEEN(f);
    if (!rd_len(&r, &s)) return false;
    *(f == 1 ? &e->key : &e->value) = str_of(d, &s, f == 1);
  }
  if (!(seen & (1u << 1))) d->plain = false; /* no key: the empty name */
  *out = e;
  return true;
}

/* Sets an optional double: the field's presence case is its number. */
#define OPT_DOUBLE(num, name)                   \
  case KEY(num, WT_I64):                        \
    SEEN(num);                                  \
    if (!rd_num(d, &r, &t->name)) return false; \
    t->_##name##_case = num;                    \
    break

static bool telemetry(dec_t *d, rd_t r, Twin__V1__Telemetry **out) {
  Twin__V1__Telemetry *t = tw_arena_alloc(d->a, sizeof *t);
  *t = (Twin__V1__Telemetry)TWIN__V1__TELEMETRY__INIT;
  strs_t dtc;
  dtc.n = 0;
  size_t n_metrics = 0;
  Twin__V1__Telemetry__MetricsEntry *metrics[TW_DECODE_MAX_REPEATED];
  uint32_t seen = 0, key;
  while (r.p < r.end) {
    rd_t s;
    if (!rd_key(&r, &key)) return false;
    switch (key) { /* field and wire type at once */
      OPT_DOUBLE(1, odometer_km);
      OPT_DOUBLE(2, speed_kph);
      OPT_DOUBLE(3, battery_soc_pct);
      OPT_DOUBLE(4, battery_soh_pct);
      OPT_DOUBLE(5, battery_temp_c);
      OPT_DOUBLE(6, latitude);
      OPT_DOUBLE(7, longitude);
      OPT_DOUBLE(14, fuel_level_pct);
      OPT_DOUBLE(15, aux_battery_v);
      OPT_DOUBLE(16, ambient_temp_c);
      OPT_DOUBLE(17, range_km);
    case KEY(8, WT_LEN):
      SEEN(8);
      if (!rd_len(&r, &s) || !packed_doubles(d, &s, &t->n_tire_pressure_kpa, &t->tire_pressure_kpa))
        return false;
      break;
    case KEY(9, WT_LEN):
      SEEN(9);
      if (!rd_len(&r, &s) || !packed_doubles(d, &s, &t->n_brake_pad_mm, &t->brake_pad_mm)) return false;
      break;
    case KEY(10, WT_LEN): /* repeated */
      if (!rd_len(&r, &s) || !strs_add(&dtc, &s)) return false;
      break;
    case KEY(11, WT_LEN):
      SEEN(11);
      if (!rd_len(&r, &s)) return false;
      t->firmware_version = str(d, &s);
      t->_firmware_version_case = TWIN__V1__TELEMETRY___FIRMWARE_VERSION_FIRMWARE_VERSION;
      break;
    case KEY(12, WT_LEN): /* repeated */
      if (!rd_len(&r, &s) || n_metrics == TW_DECODE_MAX_REPEATED ||
          !metrics_entry(d, s, &metrics[n_metrics++]))
        return false;
      break;
    case KEY(13, WT_VARINT): {
      uint64_t v;
      SEEN(13);
      if (!rd_varint(&r, &v)) return false;
      t->dtc_codes_reported = v != 0;
      break;
    }
    default: return false;
    }
  }
  t->n_dtc_codes = dtc.n;
  t->dtc_codes = strs_copy(d, &dtc);
  if ((t->n_metrics = n_metrics)) {
    t->metrics = tw_arena_alloc(d->a, n_metrics * sizeof *t->metrics);
    memcpy(t->metrics, metrics, n_metrics * sizeof *t->metrics);
  }
  *out = t;
  return true;
}

static bool lifecycle(dec_t *d, rd_t r, Twin__V1__LifecycleEvent **out) {
  Twin__V1__LifecycleEvent *l = tw_arena_alloc(d->a, sizeof *l);
  *l = (Twin__V1__LifecycleEvent)TWIN__V1__LIFECYCLE_EVENT__INIT;
  strs_t parts;
  parts.n = 0;
  size_t n_attrs = 0;
  Twin__V1__LifecycleEvent__AttributesEntry *attrs[TW_DECODE_MAX_REPEATED];
  uint32_t seen = 0, f, wt;
  while (r.p < r.end) {
    rd_t s;
    uint64_t v;
    if (!rd_tag(&r, &f, &wt)) return false;
    if (f > 11) return false;
    if (f != 7 && f != 9) SEEN(f);
    if (f == 1) {
      if (wt != WT_VARINT || !rd_varint(&r, &v)) return false;
      l->kind = (Twin__V1__LifecycleKind)(int32_t)(uint32_t)v;
    } else if (f == 6) {
      if (wt != WT_I64 || !rd_num(d, &r, &l->odometer_km)) return false;
      l->_odometer_km_case = TWIN__V1__LIFECYCLE_EVENT___ODOMETER_KM_ODOMETER_KM;
    } else {
      if (wt != WT_LEN || !rd_len(&r, &s)) return false;
      switch (f) {
      case 2: l->site = str(d, &s); break;
      case 3: l->actor = str(d, &s); break;
      case 4: l->detail = str(d, &s); break;
      case 5: l->work_order = str(d, &s); break;
      case 7:
        if (!strs_add(&parts, &s)) return false;
        break;
      case 8: l->recall_id = str(d, &s); break;
      case 9:
        if (n_attrs == TW_DECODE_MAX_REPEATED || !attributes_entry(d, s, &attrs[n_attrs++])) return false;
        break;
      case 10: l->owner_id = str(d, &s); break;
      case 11: l->model = str(d, &s); break;
      default: return false;
      }
    }
  }
  l->n_parts_replaced = parts.n;
  l->parts_replaced = strs_copy(d, &parts);
  if ((l->n_attributes = n_attrs)) {
    l->attributes = tw_arena_alloc(d->a, n_attrs * sizeof *l->attributes);
    memcpy(l->attributes, attrs, n_attrs * sizeof *l->attributes);
  }
  *out = l;
  return true;
}

static bool envelope(dec_t *d, const uint8_t *data, size_t len, Twin__V1__Envelope **out) {
  Twin__V1__Envelope *e = tw_arena_alloc(d->a, sizeof *e);
  *e = (Twin__V1__Envelope)TWIN__V1__ENVELOPE__INIT;
  rd_t r = {data, data + len};
  uint32_t seen = 0, f, wt;
  while (r.p < r.end) {
    rd_t s;
    uint64_t v;
    if (!rd_tag(&r, &f, &wt)) return false;
    switch (f) {
    case 1:
    case 2:
      SEEN(f);
      if (wt != WT_LEN || !rd_len(&r, &s)) return false;
      *(f == 1 ? &e->product_id : &e->source) = str_of(d, &s, f == 2);
      break;
    case 3:
    case 4:
      SEEN(f);
      if (wt != WT_VARINT || !rd_varint(&r, &v)) return false;
      if (f == 3)
        e->seq = v;
      else
        e->event_time_ms = (int64_t)v;
      break;
    case 10:
    case 11:
      if (seen & (3u << 10)) return false; /* one payload, once */
      seen |= 1u << f;
      if (wt != WT_LEN || !rd_len(&r, &s)) return false;
      if (f == 10 ? !telemetry(d, s, &e->telemetry) : !lifecycle(d, s, &e->lifecycle)) return false;
      e->payload_case = (Twin__V1__Envelope__PayloadCase)f;
      break;
    default: return false;
    }
  }
  if (!(seen & (1u << 2))) d->plain = false; /* no source: the empty name */
  *out = e;
  return true;
}

static bool decode_fast(tw_arena_t *a, const uint8_t *data, size_t len, Twin__V1__Envelope **out, bool *nul,
                        bool *plain) {
  dec_t d = {a, false, true};
  if (!envelope(&d, data, len, out)) return false;
  if (nul) *nul = d.nul;
  if (plain) *plain = d.plain;
  return true;
}

bool tw_envelope_decode_fast(tw_arena_t *a, const uint8_t *data, size_t len, Twin__V1__Envelope **out,
                             bool *nul) {
  return decode_fast(a, data, len, out, nul, NULL);
}

Twin__V1__Envelope *tw_envelope_unpack(ProtobufCAllocator *alloc, const uint8_t *data, size_t len, int *nul,
                                       bool *plain) {
  tw_arena_t *a = tw_arena_of(alloc);
  Twin__V1__Envelope *e;
  bool has_nul, all_plain;
  if (nul) *nul = -1;
  if (plain) *plain = false;
  if (a && decode_fast(a, data, len, &e, &has_nul, &all_plain)) {
    if (nul) *nul = has_nul;
    if (plain) *plain = all_plain;
    return e;
  }
  return twin__v1__envelope__unpack(alloc, len, data);
}
