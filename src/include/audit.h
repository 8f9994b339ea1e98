/*-------------------------------------------------------------------------
 *
 * audit.h
 *		The audit trail: one hash-chained row per attempt, written in the
 *		caller's transaction (writes, sync reads) or through a shared-memory
 *		queue drained by the audit flusher (refusals, async reads).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_AUDIT_H
#define SECRET_MGMT_AUDIT_H

#include "tenant.h"

#include "datatype/timestamp.h"
#include "utils/uuid.h"

#define SM_AUDIT_TENANT_LEN		64
#define SM_AUDIT_NAME_LEN		64	/* role names, application names */
#define SM_AUDIT_PRINCIPAL_LEN	264 /* "token:" and a 255-byte subject */
#define SM_AUDIT_ACTION_LEN		32
#define SM_AUDIT_PATH_LEN		516 /* paths, patterns, grantees: 512 bytes */
#define SM_AUDIT_ADDR_LEN		64
#define SM_FINGERPRINT_LEN		32

/* Outcomes, as stored. */
typedef enum SmAuditOutcome
{
	SM_AUDIT_OK,
	SM_AUDIT_DENIED,
	SM_AUDIT_NOT_FOUND,
	SM_AUDIT_ERROR
} SmAuditOutcome;

/* secret_mgmt.audit_reads */
typedef enum SmAuditReads
{
	SM_AUDIT_READS_OFF,
	SM_AUDIT_READS_ASYNC,
	SM_AUDIT_READS_SYNC
} SmAuditReads;

/*
 * One audit record before it is chained: fixed size, so that it can sit in
 * shared memory.  It never holds a value, only the value's keyed
 * fingerprint.  An empty string stands for NULL.
 */
typedef struct SmAuditRecord
{
	TimestampTz at;
	char		tenant[SM_AUDIT_TENANT_LEN];
	char		principal[SM_AUDIT_PRINCIPAL_LEN];
	char		session_user[SM_AUDIT_NAME_LEN];
	char		client_addr[SM_AUDIT_ADDR_LEN];
	char		application[SM_AUDIT_NAME_LEN];
	int32		pid;
	char		action[SM_AUDIT_ACTION_LEN];
	char		path[SM_AUDIT_PATH_LEN];
	bool		has_secret_id;
	pg_uuid_t	secret_id;
	bool		has_version;
	int32		version;
	SmAuditOutcome outcome;
	char		sqlstate[6];
	bool		has_fingerprint;
	uint8		fingerprint[SM_FINGERPRINT_LEN];
} SmAuditRecord;

extern int	sm_audit_reads;

/* audit.c */
extern void sm_audit_define_gucs(void);
extern void sm_audit_begin(const char *action, const char *path);
extern void sm_audit_caller(const SmCaller *c);
extern void sm_audit_set_action(const char *action);
extern void sm_audit_refused(int sqlerrcode, const char *path);
extern void sm_audit_refused_as(SmAuditOutcome outcome, int sqlerrcode, const char *path);
extern void sm_audit_note_tenant(const char *tenant);
extern void sm_audit_xact_end(void);
extern void sm_audit_write(const SmCaller *c, const char *action, const char *path,
						   const pg_uuid_t *secret_id, int32 version,
						   const uint8 *value, size_t len);
extern void sm_audit_write_failed(const SmCaller *c, const char *action, const char *path,
								  const pg_uuid_t *secret_id, int32 version, int sqlerrcode);
extern void sm_audit_tenant_change(const char *tenant, Oid caller, const char *action,
								   const char *object);
extern void sm_audit_read(const SmCaller *c, const char *path,
						  const pg_uuid_t *secret_id, int32 version,
						  const uint8 *value, size_t len);
extern void sm_audit_insert(const SmAuditRecord *rec);
extern void sm_audit_insert_many(const SmAuditRecord *records, int n);
extern void sm_audit_pre_commit(void);
extern void sm_audit_forget_pending(void);
extern void sm_audit_subxact(bool commit, SubTransactionId mySubid,
							 SubTransactionId parentSubid);
extern bool sm_audit_installed(void);

/* The audit queue's figures (flusher.c). */
typedef struct SmAuditQueueStats
{
	int			used;			/* records waiting */
	int			capacity;
	uint64		enqueued;
	uint64		flushed;
	uint64		rejected;		/* requests refused: the queue stayed full */
} SmAuditQueueStats;

/* flusher.c */
extern void sm_flusher_define_gucs(void);
extern bool sm_audit_queue_stats(SmAuditQueueStats *out);
extern void sm_flusher_init(void);
extern void sm_flusher_shmem_request(void);
extern void sm_flusher_shmem_startup(void);
extern void sm_audit_enqueue(const SmAuditRecord *rec);
extern int	sm_audit_drain(void);

#endif							/* SECRET_MGMT_AUDIT_H */
