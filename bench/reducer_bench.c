/* reducer_bench.c - the reducer core on one thread, no Kafka, no MongoDB:
 * decode + validate + reduce + alert rules over a twin-sim record held in
 * memory, exactly the per-event work of a shard.
 *
 *   twin-bench-reducer --record FILE [--reps N] [--alloc arena|malloc] [--no-rules] [--memory]
 *
 * Each repetition starts from no twins (the first events of each product
 * create its twin, as after a cold start) and applies every recorded
 * message once, in record order. A warm-up pass runs first and is not
 * counted. Prints one line per repetition and a JSON summary (min, median,
 * max) on the last line. */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "decode.h"
#include "map.h"
#include "twin/record.h"
#include "twin/rules.h"
#include "twin/twin.h"
#include "util.h"

typedef struct {
  const uint8_t *key, *value;
  uint32_t key_len, value_len;
} msg_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static long peak_rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = 0;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmHWM:", 6) == 0) kib = strtol(line + 6, NULL, 10);
  if (f) fclose(f);
  return kib;
}

typedef struct {
  uint64_t applied, other, invalid, alerts;
} counts_t;

static void count_alert(void *ud, const Twin__V1__MaintenanceAlert *a) {
  (void)a;
  ((counts_t *)ud)->alerts++;
}

/* Every message once: the measured work (callgrind: --toggle-collect=apply_all).
 * In batches, as a shard applies what one consume call returned: decode
 * every message of the batch, look their twins up together
 * (tw_map_find_batch), then apply them in order with the twins of the next
 * few events prefetched (tw_twin_prefetch_ahead). */
enum { BATCH = 1024 };
__attribute__((noinline)) static void apply_all(const msg_t *m, size_t n, bool arena_mode,
                                                const tw_rules_t *rules, tw_map_t *twins, tw_arena_t *arena,
                                                counts_t *c) {
  char err[256];
  static Twin__V1__Envelope *env[BATCH];
  static const char *ids[BATCH];
  static tw_twin_t *tw[BATCH];
  for (size_t b = 0; b < n; b += BATCH) {
    size_t end = n - b < BATCH ? n : b + BATCH, k = 0;
    for (size_t i = b; i < end; i++) {
      /* Arena mode decodes and validates as a shard does (tw_envelope_decode);
       * the reference is protobuf-c's unpack with malloc, then validation. */
      Twin__V1__Envelope *e = arena_mode
                                  ? tw_envelope_decode(&arena->pb, m[i].value, m[i].value_len, m[i].key,
                                                       m[i].key_len, SIZE_MAX, err, sizeof err)
                                  : twin__v1__envelope__unpack(NULL, m[i].value_len, m[i].value);
      if (e && !arena_mode && !tw_envelope_validate(e, m[i].key, m[i].key_len, err, sizeof err)) {
        twin__v1__envelope__free_unpacked(e, NULL);
        e = NULL;
      }
      if (!e) {
        c->invalid++;
        continue;
      }
      env[k] = e;
      ids[k++] = e->product_id;
    }
    tw_map_find_batch(twins, ids, tw, k);
    for (size_t j = 0; j < k; j++)
      if (!tw[j]) tw[j] = tw_map_get_or_new(twins, ids[j], 64);
    for (size_t j = 0; j < k; j++) {
      tw_twin_prefetch_ahead(tw, j, k);
      tw_outcome_t o = tw_apply_event(rules, tw[j], env[j], NULL, count_alert, c);
      if (o == TW_OUT_APPLIED || o == TW_OUT_STALE)
        c->applied++;
      else
        c->other++;
    }
    if (arena_mode)
      tw_arena_reset(arena);
    else
      for (size_t j = 0; j < k; j++) twin__v1__envelope__free_unpacked(env[j], NULL);
  }
}

/* One pass from no twins; returns seconds (freeing the twins is not timed). */
static double run_pass(const msg_t *m, size_t n, bool arena_mode, const tw_rules_t *rules, counts_t *c,
                       size_t *twins_out) {
  tw_map_t twins;
  tw_map_init(&twins);
  tw_arena_t arena;
  tw_arena_init(&arena, 1 << 16);
  memset(c, 0, sizeof *c);
  double t0 = now_s();
  apply_all(m, n, arena_mode, rules, &twins, &arena, c);
  double secs = now_s() - t0;
  *twins_out = twins.len;
  tw_map_cleanup(&twins, true);
  tw_arena_cleanup(&arena);
  return secs;
}

/* --memory: one pass from no twins, then the heap the twins hold (glibc's
 * in-use bytes before and after, so malloc's own overhead per allocation is
 * included), and the part of it that is the timeline's variable part (the
 * entries' blocks and the timeline arrays). */
static void memory_pass(const msg_t *m, size_t n, const tw_rules_t *rules) {
  tw_arena_t arena;
  tw_arena_init(&arena, 1 << 16);
  counts_t c = {0};
  tw_map_t twins;
  tw_map_init(&twins);
  apply_all(m, n, true, rules, &twins, &arena, &c); /* grows the arena and map once */
  tw_map_cleanup(&twins, true);
  malloc_trim(0);
  size_t before = mallinfo2().uordblks;
  tw_map_init(&twins);
  apply_all(m, n, true, rules, &twins, &arena, &c);
  size_t after = mallinfo2().uordblks;
  size_t timeline = 0, table = twins.cap * (sizeof *twins.slots + sizeof *twins.hashes);
  for (size_t i = 0; i < twins.cap; i++) {
    const tw_twin_t *t = twins.slots[i];
    if (!t) continue;
    if (t->timeline) timeline += malloc_usable_size(t->timeline) + 8;
    for (uint32_t k = 0; k < t->n_timeline; k++) timeline += malloc_usable_size(t->timeline[k]) + 8;
  }
  double per = (double)(after - before) / (double)twins.len;
  printf("{\"bench\":\"reducer_memory\",\"events\":%zu,\"twins\":%zu,\"sizeof_twin\":%zu,"
         "\"heap_bytes_per_twin\":%.0f,\"timeline_bytes_per_twin\":%.0f,\"table_bytes_per_twin\":%.0f,"
         "\"bytes_per_twin_without_timeline\":%.0f}\n",
         n, twins.len, sizeof(tw_twin_t), per, (double)timeline / (double)twins.len,
         (double)table / (double)twins.len, per - (double)timeline / (double)twins.len);
  tw_map_cleanup(&twins, true);
  tw_arena_cleanup(&arena);
}

int main(int argc, char **argv) {
  const char *path = NULL, *alloc = "arena";
  int reps = 5;
  bool with_rules = true, memory = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--record") == 0 && i + 1 < argc)
      path = argv[++i];
    else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
      reps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--alloc") == 0 && i + 1 < argc)
      alloc = argv[++i];
    else if (strcmp(argv[i], "--no-rules") == 0)
      with_rules = false;
    else if (strcmp(argv[i], "--memory") == 0)
      memory = true;
    else {
      fprintf(stderr,
              "usage: twin-bench-reducer --record FILE [--reps N (1..100, default 5)] [--alloc arena|malloc] "
              "[--no-rules] [--memory]\n");
      return 2;
    }
  }
  bool arena_mode = strcmp(alloc, "arena") == 0;
  if (!path || reps < 1 || reps > 100 || (!arena_mode && strcmp(alloc, "malloc") != 0)) {
    fprintf(stderr, "twin-bench-reducer: --record is required; --reps 1..100; --alloc arena or malloc\n");
    return 2;
  }

  /* Load the record: one buffer holds every key and value. */
  tw_record_reader_t *r;
  char err[512];
  if (!tw_record_reader_open(path, &r, err, sizeof err)) {
    fprintf(stderr, "twin-bench-reducer: %s\n", err);
    return 1;
  }
  size_t n = 0, cap = 1 << 20, bytes = 0, bcap = 1 << 26;
  msg_t *m = tw_xmalloc(cap * sizeof *m);
  uint8_t *buf = tw_xmalloc(bcap);
  size_t *koff = tw_xmalloc(cap * sizeof *koff);
  for (;;) {
    tw_record_t rec;
    bool eof;
    if (!tw_record_reader_next(r, &rec, &eof, err, sizeof err)) {
      fprintf(stderr, "twin-bench-reducer: %s\n", err);
      return 1;
    }
    if (eof) break;
    if (n == cap) {
      cap *= 2;
      m = tw_xrealloc(m, cap * sizeof *m);
      koff = tw_xrealloc(koff, cap * sizeof *koff);
    }
    while (bytes + rec.key_len + rec.value_len > bcap) {
      bcap *= 2;
      buf = tw_xrealloc(buf, bcap);
    }
    koff[n] = bytes;
    memcpy(buf + bytes, rec.key, rec.key_len);
    memcpy(buf + bytes + rec.key_len, rec.value, rec.value_len);
    m[n].key_len = (uint32_t)rec.key_len;
    m[n].value_len = (uint32_t)rec.value_len;
    bytes += rec.key_len + rec.value_len;
    n++;
  }
  tw_record_reader_close(r);
  for (size_t i = 0; i < n; i++) {
    m[i].key = buf + koff[i];
    m[i].value = buf + koff[i] + m[i].key_len;
  }
  free(koff);
  fprintf(stderr, "loaded %zu messages (%.1f MB, %.0f bytes on average) from %s\n", n, (double)bytes / 1e6,
          n ? (double)bytes / (double)n : 0.0, path);

  tw_rules_t *rules = NULL;
  if (with_rules) {
    rules = tw_rules_compile(true, NULL, 0, err, sizeof err);
    if (!rules) {
      fprintf(stderr, "twin-bench-reducer: %s\n", err);
      return 1;
    }
  }
  if (memory) {
    memory_pass(m, n, rules);
    tw_rules_destroy(rules);
    free(m);
    free(buf);
    return 0;
  }
  counts_t c;
  size_t twins = 0;
  double warm = run_pass(m, n, arena_mode, rules, &c, &twins);
  fprintf(stderr, "warm-up: %.3f s\n", warm);
  double *rate = tw_xmalloc((size_t)reps * sizeof *rate);
  for (int k = 0; k < reps; k++) {
    double s = run_pass(m, n, arena_mode, rules, &c, &twins);
    rate[k] = (double)n / s;
    printf(
        "rep %d: %zu events in %.3f s: %.0f events/s, %.1f ns/event (applied %llu, duplicate/late/rejected "
        "%llu, invalid %llu, alerts %llu, twins %zu)\n",
        k + 1, n, s, rate[k], s * 1e9 / (double)n, (unsigned long long)c.applied, (unsigned long long)c.other,
        (unsigned long long)c.invalid, (unsigned long long)c.alerts, twins);
  }
  qsort(rate, (size_t)reps, sizeof *rate, cmp_double);
  printf("{\"bench\":\"reducer_core\",\"alloc\":\"%s\",\"rules\":%s,\"events\":%zu,\"twins\":%zu,\"reps\":%d,"
         "\"events_per_s_min\":%.0f,\"events_per_s_median\":%.0f,\"events_per_s_max\":%.0f,"
         "\"ns_per_event_median\":%.1f,\"peak_rss_kib\":%ld}\n",
         alloc, with_rules ? "true" : "false", n, twins, reps, rate[0], rate[reps / 2], rate[reps - 1],
         1e9 / rate[reps / 2], peak_rss_kib());
  free(rate);
  tw_rules_destroy(rules);
  free(m);
  free(buf);
  return 0;
}
