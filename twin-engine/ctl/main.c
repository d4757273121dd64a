/* twinctl - look twins up in MongoDB, for people and scripts.
 *
 * Reads the `twins` and `checkpoints` collections directly (--mongo-uri),
 * so it works whether or not an engine runs, and never writes to them
 * (export takes a short lease in `fence`; see core/store.h).
 * This file dispatches the commands and prints the top-level help; each
 * command lives in its own file (see ctl.h). */
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "twin/log.h"

static const char usage_text[] =
    "usage: twinctl [--mongo-uri URI] [--database DB] COMMAND [options]\n"
    "\n"
    "Reads the digital twins twin-engine keeps in MongoDB (collection `twins`, one document per\n"
    "product; schemas/twin.schema.json) and never writes to them (export takes a short lease in\n"
    "`fence` so that it reads one consistent point while engines run).\n"
    "\n"
    "commands:\n"
    "  get ID               one twin: identity, stage, owner, telemetry with units, brake pads, tire\n"
    "                       pressures, DTCs, open recalls, last service, active alerts, counters\n"
    "  list                 twins matching filters (stage, owner, site, alert, recall, DTC, brake pad),\n"
    "                       sorted by product id, a page at a time (--limit, --after)\n"
    "  timeline ID          a twin's lifecycle history, oldest first, rejected events marked\n"
    "  export               every matching twin to a file: NDJSON or CSV, optionally zstd, plus\n"
    "                       FILE.meta.json with the checkpoint offsets the export corresponds to\n"
    "  alerts               the maintenance alerts on the alerts topic, decoded (reads Kafka)\n"
    "\n"
    "Tables are for people; --json prints relaxed extended JSON, one document per line, for scripts.\n"
    "`twinctl COMMAND --help` describes a command. Options take a value as `--name VALUE` or\n"
    "`--name=VALUE` (needed for a value that starts with --).\n"
    "\n"
    "connection (before or after the command):\n" CTL_DB_HELP "\n"
    "examples:\n"
    "  twinctl get W1TCI1H28T86CR0A6\n"
    "  twinctl list --stage IN_SERVICE --alert brake_pad_low\n"
    "  twinctl timeline W1TCI1H28T86CR0A6 --json\n"
    "  twinctl export --format csv --out fleet.csv.zst --compress zstd\n"
    "\n"
    "Exit status: 0 done, 1 not found or a MongoDB / file error, 2 bad usage.\n";

typedef struct {
  const char *name;
  int (*run)(ctl_db_t *db, int argc, char **argv);
} command_t;

static const command_t commands[] = {
    {"get", ctl_cmd_get},       {"list", ctl_cmd_list},     {"timeline", ctl_cmd_timeline},
    {"export", ctl_cmd_export}, {"alerts", ctl_cmd_alerts},
};

int main(int argc, char **argv) {
  ctl_db_t db;
  ctl_db_init(&db);
  ctl_opts_t global = {0};
  ctl_opts_db(&global, &db);

  /* Connection options may come before the command. */
  int i = 1;
  while (i < argc && argv[i][0] == '-') {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage_text, stdout);
      return CTL_OK;
    }
    /* One option (and its value) at a time, through the common parser. */
    int take = strchr(a, '=') || i + 1 >= argc ? 1 : 2;
    const char *pos[1];
    int n_pos;
    if (ctl_parse("", take, argv + i, &global, pos, 0, &n_pos) != CTL_PARSE_OK) return CTL_USAGE;
    i += take;
  }
  if (i >= argc) {
    fputs(usage_text, stderr);
    return CTL_USAGE;
  }
  const char *cmd = argv[i];
  for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++) {
    if (strcmp(cmd, commands[k].name) != 0) continue;
    mongoc_init();
    tw_log_route_mongoc();
    tw_log_set_level(TW_LOG_ERROR);
    int rc = commands[k].run(&db, argc - i - 1, argv + i + 1);
    mongoc_cleanup();
    return rc;
  }
  fprintf(stderr, "twinctl: unknown command '%s': expected get, list, timeline, export or alerts\n", cmd);
  fprintf(stderr, "Run 'twinctl --help' for usage.\n");
  return CTL_USAGE;
}
