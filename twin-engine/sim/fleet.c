/* fleet.c - one simulated product's life, as protobuf envelopes.
 *
 * A product is ordered, built (steps and quality gates, sometimes failed
 * and reworked), shipped, delivered by a dealer, and then reports
 * telemetry for years: odometer, battery, GPS, tires, wearing brake pads,
 * DTCs, firmware. Between samples it gets service visits (brake pads
 * replaced when low), warranty claims, recalls (issued, later completed),
 * new owners, and a few products are decommissioned.
 *
 * Every value comes from the product's own PRNG, so a product's events do
 * not depend on the other products or on fault injection. Values use only
 * arithmetic, floor, fabs, fmin and fmax (exact in IEEE-754; no
 * transcendental libm functions), so the bytes match on any such machine.
 * No I/O, no clock. The envelope returned points into the fleet's reused
 * message structs: no allocation per event. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

#define MIN_MS 60000LL
#define HOUR_MS 3600000LL
#define DAY_MS 86400000LL
#define YEAR_MS (DAY_MS * 36525 / 100)

const char *const tw_sim_src_names[TW_SRC_COUNT] = {"mes", "logistics", "dms", "oem", "crm", "tcu"};
const char *const tw_sim_stage_names[] = {"NONE",       "ORDERED",   "IN_PRODUCTION", "BUILT",
                                          "IN_TRANSIT", "AT_DEALER", "IN_SERVICE",    "DECOMMISSIONED"};

/* ---- Static data ------------------------------------------------------------ */

typedef struct {
  const char *name, *wmi, *vds, *drive, *plant, *plant_name;
  double range_km;
  int weight;
} model_t;

static const model_t models[] = {
    {"Aurora", "W1T", "AU2E4", "bev", "PLT-GRH", "Grünheide", 520, 40},
    {"Borealis", "W1T", "BO3E6", "bev", "PLT-ZWK", "Zwickau", 610, 30},
    {"Cirrus", "W1T", "CI1H2", "phev", "PLT-RGB", "Regensburg", 60, 20},
    {"Drift Van", "W1V", "DV5E8", "bev", "PLT-HAN", "Hannover", 380, 10},
};
#define N_MODELS (int)(sizeof models / sizeof models[0])

typedef struct {
  const char *name, *market;
  double lat, lon;
} city_t;

static const city_t cities[] = {
    {"Berlin", "DE", 52.520, 13.405},   {"Munich", "DE", 48.137, 11.575},
    {"Hamburg", "DE", 53.551, 9.994},   {"Cologne", "DE", 50.938, 6.960},
    {"Frankfurt", "DE", 50.110, 8.682}, {"Stuttgart", "DE", 48.776, 9.183},
    {"Leipzig", "DE", 51.340, 12.375},  {"Vienna", "AT", 48.208, 16.373},
    {"Zurich", "CH", 47.377, 8.542},    {"Amsterdam", "NL", 52.370, 4.895},
};
#define N_CITIES (int)(sizeof cities / sizeof cities[0])
#define N_DEALERS 40

static const char *const colors[] = {"pearl white", "deep blue", "midnight silver",
                                     "solid black", "ultra red", "quicksilver"};
static const char *const trims[] = {"standard", "long-range", "performance"};

#define N_STEPS 6
static const char *const steps[N_STEPS] = {"body-in-white", "paint",          "powertrain-marriage",
                                           "interior-trim", "final-assembly", "wheel-alignment"};
static const char *const stations[N_STEPS] = {"BIW", "PAINT", "MARRIAGE", "TRIM", "FINAL", "EOL"};
/* The quality gate after each step, or NULL. */
static const char *const gates[N_STEPS] = {NULL, "qg-paint", NULL, NULL, "qg-final", "qg-end-of-line"};
static const char *const defects[] = {"orange peel on hood", "panel gap out of tolerance",
                                      "torque audit failed", "water leak test failed",
                                      "ADAS camera calibration out of range"};
static const char *const carriers[] = {"CARRIER-DBSCHENKER", "CARRIER-ARS-ALTMANN", "CARRIER-MOSOLF"};
static const char *const claims[] = {"infotainment reboot loop",  "charge port door actuator failed",
                                     "water ingress at tailgate", "window regulator noise",
                                     "heat pump valve failure",   "12 V battery drained"};
static const char *const transfers[] = {"private sale", "lease return", "fleet remarketing", "inheritance"};
static const char *const decoms[] = {"scrapped at end of life", "total loss after accident", "exported"};

static const char *const dtcs[16] = {"P0420", "P0A80", "U0100", "B1318", "C0035", "P0300", "P0128", "U0140",
                                     "B2AAA", "P1A10", "P0AA6", "C1201", "U0155", "B1000", "P0562", "C0561"};
#define N_DTC_USED 12

static const char *const firmwares[] = {"2023.44.1", "2023.50.2", "2024.8.3",  "2024.20.1", "2024.32.5",
                                        "2024.44.2", "2025.2.1",  "2025.14.3", "2025.26.0", "2025.38.4",
                                        "2026.2.1",  "2026.14.2", "2026.26.1", "2026.38.0", "2027.2.3"};
#define N_FW (int)(sizeof firmwares / sizeof firmwares[0])

static const char vin_chars[] = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"; /* no I, O, Q */
#define VIN_RADIX 33ULL
#define VIN_SPACE 1406408618241ULL /* 33^8 */

/* ---- Generator phases --------------------------------------------------------- */
enum {
  PH_ORDER = 0,
  PH_BUILD_START,
  PH_STEP,
  PH_GATE,
  PH_BUILD_DONE,
  PH_SHIP,
  PH_ARRIVE,
  PH_DELIVER,
  PH_SERVICE,
  PH_DONE,
};

enum { PEND_NONE = 0, PEND_SERVICE, PEND_WARRANTY, PEND_RECALL, PEND_TRANSFER, PEND_DECOM };

struct tw_fleet {
  tw_fleet_opts_t o;
  uint64_t vin_mul, vin_off;
  Twin__V1__Envelope env;
  Twin__V1__Telemetry tel;
  Twin__V1__LifecycleEvent lc;
  Twin__V1__Telemetry__MetricsEntry metric[2];
  Twin__V1__Telemetry__MetricsEntry *metric_p[2];
  Twin__V1__LifecycleEvent__AttributesEntry attr[5];
  Twin__V1__LifecycleEvent__AttributesEntry *attr_p[5];
  double tires[4], pads[4];
  char *dtc_p[16];
  char *parts_p[6];
  char site[48], actor[48], detail[160], wo[48], recall[32], owner[32];
};

/* ---- Helpers --------------------------------------------------------------- */

static double r1(double x) { return floor(x * 10.0 + 0.5) / 10.0; }
static double r2(double x) { return floor(x * 100.0 + 0.5) / 100.0; }
static double clampd(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }
static int64_t rand_ms(tw_rng_t *r, int64_t lo, int64_t hi) {
  return lo + (int64_t)tw_rng_below(r, (uint64_t)(hi - lo) + 1);
}

static int vin_value(char c) {
  static const char *tr = "ABCDEFGHJKLMNPRSTUVWXYZ";
  static const int val[] = {1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9};
  if (c >= '0' && c <= '9') return c - '0';
  const char *p = strchr(tr, c);
  return p ? val[p - tr] : 0;
}

/* The check digit (position 9) of a North-American style VIN. */
static char vin_check(const char *v) {
  static const int w[17] = {8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2};
  int sum = 0;
  for (int i = 0; i < 17; i++) sum += vin_value(v[i]) * w[i];
  int r = sum % 11;
  return r == 10 ? 'X' : (char)('0' + r);
}

void tw_fleet_owner_id(uint32_t n, char *buf, size_t cap) { snprintf(buf, cap, "CUST-%08u", n); }

void tw_fleet_work_order(const tw_sim_product_t *p, uint32_t n, char *buf, size_t cap) {
  snprintf(buf, cap, "WO-%04u-%07u", (unsigned)p->dealer + 1, n);
}

/* code = bucket * 8 + model, bucket = 45-day period since the epoch. */
void tw_fleet_recall_id(uint32_t code, char *buf, size_t cap) {
  uint32_t bucket = code / 8;
  int year = 1970 + (int)((bucket * 45ULL + 22) * 10000ULL / 3652425ULL);
  snprintf(buf, cap, "RC-%04d-%03u-%c", year, bucket % 1000, (char)('A' + code % 8));
}

const char *tw_fleet_dtc(int i) { return dtcs[i & 15]; }

static void dealer_id(const tw_sim_product_t *p, char *buf, size_t cap) {
  snprintf(buf, cap, "DLR-%04u", (unsigned)p->dealer + 1);
}

/* ---- Life cycle --------------------------------------------------------------- */

tw_fleet_t *tw_fleet_new(const tw_fleet_opts_t *o) {
  tw_fleet_t *f = calloc(1, sizeof *f);
  if (!f) return NULL;
  f->o = *o;
  uint64_t x = o->seed ^ 0x5bd1e995a5a5a5a5ULL;
  f->vin_mul = tw_splitmix64(&x) % (1ULL << 38);
  while (f->vin_mul < 2 || f->vin_mul % 3 == 0 || f->vin_mul % 11 == 0) f->vin_mul++;
  f->vin_off = tw_splitmix64(&x) % VIN_SPACE;
  for (int i = 0; i < 2; i++) {
    twin__v1__telemetry__metrics_entry__init(&f->metric[i]);
    f->metric_p[i] = &f->metric[i];
  }
  for (int i = 0; i < 5; i++) {
    twin__v1__lifecycle_event__attributes_entry__init(&f->attr[i]);
    f->attr_p[i] = &f->attr[i];
  }
  return f;
}

void tw_fleet_destroy(tw_fleet_t *f) { free(f); }

void tw_fleet_product_init(tw_fleet_t *f, tw_sim_product_t *p, uint32_t idx) {
  memset(p, 0, sizeof *p);
  tw_rng_seed(&p->rng, f->o.seed, (uint64_t)idx + 1);
  tw_rng_t *r = &p->rng;

  int w = (int)tw_rng_below(r, 100), m = 0;
  while (m < N_MODELS - 1 && w >= models[m].weight) w -= models[m++].weight;
  p->model = (uint8_t)m;

  /* VIN: WMI + VDS from the model, check digit, then 8 characters that are
   * a seed-keyed bijection of the index (unique for any fleet size). */
  uint64_t v = ((uint64_t)idx * f->vin_mul + f->vin_off) % VIN_SPACE;
  memcpy(p->vin, models[m].wmi, 3);
  memcpy(p->vin + 3, models[m].vds, 5);
  p->vin[8] = '0';
  for (int i = 16; i >= 9; i--) {
    p->vin[i] = vin_chars[v % VIN_RADIX];
    v /= VIN_RADIX;
  }
  p->vin[17] = 0;
  p->vin[8] = vin_check(p->vin);

  p->dealer = (uint16_t)tw_rng_below(r, N_DEALERS);
  const city_t *c = &cities[p->dealer % N_CITIES];
  p->home_lat = c->lat + tw_rng_range(r, -0.2, 0.2);
  p->home_lon = c->lon + tw_rng_range(r, -0.3, 0.3);
  p->daily_km = tw_rng_range(r, 15, 75);
  p->wear_front = 1.0 / tw_rng_range(r, 5000, 8000);
  p->wear_rear = p->wear_front * tw_rng_range(r, 0.55, 0.8);
  for (int i = 0; i < 4; i++) p->pads[i] = tw_rng_range(r, 11.8, 12.2);
  p->tire_base = tw_rng_range(r, 235, 255);
  p->soh = tw_rng_range(r, 99.3, 100.0);
  p->soc = tw_rng_range(r, 40, 90);
  p->service_km = tw_rng_range(r, 13500, 16500);
  p->ordered_ms = f->o.start_ms + (int64_t)(tw_rng_unit(r) * (double)f->o.span_ms);
  p->next_ms = p->ordered_ms;
  p->phase = PH_ORDER;
  p->stage = TW_SIM_STAGE_NONE;
  p->in_heap = true;
}

/* ---- Envelope building ------------------------------------------------------------ */

static Twin__V1__LifecycleEvent *lc_begin(tw_fleet_t *f, tw_sim_product_t *p, int src, int kind, int64_t at,
                                          tw_sim_event_t *ev) {
  twin__v1__envelope__init(&f->env);
  twin__v1__lifecycle_event__init(&f->lc);
  f->env.product_id = p->vin;
  f->env.source = (char *)tw_sim_src_names[src];
  f->env.seq = ++p->seq[src];
  f->env.event_time_ms = at;
  f->env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_LIFECYCLE;
  f->env.lifecycle = &f->lc;
  f->lc.kind = (Twin__V1__LifecycleKind)kind;
  memset(ev, 0, sizeof *ev);
  ev->src = src;
  ev->topic = TW_SIM_TOPIC_LIFECYCLE;
  ev->kind = kind;
  return &f->lc;
}

static void lc_odometer(Twin__V1__LifecycleEvent *lc, double km) {
  lc->_odometer_km_case = TWIN__V1__LIFECYCLE_EVENT___ODOMETER_KM_ODOMETER_KM;
  lc->odometer_km = r1(km);
}

static void plant_site(tw_fleet_t *f, const tw_sim_product_t *p, const char *station) {
  if (station)
    snprintf(f->site, sizeof f->site, "%s-%s", models[p->model].plant, station);
  else
    snprintf(f->site, sizeof f->site, "%s", models[p->model].plant);
  f->lc.site = f->site;
}

static void emit_ordered(tw_fleet_t *f, tw_sim_product_t *p, int64_t t, tw_sim_event_t *ev) {
  tw_rng_t *r = &p->rng;
  const model_t *m = &models[p->model];
  Twin__V1__LifecycleEvent *lc = lc_begin(f, p, TW_SRC_MES, TWIN__V1__LIFECYCLE_KIND__ORDERED, t, ev);
  plant_site(f, p, NULL);
  dealer_id(p, f->actor, sizeof f->actor);
  lc->actor = f->actor;
  lc->detail = "customer order";
  lc->model = (char *)m->name;
  const char *keys[5] = {"color", "trim", "drivetrain", "plant", "market"};
  const char *vals[5] = {colors[tw_rng_below(r, 6)], trims[tw_rng_below(r, 3)], m->drive, m->plant_name,
                         cities[p->dealer % N_CITIES].market};
  for (int i = 0; i < 5; i++) {
    f->attr[i].key = (char *)keys[i];
    f->attr[i].value = (char *)vals[i];
  }
  lc->n_attributes = 5;
  lc->attributes = f->attr_p;
  p->stage = TW_SIM_STAGE_ORDERED;
  p->phase = PH_BUILD_START;
  p->next_ms = t + rand_ms(r, 5 * DAY_MS, 30 * DAY_MS);
}

static void emit_production(tw_fleet_t *f, tw_sim_product_t *p, int64_t t, tw_sim_event_t *ev) {
  tw_rng_t *r = &p->rng;
  Twin__V1__LifecycleEvent *lc;
  snprintf(f->actor, sizeof f->actor, "OP-%04u", (unsigned)tw_rng_below(r, 9000) + 1000);
  switch (p->phase) {
  case PH_BUILD_START:
    lc = lc_begin(f, p, TW_SRC_MES, TWIN__V1__LIFECYCLE_KIND__BUILD_STARTED, t, ev);
    plant_site(f, p, "BIW");
    lc->actor = f->actor;
    lc->detail = "body shop start";
    p->stage = TW_SIM_STAGE_IN_PRODUCTION;
    p->phase = PH_STEP;
    p->sub = 0;
    p->next_ms = t + rand_ms(r, 6 * HOUR_MS, 48 * HOUR_MS);
    break;
  case PH_STEP:
    lc = lc_begin(f, p, TW_SRC_MES, TWIN__V1__LIFECYCLE_KIND__BUILD_STEP_COMPLETED, t, ev);
    plant_site(f, p, stations[p->sub]);
    lc->actor = f->actor;
    lc->detail = (char *)steps[p->sub];
    if (gates[p->sub]) {
      p->phase = PH_GATE;
      p->fails = 0;
      p->next_ms = t + rand_ms(r, 30 * MIN_MS, 2 * HOUR_MS);
    } else {
      p->sub++;
      p->next_ms = t + rand_ms(r, 6 * HOUR_MS, 48 * HOUR_MS);
    }
    break;
  case PH_GATE: {
    bool fail = p->fails < 2 && tw_rng_chance(r, 0.08);
    lc = lc_begin(f, p, TW_SRC_MES,
                  fail ? TWIN__V1__LIFECYCLE_KIND__QUALITY_GATE_FAILED
                       : TWIN__V1__LIFECYCLE_KIND__QUALITY_GATE_PASSED,
                  t, ev);
    plant_site(f, p, stations[p->sub]);
    snprintf(f->actor, sizeof f->actor, "INSP-%04u", (unsigned)tw_rng_below(r, 900) + 100);
    lc->actor = f->actor;
    if (fail) {
      snprintf(f->detail, sizeof f->detail, "%s: %s", gates[p->sub], defects[tw_rng_below(r, 5)]);
      p->fails++;
      p->next_ms = t + rand_ms(r, 3 * HOUR_MS, 30 * HOUR_MS); /* rework, then the gate again */
    } else {
      snprintf(f->detail, sizeof f->detail, "%s: passed%s", gates[p->sub], p->fails ? " after rework" : "");
      p->sub++;
      p->phase = p->sub == N_STEPS ? PH_BUILD_DONE : PH_STEP;
      p->next_ms = t + rand_ms(r, 1 * HOUR_MS, 8 * HOUR_MS);
    }
    lc->detail = f->detail;
    break;
  }
  case PH_BUILD_DONE:
    lc = lc_begin(f, p, TW_SRC_MES, TWIN__V1__LIFECYCLE_KIND__BUILD_COMPLETED, t, ev);
    plant_site(f, p, "EOL");
    lc->actor = f->actor;
    lc->detail = "end of line";
    p->stage = TW_SIM_STAGE_BUILT;
    p->phase = PH_SHIP;
    p->next_ms = t + rand_ms(r, 1 * DAY_MS, 5 * DAY_MS);
    break;
  }
  if (p->phase == PH_STEP && p->sub == N_STEPS) p->phase = PH_BUILD_DONE;
}

static void emit_logistics(tw_fleet_t *f, tw_sim_product_t *p, int64_t t, tw_sim_event_t *ev) {
  tw_rng_t *r = &p->rng;
  Twin__V1__LifecycleEvent *lc;
  const char *carrier = carriers[tw_rng_below(r, 3)];
  if (p->phase == PH_SHIP) {
    lc = lc_begin(f, p, TW_SRC_LOGISTICS, TWIN__V1__LIFECYCLE_KIND__SHIPPED, t, ev);
    plant_site(f, p, "YARD");
    lc->actor = (char *)carrier;
    snprintf(f->detail, sizeof f->detail, "truck to %s", cities[p->dealer % N_CITIES].name);
    lc->detail = f->detail;
    p->stage = TW_SIM_STAGE_IN_TRANSIT;
    p->phase = PH_ARRIVE;
    p->next_ms = t + rand_ms(r, 3 * DAY_MS, 21 * DAY_MS);
  } else {
    lc = lc_begin(f, p, TW_SRC_LOGISTICS, TWIN__V1__LIFECYCLE_KIND__ARRIVED_AT_DEALER, t, ev);
    dealer_id(p, f->site, sizeof f->site);
    lc->site = f->site;
    lc->actor = (char *)carrier;
    p->stage = TW_SIM_STAGE_AT_DEALER;
    p->phase = PH_DELIVER;
    p->next_ms = t + rand_ms(r, 2 * DAY_MS, 25 * DAY_MS);
  }
}

static void emit_delivered(tw_fleet_t *f, tw_sim_product_t *p, int64_t t, tw_sim_event_t *ev) {
  tw_rng_t *r = &p->rng;
  Twin__V1__LifecycleEvent *lc = lc_begin(f, p, TW_SRC_DMS, TWIN__V1__LIFECYCLE_KIND__DELIVERED, t, ev);
  dealer_id(p, f->site, sizeof f->site);
  lc->site = f->site;
  lc->actor = f->site;
  p->owner = (uint32_t)tw_rng_below(r, 90000000) + 10000000;
  tw_fleet_owner_id(p->owner, f->owner, sizeof f->owner);
  lc->owner_id = f->owner;
  p->odo = r1(tw_rng_range(r, 5, 40));
  lc_odometer(lc, p->odo);
  lc->detail = "handover to customer";
  p->stage = TW_SIM_STAGE_IN_SERVICE;
  p->phase = PH_SERVICE;
  p->delivered_ms = t;
  p->service_ms = t;
  p->km_at_service = p->odo;
  p->last_tel_ms = t;
  /* firmware installed at the plant: newer for later builds */
  int64_t since = t - f->o.start_ms;
  int fw = since > 0 ? (int)(since / (120 * DAY_MS)) : 0;
  p->fw = (uint8_t)(fw < N_FW - 1 ? fw : N_FW - 1);
  p->force_pads = true;
  p->next_ms = t + rand_ms(r, 1 * HOUR_MS, 24 * HOUR_MS);
}

/* ---- In service ------------------------------------------------------------------- */

static double min4(const double *v) {
  double m = v[0];
  for (int i = 1; i < 4; i++)
    if (v[i] < m) m = v[i];
  return m;
}

static void emit_telemetry(tw_fleet_t *f, tw_sim_product_t *p, int64_t t, tw_sim_event_t *ev) {
  tw_rng_t *r = &p->rng;
  Twin__V1__Telemetry *tm = &f->tel;
  const model_t *m = &models[p->model];
  double dt_days = (double)(t - p->last_tel_ms) / (double)DAY_MS;
  bool first = p->last_tel_ms == p->delivered_ms;
  p->last_tel_ms = t;

  twin__v1__envelope__init(&f->env);
  twin__v1__telemetry__init(tm);
  f->env.product_id = p->vin;
  f->env.source = (char *)tw_sim_src_names[TW_SRC_TCU];
  f->env.seq = ++p->seq[TW_SRC_TCU];
  f->env.event_time_ms = t;
  f->env.payload_case = TWIN__V1__ENVELOPE__PAYLOAD_TELEMETRY;
  f->env.telemetry = tm;
  memset(ev, 0, sizeof *ev);
  ev->src = TW_SRC_TCU;
  ev->topic = TW_SIM_TOPIC_TELEMETRY;
  ev->telemetry = true;

  /* driving since the last sample: distance, wear, ageing */
  double dist = p->daily_km * dt_days * tw_rng_range(r, 0.4, 1.6);
  p->odo += dist;
  p->pads[0] = fmax(1.0, p->pads[0] - dist * p->wear_front * tw_rng_range(r, 0.95, 1.05));
  p->pads[1] = fmax(1.0, p->pads[1] - dist * p->wear_front * tw_rng_range(r, 0.95, 1.05));
  p->pads[2] = fmax(1.0, p->pads[2] - dist * p->wear_rear * tw_rng_range(r, 0.95, 1.05));
  p->pads[3] = fmax(1.0, p->pads[3] - dist * p->wear_rear * tw_rng_range(r, 0.95, 1.05));
  p->soh = fmax(60.0, p->soh - dt_days * tw_rng_range(r, 1.0, 3.0) / 365.0 -
                          dist * 1e-5 * tw_rng_range(r, 0.5, 1.5));
  p->soc += tw_rng_range(r, -35, 20);
  if (p->soc < 12) p->soc = tw_rng_range(r, 70, 100);
  p->soc = clampd(p->soc, 5, 100);

  bool moving = tw_rng_chance(r, 0.65);
  int doy = (int)((t / DAY_MS) % 365);
  double ambient = 23.0 - 26.0 * fabs((double)doy - 200.0) / 182.5 + tw_rng_range(r, -4, 4);

  tm->_odometer_km_case = TWIN__V1__TELEMETRY___ODOMETER_KM_ODOMETER_KM;
  tm->odometer_km = r1(p->odo);
  tm->_speed_kph_case = TWIN__V1__TELEMETRY___SPEED_KPH_SPEED_KPH;
  tm->speed_kph = moving ? r1(tw_rng_range(r, 8, 135)) : 0.0;
  tm->_battery_soc_pct_case = TWIN__V1__TELEMETRY___BATTERY_SOC_PCT_BATTERY_SOC_PCT;
  tm->battery_soc_pct = r1(p->soc);
  tm->_battery_soh_pct_case = TWIN__V1__TELEMETRY___BATTERY_SOH_PCT_BATTERY_SOH_PCT;
  tm->battery_soh_pct = r2(p->soh);
  tm->_battery_temp_c_case = TWIN__V1__TELEMETRY___BATTERY_TEMP_C_BATTERY_TEMP_C;
  tm->battery_temp_c = r1(ambient + (moving ? tw_rng_range(r, 8, 18) : tw_rng_range(r, 0, 6)));
  tm->_latitude_case = TWIN__V1__TELEMETRY___LATITUDE_LATITUDE;
  tm->latitude = floor((p->home_lat + tw_rng_range(r, -0.3, 0.3)) * 1e5 + 0.5) / 1e5;
  tm->_longitude_case = TWIN__V1__TELEMETRY___LONGITUDE_LONGITUDE;
  tm->longitude = floor((p->home_lon + tw_rng_range(r, -0.45, 0.45)) * 1e5 + 0.5) / 1e5;
  tm->_ambient_temp_c_case = TWIN__V1__TELEMETRY___AMBIENT_TEMP_C_AMBIENT_TEMP_C;
  tm->ambient_temp_c = r1(ambient);
  tm->_aux_battery_v_case = TWIN__V1__TELEMETRY___AUX_BATTERY_V_AUX_BATTERY_V;
  tm->aux_battery_v = r2(tw_rng_range(r, 12.2, 14.4));
  tm->_range_km_case = TWIN__V1__TELEMETRY___RANGE_KM_RANGE_KM;
  tm->range_km = r1(m->range_km * p->soc / 100.0 * p->soh / 100.0);
  if (m->drive[0] == 'p') {
    tm->_fuel_level_pct_case = TWIN__V1__TELEMETRY___FUEL_LEVEL_PCT_FUEL_LEVEL_PCT;
    tm->fuel_level_pct = r1(tw_rng_range(r, 8, 100));
  }

  if (first || tw_rng_chance(r, 0.5)) {
    bool flat = tw_rng_chance(r, 0.01);
    int flat_wheel = (int)tw_rng_below(r, 4);
    for (int i = 0; i < 4; i++)
      f->tires[i] =
          r1(flat && i == flat_wheel ? tw_rng_range(r, 150, 195) : p->tire_base + tw_rng_range(r, -6, 6));
    tm->n_tire_pressure_kpa = 4;
    tm->tire_pressure_kpa = f->tires;
  }
  if (p->force_pads || tw_rng_chance(r, 0.5)) {
    for (int i = 0; i < 4; i++) f->pads[i] = r2(p->pads[i]);
    tm->n_brake_pad_mm = 4;
    tm->brake_pad_mm = f->pads;
    p->force_pads = false;
    ev->has_pads = true;
    ev->min_pad = min4(f->pads);
  }

  /* DTCs: a code now and then; cleared at the next visit or by itself */
  uint16_t before = p->dtc_mask;
  if (tw_rng_chance(r, 0.03)) p->dtc_mask |= (uint16_t)(1u << tw_rng_below(r, N_DTC_USED));
  if (p->dtc_mask && tw_rng_chance(r, 0.2)) {
    if (tw_rng_chance(r, 0.5))
      p->dtc_mask = 0;
    else
      p->dtc_mask &= (uint16_t)(p->dtc_mask - 1); /* clear the lowest code */
  }
  if (first || p->dtc_mask != before || tw_rng_chance(r, 0.08)) {
    size_t n = 0;
    for (int i = 0; i < 16; i++)
      if (p->dtc_mask & (1u << i)) f->dtc_p[n++] = (char *)dtcs[i];
    tm->n_dtc_codes = n;
    tm->dtc_codes = n ? f->dtc_p : NULL;
    tm->dtc_codes_reported = 1;
    ev->dtc_reported = true;
    ev->dtc_mask = p->dtc_mask;
  }

  /* firmware: over-the-air updates every half year or so */
  bool fw_changed = false;
  if (p->fw < N_FW - 1 && tw_rng_chance(r, dt_days / 180.0)) {
    p->fw++;
    fw_changed = true;
  }
  if (first || fw_changed || tw_rng_chance(r, 0.05)) {
    tm->_firmware_version_case = TWIN__V1__TELEMETRY___FIRMWARE_VERSION_FIRMWARE_VERSION;
    tm->firmware_version = (char *)firmwares[p->fw];
  }

  f->metric[0].key = "coolant_temp_c";
  f->metric[0].value = r1(moving ? tw_rng_range(r, 55, 92) : ambient + tw_rng_range(r, 0, 10));
  f->metric[1].key = "cabin_temp_c";
  f->metric[1].value = r1(moving ? tw_rng_range(r, 19, 24) : ambient + tw_rng_range(r, -2, 8));
  tm->n_metrics = 2;
  tm->metrics = f->metric_p;

  ev->has_odo = true;
  ev->odo = tm->odometer_km;
}

/* Decides what lifecycle event, if any, follows the sample just taken. */
static void decide_pending(tw_fleet_t *f, tw_sim_product_t *p, int64_t t) {
  tw_rng_t *r = &p->rng;
  double per = (double)f->o.interval_ms / (double)YEAR_MS; /* years per sample */
  p->pending = PEND_NONE;
  bool svc_due = p->odo - p->km_at_service >= p->service_km || t - p->service_ms >= 365 * DAY_MS;
  uint32_t bucket = (uint32_t)(t / (45 * DAY_MS));
  double u = tw_rng_unit(r);
  if (svc_due)
    p->pending = PEND_SERVICE;
  else if (u < per * 0.4 && p->n_recalls < TW_SIM_MAX_RECALLS && bucket > p->last_recall_bucket)
    p->pending = PEND_RECALL;
  else if ((u -= per * 0.4) < per * 0.2 && t - p->delivered_ms < 4 * YEAR_MS)
    p->pending = PEND_WARRANTY;
  else if ((u -= per * 0.2) < per * 0.12)
    p->pending = PEND_TRANSFER;
  else if ((u -= per * 0.12) < per * (double)YEAR_MS / (double)f->o.span_ms * 0.06)
    p->pending = PEND_DECOM;
}

static void emit_pending(tw_fleet_t *f, tw_sim_product_t *p, int64_t t, tw_sim_event_t *ev) {
  tw_rng_t *r = &p->rng;
  Twin__V1__LifecycleEvent *lc;
  switch (p->pending) {
  case PEND_SERVICE: {
    lc = lc_begin(f, p, TW_SRC_DMS, TWIN__V1__LIFECYCLE_KIND__SERVICE_VISIT, t, ev);
    dealer_id(p, f->site, sizeof f->site);
    lc->site = f->site;
    snprintf(f->actor, sizeof f->actor, "TECH-%04u", (unsigned)tw_rng_below(r, 9000) + 1000);
    lc->actor = f->actor;
    p->service_n++;
    p->last_wo = (uint32_t)tw_rng_below(r, 9000000) + 1000000;
    tw_fleet_work_order(p, p->last_wo, f->wo, sizeof f->wo);
    lc->work_order = f->wo;
    lc_odometer(lc, p->odo);
    size_t n = 0;
    f->parts_p[n++] = "cabin_air_filter";
    if (p->service_n % 2 == 0) f->parts_p[n++] = "brake_fluid";
    if (models[p->model].drive[0] == 'p') {
      f->parts_p[n++] = "engine_oil";
      f->parts_p[n++] = "oil_filter";
    }
    bool brakes = false;
    if (fmin(p->pads[0], p->pads[1]) < 4.0) {
      f->parts_p[n++] = "brake_pad_front";
      p->pads[0] = tw_rng_range(r, 11.8, 12.2);
      p->pads[1] = tw_rng_range(r, 11.8, 12.2);
      brakes = true;
    }
    if (fmin(p->pads[2], p->pads[3]) < 4.0) {
      f->parts_p[n++] = "brake_pad_rear";
      p->pads[2] = tw_rng_range(r, 11.8, 12.2);
      p->pads[3] = tw_rng_range(r, 11.8, 12.2);
      brakes = true;
    }
    lc->n_parts_replaced = n;
    lc->parts_replaced = f->parts_p;
    lc->detail = brakes ? "scheduled service with brake pad replacement" : "scheduled service";
    p->km_at_service = p->odo;
    p->service_ms = t;
    p->service_km = tw_rng_range(r, 13500, 16500);
    p->force_pads = true;
    break;
  }
  case PEND_WARRANTY:
    lc = lc_begin(f, p, TW_SRC_DMS, TWIN__V1__LIFECYCLE_KIND__WARRANTY_CLAIM, t, ev);
    dealer_id(p, f->site, sizeof f->site);
    lc->site = f->site;
    lc->actor = f->site;
    snprintf(f->wo, sizeof f->wo, "WC-%08u", (unsigned)tw_rng_below(r, 90000000) + 10000000);
    lc->work_order = f->wo;
    lc->detail = (char *)claims[tw_rng_below(r, 6)];
    lc_odometer(lc, p->odo);
    break;
  case PEND_RECALL: {
    uint32_t bucket = (uint32_t)(t / (45 * DAY_MS));
    uint32_t code = bucket * 8 + p->model;
    lc = lc_begin(f, p, TW_SRC_OEM, TWIN__V1__LIFECYCLE_KIND__RECALL_ISSUED, t, ev);
    tw_fleet_recall_id(code, f->recall, sizeof f->recall);
    lc->recall_id = f->recall;
    lc->site = "OEM-QUALITY";
    lc->actor = "oem-recall-board";
    lc->detail = "safety recall campaign";
    p->recall_code[p->n_recalls] = code;
    p->recall_due[p->n_recalls] = tw_rng_chance(r, 0.85) ? t + rand_ms(r, 14 * DAY_MS, 150 * DAY_MS) : 0;
    p->n_recalls++;
    p->last_recall_bucket = bucket;
    break;
  }
  case PEND_TRANSFER:
    lc = lc_begin(f, p, TW_SRC_CRM, TWIN__V1__LIFECYCLE_KIND__OWNERSHIP_TRANSFERRED, t, ev);
    p->owner = (uint32_t)tw_rng_below(r, 90000000) + 10000000;
    tw_fleet_owner_id(p->owner, f->owner, sizeof f->owner);
    lc->owner_id = f->owner;
    lc->actor = "crm";
    lc->detail = (char *)transfers[tw_rng_below(r, 4)];
    lc_odometer(lc, p->odo);
    break;
  case PEND_DECOM:
    lc = lc_begin(f, p, TW_SRC_CRM, TWIN__V1__LIFECYCLE_KIND__DECOMMISSIONED, t, ev);
    lc->actor = "crm";
    lc->detail = (char *)decoms[tw_rng_below(r, 3)];
    lc_odometer(lc, p->odo);
    p->stage = TW_SIM_STAGE_DECOMMISSIONED;
    p->phase = PH_DONE;
    p->in_heap = false;
    break;
  }
  p->pending = PEND_NONE;
}

static void emit_recall_done(tw_fleet_t *f, tw_sim_product_t *p, int i, int64_t t, tw_sim_event_t *ev) {
  tw_rng_t *r = &p->rng;
  Twin__V1__LifecycleEvent *lc =
      lc_begin(f, p, TW_SRC_DMS, TWIN__V1__LIFECYCLE_KIND__RECALL_COMPLETED, t, ev);
  tw_fleet_recall_id(p->recall_code[i], f->recall, sizeof f->recall);
  lc->recall_id = f->recall;
  dealer_id(p, f->site, sizeof f->site);
  lc->site = f->site;
  snprintf(f->actor, sizeof f->actor, "TECH-%04u", (unsigned)tw_rng_below(r, 9000) + 1000);
  lc->actor = f->actor;
  snprintf(f->wo, sizeof f->wo, "RW-%07u", (unsigned)tw_rng_below(r, 9000000) + 1000000);
  lc->work_order = f->wo;
  lc->detail = "recall remedy applied";
  lc_odometer(lc, p->odo);
  for (int j = i; j + 1 < p->n_recalls; j++) {
    p->recall_code[j] = p->recall_code[j + 1];
    p->recall_due[j] = p->recall_due[j + 1];
  }
  p->n_recalls--;
}

static void emit_in_service(tw_fleet_t *f, tw_sim_product_t *p, int64_t t, tw_sim_event_t *ev) {
  tw_rng_t *r = &p->rng;
  if (p->pending) {
    emit_pending(f, p, t, ev);
    p->next_ms = t + rand_ms(r, 10 * MIN_MS, 6 * HOUR_MS);
    return;
  }
  for (int i = 0; i < p->n_recalls; i++) {
    if (p->recall_due[i] && p->recall_due[i] <= t) {
      emit_recall_done(f, p, i, t, ev);
      p->next_ms = t + rand_ms(r, 1 * HOUR_MS, 12 * HOUR_MS);
      return;
    }
  }
  emit_telemetry(f, p, t, ev);
  decide_pending(f, p, t);
  int64_t iv = f->o.interval_ms;
  p->next_ms = p->pending ? t + rand_ms(r, 30 * MIN_MS, 20 * HOUR_MS) : t + rand_ms(r, iv / 2, iv + iv / 2);
}

const Twin__V1__Envelope *tw_fleet_next(tw_fleet_t *f, tw_sim_product_t *p, tw_sim_event_t *ev) {
  int64_t t = p->next_ms;
  switch (p->phase) {
  case PH_ORDER: emit_ordered(f, p, t, ev); break;
  case PH_BUILD_START:
  case PH_STEP:
  case PH_GATE:
  case PH_BUILD_DONE: emit_production(f, p, t, ev); break;
  case PH_SHIP:
  case PH_ARRIVE: emit_logistics(f, p, t, ev); break;
  case PH_DELIVER: emit_delivered(f, p, t, ev); break;
  default: emit_in_service(f, p, t, ev); break;
  }
  if (p->in_heap && p->next_ms <= t) p->next_ms = t + 1;
  return &f->env;
}

/* ---- Impossible events ------------------------------------------------------------ */

const Twin__V1__Envelope *tw_fleet_invalid(tw_fleet_t *f, tw_sim_product_t *p, int64_t now_ms,
                                           uint64_t choice, tw_sim_event_t *ev) {
  Twin__V1__LifecycleEvent *lc;
  bool early = p->stage == TW_SIM_STAGE_ORDERED || p->stage == TW_SIM_STAGE_IN_PRODUCTION ||
               p->stage == TW_SIM_STAGE_BUILT;
  if (p->stage == TW_SIM_STAGE_DECOMMISSIONED) {
    if (choice & 1) {
      lc = lc_begin(f, p, TW_SRC_CRM, TWIN__V1__LIFECYCLE_KIND__OWNERSHIP_TRANSFERRED, now_ms, ev);
      tw_fleet_owner_id((uint32_t)((choice >> 8) % 90000000) + 10000000, f->owner, sizeof f->owner);
      lc->owner_id = f->owner;
      lc->actor = "crm";
      lc->detail = "sale of a decommissioned vehicle";
    } else {
      lc = lc_begin(f, p, TW_SRC_DMS, TWIN__V1__LIFECYCLE_KIND__SERVICE_VISIT, now_ms, ev);
      dealer_id(p, f->site, sizeof f->site);
      lc->site = f->site;
      snprintf(f->wo, sizeof f->wo, "WO-%04u-%07u", (unsigned)p->dealer + 1,
               (unsigned)((choice >> 8) % 9000000) + 1000000);
      lc->work_order = f->wo;
      lc->detail = "service after decommissioning";
      lc_odometer(lc, p->odo);
    }
  } else if (early && (choice & 1)) {
    lc = lc_begin(f, p, TW_SRC_DMS, TWIN__V1__LIFECYCLE_KIND__DELIVERED, now_ms, ev);
    dealer_id(p, f->site, sizeof f->site);
    lc->site = f->site;
    lc->actor = f->site;
    tw_fleet_owner_id((uint32_t)((choice >> 8) % 90000000) + 10000000, f->owner, sizeof f->owner);
    lc->owner_id = f->owner;
    lc->detail = "handover before the vehicle was built";
  } else {
    /* bucket 0 (1970) is never issued */
    lc = lc_begin(f, p, TW_SRC_DMS, TWIN__V1__LIFECYCLE_KIND__RECALL_COMPLETED, now_ms, ev);
    tw_fleet_recall_id((uint32_t)p->model, f->recall, sizeof f->recall);
    lc->recall_id = f->recall;
    dealer_id(p, f->site, sizeof f->site);
    lc->site = f->site;
    lc->detail = "remedy for a recall that was never issued";
  }
  return &f->env;
}
