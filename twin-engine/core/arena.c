/* arena.c - see arena.h. */
#include "arena.h"

#include <stdint.h>
#include <stdlib.h>

#include "util.h"

struct tw_arena_block {
  tw_arena_block_t *next;
  size_t size, used;
  _Alignas(16) unsigned char data[];
};

static void *pb_alloc(void *ud, size_t n) { return tw_arena_alloc(ud, n); }
static void pb_free(void *ud, void *p) {
  (void)ud;
  (void)p; /* freed all at once by tw_arena_reset */
}

void tw_arena_init(tw_arena_t *a, size_t block_size) {
  a->head = a->first = NULL;
  a->block_size = block_size ? block_size : 1 << 20;
  a->pb = (ProtobufCAllocator){pb_alloc, pb_free, a};
}

static tw_arena_block_t *block_new(size_t size) {
  tw_arena_block_t *b = tw_xmalloc(sizeof *b + size);
  b->next = NULL;
  b->size = size;
  b->used = 0;
  return b;
}

void *tw_arena_alloc(tw_arena_t *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  tw_arena_block_t *b = a->head;
  while (b && b->used + n > b->size) {
    /* The next kept block, if it is big enough; else a new one after it. */
    if (b->next && b->next->size >= n) {
      b = b->next;
      b->used = 0;
      a->head = b;
      continue;
    }
    size_t size = n > a->block_size ? n : a->block_size;
    tw_arena_block_t *nb = block_new(size);
    nb->next = b->next;
    b->next = nb;
    a->head = b = nb;
  }
  if (!b) {
    b = a->first = a->head = block_new(n > a->block_size ? n : a->block_size);
  }
  void *p = b->data + b->used;
  b->used += n;
  return p;
}

void tw_arena_reset(tw_arena_t *a) {
  a->head = a->first;
  if (a->first) a->first->used = 0;
}

void tw_arena_cleanup(tw_arena_t *a) {
  for (tw_arena_block_t *b = a->first, *n; b; b = n) {
    n = b->next;
    free(b);
  }
  a->head = a->first = NULL;
}
