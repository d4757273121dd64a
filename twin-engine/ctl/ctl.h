/* ctl.h - what the twinctl source files share; internal to twinctl.
 *
 * twinctl only reads MongoDB: nothing here writes to `twins` or
 * `checkpoints`. One command per file: main.c (dispatch, top-level help),
 * args.c (option parsing and validation, the filters list and export share),
 * db.c (connection, fetching one twin), doc.c (reading fields of a snapshot
 * document, times, numbers, tables), show.c (get, timeline), list.c (list),
 * export.c (export), alerts.c (the alerts topic, from Kafka). Single-threaded. */
#ifndef TWINCTL_CTL_H
#define TWINCTL_CTL_H

#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes. */
enum { CTL_OK = 0, CTL_FAIL = 1, CTL_USAGE = 2 };

/* ---- Options ----------------------------------------------------------------- */

typedef enum {
  CTL_OPT_FLAG,   /* bool *dst, no value */
  CTL_OPT_STR,    /* const char **dst: non-empty, valid UTF-8 */
  CTL_OPT_INT,    /* int64_t *dst, in [min, max] */
  CTL_OPT_NUM,    /* double *dst, finite, in [min, max] */
  CTL_OPT_CHOICE, /* const char **dst, one of choices */
} ctl_opt_kind_t;

typedef struct {
  const char *name; /* "--limit" */
  ctl_opt_kind_t kind;
  void *dst;
  double min, max;
  const char *const *choices; /* NULL-terminated */
} ctl_opt_t;

/* A command's options, built with ctl_opt() and the ctl_opts_* helpers. */
#define CTL_OPTS_MAX 32
typedef struct {
  ctl_opt_t v[CTL_OPTS_MAX];
  int n;
} ctl_opts_t;

void ctl_opt(ctl_opts_t *o, const char *name, ctl_opt_kind_t kind, void *dst, double min, double max,
             const char *const *choices);

typedef enum { CTL_PARSE_OK, CTL_PARSE_HELP, CTL_PARSE_ERROR } ctl_parse_t;

/* Parses argv[0..argc) of command cmd ("" before the command): `--name
 * VALUE`, `--name=VALUE`, `--help`, and up to max_pos positional arguments
 * (`--` ends the options). On an error prints "twinctl CMD: ..." naming
 * the option and what is allowed to stderr. */
ctl_parse_t ctl_parse(const char *cmd, int argc, char **argv, const ctl_opts_t *opts, const char **pos,
                      int max_pos, int *n_pos);
/* Prints "twinctl CMD: <message>" and a pointer to --help on stderr; returns CTL_USAGE. */
int ctl_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "twinctl: <message>" on stderr; returns CTL_FAIL. */
int ctl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The stage names, "NONE" .. "DECOMMISSIONED", NULL-terminated. */
const char *const *ctl_stage_names(void);

/* ---- Connection -------------------------------------------------------------- */

typedef struct {
  const char *uri; /* never printed: it may hold a password */
  const char *database;
  mongoc_client_t *client;
  mongoc_uri_t *muri;
  mongoc_collection_t *twins, *checkpoints;
} ctl_db_t;

/* Defaults from $TWIN_MONGO_URI / $TWIN_MONGO_DATABASE. */
void ctl_db_init(ctl_db_t *db);
/* Adds --mongo-uri and --database, which every command takes. */
void ctl_opts_db(ctl_opts_t *o, ctl_db_t *db);
#define CTL_DB_HELP                                                                                    \
  "  --mongo-uri URI      MongoDB connection string (default $TWIN_MONGO_URI, else\n"                  \
  "                       mongodb://127.0.0.1:27017)\n"                                                \
  "  --database DB        database holding `twins` and `checkpoints` (default $TWIN_MONGO_DATABASE,\n" \
  "                       else twin)\n"
/* Creates the client; CTL_USAGE for a bad URI (message printed). */
int ctl_db_open(ctl_db_t *db, const char *cmd);
void ctl_db_close(ctl_db_t *db);
/* Fetches twin id into *doc (caller destroys). CTL_FAIL with a message
 * when there is none or MongoDB fails. */
int ctl_db_get_twin(ctl_db_t *db, const char *id, bson_t **doc);

/* ---- Filters (list, export) ---------------------------------------------------- */

typedef struct {
  const char *stage, *owner, *site, *alert, *recall, *dtc;
  double brake_below; /* NAN = not given */
} ctl_filter_t;

void ctl_filter_init(ctl_filter_t *f);
/* Appends the MongoDB query for f to q. Values only ever become BSON
 * values, never operators or field names. */
void ctl_filter_to_bson(const ctl_filter_t *f, bson_t *q);
/* Adds --stage, --owner, --site, --alert, --recall, --dtc, --brake-below. */
void ctl_opts_filter(ctl_opts_t *o, ctl_filter_t *f);
#define CTL_FILTER_HELP                                                                                   \
  "filters (all given must hold; values match exactly, case-sensitive):\n"                                \
  "  --stage STAGE        lifecycle stage: NONE, ORDERED, IN_PRODUCTION, BUILT, IN_TRANSIT, AT_DEALER,\n" \
  "                       IN_SERVICE, DECOMMISSIONED\n"                                                   \
  "  --owner ID           current owner (e.g. CUST-53186078)\n"                                           \
  "  --site SITE          the product has a lifecycle event recorded at SITE, any entry of its\n"         \
  "                       timeline: a plant station (PLT-RGB-EOL), a dealer or workshop (DLR-0040)\n"     \
  "                       for orders, deliveries, service visits and claims, OEM-QUALITY for recalls\n"   \
  "  --alert RULE         has an active maintenance alert of RULE (e.g. brake_pad_low)\n"                 \
  "  --recall ID          has recall ID open (issued, not completed)\n"                                   \
  "  --dtc CODE           has diagnostic trouble code CODE active (e.g. P0A80)\n"                         \
  "  --brake-below MM     thinnest brake pad below MM millimetres (0..1000)\n"

/* ---- Reading snapshot documents ----------------------------------------------- */

/* Finds a dotted path ("telemetry.odometer_km.value"); false if absent. */
bool ctl_find(const bson_t *doc, const char *path, bson_iter_t *it);
/* The string at path, or NULL when absent or not a string (points into doc). */
const char *ctl_str(const bson_t *doc, const char *path);
/* A number (double, int32, int64) at path / under it. */
bool ctl_num(const bson_t *doc, const char *path, double *out);
bool ctl_iter_num(const bson_iter_t *it, double *out);
/* Milliseconds since the epoch from an integer or a BSON date. */
bool ctl_iter_ms(const bson_iter_t *it, int64_t *ms);
bool ctl_ms(const bson_t *doc, const char *path, int64_t *ms);
/* Elements of the array at path; 0 when absent or not an array. */
uint32_t ctl_array_len(const bson_t *doc, const char *path);
/* Appends the string elements of the array at path, separated by sep. */
void ctl_append_joined(bson_string_t *s, const bson_t *doc, const char *path, const char *sep);
/* The numbers of the array at path into v[0..cap); returns how many. */
uint32_t ctl_numbers(const bson_t *doc, const char *path, double *v, uint32_t cap);

/* ISO-8601 UTC: 2025-02-21T11:40:20Z, or with millis 2025-02-21T11:40:20.406Z. */
void ctl_fmt_time(char *buf, size_t cap, int64_t ms, bool millis);
/* The shortest text that reads back as the same double ("88.94", not 88.939999). */
void ctl_fmt_double(char *buf, size_t cap, double v);
/* A wheel's label in tire_pressure_kpa / brake_pad_mm order: FL FR RL RR W5 ... */
void ctl_wheel_label(char *buf, size_t cap, uint32_t i);
/* Severity as text whether stored as a name or as the proto enum number. */
const char *ctl_severity(const bson_iter_t *it, char *buf, size_t cap);

/* ---- Tables -------------------------------------------------------------------- */

/* Column-aligned text; cells are copied. The last column is not padded. */
typedef struct {
  uint32_t ncols;
  const char *const *heads;
  uint32_t right_mask; /* bit i set: column i right-aligned (numbers) */
  const char *empty;   /* shown for a NULL or "" cell: "-" unless changed after init */
  int indent;          /* spaces before each line: 0 unless changed after init */
  char **cells;        /* owned, row-major */
  size_t nrows, cap;
} ctl_table_t;

void ctl_table_init(ctl_table_t *t, uint32_t ncols, const char *const *heads, uint32_t right_mask);
/* Adds a row of ncols cells. */
void ctl_table_add(ctl_table_t *t, const char *const *cells);
void ctl_table_print(const ctl_table_t *t, FILE *out);
void ctl_table_cleanup(ctl_table_t *t);

/* ---- Commands ------------------------------------------------------------------ */

/* argv[0] is the first argument after the command name; db holds the
 * connection options given before the command (the command's own
 * --mongo-uri / --database override them). Each returns an exit code. */
int ctl_cmd_get(ctl_db_t *db, int argc, char **argv);
int ctl_cmd_timeline(ctl_db_t *db, int argc, char **argv);
int ctl_cmd_list(ctl_db_t *db, int argc, char **argv);
int ctl_cmd_export(ctl_db_t *db, int argc, char **argv);
/* Reads Kafka (the alerts topic), not MongoDB. */
int ctl_cmd_alerts(ctl_db_t *db, int argc, char **argv);

#endif
