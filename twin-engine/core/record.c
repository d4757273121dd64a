/* record.c - reader and writer of the twin-sim record file (see
 * include/twin/record.h for the format). Plain stdio with a large buffer:
 * the simulator writes millions of records per run. */
#include "twin/record.h"

#include "util.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IO_BUF (1u << 20)

struct tw_record_writer {
  FILE *f;
  char *path;
  char *iobuf;
};

struct tw_record_reader {
  FILE *f;
  char *path;
  char *iobuf;
  uint8_t *buf[3]; /* topic, key, value; each NUL-terminated */
  size_t cap[3];
  uint64_t count;
};

static void put_u32le(uint8_t *b, uint32_t v) {
  b[0] = (uint8_t)v;
  b[1] = (uint8_t)(v >> 8);
  b[2] = (uint8_t)(v >> 16);
  b[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32le(const uint8_t *b) {
  return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* ---- Writer ---------------------------------------------------------------- */

bool tw_record_writer_open(const char *path, tw_record_writer_t **out, char *err, size_t err_cap) {
  *out = NULL;
  tw_record_writer_t *w = calloc(1, sizeof *w);
  if (!w) return tw_fail(err, err_cap, "out of memory");
  w->path = strdup(path);
  w->iobuf = malloc(IO_BUF);
  w->f = fopen(path, "wb");
  if (!w->f) {
    tw_fail(err, err_cap, "cannot create record file %s: %s", path, strerror(errno));
    goto fail_out;
  }
  if (w->iobuf) setvbuf(w->f, w->iobuf, _IOFBF, IO_BUF);
  if (fwrite(TW_RECORD_MAGIC, 1, TW_RECORD_MAGIC_LEN, w->f) != TW_RECORD_MAGIC_LEN) {
    tw_fail(err, err_cap, "cannot write record file %s: %s", path, strerror(errno));
    goto fail_out;
  }
  *out = w;
  return true;
fail_out:
  if (w->f) fclose(w->f);
  free(w->iobuf);
  free(w->path);
  free(w);
  return false;
}

static bool write_field(tw_record_writer_t *w, const void *p, size_t n, char *err, size_t err_cap) {
  uint8_t len[4];
  if (n > UINT32_MAX) return tw_fail(err, err_cap, "record field of %zu bytes is too large", n);
  put_u32le(len, (uint32_t)n);
  if (fwrite(len, 1, 4, w->f) != 4 || (n && fwrite(p, 1, n, w->f) != n))
    return tw_fail(err, err_cap, "cannot write record file %s: %s", w->path, strerror(errno));
  return true;
}

bool tw_record_writer_write(tw_record_writer_t *w, const char *topic, size_t topic_len, const void *key,
                            size_t key_len, const void *value, size_t value_len, char *err, size_t err_cap) {
  return write_field(w, topic, topic_len, err, err_cap) && write_field(w, key, key_len, err, err_cap) &&
         write_field(w, value, value_len, err, err_cap);
}

bool tw_record_writer_close(tw_record_writer_t *w, char *err, size_t err_cap) {
  if (!w) return true;
  bool ok = true;
  if (fflush(w->f) != 0)
    ok = tw_fail(err, err_cap, "cannot write record file %s: %s", w->path, strerror(errno));
  if (fclose(w->f) != 0 && ok)
    ok = tw_fail(err, err_cap, "cannot close record file %s: %s", w->path, strerror(errno));
  free(w->iobuf);
  free(w->path);
  free(w);
  return ok;
}

/* ---- Reader ---------------------------------------------------------------- */

bool tw_record_reader_open(const char *path, tw_record_reader_t **out, char *err, size_t err_cap) {
  char magic[TW_RECORD_MAGIC_LEN];
  *out = NULL;
  tw_record_reader_t *r = calloc(1, sizeof *r);
  if (!r) return tw_fail(err, err_cap, "out of memory");
  r->path = strdup(path);
  r->iobuf = malloc(IO_BUF);
  r->f = fopen(path, "rb");
  if (!r->f) {
    tw_fail(err, err_cap, "cannot open record file %s: %s", path, strerror(errno));
    goto fail_out;
  }
  if (r->iobuf) setvbuf(r->f, r->iobuf, _IOFBF, IO_BUF);
  if (fread(magic, 1, sizeof magic, r->f) != sizeof magic ||
      memcmp(magic, TW_RECORD_MAGIC, sizeof magic) != 0) {
    tw_fail(err, err_cap, "%s is not a twin-sim record file (no TWINREC1 magic)", path);
    goto fail_out;
  }
  *out = r;
  return true;
fail_out:
  tw_record_reader_close(r);
  return false;
}

/* Reads one length-prefixed field into slot i. *eof is set only when the
 * file ends cleanly before the first field of a record. */
static bool read_field(tw_record_reader_t *r, int i, size_t *len, bool first, bool *eof, char *err,
                       size_t err_cap) {
  static const char *names[3] = {"topic", "key", "value"};
  uint8_t lb[4];
  size_t got = fread(lb, 1, 4, r->f);
  if (got == 0 && first && feof(r->f)) {
    *eof = true;
    return true;
  }
  if (got != 4) goto short_read;
  uint32_t n = get_u32le(lb);
  if (n > TW_RECORD_FIELD_MAX)
    return tw_fail(err, err_cap, "%s: record %llu has a %s of %u bytes (corrupt file?)", r->path,
                   (unsigned long long)r->count + 1, names[i], n);
  if (r->cap[i] < (size_t)n + 1) {
    size_t c = r->cap[i] ? r->cap[i] : 256;
    while (c < (size_t)n + 1) c *= 2;
    uint8_t *b = realloc(r->buf[i], c);
    if (!b) return tw_fail(err, err_cap, "out of memory");
    r->buf[i] = b;
    r->cap[i] = c;
  }
  if (n && fread(r->buf[i], 1, n, r->f) != n) goto short_read;
  r->buf[i][n] = 0;
  *len = n;
  return true;
short_read:
  if (ferror(r->f)) return tw_fail(err, err_cap, "cannot read %s: %s", r->path, strerror(errno));
  return tw_fail(err, err_cap, "%s: record %llu is truncated (file cut off?)", r->path,
                 (unsigned long long)r->count + 1);
}

bool tw_record_reader_next(tw_record_reader_t *r, tw_record_t *rec, bool *eof, char *err, size_t err_cap) {
  memset(rec, 0, sizeof *rec);
  *eof = false;
  size_t n[3] = {0, 0, 0};
  if (!read_field(r, 0, &n[0], true, eof, err, err_cap)) return false;
  if (*eof) return true;
  bool dummy = false;
  if (!read_field(r, 1, &n[1], false, &dummy, err, err_cap) ||
      !read_field(r, 2, &n[2], false, &dummy, err, err_cap))
    return false;
  rec->topic = (const char *)r->buf[0];
  rec->topic_len = n[0];
  rec->key = r->buf[1];
  rec->key_len = n[1];
  rec->value = r->buf[2];
  rec->value_len = n[2];
  r->count++;
  return true;
}

uint64_t tw_record_reader_count(const tw_record_reader_t *r) { return r->count; }

void tw_record_reader_close(tw_record_reader_t *r) {
  if (!r) return;
  if (r->f) fclose(r->f);
  for (int i = 0; i < 3; i++) free(r->buf[i]);
  free(r->iobuf);
  free(r->path);
  free(r);
}
