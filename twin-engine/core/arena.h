/* arena.h - a bump allocator for decoding protobuf messages.
 *
 * protobuf-c calls its allocator once per message, string and repeated
 * field; with the default (malloc/free) that is most of the cost of
 * decoding an Envelope. A shard decodes a batch into an arena and resets it
 * when the batch is done: no per-event malloc or free. Blocks are kept
 * between batches, so a steady stream allocates nothing. One thread. */
#ifndef TWIN_ARENA_H
#define TWIN_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

typedef struct tw_arena_block tw_arena_block_t;

typedef struct {
  unsigned char *cur, *end; /* free space in head */
  tw_arena_block_t *head;   /* the block being filled */
  tw_arena_block_t *first;  /* blocks in order, reused after a reset */
  size_t block_size;        /* default size of a new block */
  ProtobufCAllocator pb;    /* for twin__v1__envelope__unpack(&a->pb, ...) */
} tw_arena_t;

void tw_arena_init(tw_arena_t *a, size_t block_size);
/* The arena behind an allocator made by tw_arena_init (a->pb), else NULL. */
tw_arena_t *tw_arena_of(ProtobufCAllocator *pb);
void *tw_arena_alloc_slow(tw_arena_t *a, size_t n);

/* 16-byte aligned; aborts on out-of-memory. */
static inline void *tw_arena_alloc(tw_arena_t *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  if ((size_t)(a->end - a->cur) >= n) {
    void *p = a->cur;
    a->cur += n;
    return p;
  }
  return tw_arena_alloc_slow(a, n);
}
/* Forgets every allocation; keeps the blocks for reuse. */
void tw_arena_reset(tw_arena_t *a);
void tw_arena_cleanup(tw_arena_t *a);

#endif
