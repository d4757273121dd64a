/* test_freshness.c - the join behind twin-bench-tool freshness
 * (bench/freshness.h): an event's latency runs from its produce time to the
 * first snapshot read that holds it (hwm at or past its seq, the seq not
 * missing), whatever order events and reads arrive in; an event no read
 * holds is unmatched; an alert is matched to the earliest produced input
 * of its product with its event time; the percentiles are nearest-rank. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "freshness.h"

static void test_first_read_that_holds(void **state) {
  (void)state;
  fr_t *f = fr_new();
  /* A read before the events were even consumed by the tool: reads and
   * events come from two threads, in any order. */
  fr_observe(f, "V1", "tcu", 2, NULL, 0, 1500);
  fr_event(f, "V1", "tcu", 1, 100, 1000); /* held by the read at 1500: 500 */
  fr_event(f, "V1", "tcu", 2, 200, 1100); /* 400 */
  fr_event(f, "V1", "tcu", 3, 300, 1200); /* first held at 2600: 1400 */
  fr_event(f, "V1", "tcu", 4, 400, 1300); /* hwm 5 at 2600 but 4 missing; held at 3700: 2400 */
  fr_event(f, "V1", "tcu", 6, 500, 1400); /* never held: unmatched */
  uint64_t missing[] = {4};
  fr_observe(f, "V1", "tcu", 2, NULL, 0, 2000); /* no change: not a new read */
  fr_observe(f, "V1", "tcu", 5, missing, 1, 2600);
  fr_observe(f, "V1", "tcu", 5, missing, 1, 3000); /* the same again */
  fr_observe(f, "V1", "tcu", 5, NULL, 0, 3700);
  /* Another source of the same product does not hold tcu's events. */
  fr_observe(f, "V1", "bms", 100, NULL, 0, 1600);
  assert_int_equal(fr_events(f), 5);
  assert_int_equal(fr_unseen(f), 1);
  fr_dist_t snap, al;
  fr_result(f, &snap, &al);
  assert_int_equal(snap.n, 4);
  assert_int_equal(snap.unseen, 1);
  assert_int_equal(snap.p50, 500); /* of 400, 500, 1400, 2400 */
  assert_int_equal(snap.p99, 2400);
  assert_int_equal(snap.max, 2400);
  assert_int_equal(al.n, 0);
  /* The read that finally holds it counts it. */
  fr_observe(f, "V1", "tcu", 6, NULL, 0, 4400);
  assert_int_equal(fr_unseen(f), 0);
  fr_result(f, &snap, &al);
  assert_int_equal(snap.n, 5);
  assert_int_equal(snap.max, 3000);
  fr_free(f);
}

static void test_products_apart(void **state) {
  (void)state;
  fr_t *f = fr_new();
  /* Enough products to make the table grow several times. */
  char id[32];
  for (int i = 0; i < 5000; i++) {
    snprintf(id, sizeof id, "VIN%05d", i);
    fr_event(f, id, "tcu", 1, 0, 10 * i);
  }
  for (int i = 0; i < 5000; i++) {
    snprintf(id, sizeof id, "VIN%05d", i);
    if (i % 10) fr_observe(f, id, "tcu", 1, NULL, 0, 10 * i + i % 100); /* latency i % 100 */
  }
  fr_dist_t snap, al;
  fr_result(f, &snap, &al);
  assert_int_equal(snap.n, 4500);
  assert_int_equal(snap.unseen, 500);
  assert_int_equal(snap.max, 99);
  /* 50 latencies each of 1..9, 11..19, ...; nearest rank 2250 of 4500 is 49. */
  assert_int_equal(snap.p50, 49);
  assert_int_equal(snap.p99, 99);
  fr_free(f);
}

static void test_alerts_joined_on_event_time(void **state) {
  (void)state;
  fr_t *f = fr_new();
  fr_event(f, "V1", "tcu", 1, 5000, 100);
  fr_event(f, "V1", "tcu", 2, 6000, 200);
  fr_event(f, "V1", "svc", 1, 6000, 150); /* the same event time, produced earlier */
  fr_event(f, "V2", "tcu", 1, 5000, 400);
  fr_alert(f, "V1", 5000, 130); /* 30 */
  fr_alert(f, "V1", 6000, 260); /* the earlier of the two: 260 - 150 = 110 */
  fr_alert(f, "V2", 5000, 420); /* 20: another product's event time 5000 is not V1's */
  fr_alert(f, "V2", 7000, 900); /* no such event: unmatched */
  fr_alert(f, "V9", 5000, 900); /* no such product's event: unmatched */
  assert_int_equal(fr_alerts(f), 5);
  fr_dist_t snap, al;
  fr_result(f, &snap, &al);
  assert_int_equal(al.n, 3);
  assert_int_equal(al.unseen, 2);
  assert_int_equal(al.p50, 30);
  assert_int_equal(al.max, 110);
  assert_int_equal(snap.unseen, 4); /* no snapshot read at all */
  fr_free(f);
}

/* The reader's pacing: reads every poll period while a read is quick, and
 * at least twice a read's time idle after a slow one. */
static void test_poll_pacing(void **state) {
  (void)state;
  assert_int_equal(fr_poll_rest_ms(100, 5), 95);   /* MongoDB: every 100 ms */
  assert_int_equal(fr_poll_rest_ms(100, 33), 67);  /* a third of the period: still every 100 ms */
  assert_int_equal(fr_poll_rest_ms(100, 40), 80);  /* busy a third of the time: every 120 ms */
  assert_int_equal(fr_poll_rest_ms(100, 85), 170); /* FerretDB: every 255 ms, not back to back */
  assert_int_equal(fr_poll_rest_ms(100, 300), 600);
  assert_int_equal(fr_poll_rest_ms(100, 0), 100);
  assert_int_equal(fr_poll_rest_ms(100, -3), 100); /* a clock step back */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_poll_pacing),
      cmocka_unit_test(test_first_read_that_holds),
      cmocka_unit_test(test_products_apart),
      cmocka_unit_test(test_alerts_joined_on_event_time),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
