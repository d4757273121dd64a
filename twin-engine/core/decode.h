/* decode.h - the Envelope decoder of the hot path.
 *
 * protobuf-c's generic unpack walks the message descriptors for every field
 * and was a third of a shard's instructions per event. tw_envelope_unpack()
 * reads the canonical encoding of an Envelope directly into the same
 * protobuf-c structs, allocated in the caller's arena, and hands every other
 * input to protobuf-c: a field it does not know, a wire type other than the
 * one the contract gives, a singular field repeated, both payloads,
 * unpacked repeated numbers, more than TW_DECODE_MAX_REPEATED entries in a
 * repeated field, or malformed bytes. So the result is, by construction,
 * what twin__v1__envelope__unpack() returns for the same bytes (the
 * differential test tests/unit/test_decode.c checks exactly that), only
 * faster for what producers send. */
#ifndef TWIN_DECODE_H
#define TWIN_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "twin/v1/events.pb-c.h"

#define TW_DECODE_MAX_REPEATED 64

/* Decodes as twin__v1__envelope__unpack(alloc, len, data) does. With an
 * arena's allocator (&arena.pb) canonical encodings take the fast path and
 * live in the arena; with any other (NULL: malloc) protobuf-c decodes.
 * *nul, if given: 1 if a string field held a NUL byte (the C string stops
 * there), 0 if none did, -1 if not known (protobuf-c decoded).
 * *plain, if given: true when the fast path decoded, every string field
 * is printable ASCII (0x20..0x7f) of at most TW_NAME_MAX bytes, every name
 * (source, metric and attribute keys) is non-empty, has no '.' and does not
 * start with '$', and every double is finite: the validator's UTF-8,
 * control-character, length, name and finite-number checks pass by
 * construction and may be skipped. */
Twin__V1__Envelope *tw_envelope_unpack(ProtobufCAllocator *alloc, const uint8_t *data, size_t len, int *nul,
                                       bool *plain);

/* The fast path alone: false where it defers to protobuf-c (for tests). */
bool tw_envelope_decode_fast(tw_arena_t *a, const uint8_t *data, size_t len, Twin__V1__Envelope **out,
                             bool *nul);

#endif
