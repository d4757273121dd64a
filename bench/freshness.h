/* freshness.h - freshness as a reader outside the engine sees it.
 *
 * An event's freshness is the time from when it was produced (its Kafka
 * timestamp: twin-sim's event times are simulated, the produce time is the
 * wall-clock moment the vehicle sent it) until a reader of MongoDB first
 * finds it in the product's snapshot, and until its alert is read from the
 * alerts topic. fr_t joins the three streams a reader sees: the input
 * events (product, source, seq), the snapshots' source high-water marks
 * read from MongoDB, and the alerts read from Kafka (product, the event
 * time of the event that caused them).
 *
 * A snapshot holds an event of a source when the source's hwm >= its seq
 * and the seq is not among the source's missing ones (schemas/twin.schema.json).
 * An event is matched to the first snapshot read that holds it; one that no
 * read holds is counted as unseen. An alert is matched to the earliest
 * produced input event of its product with its event time (an event time
 * two events share makes the latency longer, never shorter). All calls are
 * thread-safe. */
#ifndef TWIN_BENCH_FRESHNESS_H
#define TWIN_BENCH_FRESHNESS_H

#include <stddef.h>
#include <stdint.h>

typedef struct fr fr_t;

/* A latency distribution in milliseconds; n latencies, unseen without one. */
typedef struct {
  size_t n, unseen;
  int64_t p50, p99, max;
} fr_dist_t;

fr_t *fr_new(void);
void fr_free(fr_t *f);

/* An input event, produced at produced_ms. */
void fr_event(fr_t *f, const char *product, const char *source, uint64_t seq, int64_t event_time_ms,
              int64_t produced_ms);

/* A snapshot of product read at seen_ms holds source's events up to hwm,
 * except the n_missing seqs in missing. Reads of one source must come in
 * the order they were made. */
void fr_observe(fr_t *f, const char *product, const char *source, uint64_t hwm, const uint64_t *missing,
                size_t n_missing, int64_t seen_ms);

/* An alert caused by product's event at event_time_ms, read at seen_ms. */
void fr_alert(fr_t *f, const char *product, int64_t event_time_ms, int64_t seen_ms);

/* Input events and alerts so far; input events no snapshot read holds yet. */
size_t fr_events(fr_t *f);
size_t fr_alerts(fr_t *f);
size_t fr_unseen(fr_t *f);

/* The distributions: produced -> read in a snapshot, produced -> alert read. */
void fr_result(fr_t *f, fr_dist_t *snapshot, fr_dist_t *alert);

/* How long the reader rests after a read of the snapshots that took
 * took_ms, to start reads every poll_ms: the rest of the period, but at
 * least twice the read's time, so the reader keeps the database busy at
 * most a third of the time. A slow database (FerretDB takes ~85 ms to read
 * 20 busy twins here) is then read less often instead of being kept busy
 * by the measurement itself, which would slow the engine's writes it
 * measures. */
int64_t fr_poll_rest_ms(int64_t poll_ms, int64_t took_ms);

#endif
