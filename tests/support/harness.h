/* harness.h - end-to-end test harness: real Kafka topics, real FerretDB
 * databases, the real twin-sim and twin-engine binaries as processes.
 *
 * Each scenario gets its own topics, consumer group and database, so
 * scenarios never see each other's data. Expected state is computed from
 * twin-sim's record of what it sent (not from the engine's run), and also
 * checked against twin-sim's own truth file. Functions abort the test
 * (cmocka fail_msg) on infrastructure errors. */
#ifndef TWIN_TEST_HARNESS_H
#define TWIN_TEST_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "map.h"
#include "twin/rules.h"
#include "twin/twin.h"

typedef struct {
  char name[64];
  char telemetry[96], lifecycle[96], dlq[96], alerts[96];
  char group[96], database[96];
  char logdir[200], record[300], truth[300];
  int partitions;
  const char *bootstrap, *mongo_uri, *bin_dir, *source_dir;
  const char *topics_bootstrap; /* where the topics were made: a test may point bootstrap elsewhere (a mock
                                   cluster) */
} h_scenario_t;

typedef struct {
  tw_map_t twins;   /* expected twins */
  uint64_t garbage; /* messages that must be in the DLQ */
  uint64_t valid;   /* messages that reach the reducer */
} h_expected_t;

/* Creates unique topics (partitions each) and names for one scenario. */
void h_scenario_init(h_scenario_t *s, const char *name, int partitions);
/* Deletes the scenario's topics and database (fails the test if the
 * broker still lists the topics 10 s later). */
void h_scenario_cleanup(h_scenario_t *s);

/* Runs twin-sim with the scenario's topics, --record and --truth, plus the
 * extra arguments (NULL-terminated). Fails the test unless it exits 0. */
void h_run_sim(const h_scenario_t *s, const char *const *extra);
/* The same in the background; h_sim_wait fails the test unless it exits 0. */
pid_t h_sim_start(const h_scenario_t *s, const char *const *extra);
void h_sim_wait(const h_scenario_t *s, pid_t pid);

/* Starts twin-engine for the scenario with extra --set pairs
 * ("key=value", NULL-terminated); its log goes to logdir/engine-<n>.log. */
pid_t h_engine_start(const h_scenario_t *s, int shards, const char *const *extra);
/* The path of the last started engine's log. */
const char *h_engine_log(void);
/* Waits until the last started engine's log contains needle. */
bool h_wait_engine_log(const char *needle, int timeout_s);
/* Sends sig and waits for the process; returns its exit status (-1 if
 * killed by a signal). */
int h_engine_stop(pid_t pid, int sig);
/* Resident set size of pid in KiB, 0 if gone. */
long h_rss_kib(pid_t pid);

/* Sum over both input topics of the partitions' end offsets. */
int64_t h_end_offsets_total(const h_scenario_t *s);
/* Sum of the stored checkpoints of the scenario's group. */
int64_t h_checkpoints_total(const h_scenario_t *s);
/* Waits until the checkpoints cover every message (true); false after
 * timeout_s seconds without progress (or 15 minutes in all). */
bool h_wait_caught_up(const h_scenario_t *s, int timeout_s);

/* Replays the record through validation and the reducer. */
void h_expected_build(const h_scenario_t *s, uint32_t seq_window, h_expected_t *out);
void h_expected_cleanup(h_expected_t *e);
/* Drops the alerts whose transitions depend on how the telemetry and
 * lifecycle topics interleave (service_due, brake_wear_predicted: they
 * combine both), which a test cannot predict from the record. The other
 * rules read one topic's state only and are compared exactly. */
void h_strip_interleaved_alerts(tw_twin_t *t);
/* Compares every stored twin with the expected one (state hash, ignoring
 * updated_at and Kafka offsets) and the count of documents; returns the
 * number of differences, printing the first few. */
int h_compare_store(const h_scenario_t *s, const h_expected_t *e);
/* Checks the stored twins against twin-sim's truth file (rev, stage,
 * owner, open recalls); returns the number of differences. */
int h_check_truth(const h_scenario_t *s);
/* Reads the DLQ topic to its end: number of messages; every one must carry
 * twin.error and twin.origin.* headers (else counted in *bad_headers). */
int64_t h_count_dlq(const h_scenario_t *s, int64_t *bad_headers);
/* The engine's HTTP port, from "listening on http://127.0.0.1:PORT" in its
 * log; 0 if not there (yet). */
int h_engine_http_port(const char *log);
/* GET http://127.0.0.1:port/path; the body (NUL-terminated) in buf. */
bool h_http_get(int port, const char *path, char *buf, size_t cap);
/* The largest value of a metric's samples in a Prometheus text body, -1 if
 * none. */
double h_metric_max(const char *body, const char *name);
/* Runs deploy/local/stack.sh with args (e.g. "down", "ferretdb"). */
int h_stack(const h_scenario_t *s, const char *cmd, const char *component);

/* ---- Fault tests (tests/faults/) ---------------------------------------- */

/* h_engine_start with the engine's stderr (its log) sent to log_path
 * instead of logdir/engine-<n>.log (e.g. a file on a full disk). */
pid_t h_engine_start_log(const h_scenario_t *s, int shards, const char *const *extra, const char *log_path);
/* The pid in deploy/local/stack.sh's pid file of component ("kafka",
 * "ferretdb") under TWIN_STACK_DIR (default <source>/.stack); 0 if none. */
pid_t h_stack_pid(const h_scenario_t *s, const char *component);
/* h_compare_store that also counts events: *lost = events the truth has
 * that the stored twins lack (per twin, events that reached the reducer;
 * a missing twin loses all of its), *duplicated = events stored beyond
 * the truth (an event applied twice, an unexpected twin). */
int h_compare_store_counts(const h_scenario_t *s, const h_expected_t *e, int64_t *lost, int64_t *duplicated);
/* h_expected_build that also reports each expected alert transition to cb
 * (the record replayed in its order, topic by topic as produced). */
void h_expected_build_alerts(const h_scenario_t *s, uint32_t seq_window, h_expected_t *out, tw_alert_cb cb,
                             void *ud);
/* True for the rules h_strip_interleaved_alerts drops. */
bool h_alert_rule_interleaved(const char *rule);

/* The alerts topic read back: every message decoded with the generated
 * code (twin__v1__maintenance_alert__unpack) as tw_alert_to_bson documents. */
typedef struct {
  bson_t **docs; /* in topic order per partition */
  size_t n, cap;
  size_t bad_key; /* messages whose key is not their product_id */
} h_alerts_t;
/* Reads the whole alerts topic: until at least min messages arrived and
 * either every message there at the start was read or nothing new came for
 * quiet_ms; at most timeout_s. Undecodable messages fail the test. */
void h_read_alerts(const h_scenario_t *s, size_t min, int quiet_ms, int timeout_s, h_alerts_t *out);
void h_alerts_free(h_alerts_t *a);
/* A UTF-8 field of a document, "" when absent. */
const char *h_doc_str(const bson_t *d, const char *k);

/* The whole file as a string (owned), NULL if it cannot be opened. */
char *h_slurp(const char *path);

#endif
