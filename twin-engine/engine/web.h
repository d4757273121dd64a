/* web.h - the twin viewer's files (web/), built into the engine as byte
 * arrays by cmake/embed_web.cmake, and the paths the HTTP server serves
 * them at. No file system access at run time. */
#ifndef TWIN_ENGINE_WEB_H
#define TWIN_ENGINE_WEB_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
  const char *name; /* file name under web/ */
  const char *type; /* Content-Type */
  const unsigned char *data;
  size_t len;
  const char *etag; /* strong ETag, quotes included */
} tw_web_asset_t;

/* The generated table (build dir, web_assets.c). */
extern const tw_web_asset_t tw_web_assets[];
extern const size_t tw_web_n_assets;

/* The asset a request path names, or NULL: the page for "/", "/fleet" and
 * "/twins/{id}" (the page routes itself from its URL), a file for
 * "/ui/<name>". path is the raw path, without the query string. */
const tw_web_asset_t *tw_web_find(const char *path);

#endif
