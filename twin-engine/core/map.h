/* map.h - product_id -> twin hash map (open addressing, linear probing,
 * backward-shift deletion). Keys are the twins' own product_id strings, so
 * the map allocates nothing per entry. One owner thread; no locks. */
#ifndef TWIN_MAP_H
#define TWIN_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "twin/twin.h"

typedef struct {
  tw_twin_t **slots;
  uint32_t *hashes; /* low 32 bits of each slot's hash: the home slot while cap <= 2^32 */
  size_t cap, len;
} tw_map_t;

void tw_map_init(tw_map_t *m);
/* Frees the table; destroys the twins too when destroy_twins. */
void tw_map_cleanup(tw_map_t *m, bool destroy_twins);
tw_twin_t *tw_map_get(const tw_map_t *m, const char *product_id);
/* Inserts t (whose product_id is not in the map yet). */
void tw_map_put(tw_map_t *m, tw_twin_t *t);
/* out[i] = the twin of ids[i], or NULL, for i < n. The look-ups are
 * interleaved so that the cache misses of several (the slot, then the
 * twin's first line and its id) are in flight together instead of one
 * after another: on a map larger than the cache this is where a shard's
 * time goes (bench/README: reducer core). */
void tw_map_find_batch(const tw_map_t *m, const char *const *ids, tw_twin_t **out, size_t n);
/* The twin of product_id, created empty (seq window seq_window) if new. */
tw_twin_t *tw_map_get_or_new(tw_map_t *m, const char *product_id, uint32_t seq_window);
/* Removes and returns the twin, or NULL. */
tw_twin_t *tw_map_del(tw_map_t *m, const char *product_id);
uint64_t tw_map_hash(const char *s);

#endif
