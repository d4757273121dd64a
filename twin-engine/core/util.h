/* util.h - allocation helpers shared by the core. Allocation failure aborts:
 * a twin engine that cannot allocate cannot keep its promises, and Kafka
 * replays from the last checkpoint after the restart. */
#ifndef TWIN_UTIL_H
#define TWIN_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void *tw_xmalloc(size_t n);
void *tw_xcalloc(size_t n, size_t sz);
void *tw_xrealloc(void *p, size_t n);
char *tw_xstrdup(const char *s);
char *tw_xstrndup(const char *s, size_t n);
/* NULL or "" -> NULL, else a copy. */
char *tw_xstrdup_nonempty(const char *s);
/* Writes a printf-style message into err (when err and cap are set) and
 * returns false, for `return tw_fail(err, cap, "...", ...);`. */
bool tw_fail(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Well-formed UTF-8 (no overlongs, surrogates or code points past
 * U+10FFFF); ASCII runs are checked 8 bytes at a time. */
bool tw_utf8_valid(const char *s, size_t n);
int64_t tw_now_ms(void);
int64_t tw_mono_ms(void);

/* The decimal digits of v, at least min_digits (1..20) with leading zeros,
 * at out without a NUL; returns how many (at most 20). */
size_t tw_utoa(uint64_t v, size_t min_digits, char *out);

/* v for people: integers without decimals, others with two at most
 * ("12", "3.5", "0.07", "?" for NaN/inf); exactly snprintf's %.0f or %.2f
 * with trailing zeros cut. cap >= 32 for the fast path. */
void tw_fmt_num(double v, char *buf, size_t cap);

#endif
