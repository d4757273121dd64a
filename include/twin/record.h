/* record.h - the twin-sim record file: every Kafka message exactly as it
 * was produced, in order, so tests can replay a stream offline.
 *
 * Format: the 8-byte magic "TWINREC1", then records of
 *   u32le topic_len, topic bytes, u32le key_len, key bytes,
 *   u32le value_len, value bytes
 * (topic is the topic name, key the Kafka key, value the message bytes).
 * A file cut off in the middle of a record is reported as an error.
 *
 * Errors: functions return bool and write a NUL-terminated message a user
 * can act on into err (err_cap bytes; err may be NULL). Threads: one
 * reader or writer per thread; nothing is shared. */
#ifndef TWIN_RECORD_H
#define TWIN_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TW_RECORD_MAGIC "TWINREC1"
#define TW_RECORD_MAGIC_LEN 8
/* Largest topic, key or value a reader accepts (guards against garbage). */
#define TW_RECORD_FIELD_MAX (64u * 1024u * 1024u)

typedef struct tw_record_writer tw_record_writer_t;
typedef struct tw_record_reader tw_record_reader_t;

/* One record. The pointers are owned by the reader and stay valid until the
 * next tw_record_reader_next() or tw_record_reader_close(). Each field is
 * also NUL-terminated (the NUL is not counted in the length). */
typedef struct {
  const char *topic;
  size_t topic_len;
  const uint8_t *key;
  size_t key_len;
  const uint8_t *value;
  size_t value_len;
} tw_record_t;

/* Creates (truncates) path and writes the magic. On success *out is a new
 * writer owned by the caller (free with tw_record_writer_close). */
bool tw_record_writer_open(const char *path, tw_record_writer_t **out, char *err, size_t err_cap);
/* Appends one record (buffered). */
bool tw_record_writer_write(tw_record_writer_t *w, const char *topic, size_t topic_len, const void *key,
                            size_t key_len, const void *value, size_t value_len, char *err, size_t err_cap);
/* Flushes, closes and frees w (NULL is fine); false if the data may not be
 * complete on disk. */
bool tw_record_writer_close(tw_record_writer_t *w, char *err, size_t err_cap);

/* Opens path and checks the magic. On success *out is a new reader owned
 * by the caller (free with tw_record_reader_close). */
bool tw_record_reader_open(const char *path, tw_record_reader_t **out, char *err, size_t err_cap);
/* Reads the next record into rec. At a clean end of file returns true with
 * *eof = true; on a read error or a truncated record returns false. */
bool tw_record_reader_next(tw_record_reader_t *r, tw_record_t *rec, bool *eof, char *err, size_t err_cap);
/* Number of records returned so far. */
uint64_t tw_record_reader_count(const tw_record_reader_t *r);
void tw_record_reader_close(tw_record_reader_t *r); /* accepts NULL */

#endif
