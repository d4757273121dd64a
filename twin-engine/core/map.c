/* map.c - see map.h. */
#include "map.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

uint64_t tw_map_hash(const char *s) {
  /* Eight bytes a step, the last word overlapping the one before (ids are
   * typically 17-byte VINs: three steps), each folded in with a multiply;
   * then splitmix64's finaliser. One byte a step (FNV-1a) cost 124
   * instructions a look-up. */
  size_t n = strlen(s);
  const uint64_t k = UINT64_C(0x9e3779b97f4a7c15);
  uint64_t h = k ^ n, w;
  if (n >= 8) {
    for (size_t i = 0; i + 8 < n; i += 8) {
      memcpy(&w, s + i, 8);
      h = (h ^ w) * k;
      h ^= h >> 32;
    }
    memcpy(&w, s + n - 8, 8);
  } else {
    w = 0;
    for (size_t i = 0; i < n; i++) w |= (uint64_t)(unsigned char)s[i] << (8 * i);
  }
  h = (h ^ w) * k;
  h ^= h >> 30;
  h *= UINT64_C(0xbf58476d1ce4e5b9);
  h ^= h >> 27;
  h *= UINT64_C(0x94d049bb133111eb);
  h ^= h >> 31;
  return h;
}

void tw_map_init(tw_map_t *m) {
  m->cap = 1024;
  m->len = 0;
  m->slots = tw_xcalloc(m->cap, sizeof *m->slots);
  m->hashes = tw_xcalloc(m->cap, sizeof *m->hashes);
}

void tw_map_cleanup(tw_map_t *m, bool destroy_twins) {
  if (destroy_twins)
    for (size_t i = 0; i < m->cap; i++) tw_twin_destroy(m->slots[i]);
  free(m->slots);
  free(m->hashes);
  memset(m, 0, sizeof *m);
}

static size_t find(const tw_map_t *m, const char *id, uint64_t h) {
  size_t mask = m->cap - 1, i = h & mask;
  while (m->slots[i] && !(m->hashes[i] == (uint32_t)h && strcmp(m->slots[i]->product_id, id) == 0))
    i = (i + 1) & mask;
  return i;
}

tw_twin_t *tw_map_get(const tw_map_t *m, const char *id) { return m->slots[find(m, id, tw_map_hash(id))]; }

void tw_map_find_batch(const tw_map_t *m, const char *const *ids, tw_twin_t **out, size_t n) {
  enum { D = 8 }; /* look-ups in flight per stage; h holds the hashes of the last 2 * D */
  uint64_t h[2 * D];
  size_t mask = m->cap - 1;
  /* Step i finishes look-up i - 2D, touches the twin of i - D (its first
   * line and, as tw_twin_new lays it out, the id right after the struct)
   * and hashes i, touching its slot: each stage reads what the one before
   * brought into the cache D steps earlier. */
  for (size_t i = 0; i < n + 2 * D; i++) {
    if (i >= 2 * D) {
      size_t k = i - 2 * D;
      out[k] = m->slots[find(m, ids[k], h[k % (2 * D)])];
    }
    if (i >= D && i - D < n) {
      const tw_twin_t *t = m->slots[h[(i - D) % (2 * D)] & mask];
      if (t) {
        __builtin_prefetch(t);
        __builtin_prefetch(t + 1);
      }
    }
    if (i < n) {
      uint64_t x = tw_map_hash(ids[i]);
      h[i % (2 * D)] = x;
      __builtin_prefetch(&m->slots[x & mask]);
      __builtin_prefetch(&m->hashes[x & mask]);
    }
  }
}

static void grow(tw_map_t *m);

tw_twin_t *tw_map_get_or_new(tw_map_t *m, const char *id, uint32_t seq_window) {
  tw_twin_t *t = tw_map_get(m, id);
  if (!t) {
    t = tw_twin_new(id, seq_window);
    tw_map_put(m, t);
  }
  return t;
}

static void grow(tw_map_t *m) {
  tw_map_t n = {tw_xcalloc(m->cap * 2, sizeof(tw_twin_t *)), tw_xcalloc(m->cap * 2, sizeof(uint32_t)),
                m->cap * 2, 0};
  for (size_t i = 0; i < m->cap; i++) {
    if (!m->slots[i]) continue;
    size_t j = m->hashes[i] & (n.cap - 1);
    while (n.slots[j]) j = (j + 1) & (n.cap - 1);
    n.slots[j] = m->slots[i];
    n.hashes[j] = m->hashes[i];
    n.len++;
  }
  free(m->slots);
  free(m->hashes);
  *m = n;
}

void tw_map_put(tw_map_t *m, tw_twin_t *t) {
  if ((m->len + 1) * 4 > m->cap * 3) grow(m);
  uint64_t h = tw_map_hash(t->product_id);
  size_t i = find(m, t->product_id, h);
  if (!m->slots[i]) m->len++;
  m->slots[i] = t;
  m->hashes[i] = (uint32_t)h;
}

tw_twin_t *tw_map_del(tw_map_t *m, const char *id) {
  size_t mask = m->cap - 1, i = find(m, id, tw_map_hash(id));
  tw_twin_t *t = m->slots[i];
  if (!t) return NULL;
  m->slots[i] = NULL;
  m->len--;
  /* Backward-shift the following run so lookups never hit a false hole. */
  for (size_t j = (i + 1) & mask; m->slots[j]; j = (j + 1) & mask) {
    size_t home = m->hashes[j] & mask;
    bool movable = (i <= j) ? (home <= i || home > j) : (home <= i && home > j);
    if (movable) {
      m->slots[i] = m->slots[j];
      m->hashes[i] = m->hashes[j];
      m->slots[j] = NULL;
      i = j;
    }
  }
  return t;
}
