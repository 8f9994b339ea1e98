/*-------------------------------------------------------------------------
 *
 * worker.h
 *		The background worker: registration, shared state, wake-ups.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_WORKER_H
#define SECRET_MGMT_WORKER_H

#include "tenant.h"

#include "datatype/timestamp.h"

/* GUC variables (secret_mgmt.c) */
extern char *sm_worker_database;
extern char *sm_worker_role;
extern int	sm_worker_naptime;
extern int	sm_worker_batch;
extern int	sm_expiry_warning;
extern int	sm_rotation_grace;
extern int	sm_retry_backoff_max;

extern void sm_worker_register(void);
extern void sm_worker_shmem_request(void);
extern void sm_worker_shmem_startup(void);
extern void sm_worker_wake(void);
extern void sm_worker_count(int what, int64 n);
extern void sm_worker_counts(int64 *out);
extern void sm_worker_caller(SmCaller *c, const char *tenant);
extern int64 sm_backoff_ms(int attempts);
extern bool sm_worker_status(int *pid, TimestampTz *started_at, TimestampTz *last_pass);

/* What sm_worker_count() counts. */
#define SM_COUNT_ROTATIONS		0
#define SM_COUNT_FAILURES		1
#define SM_COUNT_EXPIRED		2
#define SM_COUNT_WARNED			3
#define SM_COUNT_PURGED			4
#define SM_COUNT_PRUNED			5
#define SM_COUNT_DELIVERED		6
#define SM_COUNT_UNDELIVERED	7
#define SM_NUM_COUNTS			8

#endif							/* SECRET_MGMT_WORKER_H */
