/* test_fault_logfull.c - the engine's log goes to a full disk.
 *
 * twin-engine writes its log to stderr only (no log file of its own;
 * log.c ignores write errors). Where stderr is redirected to a file, that
 * disk can fill up. Here stderr goes to a file on a 64 KiB tmpfs mounted for
 * the test (or /dev/full, where every write fails with ENOSPC, when mount is
 * not permitted), at log.level=debug so it fills within seconds. The engine
 * must keep running and lose nothing. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "faults.h"

static char g_mnt[300];
static void unmount(void) {
  if (g_mnt[0]) umount2(g_mnt, MNT_DETACH);
  g_mnt[0] = '\0';
}

static void test_log_disk_full(void **state) {
  (void)state;
  f_run_t r;
  f_begin(&r, "engine log disk full");
  h_scenario_t s;
  h_scenario_init(&s, "f_logfull", 4);
  char dir[300], log[400];
  snprintf(dir, sizeof dir, "%s/full", s.logdir);
  mkdir(dir, 0755);
  bool tmpfs = mount("tmpfs", dir, "tmpfs", 0, "size=64k") == 0;
  if (tmpfs) {
    snprintf(g_mnt, sizeof g_mnt, "%s", dir);
    atexit(unmount);
    snprintf(log, sizeof log, "%s/engine.log", dir);
    fprintf(stderr, "[fault] engine log on a 64 KiB tmpfs at %s\n", dir);
  } else {
    snprintf(log, sizeof log, "/dev/full");
    fprintf(stderr, "[fault] cannot mount a tmpfs here (%s): engine log to /dev/full instead\n",
            strerror(errno));
  }
  const char *sim[] = {"--seed",     "81",    "--products",   "600",  "--rate",    "800",
                       "--duration", "20",    "--duplicates", "0.01", "--reorder", "0.01",
                       "--garbage",  "0.005", "--quiet",      NULL};
  pid_t sim_pid = h_sim_start(&s, sim);
  pid_t e = h_engine_start_log(&s, 2, (const char *const[]){"log.level=debug", NULL}, log);
  r.faults++;
  h_sim_wait(&s, sim_pid);
  assert_true(h_wait_caught_up(&s, 180));
  assert_true(h_rss_kib(e) > 0);
  if (tmpfs) {
    /* The disk is full: nothing more fits. */
    struct stat st;
    assert_int_equal(stat(log, &st), 0);
    FILE *f = fopen(log, "a");
    bool full = f && (fputs("x\n", f) == EOF || fflush(f) != 0);
    if (f) fclose(f);
    fprintf(stderr, "[fault] engine log is %lld bytes; the disk is %s\n", (long long)st.st_size,
            full ? "full" : "NOT full");
    assert_true(full);
  }
  assert_int_equal(h_engine_stop(e, SIGTERM), 0);
  unmount();
  f_finish(&r, &s);
  h_scenario_cleanup(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_log_disk_full)};
  return f_main(tests, sizeof tests / sizeof tests[0]);
}
