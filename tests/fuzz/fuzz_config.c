/* fuzz_config.c - libFuzzer target for the configuration parser: bytes as
 * the text of a YAML config file -> tw_config_load_yaml() ->
 * tw_config_validate() (which compiles alerts.rules) -> tw_config_dump().
 * Every failure must come with a message; nothing may crash or leak. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "twin/config.h"

static FILE *g_null;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!g_null) g_null = fopen("/dev/null", "w");
  /* tw_config_load_yaml() reads a path: an in-memory file. */
  int fd = memfd_create("twin-fuzz-config", 0);
  if (fd < 0) abort();
  if (size && write(fd, data, size) != (ssize_t)size) abort();
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);

  tw_config_t c;
  tw_config_init(&c);
  char err[1024] = "";
  if (tw_config_load_yaml(&c, path, err, sizeof err)) {
    err[0] = '\0';
    if (tw_config_validate(&c, err, sizeof err)) {
      tw_config_dump(&c, g_null);
    } else if (!err[0]) {
      abort(); /* a rejected config names its problem */
    }
  } else if (!err[0]) {
    abort();
  }
  tw_config_cleanup(&c);
  close(fd);
  return 0;
}
