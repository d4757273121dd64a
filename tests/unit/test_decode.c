/* test_decode.c - the hot-path Envelope decoder (core/decode.c) against
 * protobuf-c, the reference:
 *   - every canonical encoding (what protobuf-c and other protobuf libraries
 *     write) takes the fast path, and decodes to the same message;
 *   - on damaged and unusual bytes (truncations, bit flips, repeated singular
 *     fields, unknown fields, other wire types, concatenated messages) the
 *     fast path either gives exactly protobuf-c's message or defers to it,
 *     and tw_envelope_unpack() then answers as protobuf-c does;
 *   - the fast path reports a NUL byte inside a string field.
 * "The same message" is checked by packing both with protobuf-c and
 * comparing the bytes, and by comparing string bytes directly. Seeded, so a
 * failure replays; TWIN_TEST_SEED overrides the seed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "arena.h"
#include "decode.h"
#include "twin/v1/events.pb-c.h"

static uint64_t rng_state;
static uint64_t rnd(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
static size_t rndn(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

/* A random printable or high-byte string (never NUL: protobuf-c packs with
 * strlen); sometimes empty, sometimes long. */
static char *rstr(void) {
  size_t n = rndn(8) == 0 ? 0 : rndn(6) == 0 ? 200 + rndn(400) : 1 + rndn(24);
  char *s = malloc(n + 1);
  for (size_t i = 0; i < n; i++) s[i] = (char)(rndn(4) == 0 ? 0x80 + rndn(0x7f) : 0x20 + rndn(0x5f));
  s[n] = '\0';
  return s;
}

static double rdbl(void) {
  switch (rndn(5)) {
  case 0: return 0.0;
  case 1: return -0.0;
  case 2: return (double)(int64_t)rnd() / 1e6;
  default: {
    double d;
    uint64_t bits = rnd();
    memcpy(&d, &bits, sizeof d);
    return d == d ? d : 1.5; /* keep NaN out: its payload bits are not compared by value */
  }
  }
}

static size_t rcount(void) { return rndn(3) == 0 ? 0 : rndn(12) == 0 ? 40 + rndn(40) : 1 + rndn(6); }

static Twin__V1__Telemetry *rtelemetry(void) {
  Twin__V1__Telemetry *t = calloc(1, sizeof *t);
  *t = (Twin__V1__Telemetry)TWIN__V1__TELEMETRY__INIT;
#define MAYBE(name, num)     \
  if (rndn(2)) {             \
    t->_##name##_case = num; \
    t->name = rdbl();        \
  }
  MAYBE(odometer_km, 1) MAYBE(speed_kph, 2) MAYBE(battery_soc_pct, 3) MAYBE(battery_soh_pct, 4);
  MAYBE(battery_temp_c, 5) MAYBE(latitude, 6) MAYBE(longitude, 7) MAYBE(fuel_level_pct, 14);
  MAYBE(aux_battery_v, 15) MAYBE(ambient_temp_c, 16) MAYBE(range_km, 17);
#undef MAYBE
  t->n_tire_pressure_kpa = rcount();
  t->tire_pressure_kpa = calloc(t->n_tire_pressure_kpa + 1, sizeof(double));
  for (size_t i = 0; i < t->n_tire_pressure_kpa; i++) t->tire_pressure_kpa[i] = rdbl();
  t->n_brake_pad_mm = rcount();
  t->brake_pad_mm = calloc(t->n_brake_pad_mm + 1, sizeof(double));
  for (size_t i = 0; i < t->n_brake_pad_mm; i++) t->brake_pad_mm[i] = rdbl();
  t->n_dtc_codes = rcount();
  t->dtc_codes = calloc(t->n_dtc_codes + 1, sizeof(char *));
  for (size_t i = 0; i < t->n_dtc_codes; i++) t->dtc_codes[i] = rstr();
  if (rndn(2)) {
    t->_firmware_version_case = TWIN__V1__TELEMETRY___FIRMWARE_VERSION_FIRMWARE_VERSION;
    t->firmware_version = rstr();
  }
  t->n_metrics = rcount();
  t->metrics = calloc(t->n_metrics + 1, sizeof *t->metrics);
  for (size_t i = 0; i < t->n_metrics; i++) {
    t->metrics[i] = malloc(sizeof *t->metrics[i]);
    *t->metrics[i] = (Twin__V1__Telemetry__MetricsEntry)TWIN__V1__TELEMETRY__METRICS_ENTRY__INIT;
    t->metrics[i]->key = rstr();
    t->metrics[i]->value = rdbl();
  }
  t->dtc_codes_reported = rndn(2);
  return t;
}

static Twin__V1__LifecycleEvent *rlifecycle(void) {
  Twin__V1__LifecycleEvent *l = calloc(1, sizeof *l);
  *l = (Twin__V1__LifecycleEvent)TWIN__V1__LIFECYCLE_EVENT__INIT;
  l->kind = rndn(8) == 0 ? (Twin__V1__LifecycleKind)(int32_t)rnd() : (Twin__V1__LifecycleKind)rndn(16);
  l->site = rstr();
  l->actor = rstr();
  l->detail = rstr();
  l->work_order = rstr();
  l->recall_id = rstr();
  l->owner_id = rstr();
  l->model = rstr();
  if (rndn(2)) {
    l->_odometer_km_case = TWIN__V1__LIFECYCLE_EVENT___ODOMETER_KM_ODOMETER_KM;
    l->odometer_km = rdbl();
  }
  l->n_parts_replaced = rcount();
  l->parts_replaced = calloc(l->n_parts_replaced + 1, sizeof(char *));
  for (size_t i = 0; i < l->n_parts_replaced; i++) l->parts_replaced[i] = rstr();
  l->n_attributes = rcount();
  l->attributes = calloc(l->n_attributes + 1, sizeof *l->attributes);
  for (size_t i = 0; i < l->n_attributes; i++) {
    l->attributes[i] = malloc(sizeof *l->attributes[i]);
    *l->attributes[i] =
        (Twin__V1__LifecycleEvent__AttributesEntry)TWIN__V1__LIFECYCLE_EVENT__ATTRIBUTES_ENTRY__INIT;
    l->attributes[i]->key = rstr();
    l->attributes[i]->value = rstr();
  }
  return l;
}

/* Frees a random Telemetry or LifecycleEvent (built piecewise with malloc). */
static void free_random(ProtobufCMessage *m) {
  if (m->descriptor == &twin__v1__telemetry__descriptor) {
    Twin__V1__Telemetry *t = (Twin__V1__Telemetry *)m;
    for (size_t i = 0; i < t->n_dtc_codes; i++) free(t->dtc_codes[i]);
    for (size_t i = 0; i < t->n_metrics; i++) {
      free(t->metrics[i]->key);
      free(t->metrics[i]);
    }
    if (t->_firmware_version_case) free(t->firmware_version);
    free(t->dtc_codes);
    free(t->metrics);
    free(t->tire_pressure_kpa);
    free(t->brake_pad_mm);
    free(t);
  } else {
    Twin__V1__LifecycleEvent *l = (Twin__V1__LifecycleEvent *)m;
    char *strs[] = {l->site, l->actor, l->detail, l->work_order, l->recall_id, l->owner_id, l->model};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) free(strs[i]);
    for (size_t i = 0; i < l->n_parts_replaced; i++) free(l->parts_replaced[i]);
    for (size_t i = 0; i < l->n_attributes; i++) {
      free(l->attributes[i]->key);
      free(l->attributes[i]->value);
      free(l->attributes[i]);
    }
    free(l->parts_replaced);
    free(l->attributes);
    free(l);
  }
}

/* A random Envelope, packed. *max_repeated gets its longest repeated field. */
static uint8_t *renvelope(size_t *len, size_t *max_repeated) {
  Twin__V1__Envelope e = TWIN__V1__ENVELOPE__INIT;
  e.product_id = rstr();
  e.source = rstr();
  e.seq = rndn(4) == 0 ? rnd() : rndn(1000);
  e.event_time_ms = rndn(4) == 0 ? (int64_t)rnd() : 1700000000000 + (int64_t)rndn(1u << 30);
  *max_repeated = 0;
  switch (rndn(3)) {
  case 0:
    e.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY;
    e.telemetry = rtelemetry();
    *max_repeated =
        e.telemetry->n_dtc_codes > e.telemetry->n_metrics ? e.telemetry->n_dtc_codes : e.telemetry->n_metrics;
    break;
  case 1:
    e.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_LIFECYCLE;
    e.lifecycle = rlifecycle();
    *max_repeated = e.lifecycle->n_parts_replaced > e.lifecycle->n_attributes ? e.lifecycle->n_parts_replaced
                                                                              : e.lifecycle->n_attributes;
    break;
  default: break;
  }
  *len = twin__v1__envelope__get_packed_size(&e);
  uint8_t *buf = malloc(*len + 1);
  twin__v1__envelope__pack(&e, buf);
  free(e.product_id);
  free(e.source);
  if (e.payload_case)
    free_random(e.payload_case == TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY ? &e.telemetry->base
                                                                        : &e.lifecycle->base);
  return buf;
}

/* An Envelope whose one payload field holds two packed payloads back to
 * back: inside it every singular field is seen twice and repeated fields
 * come in two runs (protobuf merges them). */
static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  for (; v >= 0x80; v >>= 7) p[n++] = (uint8_t)(v | 0x80);
  p[n++] = (uint8_t)v;
  return n;
}

static uint8_t *rmerged_payload(size_t *len) {
  bool tel = rndn(2);
  uint8_t *parts[2];
  size_t lens[2];
  for (int k = 0; k < 2; k++) {
    ProtobufCMessage *m = tel ? &rtelemetry()->base : &rlifecycle()->base;
    lens[k] = protobuf_c_message_get_packed_size(m);
    parts[k] = malloc(lens[k] + 1);
    protobuf_c_message_pack(m, parts[k]);
    free_random(m);
  }
  uint8_t *out = malloc(lens[0] + lens[1] + 16);
  size_t n = 0;
  out[n++] = tel ? 0x52 : 0x5a;
  n += put_varint(out + n, lens[0] + lens[1]);
  memcpy(out + n, parts[0], lens[0]);
  memcpy(out + n + lens[0], parts[1], lens[1]);
  *len = n + lens[0] + lens[1];
  free(parts[0]);
  free(parts[1]);
  return out;
}

/* Strings compared byte for byte (pack() stops at a NUL). */
static void assert_str_same(const char *a, const char *b) { assert_string_equal(a, b); }

static void assert_same(const Twin__V1__Envelope *fast, const Twin__V1__Envelope *ref) {
  size_t n = twin__v1__envelope__get_packed_size(ref);
  assert_int_equal(twin__v1__envelope__get_packed_size(fast), n);
  uint8_t *x = malloc(n + 1), *y = malloc(n + 1);
  twin__v1__envelope__pack(fast, x);
  twin__v1__envelope__pack(ref, y);
  assert_memory_equal(x, y, n);
  free(x);
  free(y);
  assert_str_same(fast->product_id, ref->product_id);
  assert_int_equal(fast->payload_case, ref->payload_case);
  assert_int_equal(fast->base.n_unknown_fields, ref->base.n_unknown_fields);
}

typedef struct {
  size_t inputs, fast, deferred, rejected;
} stats_t;

/* One input: the fast path matches protobuf-c or defers; the combined
 * decoder answers as protobuf-c does. */
static void check_bytes(const uint8_t *data, size_t len, tw_arena_t *a, stats_t *st) {
  Twin__V1__Envelope *ref = twin__v1__envelope__unpack(NULL, len, data);
  Twin__V1__Envelope *fast = NULL;
  st->inputs++;
  bool nul;
  if (tw_envelope_decode_fast(a, data, len, &fast, &nul)) {
    st->fast++;
    if (!ref) fail_msg("fast path accepted %zu bytes that protobuf-c rejects", len);
    assert_same(fast, ref);
  } else {
    st->deferred++;
  }
  Twin__V1__Envelope *both = tw_envelope_unpack(&a->pb, data, len, NULL, NULL);
  assert_int_equal(both != NULL, ref != NULL);
  if (ref) {
    assert_same(both, ref);
    twin__v1__envelope__free_unpacked(ref, NULL);
  } else {
    st->rejected++;
  }
  tw_arena_reset(a);
}

static uint64_t seed(void) {
  const char *s = getenv("TWIN_TEST_SEED");
  return s && *s ? strtoull(s, NULL, 10) : 20261125;
}

/* Canonical encodings: all take the fast path (unless a repeated field is
 * longer than the fast path's limit) and decode to protobuf-c's message. */
static void test_canonical(void **state) {
  (void)state;
  rng_state = seed();
  tw_arena_t a;
  tw_arena_init(&a, 1 << 16);
  stats_t st = {0};
  for (int i = 0; i < 20000; i++) {
    size_t len, maxr;
    uint8_t *buf = renvelope(&len, &maxr);
    Twin__V1__Envelope *fast = NULL;
    bool ok = tw_envelope_decode_fast(&a, buf, len, &fast, NULL);
    tw_arena_reset(&a);
    if (maxr <= TW_DECODE_MAX_REPEATED && !ok)
      fail_msg("canonical envelope %d (%zu bytes) left the fast path", i, len);
    if (maxr > TW_DECODE_MAX_REPEATED && ok)
      fail_msg("envelope %d has %zu entries but took the fast path", i, maxr);
    check_bytes(buf, len, &a, &st);
    free(buf);
  }
  print_message("canonical: %zu inputs, %zu fast, %zu deferred\n", st.inputs, st.fast, st.deferred);
  assert_int_equal(st.rejected, 0);
  tw_arena_cleanup(&a);
}

/* Damaged and unusual bytes around canonical messages. */
static void test_damaged(void **state) {
  (void)state;
  rng_state = seed() ^ 0x5eed;
  tw_arena_t a;
  tw_arena_init(&a, 1 << 16);
  stats_t st = {0};
  uint8_t *tmp = malloc(1 << 16);
  for (int i = 0; i < 3000; i++) {
    size_t len, len2, maxr;
    uint8_t *buf = renvelope(&len, &maxr);
    uint8_t *buf2 = renvelope(&len2, &maxr);
    /* every truncation of short messages, some of long ones */
    for (size_t cut = 0; cut < len; cut += len < 64 ? 1 : 1 + rndn(16)) check_bytes(buf, cut, &a, &st);
    /* bit flips */
    for (int k = 0; k < 8 && len; k++) {
      memcpy(tmp, buf, len);
      tmp[rndn(len)] ^= (uint8_t)(1u << rndn(8));
      check_bytes(tmp, len, &a, &st);
    }
    /* concatenation: protobuf merges the two */
    if (len + len2 < (1 << 16)) {
      memcpy(tmp, buf, len);
      memcpy(tmp + len, buf2, len2);
      check_bytes(tmp, len + len2, &a, &st);
    }
    /* one payload holding two: merged inside the payload */
    size_t ml;
    uint8_t *merged = rmerged_payload(&ml);
    check_bytes(merged, ml, &a, &st);
    free(merged);
    /* a prefix repeated: singular fields seen twice */
    if (len > 2 && 2 * len < (1 << 16)) {
      size_t pre = 1 + rndn(len - 1);
      memcpy(tmp, buf, len);
      memcpy(tmp + len, buf, pre);
      check_bytes(tmp, len + pre, &a, &st);
    }
    /* an unknown field, or a known field with another wire type, in front */
    if (len + 16 < (1 << 16)) {
      static const uint8_t heads[][3] = {
          {0xa0, 0x01, 0x05}, /* field 20, varint 5 */
          {0x08, 0x05, 0x00}, /* product_id as a varint */
          {0x19, 0x00, 0x00}, /* seq as a fixed64 (short) */
          {0x52, 0x00, 0x00}, /* empty telemetry */
          {0x5a, 0x00, 0x00}, /* empty lifecycle */
          {0x0b, 0x00, 0x00}, /* a group start */
      };
      size_t h = rndn(sizeof heads / sizeof heads[0]);
      memcpy(tmp, heads[h], 3);
      memcpy(tmp + 3, buf, len);
      check_bytes(tmp, len + 3, &a, &st);
    }
    free(buf);
    free(buf2);
  }
  /* random bytes */
  for (int i = 0; i < 20000; i++) {
    size_t n = rndn(64);
    for (size_t k = 0; k < n; k++) tmp[k] = (uint8_t)rnd();
    check_bytes(tmp, n, &a, &st);
  }
  print_message("damaged: %zu inputs, %zu fast, %zu deferred, %zu rejected\n", st.inputs, st.fast,
                st.deferred, st.rejected);
  assert_true(st.fast > 0 && st.deferred > 0 && st.rejected > 0);
  free(tmp);
  tw_arena_cleanup(&a);
}

/* Hand-written cases whose answer is known. */
static void test_known(void **state) {
  (void)state;
  tw_arena_t a;
  tw_arena_init(&a, 4096);
  Twin__V1__Envelope *e = NULL;
  /* product_id "P1", seq 300, telemetry { speed_kph 12.5, packed tires [1, 2] } */
  const uint8_t ok[] = {0x0a, 0x02, 'P',  '1',  0x18, 0xac, 0x02, 0x52, 0x1b, 0x11, 0x00, 0x00,
                        0x00, 0x00, 0x00, 0x00, 0x29, 0x40, 0x42, 0x10, 0x00, 0x00, 0x00, 0x00,
                        0x00, 0x00, 0xf0, 0x3f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40};
  bool nul = true;
  assert_true(tw_envelope_decode_fast(&a, ok, sizeof ok, &e, &nul));
  assert_false(nul);
  assert_string_equal(e->product_id, "P1");
  assert_int_equal(e->seq, 300);
  assert_int_equal(e->payload_case, TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY);
  assert_int_equal(e->telemetry->_speed_kph_case, TWIN__V1__TELEMETRY___SPEED_KPH_SPEED_KPH);
  assert_true(e->telemetry->speed_kph == 12.5);
  assert_int_equal(e->telemetry->n_tire_pressure_kpa, 2);
  assert_true(e->telemetry->tire_pressure_kpa[1] == 2.0);
  assert_int_equal(e->telemetry->_odometer_km_case, 0);
  /* an 11-byte varint: malformed for both */
  const uint8_t long_varint[] = {0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
  assert_false(tw_envelope_decode_fast(&a, long_varint, sizeof long_varint, &e, NULL));
  assert_null(tw_envelope_unpack(&a.pb, long_varint, sizeof long_varint, NULL, NULL));
  /* a length prefix or a tag as an overlong varint (6 bytes for a value
   * that fits 32 bits): protobuf-c rejects both, so the direct path must not
   * accept them (found by fuzz_decode) */
  const uint8_t long_len[] = {0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
  assert_false(tw_envelope_decode_fast(&a, long_len, sizeof long_len, &e, NULL));
  assert_null(tw_envelope_unpack(&a.pb, long_len, sizeof long_len, NULL, NULL));
  const uint8_t long_tag[] = {0x98, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01};
  assert_false(tw_envelope_decode_fast(&a, long_tag, sizeof long_tag, &e, NULL));
  assert_null(tw_envelope_unpack(&a.pb, long_tag, sizeof long_tag, NULL, NULL));
  /* a two-byte key (field 16, ambient_temp_c: 0x81 0x01) on the fast path;
   * a key written overlong in two bytes (field 1 as 0x8a 0x00) is valid,
   * and the fast path leaves it to protobuf-c */
  const uint8_t key16[] = {0x52, 0x0a, 0x81, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x24, 0x40};
  assert_true(tw_envelope_decode_fast(&a, key16, sizeof key16, &e, NULL));
  assert_int_equal(e->telemetry->_ambient_temp_c_case, TWIN__V1__TELEMETRY___AMBIENT_TEMP_C_AMBIENT_TEMP_C);
  assert_true(e->telemetry->ambient_temp_c == 10.0);
  const uint8_t overlong_key[] = {0x8a, 0x00, 0x02, 'P', '1'};
  assert_false(tw_envelope_decode_fast(&a, overlong_key, sizeof overlong_key, &e, NULL));
  e = tw_envelope_unpack(&a.pb, overlong_key, sizeof overlong_key, NULL, NULL);
  assert_non_null(e);
  assert_string_equal(e->product_id, "P1");
  twin__v1__envelope__free_unpacked(e, &a.pb);
  /* a length past the end */
  const uint8_t past[] = {0x0a, 0x05, 'P'};
  assert_null(tw_envelope_unpack(&a.pb, past, sizeof past, NULL, NULL));
  /* the empty message is a valid (empty) Envelope */
  /* a NUL inside a string: reported (the C string is cut short), in the
   * envelope and inside a payload */
  const uint8_t nul_id[] = {0x0a, 0x03, 'P', 0x00, 'X', 0x18, 0x01};
  assert_true(tw_envelope_decode_fast(&a, nul_id, sizeof nul_id, &e, &nul));
  assert_true(nul);
  assert_string_equal(e->product_id, "P");
  const uint8_t nul_site[] = {0x5a, 0x04, 0x12, 0x02, 'A', 0x00};
  assert_true(tw_envelope_decode_fast(&a, nul_site, sizeof nul_site, &e, &nul));
  assert_true(nul);
  int any = 0;
  assert_non_null(tw_envelope_unpack(&a.pb, nul_site, sizeof nul_site, &any, NULL));
  assert_int_equal(any, 1);
  Twin__V1__Envelope *m =
      tw_envelope_unpack(NULL, ok, sizeof ok, &any, NULL); /* malloc: protobuf-c decodes */
  assert_non_null(m);
  assert_int_equal(any, -1);
  twin__v1__envelope__free_unpacked(m, NULL);
  assert_true(tw_envelope_decode_fast(&a, ok, 0, &e, NULL));
  assert_int_equal(e->payload_case, 0);
  assert_string_equal(e->product_id, "");
  tw_arena_cleanup(&a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_known),
      cmocka_unit_test(test_canonical),
      cmocka_unit_test(test_damaged),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
