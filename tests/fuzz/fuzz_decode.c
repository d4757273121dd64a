/* fuzz_decode.c - differential libFuzzer target for the hot-path Envelope
 * decoder (core/decode.c): for any bytes, the fast path either defers to
 * protobuf-c or gives exactly protobuf-c's message (the same packed bytes,
 * the same strings), and never accepts what protobuf-c rejects; its NUL
 * report matches a NUL in the wire bytes of a string it decoded. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "decode.h"

static tw_arena_t g_arena;
static bool g_init;

static void die(const char *what, size_t len) {
  fprintf(stderr, "fuzz_decode: %s (%zu input bytes)\n", what, len);
  abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!g_init) {
    tw_arena_init(&g_arena, 1 << 16);
    g_init = true;
  }
  Twin__V1__Envelope *ref = twin__v1__envelope__unpack(NULL, size, data), *fast = NULL;
  bool nul = false;
  if (tw_envelope_decode_fast(&g_arena, data, size, &fast, &nul)) {
    if (!ref) die("the fast path accepted bytes protobuf-c rejects", size);
    size_t n = twin__v1__envelope__get_packed_size(ref);
    if (twin__v1__envelope__get_packed_size(fast) != n) die("packed sizes differ", size);
    uint8_t *a = malloc(n + 1), *b = malloc(n + 1);
    twin__v1__envelope__pack(ref, a);
    twin__v1__envelope__pack(fast, b);
    if (memcmp(a, b, n) != 0) die("the messages differ", size);
    free(a);
    free(b);
    if (strcmp(fast->product_id, ref->product_id) != 0 || fast->payload_case != ref->payload_case)
      die("product_id or payload differs", size);
    /* No NUL reported: every string decoded is whole, so the envelope's
     * strings have the lengths the wire gives (product_id as a spot check:
     * its bytes follow tag 0x0a and a length). */
    if (!nul && size >= 2 && data[0] == 0x0a && data[1] < 0x80 && (size_t)data[1] + 2 <= size &&
        strlen(fast->product_id) != data[1])
      die("a NUL in product_id was not reported", size);
  }
  /* The combined decoder answers as protobuf-c does. */
  Twin__V1__Envelope *both = tw_envelope_unpack(&g_arena.pb, data, size, NULL, NULL);
  if ((both != NULL) != (ref != NULL)) die("tw_envelope_unpack and protobuf-c disagree", size);
  if (ref) twin__v1__envelope__free_unpacked(ref, NULL);
  tw_arena_reset(&g_arena);
  return 0;
}
