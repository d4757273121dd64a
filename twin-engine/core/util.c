/* util.c - see util.h. */
#include "util.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void oom(size_t n) {
  fprintf(stderr, "twin-engine: out of memory allocating %zu bytes\n", n);
  abort();
}

void *tw_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) oom(n);
  return p;
}

void *tw_xcalloc(size_t n, size_t sz) {
  void *p = calloc(n ? n : 1, sz ? sz : 1);
  if (!p) oom(n * sz);
  return p;
}

void *tw_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) oom(n);
  return q;
}

char *tw_xstrndup(const char *s, size_t n) {
  char *p = tw_xmalloc(n + 1);
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

char *tw_xstrdup(const char *s) { return tw_xstrndup(s, strlen(s)); }

char *tw_xstrdup_nonempty(const char *s) { return (s && *s) ? tw_xstrdup(s) : NULL; }

int64_t tw_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t tw_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool tw_fail(char *err, size_t cap, const char *fmt, ...) {
  if (err && cap) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
  }
  return false;
}

bool tw_utf8_valid(const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str, *end = s + n;
  while (s < end) {
    if (end - s >= 8) {
      uint64_t w;
      memcpy(&w, s, 8);
      if (!(w & UINT64_C(0x8080808080808080))) {
        s += 8;
        continue;
      }
    }
    unsigned c = *s;
    if (c < 0x80) {
      s++;
      continue;
    }
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
      len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0; /* overlong */
      if (c == 0xED) hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90; /* overlong */
      if (c == 0xF4) hi = 0x8F; /* past U+10FFFF */
    } else
      return false;
    if ((size_t)(end - s) < len) return false;
    if (s[1] < lo || s[1] > hi) return false;
    for (size_t i = 2; i < len; i++)
      if (s[i] < 0x80 || s[i] > 0xBF) return false;
    s += len;
  }
  return true;
}

size_t tw_utoa(uint64_t v, size_t min_digits, char *out) {
  char tmp[20];
  size_t n = 0, o = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v || n < min_digits);
  while (n) out[o++] = tmp[--n];
  return o;
}

/* Numbers for people: integers without decimals, others with two at most.
 * The result is what snprintf's %.0f / %.2f (trailing zeros cut) give; the
 * common magnitudes are formatted by hand (printf's float path was most of
 * the cost of raising an alert), and values whose cents are within a hair
 * of a rounding tie still go through snprintf. */
void tw_fmt_num(double v, char *buf, size_t cap) {
  if (!isfinite(v)) {
    snprintf(buf, cap, "?");
    return;
  }
  double cents = v * 100.0;
  double frac = fabs(cents - trunc(cents));
  bool integral = fabs(v - nearbyint(v)) < 1e-9 && fabs(v) < 1e15;
  if (!integral && fabs(v) < 1e9 && fabs(frac - 0.5) > 1e-3 && cap >= 32) {
    long long c = llround(cents);
    char tmp[32];
    size_t n = 0;
    unsigned long long a = c < 0 ? (unsigned long long)(-c) : (unsigned long long)c;
    do {
      tmp[n++] = (char)('0' + a % 10);
      a /= 10;
    } while (a || n < 3); /* at least d.dd */
    size_t o = 0;
    if (v < 0) buf[o++] = '-';
    while (n > 2) buf[o++] = tmp[--n];
    buf[o++] = '.';
    buf[o++] = tmp[1];
    buf[o++] = tmp[0];
    while (buf[o - 1] == '0') o--; /* 1.50 -> 1.5, 2.00 -> 2 */
    if (buf[o - 1] == '.') o--;
    buf[o] = '\0';
    return;
  }
  if (integral) {
    /* Within 1e-9 of an integer below 1e15: %.0f prints that integer
     * ("-0" for a negative value that rounds to zero). */
    long long r = llround(v);
    if (cap >= 32) {
      size_t o = 0;
      if (signbit(v)) buf[o++] = '-';
      o += tw_utoa(r < 0 ? 0 - (unsigned long long)r : (unsigned long long)r, 1, buf + o);
      buf[o] = '\0';
      return;
    }
    snprintf(buf, cap, "%.0f", v);
    return;
  }
  snprintf(buf, cap, "%.2f", v);
  char *dot = strchr(buf, '.');
  if (!dot) return;
  char *e = buf + strlen(buf) - 1;
  while (e > dot && *e == '0') *e-- = '\0';
  if (e == dot) *e = '\0';
}
