/* http.c - placeholder: serves nothing yet; the libmicrohttpd server replaces it (issue 5). */
#include "http.h"

#include <stdlib.h>

struct tw_http {
  int unused;
};

tw_http_t *tw_http_start(const tw_config_t *cfg, const tw_http_engine_t *engine, char *err, size_t err_cap) {
  (void)cfg;
  (void)engine;
  (void)err;
  (void)err_cap;
  return calloc(1, sizeof(tw_http_t));
}

void tw_http_stop(tw_http_t *h) { free(h); }
