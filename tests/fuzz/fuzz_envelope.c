/* fuzz_envelope.c - libFuzzer target for the engine's input path: Kafka
 * message bytes -> tw_envelope_decode() (size limit, protobuf decoding,
 * NUL check, validation) -> tw_apply_event() (reducer + built-in alert
 * rules) on a small twin map -> snapshot BSON round trip.
 *
 * Input: up to 32 messages, each "u16le length, bytes"; the last one takes
 * what is left. Each message's key is the product_id it decodes to (so the
 * validation and reducer are reached), or none when the length's high byte
 * is 0xf0 or more (the key checks). Every input starts from an empty map, so a
 * crash reproduces from its file alone. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "map.h"
#include "twin/rules.h"
#include "twin/twin.h"

#define MAX_MSGS 32
#define MAX_BYTES 65536 /* a small message.max.bytes, so the size check is reached */

static tw_rules_t *g_rules;
static tw_arena_t g_arena;

static void on_alert(void *ud, const Twin__V1__MaintenanceAlert *al) {
  /* What the engine does with an alert: pack it for Kafka. */
  size_t n = twin__v1__maintenance_alert__get_packed_size(al);
  uint8_t *buf = malloc(n ? n : 1);
  twin__v1__maintenance_alert__pack(al, buf);
  *(size_t *)ud += n;
  free(buf);
}

static void roundtrip(const tw_twin_t *t) {
  bson_t a = BSON_INITIALIZER, b = BSON_INITIALIZER;
  char err[256];
  tw_twin_to_bson(t, -1, &a);
  tw_twin_t *back = tw_twin_from_bson(&a, t->seq_window, err, sizeof err);
  if (!back) {
    fprintf(stderr, "snapshot of %s does not read back: %s\n", t->product_id, err);
    abort();
  }
  tw_twin_to_bson(back, -1, &b);
  if (a.len != b.len || memcmp(bson_get_data(&a), bson_get_data(&b), a.len) != 0) {
    fprintf(stderr, "snapshot of %s changes in a BSON round trip\n", t->product_id);
    abort();
  }
  tw_twin_destroy(back);
  bson_destroy(&a);
  bson_destroy(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!g_rules) {
    char err[256];
    g_rules = tw_rules_compile(true, NULL, 0, err, sizeof err);
    if (!g_rules) abort();
    tw_arena_init(&g_arena, 1 << 16);
  }
  tw_map_t twins;
  tw_map_init(&twins);
  size_t alert_bytes = 0;
  for (int m = 0; m < MAX_MSGS && size > 0; m++) {
    size_t len = size;
    bool with_key = true;
    if (size >= 2 && m < MAX_MSGS - 1) {
      len = (size_t)data[0] | (size_t)data[1] << 8;
      with_key = data[1] < 0xf0;
      data += 2;
      size -= 2;
      if (len > size) len = size;
    }
    const uint8_t *msg = data;
    data += len;
    size -= len;

    /* The producer's key: the product_id, as producers are told to send. */
    char key[512] = "";
    size_t key_len = 0;
    Twin__V1__Envelope *peek = twin__v1__envelope__unpack(NULL, len, msg);
    if (peek) {
      key_len = strlen(peek->product_id) < sizeof key ? strlen(peek->product_id) : 0;
      memcpy(key, peek->product_id, key_len);
      twin__v1__envelope__free_unpacked(peek, NULL);
    }
    char why[512];
    /* Into an arena, as a shard decodes: the fast decoder's path. */
    tw_arena_reset(&g_arena);
    Twin__V1__Envelope *env =
        tw_envelope_decode(&g_arena.pb, msg, len, with_key ? key : NULL, key_len, MAX_BYTES, why, sizeof why);
    if (!env) {
      if (!why[0]) abort(); /* every DLQ message carries a reason */
      continue;
    }
    const char *reason = NULL;
    tw_twin_t *t = tw_map_get_or_new(&twins, env->product_id, 64);
    tw_outcome_t o = tw_apply_event(g_rules, t, env, &reason, on_alert, &alert_bytes);
    if (o == TW_OUT_REJECTED && (!reason || !reason[0])) abort(); /* a rejection names its reason */
  }
  for (size_t i = 0; i < twins.cap; i++)
    if (twins.slots[i]) roundtrip(twins.slots[i]);
  tw_map_cleanup(&twins, true);
  return 0;
}
