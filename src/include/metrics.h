/*-------------------------------------------------------------------------
 *
 * metrics.h
 *		Cluster-wide counters in shared memory, and what feeds them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_METRICS_H
#define SECRET_MGMT_METRICS_H

#include "audit.h"

#include "portability/instr_time.h"

/* How one request to an external backend ended (http.c). */
typedef enum SmHttpOutcome
{
	SM_HTTP_SUCCESS,			/* a 2xx answer */
	SM_HTTP_CLIENT_ERROR,		/* another answer the caller judges */
	SM_HTTP_RETRYABLE,			/* 429 or 5xx */
	SM_HTTP_TRANSPORT_ERROR,	/* no answer: connection, TLS, timeout */
	SM_HTTP_BREAKER_OPEN,		/* refused without trying */
	SM_HTTP_NUM_OUTCOMES
} SmHttpOutcome;

extern void sm_metrics_shmem_request(void);
extern void sm_metrics_shmem_startup(void);
extern void sm_metrics_operation(const char *action, SmAuditOutcome outcome);
extern void sm_metrics_read_served(void);
extern void sm_metrics_resolve_done(instr_time start);
extern void sm_metrics_data_key(bool hit);
extern void sm_metrics_http(SmHttpOutcome outcome);

#endif							/* SECRET_MGMT_METRICS_H */
