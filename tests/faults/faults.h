/* faults.h - what every fault scenario (tests/faults/test_fault_*.c) shares:
 * the seed, timing, and the end check.
 *
 * The end check compares MongoDB with the state computed from twin-sim's
 * record (every twin exact, none missing, no event applied twice), the
 * stored twins with twin-sim's truth file, and the alerts topic with the
 * transitions the record gives (each expected (alert_id, state) present,
 * nothing else; repeats after a crash are allowed and counted, consumers
 * deduplicate by alert_id). It appends one line to the summary table
 * (TWIN_TEST_FAULTS_SUMMARY, see tests/faults/summary.sh) before asserting, so a
 * failed scenario shows its numbers too. */
#ifndef TWIN_TEST_FAULTS_H
#define TWIN_TEST_FAULTS_H

#include <stddef.h>
#include <stdint.h>

#include "harness.h"

struct CMUnitTest;

typedef struct {
  char name[64];
  int64_t t0_ms;
  int faults; /* faults injected, counted by the scenario */
} f_run_t;

/* A scenario's main(): f_seed_init(), the MongoDB driver with its log
 * routed to ours, TWIN_TEST_FILTER (a cmocka test-name pattern) if set, then
 * the n tests; returns the process's exit status. */
int f_main(const struct CMUnitTest *tests, size_t n);

/* TWIN_TEST_SEED or the time; printed so a failure can be replayed. */
void f_seed_init(void);
/* Uniform in [lo, hi], from the seed. */
int f_rnd(int lo, int hi);
void f_msleep(int ms);
int64_t f_now_ms(void);

void f_begin(f_run_t *r, const char *name);
/* The end check (see above); fails the test on any difference. */
void f_finish(f_run_t *r, const h_scenario_t *s);

/* Sums the "replayed=" counts of the engine's final stats lines in log. */
long long f_log_final_count(const char *log, const char *key);

/* A TCP proxy on 127.0.0.1 in front of a loopback server (FerretDB), which
 * makes it slow on demand: every chunk read from either side is passed on
 * delay_ms after it was read, so each request and each answer is late by
 * that much (throughput is not capped: chunks in flight queue up).
 * f_proxy_delay changes the delay for chunks read from then on; 0 passes
 * them at once. A closed or failing side closes the other. */
typedef struct f_proxy f_proxy_t;
f_proxy_t *f_proxy_start(int target_port);
int f_proxy_port(const f_proxy_t *p);
void f_proxy_delay(f_proxy_t *p, int delay_ms);
/* Chunks passed on so far, both directions. */
long long f_proxy_chunks(const f_proxy_t *p);
/* Closes the listener and every connection. */
void f_proxy_stop(f_proxy_t *p);

#endif
