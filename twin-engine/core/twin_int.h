/* twin_int.h - twin internals shared by the reducer and the BSON codec. */
#ifndef TWIN_TWIN_INT_H
#define TWIN_TWIN_INT_H

#include "twin/twin.h"

/* Finds or inserts (sorted) a source / metric / new timeline entry. */
tw_source_t *tw_twin_source(tw_twin_t *t, const char *name);
tw_metric_t *tw_telemetry_metric(tw_telemetry_t *tel, const char *name);
/* Sets the vector's values to the n at v (its stamp is the caller's). */
void tw_vec_set(tw_vec_t *f, const double *v, size_t n);
/* Appends an entry made of in's texts (borrowed, e.g. from a decoded
 * message or a BSON document), copied into the entry's one allocation. */
tw_entry_t *tw_twin_timeline_add(tw_twin_t *t, const tw_entry_in_t *in);
/* The same for an alert: rule, alert_id, message and unit (borrowed; NULL
 * reads as "") go into one allocation that a->rule points to the start of;
 * tw_alert_cleanup() frees it. */
void tw_alert_own(tw_alert_t *a);
void tw_alert_cleanup(tw_alert_t *a);

#endif
