/* test_log.c - log lines: levels filter, text format, and JSON lines that
 * stay valid JSON whatever the message holds. */
#include <bson/bson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "twin/log.h"

/* Runs fn with stderr sent to a temporary file; returns what it wrote. */
static char *capture(void (*fn)(void)) {
  char path[] = "/tmp/twin-log-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  fflush(stderr);
  int saved = dup(2);
  dup2(fd, 2);
  fn();
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  FILE *f = fopen(path, "r");
  static char buf[8192];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  close(fd);
  unlink(path);
  return buf;
}

static void write_lines(void) {
  TW_DEBUG("test", "hidden at info");
  TW_INFO("shard", "a \"quoted\" value\nand a newline\\ and a tab\t");
  TW_ERROR("store", "boom %d", 42);
}

static void test_text(void **state) {
  (void)state;
  tw_log_set_json(false);
  tw_log_set_level(TW_LOG_INFO);
  char *out = capture(write_lines);
  assert_null(strstr(out, "hidden"));
  assert_non_null(strstr(out, "info  [shard] a \"quoted\" value"));
  assert_non_null(strstr(out, "error [store] boom 42"));
}

static void test_json_lines(void **state) {
  (void)state;
  tw_log_set_json(true);
  tw_log_set_level(TW_LOG_INFO);
  char *out = capture(write_lines);
  tw_log_set_json(false);
  int lines = 0;
  for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
    bson_error_t err;
    bson_t *b = bson_new_from_json((const uint8_t *)line, -1, &err);
    if (!b) fail_msg("not JSON: %s (%s)", line, err.message);
    bson_iter_t it;
    assert_true(bson_iter_init_find(&it, b, "level"));
    assert_true(bson_iter_init_find(&it, b, "component"));
    assert_true(bson_iter_init_find(&it, b, "ts"));
    assert_true(bson_iter_init_find(&it, b, "msg"));
    if (lines == 0)
      assert_string_equal(bson_iter_utf8(&it, NULL), "a \"quoted\" value\nand a newline\\ and a tab\t");
    bson_destroy(b);
    lines++;
  }
  assert_int_equal(lines, 2);
}

static void test_level_parse(void **state) {
  (void)state;
  tw_log_level_t l;
  assert_true(tw_log_level_parse("warn", &l));
  assert_int_equal(l, TW_LOG_WARN);
  assert_true(tw_log_level_parse("debug", &l));
  assert_int_equal(l, TW_LOG_DEBUG);
  assert_false(tw_log_level_parse("loud", &l));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_text),
      cmocka_unit_test(test_json_lines),
      cmocka_unit_test(test_level_parse),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
