/* decode.h - the Envelope decoder of the hot path.
 *
 * protobuf-c's generic unpack walks the message descriptors for every field
 * and was a third of a shard's instructions per event. tw_envelope_decode()
 * reads the canonical encoding of an Envelope directly into the same
 * protobuf-c structs, allocated in the caller's arena, and hands every other
 * input to protobuf-c: a field it does not know, a wire type other than the
 * one the contract gives, a singular field repeated, both payloads,
 * unpacked repeated numbers, more than TW_DECODE_MAX_REPEATED entries in a
 * repeated field, or malformed bytes. So the result is, by construction,
 * what twin__v1__envelope__unpack() returns for the same bytes (the
 * differential fuzz target tests/fuzz/fuzz_decode.c checks exactly that),
 * only faster for what producers send. */
#ifndef TWIN_DECODE_H
#define TWIN_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "twin/v1/events.pb-c.h"

#define TW_DECODE_MAX_REPEATED 64

/* Decodes data into a; NULL if the bytes are not an Envelope (as protobuf-c
 * would say). Everything returned lives in a until tw_arena_reset(). */
Twin__V1__Envelope *tw_envelope_decode(tw_arena_t *a, const uint8_t *data, size_t len);

/* The fast path alone: false where it defers to protobuf-c (for tests). */
bool tw_envelope_decode_fast(tw_arena_t *a, const uint8_t *data, size_t len, Twin__V1__Envelope **out);

#endif
