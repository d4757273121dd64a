/* log.c - the single logger (see include/twin/log.h). Writes whole lines
 * with one fwrite under a lock so lines from threads never interleave. */
#include "twin/log.h"

#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static tw_log_level_t g_level = TW_LOG_INFO;
static bool g_json = false;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *level_names[] = {"debug", "info", "warn", "error"};

void tw_log_set_level(tw_log_level_t level) { g_level = level; }
tw_log_level_t tw_log_get_level(void) { return g_level; }
void tw_log_set_json(bool json) { g_json = json; }
bool tw_log_enabled(tw_log_level_t level) { return level >= g_level; }

bool tw_log_level_parse(const char *s, tw_log_level_t *out) {
  for (int i = 0; i < 4; i++) {
    if (strcmp(s, level_names[i]) == 0) {
      *out = (tw_log_level_t)i;
      return true;
    }
  }
  if (strcmp(s, "warning") == 0) {
    *out = TW_LOG_WARN;
    return true;
  }
  return false;
}

/* Appends s to buf as a JSON string body (no quotes). */
static size_t json_escape(char *buf, size_t cap, const char *s) {
  size_t n = 0;
  for (; *s && n + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      buf[n++] = '\\';
      buf[n++] = (char)c;
    } else if (c < 0x20) {
      n += (size_t)snprintf(buf + n, cap - n, "\\u%04x", c);
    } else {
      buf[n++] = (char)c;
    }
  }
  buf[n] = '\0';
  return n;
}

void tw_log_vwrite(tw_log_level_t level, const char *component, const char *fmt, va_list ap) {
  char msg[2048];
  char line[4608];
  struct timespec ts;
  struct tm tm;
  char tbuf[32];
  int n;

  vsnprintf(msg, sizeof msg, fmt, ap);
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%S", &tm);
  if (g_json) {
    char esc[4200];
    json_escape(esc, sizeof esc, msg);
    n = snprintf(line, sizeof line,
                 "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"component\":\"%s\",\"msg\":\"%s\"}\n", tbuf,
                 ts.tv_nsec / 1000000, level_names[level], component, esc);
  } else {
    n = snprintf(line, sizeof line, "%s.%03ldZ %-5s [%s] %s\n", tbuf, ts.tv_nsec / 1000000,
                 level_names[level], component, msg);
  }
  if (n < 0) return;
  if ((size_t)n >= sizeof line) n = (int)sizeof line - 1;
  pthread_mutex_lock(&g_lock);
  /* A full disk or closed stderr must not stop the engine: ignore errors. */
  (void)!fwrite(line, 1, (size_t)n, stderr);
  fflush(stderr);
  pthread_mutex_unlock(&g_lock);
}

void tw_log_write(tw_log_level_t level, const char *component, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  tw_log_vwrite(level, component, fmt, ap);
  va_end(ap);
}

static void mongoc_log_cb(mongoc_log_level_t level, const char *domain, const char *message, void *ud) {
  (void)ud;
  tw_log_level_t l;
  switch (level) {
  case MONGOC_LOG_LEVEL_ERROR:
  case MONGOC_LOG_LEVEL_CRITICAL: l = TW_LOG_ERROR; break;
  case MONGOC_LOG_LEVEL_WARNING: l = TW_LOG_WARN; break;
  case MONGOC_LOG_LEVEL_MESSAGE:
  case MONGOC_LOG_LEVEL_INFO: l = TW_LOG_INFO; break;
  default: l = TW_LOG_DEBUG; break;
  }
  if (level == MONGOC_LOG_LEVEL_TRACE) return;
  /* FerretDB has no endSessions command; libmongoc warns at every client
   * shutdown. It is harmless, so it is kept at debug. */
  if (message && strstr(message, "endSessions")) l = TW_LOG_DEBUG;
  char comp[64];
  snprintf(comp, sizeof comp, "mongoc.%s", domain ? domain : "");
  TW_LOG(l, comp, "%s", message);
}

void tw_log_route_mongoc(void) { mongoc_log_set_handler(mongoc_log_cb, NULL); }
