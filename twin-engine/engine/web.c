/* web.c - maps request paths to the viewer's built-in files (web.h). */
#include "web.h"

#include <string.h>

static const tw_web_asset_t *by_name(const char *name) {
  for (size_t i = 0; i < tw_web_n_assets; i++)
    if (strcmp(tw_web_assets[i].name, name) == 0) return &tw_web_assets[i];
  return NULL;
}

const tw_web_asset_t *tw_web_find(const char *path) {
  /* The page's own routes: one HTML file, which reads location.pathname. */
  if (!strcmp(path, "/") || !strcmp(path, "/fleet") ||
      (!strncmp(path, "/twins/", 7) && path[7] && !strchr(path + 7, '/')))
    return by_name("index.html");
  if (!strncmp(path, "/ui/", 4) && path[4] && !strchr(path + 4, '/') && strcmp(path + 4, "index.html") != 0)
    return by_name(path + 4);
  return NULL;
}
