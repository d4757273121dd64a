/* test_proto.c - round-trips every twin.v1 message through protobuf-c.
 *
 * proto/ is a public contract: these tests pin that every field, including
 * the presence of proto3 `optional` scalars (generated here as one-field
 * oneofs, see cmake/proto3_optional.cmake), survives pack/unpack, and that
 * packing is deterministic (pack(unpack(pack(m))) == pack(m)). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "twin/v1/alerts.pb-c.h"
#include "twin/v1/events.pb-c.h"

/* ---- Helpers ------------------------------------------------------------------ */

typedef struct {
  uint8_t *data;
  size_t len;
} buf_t;

static buf_t pack_msg(const ProtobufCMessage *m) {
  buf_t b;
  b.len = protobuf_c_message_get_packed_size(m);
  b.data = malloc(b.len ? b.len : 1);
  assert_non_null(b.data);
  assert_int_equal(protobuf_c_message_pack(m, b.data), b.len);
  return b;
}

/* Packs the decoded message again and checks the bytes are identical. */
static void assert_repacks_same(const ProtobufCMessage *decoded, buf_t orig) {
  buf_t again = pack_msg(decoded);
  assert_int_equal(again.len, orig.len);
  assert_memory_equal(again.data, orig.data, orig.len);
  free(again.data);
}

/* Every optional double of Telemetry: where its presence case and value live. */
typedef struct {
  const char *name;
  size_t case_off;
  size_t value_off;
} opt_double_t;

#define OPT(f) \
  { #f, offsetof(Twin__V1__Telemetry, _##f##_case), offsetof(Twin__V1__Telemetry, f) }
static const opt_double_t telemetry_opts[] = {
    OPT(odometer_km),    OPT(speed_kph),      OPT(battery_soc_pct), OPT(battery_soh_pct),
    OPT(battery_temp_c), OPT(latitude),       OPT(longitude),       OPT(fuel_level_pct),
    OPT(aux_battery_v),  OPT(ambient_temp_c), OPT(range_km),
};
#undef OPT
#define N_OPTS (sizeof telemetry_opts / sizeof telemetry_opts[0])

static int *opt_case(Twin__V1__Telemetry *t, size_t i) {
  return (int *)((char *)t + telemetry_opts[i].case_off);
}
static double *opt_value(Twin__V1__Telemetry *t, size_t i) {
  return (double *)((char *)t + telemetry_opts[i].value_off);
}

/* The oneof case value that means "set" is the field number; NOT_SET is 0. */
static int opt_field_number(size_t i) {
  const ProtobufCFieldDescriptor *fd = protobuf_c_message_descriptor_get_field_by_name(
      &twin__v1__telemetry__descriptor, telemetry_opts[i].name);
  assert_non_null(fd);
  return (int)fd->id;
}

/* ---- Envelope + Telemetry --------------------------------------------------- */

static void test_telemetry_all_fields_set(void **state) {
  (void)state;
  Twin__V1__Envelope env = TWIN__V1__ENVELOPE__INIT;
  Twin__V1__Telemetry t = TWIN__V1__TELEMETRY__INIT;
  double tires[] = {230.5, 231.0, 228.25, 229.0};
  double pads[] = {9.5, 9.25, 7.0, 6.75, 0.0};
  char *dtcs[] = {"P0420", "U0100", "B1234"};
  Twin__V1__Telemetry__MetricsEntry m0 = TWIN__V1__TELEMETRY__METRICS_ENTRY__INIT;
  Twin__V1__Telemetry__MetricsEntry m1 = TWIN__V1__TELEMETRY__METRICS_ENTRY__INIT;
  Twin__V1__Telemetry__MetricsEntry m2 = TWIN__V1__TELEMETRY__METRICS_ENTRY__INIT;
  Twin__V1__Telemetry__MetricsEntry *metrics[] = {&m0, &m1, &m2};

  env.product_id = "WVWZZZ1JZXW000001";
  env.source = "tcu";
  env.seq = UINT64_MAX - 1;
  env.event_time_ms = 1767225600123;
  env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY;
  env.telemetry = &t;

  for (size_t i = 0; i < N_OPTS; i++) {
    *opt_case(&t, i) = opt_field_number(i);
    /* Field 0 is set to 0.0: presence must survive even for the default value. */
    *opt_value(&t, i) = i == 0 ? 0.0 : -1.5 + 10.0 * (double)i;
  }
  t._firmware_version_case = TWIN__V1__TELEMETRY___FIRMWARE_VERSION_FIRMWARE_VERSION;
  t.firmware_version = "tcu-4.2.1+build.77";
  t.n_tire_pressure_kpa = 4;
  t.tire_pressure_kpa = tires;
  t.n_brake_pad_mm = 5;
  t.brake_pad_mm = pads;
  t.n_dtc_codes = 3;
  t.dtc_codes = dtcs;
  t.dtc_codes_reported = 1;
  m0.key = "coolant_temp_c";
  m0.value = 91.5;
  m1.key = "spindle_hours";
  m1.value = 12345.0;
  m2.key = "zero";
  m2.value = 0.0;
  t.n_metrics = 3;
  t.metrics = metrics;

  buf_t b = pack_msg(&env.base);
  Twin__V1__Envelope *d = twin__v1__envelope__unpack(NULL, b.len, b.data);
  assert_non_null(d);
  assert_string_equal(d->product_id, env.product_id);
  assert_string_equal(d->source, "tcu");
  assert_true(d->seq == UINT64_MAX - 1);
  assert_true(d->event_time_ms == 1767225600123);
  assert_int_equal(d->payload_case, TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY);
  Twin__V1__Telemetry *dt = d->telemetry;
  assert_non_null(dt);
  for (size_t i = 0; i < N_OPTS; i++) {
    assert_int_equal(*opt_case(dt, i), opt_field_number(i));
    assert_true(*opt_value(dt, i) == *opt_value(&t, i));
  }
  assert_int_equal(dt->_firmware_version_case, TWIN__V1__TELEMETRY___FIRMWARE_VERSION_FIRMWARE_VERSION);
  assert_string_equal(dt->firmware_version, "tcu-4.2.1+build.77");
  assert_int_equal(dt->n_tire_pressure_kpa, 4);
  assert_memory_equal(dt->tire_pressure_kpa, tires, sizeof tires);
  assert_int_equal(dt->n_brake_pad_mm, 5);
  assert_memory_equal(dt->brake_pad_mm, pads, sizeof pads);
  assert_int_equal(dt->n_dtc_codes, 3);
  for (size_t i = 0; i < 3; i++) assert_string_equal(dt->dtc_codes[i], dtcs[i]);
  assert_true(dt->dtc_codes_reported);
  assert_int_equal(dt->n_metrics, 3);
  for (size_t i = 0; i < 3; i++) {
    assert_string_equal(dt->metrics[i]->key, metrics[i]->key);
    assert_true(dt->metrics[i]->value == metrics[i]->value);
  }
  assert_repacks_same(&d->base, b);
  twin__v1__envelope__free_unpacked(d, NULL);
  free(b.data);
}

static void test_telemetry_nothing_set(void **state) {
  (void)state;
  Twin__V1__Envelope env = TWIN__V1__ENVELOPE__INIT;
  Twin__V1__Telemetry t = TWIN__V1__TELEMETRY__INIT;
  env.product_id = "SN-1";
  env.source = "tcu";
  env.seq = 1;
  env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY;
  env.telemetry = &t;

  buf_t b = pack_msg(&env.base);
  Twin__V1__Envelope *d = twin__v1__envelope__unpack(NULL, b.len, b.data);
  assert_non_null(d);
  assert_int_equal(d->payload_case, TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY);
  Twin__V1__Telemetry *dt = d->telemetry;
  assert_non_null(dt); /* an empty sub-message is still "present" */
  for (size_t i = 0; i < N_OPTS; i++) assert_int_equal(*opt_case(dt, i), 0);
  assert_int_equal(dt->_firmware_version_case, TWIN__V1__TELEMETRY___FIRMWARE_VERSION__NOT_SET);
  assert_int_equal(dt->n_tire_pressure_kpa, 0);
  assert_int_equal(dt->n_brake_pad_mm, 0);
  assert_int_equal(dt->n_dtc_codes, 0);
  assert_false(dt->dtc_codes_reported);
  assert_int_equal(dt->n_metrics, 0);
  assert_true(d->event_time_ms == 0);
  assert_repacks_same(&d->base, b);
  twin__v1__envelope__free_unpacked(d, NULL);
  free(b.data);
}

/* Guards the table above: a new `optional double` in Telemetry must be added
 * to telemetry_opts, or the tests would silently skip it. */
static void test_telemetry_table_covers_every_optional(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *md = &twin__v1__telemetry__descriptor;
  size_t n = 0;
  for (unsigned i = 0; i < md->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &md->fields[i];
    if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && f->type == PROTOBUF_C_TYPE_DOUBLE) {
      bool found = false;
      for (size_t k = 0; k < N_OPTS; k++) found |= strcmp(telemetry_opts[k].name, f->name) == 0;
      if (!found) fail_msg("optional double %s is missing from telemetry_opts", f->name);
      n++;
    }
  }
  assert_int_equal(n, N_OPTS);
}

/* Each optional alone: exactly that one comes back present. */
static void test_telemetry_each_optional_alone(void **state) {
  (void)state;
  for (size_t k = 0; k < N_OPTS; k++) {
    Twin__V1__Telemetry t = TWIN__V1__TELEMETRY__INIT;
    *opt_case(&t, k) = opt_field_number(k);
    *opt_value(&t, k) = 0.0;
    buf_t b = pack_msg(&t.base);
    assert_true(b.len > 0); /* presence is on the wire even for 0.0 */
    Twin__V1__Telemetry *dt = twin__v1__telemetry__unpack(NULL, b.len, b.data);
    assert_non_null(dt);
    for (size_t i = 0; i < N_OPTS; i++) {
      if (*opt_case(dt, i) != (i == k ? opt_field_number(i) : 0)) {
        fail_msg("optional %s: presence wrong when only %s was set", telemetry_opts[i].name,
                 telemetry_opts[k].name);
      }
    }
    assert_true(*opt_value(dt, k) == 0.0);
    twin__v1__telemetry__free_unpacked(dt, NULL);
    free(b.data);
  }
}

/* An empty firmware string that is set differs from one that is absent. */
static void test_telemetry_empty_string_optional(void **state) {
  (void)state;
  Twin__V1__Telemetry t = TWIN__V1__TELEMETRY__INIT;
  t._firmware_version_case = TWIN__V1__TELEMETRY___FIRMWARE_VERSION_FIRMWARE_VERSION;
  t.firmware_version = "";
  buf_t b = pack_msg(&t.base);
  Twin__V1__Telemetry *dt = twin__v1__telemetry__unpack(NULL, b.len, b.data);
  assert_non_null(dt);
  assert_int_equal(dt->_firmware_version_case, TWIN__V1__TELEMETRY___FIRMWARE_VERSION_FIRMWARE_VERSION);
  assert_string_equal(dt->firmware_version, "");
  twin__v1__telemetry__free_unpacked(dt, NULL);
  free(b.data);
}

/* ---- Envelope + LifecycleEvent --------------------------------------------- */

static void test_lifecycle_all_fields(void **state) {
  (void)state;
  Twin__V1__Envelope env = TWIN__V1__ENVELOPE__INIT;
  Twin__V1__LifecycleEvent ev = TWIN__V1__LIFECYCLE_EVENT__INIT;
  char *parts[] = {"brake_pad_front", "brake_disc_front", "cabin_filter"};
  Twin__V1__LifecycleEvent__AttributesEntry a0 = TWIN__V1__LIFECYCLE_EVENT__ATTRIBUTES_ENTRY__INIT;
  Twin__V1__LifecycleEvent__AttributesEntry a1 = TWIN__V1__LIFECYCLE_EVENT__ATTRIBUTES_ENTRY__INIT;
  Twin__V1__LifecycleEvent__AttributesEntry *attrs[] = {&a0, &a1};

  env.product_id = "WVWZZZ1JZXW000002";
  env.source = "dms";
  env.seq = 42;
  env.event_time_ms = -1; /* before the epoch: signed must survive */
  env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_LIFECYCLE;
  env.lifecycle = &ev;
  ev.kind = TWIN__V1__LIFECYCLE_KIND__SERVICE_VISIT;
  ev.site = "DEALER-0815";
  ev.actor = "tech-17";
  ev.detail = "60 000 km service; pads worn";
  ev.work_order = "WO-2026-000123";
  ev._odometer_km_case = TWIN__V1__LIFECYCLE_EVENT___ODOMETER_KM_ODOMETER_KM;
  ev.odometer_km = 60012.5;
  ev.n_parts_replaced = 3;
  ev.parts_replaced = parts;
  ev.recall_id = "RC-24V-001";
  a0.key = "plant";
  a0.value = "Gr\xc3\xbcnheide"; /* UTF-8 */
  a1.key = "color";
  a1.value = "red";
  ev.n_attributes = 2;
  ev.attributes = attrs;
  ev.owner_id = "cust-991";
  ev.model = "Model Y";

  buf_t b = pack_msg(&env.base);
  Twin__V1__Envelope *d = twin__v1__envelope__unpack(NULL, b.len, b.data);
  assert_non_null(d);
  assert_string_equal(d->product_id, "WVWZZZ1JZXW000002");
  assert_string_equal(d->source, "dms");
  assert_true(d->seq == 42);
  assert_true(d->event_time_ms == -1);
  assert_int_equal(d->payload_case, TWIN__V1__ENVELOPE__PAYLOAD_LIFECYCLE);
  Twin__V1__LifecycleEvent *de = d->lifecycle;
  assert_non_null(de);
  assert_int_equal(de->kind, TWIN__V1__LIFECYCLE_KIND__SERVICE_VISIT);
  assert_string_equal(de->site, ev.site);
  assert_string_equal(de->actor, ev.actor);
  assert_string_equal(de->detail, ev.detail);
  assert_string_equal(de->work_order, ev.work_order);
  assert_int_equal(de->_odometer_km_case, TWIN__V1__LIFECYCLE_EVENT___ODOMETER_KM_ODOMETER_KM);
  assert_true(de->odometer_km == 60012.5);
  assert_int_equal(de->n_parts_replaced, 3);
  for (size_t i = 0; i < 3; i++) assert_string_equal(de->parts_replaced[i], parts[i]);
  assert_string_equal(de->recall_id, ev.recall_id);
  assert_int_equal(de->n_attributes, 2);
  for (size_t i = 0; i < 2; i++) {
    assert_string_equal(de->attributes[i]->key, attrs[i]->key);
    assert_string_equal(de->attributes[i]->value, attrs[i]->value);
  }
  assert_string_equal(de->owner_id, "cust-991");
  assert_string_equal(de->model, "Model Y");
  assert_repacks_same(&d->base, b);
  twin__v1__envelope__free_unpacked(d, NULL);
  free(b.data);
}

static void test_lifecycle_optional_unset_and_every_kind(void **state) {
  (void)state;
  const ProtobufCEnumDescriptor *kinds = &twin__v1__lifecycle_kind__descriptor;
  assert_true(kinds->n_values >= 16);
  for (unsigned i = 0; i < kinds->n_values; i++) {
    Twin__V1__Envelope env = TWIN__V1__ENVELOPE__INIT;
    Twin__V1__LifecycleEvent ev = TWIN__V1__LIFECYCLE_EVENT__INIT;
    env.product_id = "SN-2";
    env.source = "mes";
    env.seq = i + 1;
    env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_LIFECYCLE;
    env.lifecycle = &ev;
    ev.kind = (Twin__V1__LifecycleKind)kinds->values[i].value;
    buf_t b = pack_msg(&env.base);
    Twin__V1__Envelope *d = twin__v1__envelope__unpack(NULL, b.len, b.data);
    assert_non_null(d);
    assert_int_equal(d->payload_case, TWIN__V1__ENVELOPE__PAYLOAD_LIFECYCLE);
    assert_int_equal(d->lifecycle->kind, kinds->values[i].value);
    assert_int_equal(d->lifecycle->_odometer_km_case, TWIN__V1__LIFECYCLE_EVENT___ODOMETER_KM__NOT_SET);
    assert_int_equal(d->lifecycle->n_parts_replaced, 0);
    assert_int_equal(d->lifecycle->n_attributes, 0);
    assert_string_equal(d->lifecycle->site, "");
    twin__v1__envelope__free_unpacked(d, NULL);
    free(b.data);
  }
  /* The names the issue fixes are all there. */
  static const char *const required[] = {"ORDERED",
                                         "BUILD_STARTED",
                                         "BUILD_STEP_COMPLETED",
                                         "QUALITY_GATE_PASSED",
                                         "QUALITY_GATE_FAILED",
                                         "BUILD_COMPLETED",
                                         "SHIPPED",
                                         "ARRIVED_AT_DEALER",
                                         "DELIVERED",
                                         "SERVICE_VISIT",
                                         "WARRANTY_CLAIM",
                                         "RECALL_ISSUED",
                                         "RECALL_COMPLETED",
                                         "OWNERSHIP_TRANSFERRED",
                                         "DECOMMISSIONED"};
  for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
    if (!protobuf_c_enum_descriptor_get_value_by_name(kinds, required[i]))
      fail_msg("missing %s", required[i]);
  }
}

/* An envelope with no payload keeps payload_case NOT_SET (the engine sends
 * it to the DLQ), and a kind number this build does not know still decodes
 * (proto3 enums are open): the engine must check the value itself. */
static void test_envelope_no_payload_and_unknown_kind(void **state) {
  (void)state;
  Twin__V1__Envelope env = TWIN__V1__ENVELOPE__INIT;
  env.product_id = "SN-3";
  buf_t b = pack_msg(&env.base);
  Twin__V1__Envelope *d = twin__v1__envelope__unpack(NULL, b.len, b.data);
  assert_non_null(d);
  assert_int_equal(d->payload_case, TWIN__V1__ENVELOPE__PAYLOAD__NOT_SET);
  assert_null(d->telemetry);
  twin__v1__envelope__free_unpacked(d, NULL);
  free(b.data);

  /* field 1 (kind), varint 99 */
  const uint8_t unknown_kind[] = {0x08, 99};
  Twin__V1__LifecycleEvent *ev = twin__v1__lifecycle_event__unpack(NULL, sizeof unknown_kind, unknown_kind);
  assert_non_null(ev);
  assert_int_equal(ev->kind, 99);
  assert_null(protobuf_c_enum_descriptor_get_value(&twin__v1__lifecycle_kind__descriptor, ev->kind));
  twin__v1__lifecycle_event__free_unpacked(ev, NULL);

  /* Garbage is refused, not half-decoded. */
  const uint8_t garbage[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'x'};
  assert_null(twin__v1__envelope__unpack(NULL, sizeof garbage, garbage));
}

/* ---- MaintenanceAlert -------------------------------------------------------- */

static Twin__V1__MaintenanceAlert make_alert(void) {
  Twin__V1__MaintenanceAlert a = TWIN__V1__MAINTENANCE_ALERT__INIT;
  a.alert_id = "WVWZZZ1JZXW000001/brake_pad_low/3";
  a.product_id = "WVWZZZ1JZXW000001";
  a.rule_id = "brake_pad_low";
  a.severity = TWIN__V1__SEVERITY__CRITICAL;
  a.state = TWIN__V1__ALERT_STATE__RAISED;
  a.message = "Rear-left brake pad at 2.5 mm (limit 3 mm)";
  a.value = 2.5;
  a.threshold = 3.0;
  a.event_time_ms = 1767225600999;
  a.unit = "mm";
  a.raised_at_ms = 1767225600999;
  return a;
}

static void check_alert(const Twin__V1__MaintenanceAlert *d, const Twin__V1__MaintenanceAlert *a) {
  assert_string_equal(d->alert_id, a->alert_id);
  assert_string_equal(d->product_id, a->product_id);
  assert_string_equal(d->rule_id, a->rule_id);
  assert_int_equal(d->severity, a->severity);
  assert_int_equal(d->state, a->state);
  assert_string_equal(d->message, a->message);
  assert_true(d->value == a->value);
  assert_true(d->threshold == a->threshold);
  assert_true(d->event_time_ms == a->event_time_ms);
  assert_string_equal(d->unit, a->unit);
  assert_true(d->raised_at_ms == a->raised_at_ms);
  assert_int_equal(d->_predicted_at_ms_case, a->_predicted_at_ms_case);
  if (a->_predicted_at_ms_case) assert_true(d->predicted_at_ms == a->predicted_at_ms);
}

static void test_alert_with_prediction(void **state) {
  (void)state;
  Twin__V1__MaintenanceAlert a = make_alert();
  a._predicted_at_ms_case = TWIN__V1__MAINTENANCE_ALERT___PREDICTED_AT_MS_PREDICTED_AT_MS;
  a.predicted_at_ms = 1769817600000;
  buf_t b = pack_msg(&a.base);
  Twin__V1__MaintenanceAlert *d = twin__v1__maintenance_alert__unpack(NULL, b.len, b.data);
  assert_non_null(d);
  check_alert(d, &a);
  assert_repacks_same(&d->base, b);
  twin__v1__maintenance_alert__free_unpacked(d, NULL);
  free(b.data);

  /* predicted_at_ms = 0 (the epoch) is still a prediction. */
  a.predicted_at_ms = 0;
  b = pack_msg(&a.base);
  d = twin__v1__maintenance_alert__unpack(NULL, b.len, b.data);
  assert_non_null(d);
  assert_int_equal(d->_predicted_at_ms_case, TWIN__V1__MAINTENANCE_ALERT___PREDICTED_AT_MS_PREDICTED_AT_MS);
  assert_true(d->predicted_at_ms == 0);
  twin__v1__maintenance_alert__free_unpacked(d, NULL);
  free(b.data);
}

static void test_alert_without_prediction(void **state) {
  (void)state;
  Twin__V1__MaintenanceAlert a = make_alert();
  a.state = TWIN__V1__ALERT_STATE__CLEARED;
  a.severity = TWIN__V1__SEVERITY__INFO;
  buf_t b = pack_msg(&a.base);
  Twin__V1__MaintenanceAlert *d = twin__v1__maintenance_alert__unpack(NULL, b.len, b.data);
  assert_non_null(d);
  check_alert(d, &a);
  assert_int_equal(d->_predicted_at_ms_case, TWIN__V1__MAINTENANCE_ALERT___PREDICTED_AT_MS__NOT_SET);
  assert_repacks_same(&d->base, b);
  twin__v1__maintenance_alert__free_unpacked(d, NULL);
  free(b.data);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_telemetry_all_fields_set),
      cmocka_unit_test(test_telemetry_nothing_set),
      cmocka_unit_test(test_telemetry_table_covers_every_optional),
      cmocka_unit_test(test_telemetry_each_optional_alone),
      cmocka_unit_test(test_telemetry_empty_string_optional),
      cmocka_unit_test(test_lifecycle_all_fields),
      cmocka_unit_test(test_lifecycle_optional_unset_and_every_kind),
      cmocka_unit_test(test_envelope_no_payload_and_unknown_kind),
      cmocka_unit_test(test_alert_with_prediction),
      cmocka_unit_test(test_alert_without_prediction),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
