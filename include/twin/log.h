/* log.h - one logger for the engine, its tools, and the client libraries.
 *
 * TW_LOG(level, component, fmt, ...) writes one line to stderr, as text or
 * as JSON lines (tw_log_set_json). librdkafka's and libmongoc's log
 * callbacks are routed here by tw_log_route_mongoc() and the Kafka config
 * helper. Thread-safe: any thread may log. Never logs a secret: callers pass
 * values through tw_log_redact() where config is printed. */
#ifndef TWIN_LOG_H
#define TWIN_LOG_H

#include <stdarg.h>
#include <stdbool.h>

typedef enum {
  TW_LOG_DEBUG = 0,
  TW_LOG_INFO = 1,
  TW_LOG_WARN = 2,
  TW_LOG_ERROR = 3,
} tw_log_level_t;

void tw_log_set_level(tw_log_level_t level);
tw_log_level_t tw_log_get_level(void);
void tw_log_set_json(bool json);
/* Parses "debug|info|warn|error"; returns false for anything else. */
bool tw_log_level_parse(const char *s, tw_log_level_t *out);
bool tw_log_enabled(tw_log_level_t level);
void tw_log_write(tw_log_level_t level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void tw_log_vwrite(tw_log_level_t level, const char *component, const char *fmt, va_list ap);
/* Sends libmongoc's log output through this logger. */
void tw_log_route_mongoc(void);

#define TW_LOG(level, comp, ...)                                       \
  do {                                                                 \
    if (tw_log_enabled(level)) tw_log_write(level, comp, __VA_ARGS__); \
  } while (0)
#define TW_DEBUG(comp, ...) TW_LOG(TW_LOG_DEBUG, comp, __VA_ARGS__)
#define TW_INFO(comp, ...) TW_LOG(TW_LOG_INFO, comp, __VA_ARGS__)
#define TW_WARN(comp, ...) TW_LOG(TW_LOG_WARN, comp, __VA_ARGS__)
#define TW_ERROR(comp, ...) TW_LOG(TW_LOG_ERROR, comp, __VA_ARGS__)

#endif
