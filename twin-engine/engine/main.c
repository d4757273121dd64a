/* main.c - the twin-engine command line: load and check the configuration,
 * set up logging and signals, and run the engine (engine.c). */
#include <mongoc/mongoc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "twin/config.h"
#include "twin/log.h"

extern char **environ;

#if TWIN_ENGINE_JEMALLOC
/* jemalloc's options built in (MALLOC_CONF in the environment still wins).
 * oversize_threshold:0 - no separate arena for allocations of 8 MiB and up.
 * That arena hands freed memory back to the kernel at once, and librdkafka's
 * fetch responses (up to 1 MiB per partition, a dozen partitions a request)
 * are such allocations: every response faulted its pages in afresh, half of
 * the engine's page faults on a backlog and 4 % of its CPU time, in
 * librdkafka's fetch thread (README, Benchmarks). */
const char *malloc_conf = "oversize_threshold:0";
#endif

static void usage(FILE *out) {
  fprintf(out, "usage: twin-engine run [--config FILE] [--set KEY=VALUE]...\n"
               "       twin-engine check-config [--config FILE] [--set KEY=VALUE]...\n"
               "       twin-engine --help-config | --version | --help\n"
               "\n"
               "Consumes protobuf twin.v1.Envelope events from Kafka, keeps one twin per product,\n"
               "and persists snapshots to MongoDB. Settings come from defaults, the YAML file\n"
               "(--config or TWIN_CONFIG), TWIN_<KEY> environment variables and --set, later wins.\n");
}

static void on_signal(int sig) {
  (void)sig;
  tw_engine_request_stop();
}

int main(int argc, char **argv) {
  /* First thing: a stop request that arrives while starting is honoured
   * (the engine then stops cleanly) instead of killing the process. */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(cmd, "--help-config") == 0) {
    tw_config_help(stdout);
    return 0;
  }
  if (strcmp(cmd, "--version") == 0) {
    printf("twin-engine 0.1.0\n");
    return 0;
  }
  if (strcmp(cmd, "run") != 0 && strcmp(cmd, "check-config") != 0) {
    fprintf(stderr, "twin-engine: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
  }

  tw_config_t cfg;
  char err[1024];
  tw_config_init(&cfg);
  const char *file = getenv("TWIN_CONFIG");
  /* --config first, wherever it stands, so --set always wins over the file. */
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) file = argv[++i];
  }
  bool ok = true;
  if (file && *file) ok = tw_config_load_yaml(&cfg, file, err, sizeof err);
  if (ok) ok = tw_config_load_env(&cfg, environ, err, sizeof err);
  for (int i = 2; ok && i < argc; i++) {
    if (strcmp(argv[i], "--config") == 0) {
      i++;
    } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
      char *kv = argv[++i];
      char *eq = strchr(kv, '=');
      if (!eq) {
        snprintf(err, sizeof err, "--set %s: expected KEY=VALUE", kv);
        ok = false;
        break;
      }
      *eq = '\0';
      ok = tw_config_set(&cfg, kv, eq + 1, "--set", err, sizeof err);
      *eq = '=';
    } else {
      snprintf(err, sizeof err, "unknown argument '%s'", argv[i]);
      ok = false;
    }
  }
  if (ok) ok = tw_config_validate(&cfg, err, sizeof err);
  if (!ok) {
    fprintf(stderr, "twin-engine: configuration error: %s\n", err);
    tw_config_cleanup(&cfg);
    return 2;
  }
  tw_log_level_t lvl;
  tw_log_level_parse(cfg.log_level, &lvl);
  tw_log_set_level(lvl);
  tw_log_set_json(strcmp(cfg.log_format, "json") == 0);

  if (strcmp(cmd, "check-config") == 0) {
    tw_config_dump(&cfg, stdout);
    tw_config_cleanup(&cfg);
    return 0;
  }

  mongoc_init();
  tw_log_route_mongoc();
  int rc = tw_engine_run(&cfg);
  tw_config_cleanup(&cfg);
  mongoc_cleanup();
  return rc;
}
