/* tsan_librdkafka.c - compiled into every program of a ThreadSanitizer
 * build (-DTWIN_SANITIZE=thread) only, so TSan can run them with librdkafka.
 *
 * Debian's librdkafka starts its threads with C11 thrd_create() and locks
 * with mtx_*()/cnd_*(). glibc implements those without going through
 * pthread_create() and friends, and TSan (GCC 12's and clang 14's)
 * intercepts only the pthread names: a librdkafka thread then runs without
 * TSan state and crashes at its first malloc, and its locks are invisible.
 * These definitions in the executable take precedence over glibc's for
 * librdkafka and forward to the pthread functions, which TSan intercepts. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

_Static_assert(sizeof(mtx_t) >= sizeof(pthread_mutex_t), "mtx_t holds a pthread mutex");
_Static_assert(sizeof(cnd_t) >= sizeof(pthread_cond_t), "cnd_t holds a pthread condition");
_Static_assert(sizeof(thrd_t) == sizeof(pthread_t), "thrd_t is a pthread_t");

typedef struct {
  thrd_start_t fn;
  void *arg;
} start_t;

static void *start(void *p) {
  start_t s = *(start_t *)p;
  free(p);
  return (void *)(intptr_t)s.fn(s.arg);
}

static int result(int rc) { return rc == 0 ? thrd_success : rc == ENOMEM ? thrd_nomem : thrd_error; }

int thrd_create(thrd_t *thr, thrd_start_t fn, void *arg) {
  start_t *s = malloc(sizeof *s);
  if (!s) return thrd_nomem;
  *s = (start_t){fn, arg};
  int rc = pthread_create((pthread_t *)thr, NULL, start, s);
  if (rc) free(s);
  return result(rc);
}

int thrd_join(thrd_t thr, int *res) {
  void *r = NULL;
  int rc = pthread_join((pthread_t)thr, &r);
  if (rc == 0 && res) *res = (int)(intptr_t)r;
  return result(rc);
}

int thrd_detach(thrd_t thr) { return result(pthread_detach((pthread_t)thr)); }

int mtx_init(mtx_t *m, int type) {
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  if (type & mtx_recursive) pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
  int rc = pthread_mutex_init((pthread_mutex_t *)m, &a);
  pthread_mutexattr_destroy(&a);
  return result(rc);
}

int mtx_lock(mtx_t *m) { return result(pthread_mutex_lock((pthread_mutex_t *)m)); }

int mtx_trylock(mtx_t *m) {
  int rc = pthread_mutex_trylock((pthread_mutex_t *)m);
  return rc == EBUSY ? thrd_busy : result(rc);
}

int mtx_unlock(mtx_t *m) { return result(pthread_mutex_unlock((pthread_mutex_t *)m)); }
void mtx_destroy(mtx_t *m) { pthread_mutex_destroy((pthread_mutex_t *)m); }

int cnd_init(cnd_t *c) { return result(pthread_cond_init((pthread_cond_t *)c, NULL)); }
int cnd_signal(cnd_t *c) { return result(pthread_cond_signal((pthread_cond_t *)c)); }
int cnd_broadcast(cnd_t *c) { return result(pthread_cond_broadcast((pthread_cond_t *)c)); }
int cnd_wait(cnd_t *c, mtx_t *m) {
  return result(pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}

int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts) {
  int rc = pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts);
  return rc == ETIMEDOUT ? thrd_timedout : result(rc);
}

void cnd_destroy(cnd_t *c) { pthread_cond_destroy((pthread_cond_t *)c); }

/* librdkafka itself is not instrumented and synchronises through atomics
 * TSan cannot see (reference counts, the publication of a new object to
 * another thread): what it does through intercepted calls (malloc/free,
 * rwlocks) and through the functions above (e.g. mtx_init in one thread,
 * mtx_lock in another) would be reported as races on its own memory. Those
 * are not reported; twin-engine's code, callbacks run by librdkafka
 * included, is still checked, and librdkafka's locks still order it. */
/* libmongoc's background monitoring threads (uninstrumented too) share
 * libbson documents under their own locks; a fresh-clone CI run saw TSan
 * report one of those hand-overs inside libmongoc (a bson_destroy in its
 * scanner thread against a strcmp in its topology thread) and stop the
 * engine. Races whose stacks pass through libmongoc or libbson are not
 * reported: the same hand-over was seen again with only libbson frames in
 * both stacks (free in bson_destroy on the monitor's RTT thread, strcmp in
 * libbson on its server-monitor thread). Neither library is instrumented,
 * so TSan sees their memory accesses only at intercepted calls anyway; our
 * own code's accesses stay checked. (Not called_from_lib: that hides libmongoc's own mutex calls from TSan,
 * which then reports our unlocks of them as unlocks of unlocked mutexes.) */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void) {
  return "called_from_lib:librdkafka.so.1\n"
         "race:tsan_librdkafka.c\n"
         "race:libmongoc-1.0.so.0\n"
         "race:libbson-1.0.so.0\n";
}
