/* arena.c - see arena.h. */
#include "arena.h"

#include <stdint.h>
#include <stdlib.h>

#include "util.h"

struct tw_arena_block {
  tw_arena_block_t *next;
  size_t size;
  _Alignas(16) unsigned char data[];
};

static void *pb_alloc(void *ud, size_t n) { return tw_arena_alloc(ud, n); }
static void pb_free(void *ud, void *p) {
  (void)ud;
  (void)p; /* freed all at once by tw_arena_reset */
}

tw_arena_t *tw_arena_of(ProtobufCAllocator *pb) {
  return pb && pb->alloc == pb_alloc ? pb->allocator_data : NULL;
}

void tw_arena_init(tw_arena_t *a, size_t block_size) {
  a->cur = a->end = NULL;
  a->head = a->first = NULL;
  a->block_size = block_size ? block_size : 1 << 20;
  a->pb = (ProtobufCAllocator){pb_alloc, pb_free, a};
}

static tw_arena_block_t *block_new(size_t size) {
  tw_arena_block_t *b = tw_xmalloc(sizeof *b + size);
  b->next = NULL;
  b->size = size;
  return b;
}

static void use(tw_arena_t *a, tw_arena_block_t *b) {
  a->head = b;
  a->cur = b->data;
  a->end = b->data + b->size;
}

/* n (rounded) does not fit in head: the next kept block if it is big
 * enough, else a new block after head. */
void *tw_arena_alloc_slow(tw_arena_t *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  tw_arena_block_t *b = a->head;
  if (!b) {
    a->first = b = block_new(n > a->block_size ? n : a->block_size);
  } else if (b->next && b->next->size >= n) {
    b = b->next;
  } else {
    tw_arena_block_t *nb = block_new(n > a->block_size ? n : a->block_size);
    nb->next = b->next;
    b->next = nb;
    b = nb;
  }
  use(a, b);
  void *p = a->cur;
  a->cur += n;
  return p;
}

void tw_arena_reset(tw_arena_t *a) {
  if (a->first) use(a, a->first);
}

void tw_arena_cleanup(tw_arena_t *a) {
  for (tw_arena_block_t *b = a->first, *n; b; b = n) {
    n = b->next;
    free(b);
  }
  a->head = a->first = NULL;
  a->cur = a->end = NULL;
}
