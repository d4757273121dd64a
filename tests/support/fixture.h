/* fixture.h - event fixtures written as JSON, for tests.
 *
 * An event is a JSON object: {"product_id"?, "source", "seq", "t"
 * (event_time_ms), and "telemetry": {...proto field names...} or
 * "lifecycle": {"kind": "DELIVERED", ...proto field names...}}. The
 * fixture is encoded to protobuf bytes exactly as a producer would. */
#ifndef TWIN_TEST_FIXTURE_H
#define TWIN_TEST_FIXTURE_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stdint.h>

#include "twin/v1/alerts.pb-c.h"

/* Encodes one event; returns malloc'd protobuf bytes (*len) or NULL with
 * a message in err. */
uint8_t *tw_fixture_encode(const bson_t *event, const char *default_product_id, size_t *len, char *err,
                           size_t err_cap);
/* Reads a whole file into a bson_t parsed from JSON; NULL on failure. */
bson_t *tw_fixture_load_json(const char *path, char *err, size_t err_cap);
/* True when every field of expect is in actual with an equal value
 * (documents compared as subsets, arrays element by element, numbers as
 * doubles). On mismatch writes the path and both values into why. */
bool tw_bson_subset(const bson_t *expect, const bson_t *actual, char *why, size_t why_cap);

/* A MaintenanceAlert as a document with the proto field names (enums by
 * name, predicted_at_ms only when set), for comparing with fixtures. */
void tw_alert_to_bson(const Twin__V1__MaintenanceAlert *a, bson_t *out);
/* Collects alerts as an array of tw_alert_to_bson() documents; pass
 * tw_alert_list_add as the tw_alert_cb and the list as its ud. */
typedef struct {
  bson_t arr; /* bson_init() before use */
  uint32_t n;
} tw_alert_list_t;
void tw_alert_list_add(void *list, const Twin__V1__MaintenanceAlert *a);
/* tw_bson_subset both ways: the same fields with equal values. */
bool tw_bson_equal(const bson_t *expect, const bson_t *actual, char *why, size_t why_cap);

#endif
