/* engine.h - the running engine: a Kafka consumer group whose partitions
 * are owned by shard threads, each reducing its twins and flushing them to
 * MongoDB before checkpointing (see ../../README.md, "How it works"). */
#ifndef TWIN_ENGINE_H
#define TWIN_ENGINE_H

#include <stdbool.h>

#include "twin/config.h"

/* Runs until tw_engine_request_stop(). Returns the process exit code:
 * 0 after a clean shutdown (everything flushed and checkpointed), 1 when
 * start-up failed (the reason is logged). */
int tw_engine_run(const tw_config_t *cfg);
/* Async-signal-safe. The first call stops gracefully; the second gives up
 * waiting for MongoDB/Kafka during the final flush. */
void tw_engine_request_stop(void);

#endif
