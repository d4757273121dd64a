/* rules.h - maintenance-alert rules evaluated on a twin after the reducer.
 *
 * A rule is a condition over the twin's signals, e.g.
 *
 *   id: battery_temp_high   severity: CRITICAL
 *   condition: battery_temp_c > 60      clear: battery_temp_c <= 55
 *
 * A condition compares signals with numbers (< <= > >= == !=) and the
 * stage with a stage name (stage == IN_SERVICE), joined by `and`, `or`
 * and parentheses. The alert is RAISED when the condition starts to hold
 * and CLEARED when, while active, the clear condition holds (default: the
 * condition no longer holds) or none of the condition's signals has a value
 * any more. Signals (unit):
 *
 *   odometer_km speed_kph battery_soc_pct battery_soh_pct battery_temp_c
 *   latitude longitude fuel_level_pct aux_battery_v ambient_temp_c range_km
 *   brake_pad_mm.min brake_pad_mm.max tire_pressure_kpa.min tire_pressure_kpa.max
 *   metrics.<name>                   any telemetry metric
 *   dtc.count                        active diagnostic trouble codes
 *   recalls.open                     open recalls
 *   service.km_since service.days_since   since the last SERVICE_VISIT, or delivery
 *   brake_pad_mm.days_to_limit       predictive: days until the thinnest pad is
 *                                    projected to reach the rule's `limit` (mm)
 *
 * "Now" is the twin's latest event time, never the wall clock, so the same
 * events always give the same alerts (what makes kill -9 recovery exact).
 * Evaluation reads only the twin: late or duplicate events that do not
 * change the twin cannot raise anything. Not thread-safe per twin; a
 * compiled rule set is read-only and shared by every shard. */
#ifndef TWIN_RULES_H
#define TWIN_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "twin/twin.h"
#include "twin/v1/alerts.pb-c.h"

/* A rule as written in the config file (all text; NULL = not given). */
typedef struct {
  char *id, *severity, *condition, *clear, *message, *clear_message, *limit, *enabled;
  char *origin; /* "config file x.yaml:12", for error messages */
} tw_rule_spec_t;

typedef struct tw_rules tw_rules_t;

/* The built-in rules (README "Maintenance alerts"). */
size_t tw_rules_default_specs(const tw_rule_spec_t **out);

/* Compiles the defaults (when with_defaults) overlaid by specs: a spec with
 * a default's id replaces it, `enabled: false` drops it. On a bad rule
 * returns NULL with a message naming the rule, the key and what is allowed. */
tw_rules_t *tw_rules_compile(bool with_defaults, const tw_rule_spec_t *specs, size_t n, char *err,
                             size_t err_cap);
void tw_rules_destroy(tw_rules_t *r);
size_t tw_rules_count(const tw_rules_t *r);
const char *tw_rules_id(const tw_rules_t *r, size_t i);
/* The TW_SIG_* classes rule i reads (twin.h): tw_apply_event() evaluates it
 * only after an event that changed one of them. TW_SIG_ALL: on every event
 * (a rule whose condition and clear condition may hold together). */
uint32_t tw_rules_reads(const tw_rules_t *r, size_t i);

/* The event that was just applied to the twin. */
typedef struct {
  int64_t event_time_ms;
  const char *source;
  uint64_t seq;
} tw_rule_event_t;

/* Called once per transition with a filled alert (valid during the call). */
typedef void (*tw_alert_cb)(void *ud, const Twin__V1__MaintenanceAlert *alert);

/* Evaluates every rule on t after ev was applied; updates t->alerts and
 * calls cb for each RAISED / CLEARED. Returns the number of transitions. */
size_t tw_rules_eval(const tw_rules_t *r, tw_twin_t *t, const tw_rule_event_t *ev, tw_alert_cb cb, void *ud);

/* What a shard does with each event: tw_reduce(), then, when the event was
 * accepted (applied or stale), the rules with cb for the alerts: only those
 * whose inputs changed since they last ran on t (tw_rules_reads()), with
 * the same outcome as tw_rules_eval(), which runs every rule. */
tw_outcome_t tw_apply_event(const tw_rules_t *r, tw_twin_t *t, const Twin__V1__Envelope *env,
                            const char **reason, tw_alert_cb cb, void *ud);

/* Predictive brake wear: when the thinnest pad is projected to reach
 * limit_mm (ms since epoch) and at what odometer (NAN when unknown).
 * False when the fit has too few samples or shows no wear. */
bool tw_wear_predict(const tw_twin_t *t, double limit_mm, int64_t *at_ms, double *at_km);

#endif
