/*-------------------------------------------------------------------------
 *
 * flusher.c
 *		The audit queue in shared memory, and the audit flusher workers
 *		that write it into secret_mgmt.secret_audit.
 *
 * Refusals (and, with secret_mgmt.audit_reads = async, successful reads)
 * are recorded while the caller's transaction is doomed or not worth
 * lengthening, so their records go to a fixed array of slots in shared
 * memory.  A record holds ids, names and a keyed fingerprint -- never a
 * value.  Each slot notes the database it belongs to.
 *
 * Locking: AuditQueue.lock (one LWLock of the "secret_mgmt audit queue"
 * tranche) protects every field of the queue.  It is held only to copy a
 * record in or out, never across SPI or I/O.  A drainer claims slots
 * (claimed_by = its pid), writes them in its transaction, and frees them
 * when that transaction commits; an abort gives them back.  So a record
 * leaves the queue only once its row is durable, and two drainers never
 * write one record twice.
 *
 * A full queue blocks the enqueuing backend for up to a second, waking
 * the flusher; then the request fails with an error instead of losing the
 * record.  Such refusals are counted (secret_audit_queue(), and
 * secret_mgmt_audit_queue_full_total in the metrics), and the count
 * should stay zero.
 *
 * The flusher ("secret_mgmt audit flusher") is registered at preload and
 * connects to secret_mgmt.database.  Records of other databases are
 * written by short-lived flushers it starts for them, one per database,
 * which exit once their database has nothing queued.  On SIGTERM a
 * flusher makes a last pass before it exits, so a clean shutdown loses
 * nothing; what a crash (kill -9, power loss) leaves in shared memory is
 * lost, as the documentation says.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "audit.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(secret_audit_queue);

PGDLLEXPORT void sm_audit_flusher_main(Datum arg);

#define QUEUE_SLOTS			1024
#define FULL_WAIT_MS		1000
#define FLUSHER_NAPTIME_MS	1000
#define MAX_DB_FLUSHERS		8

typedef struct QueueSlot
{
	Oid			dboid;			/* InvalidOid: free */
	int			claimed_by;		/* pid of the drainer, or 0 */
	uint64		ticket;			/* enqueue order */
	SmAuditRecord rec;
} QueueSlot;

typedef struct AuditQueue
{
	LWLock	   *lock;
	int			used;
	uint64		next_ticket;
	uint64		enqueued;
	uint64		flushed;
	uint64		rejected;		/* requests failed because the queue was full */
	Latch	   *flusher_latch;	/* the main flusher's, or NULL */
	int			next_free;		/* where to start looking for a free slot */
	QueueSlot	slots[QUEUE_SLOTS];
} AuditQueue;

static AuditQueue *queue = NULL;

/* Slots this backend claimed in the current transaction. */
static int	claimed[QUEUE_SLOTS];
static int	nclaimed = 0;

/* secret_mgmt.database, unless another subsystem defines it */
static char *audit_database = NULL;

static volatile sig_atomic_t got_sigterm = false;

/* Shared memory request (secret_mgmt.c): the queue and its lock. */
void
sm_flusher_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(AuditQueue)));
	RequestNamedLWLockTranche("secret_mgmt audit queue", 1);
}

/* Shared memory startup (AddinShmemInitLock held): find or create it. */
void
sm_flusher_shmem_startup(void)
{
	bool		found;

	queue = ShmemInitStruct("secret_mgmt audit queue", sizeof(AuditQueue), &found);
	if (!found)
	{
		memset(queue, 0, sizeof(AuditQueue));
		queue->lock = &(GetNamedLWLockTranche("secret_mgmt audit queue"))->lock;
		queue->next_ticket = 1;
	}
}

/* At transaction end: free what was written, give back what was not. */
static void
audit_xact_callback(XactEvent event, void *arg)
{
	bool		written;

	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			sm_audit_pre_commit();
			return;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			written = true;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			written = false;
			break;
		default:
			return;
	}
	sm_audit_xact_end();
	sm_audit_forget_pending();
	if (nclaimed == 0 || queue == NULL)
		return;
	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	for (int i = 0; i < nclaimed; i++)
	{
		QueueSlot  *s = &queue->slots[claimed[i]];

		if (s->claimed_by != MyProcPid)
			continue;
		s->claimed_by = 0;
		if (written)
		{
			s->dboid = InvalidOid;
			queue->used--;
			queue->flushed++;
		}
	}
	LWLockRelease(queue->lock);
	nclaimed = 0;
}

/* Subtransaction end: pending audit records follow their subtransaction. */
static void
audit_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_COMMIT_SUB)
		sm_audit_subxact(true, mySubid, parentSubid);
	else if (event == SUBXACT_EVENT_ABORT_SUB)
		sm_audit_subxact(false, mySubid, parentSubid);
}

/* The database the main flusher connects to. */
static const char *
flusher_database(void)
{
	const char *db = GetConfigOption("secret_mgmt.database", true, false);

	return (db && db[0]) ? db : "postgres";
}

/*
 * Define secret_mgmt.database (postmaster; where the workers connect),
 * unless another subsystem already did.  Called while GUCs are defined,
 * before the prefix is reserved.
 */
void
sm_flusher_define_gucs(void)
{
	const char *existing = GetConfigOption("secret_mgmt.database", true, false);

	if (existing == NULL ||
		(GetConfigOptionFlags("secret_mgmt.database", true) & GUC_CUSTOM_PLACEHOLDER))
		DefineCustomStringVariable("secret_mgmt.database",
								   "Database the secret_mgmt background workers connect to.",
								   NULL,
								   &audit_database, "postgres",
								   PGC_POSTMASTER, 0,
								   NULL, NULL, NULL);
}

/*
 * Called from _PG_init() while preloading: the main flusher, and the
 * transaction callbacks.
 */
void
sm_flusher_init(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "secret_mgmt");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "sm_audit_flusher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "secret_mgmt audit flusher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "secret_mgmt audit flusher");
	worker.bgw_main_arg = ObjectIdGetDatum(InvalidOid);
	RegisterBackgroundWorker(&worker);

	RegisterXactCallback(audit_xact_callback, NULL);
	RegisterSubXactCallback(audit_subxact_callback, NULL);
}

static void
wake_flusher(void)
{
	Latch	   *latch = queue->flusher_latch;

	if (latch)
		SetLatch(latch);
}

/*
 * Put a record in the queue for this database.  Waits up to a second for
 * room, then fails the request rather than lose the record.
 */
void
sm_audit_enqueue(const SmAuditRecord *rec)
{
	TimestampTz start = GetCurrentTimestamp();

	if (queue == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("secret_mgmt must be loaded via shared_preload_libraries")));
	for (;;)
	{
		LWLockAcquire(queue->lock, LW_EXCLUSIVE);
		if (queue->used < QUEUE_SLOTS)
		{
			for (int k = 0; k < QUEUE_SLOTS; k++)
			{
				int			i = (queue->next_free + k) % QUEUE_SLOTS;
				QueueSlot  *s = &queue->slots[i];

				if (OidIsValid(s->dboid))
					continue;
				queue->next_free = (i + 1) % QUEUE_SLOTS;
				s->dboid = MyDatabaseId;
				s->claimed_by = 0;
				s->ticket = queue->next_ticket++;
				memcpy(&s->rec, rec, sizeof(SmAuditRecord));
				queue->used++;
				queue->enqueued++;
				break;
			}
			LWLockRelease(queue->lock);
			wake_flusher();
			return;
		}
		LWLockRelease(queue->lock);
		wake_flusher();
		if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(), FULL_WAIT_MS))
		{
			LWLockAcquire(queue->lock, LW_EXCLUSIVE);
			queue->rejected++;
			LWLockRelease(queue->lock);
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("audit queue is full"),
					 errdetail("The attempt could not be recorded, so it was refused."),
					 errhint("Check that the secret_mgmt audit flusher is running and can write secret_mgmt.secret_audit.")));
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* A claimed record's place in the queue, to sort the copies oldest first. */
typedef struct SlotTicket
{
	uint64		ticket;
	int			copy;			/* index of its copy */
} SlotTicket;

static int
ticket_cmp(const void *a, const void *b)
{
	const SlotTicket *ta = a;
	const SlotTicket *tb = b;

	return ta->ticket < tb->ticket ? -1 : ta->ticket > tb->ticket;
}

/*
 * Claim every unclaimed record of this database and copy them out, oldest
 * first.  One pass over the slots under the lock; the sort is done after
 * it is released.  Returns how many.
 */
static int
claim_batch(SmAuditRecord *out)
{
	SlotTicket *found = palloc(sizeof(SlotTicket) * QUEUE_SLOTS);
	SmAuditRecord *copies = palloc(sizeof(SmAuditRecord) * QUEUE_SLOTS);
	int			n = 0;

	LWLockAcquire(queue->lock, LW_EXCLUSIVE);
	for (int i = 0; i < QUEUE_SLOTS; i++)
	{
		QueueSlot  *s = &queue->slots[i];

		if (s->dboid != MyDatabaseId || s->claimed_by != 0)
			continue;
		s->claimed_by = MyProcPid;
		found[n].ticket = s->ticket;
		found[n].copy = n;
		memcpy(&copies[n], &s->rec, sizeof(SmAuditRecord));
		claimed[nclaimed++] = i;
		n++;
	}
	LWLockRelease(queue->lock);

	qsort(found, n, sizeof(SlotTicket), ticket_cmp);
	for (int i = 0; i < n; i++)
		memcpy(&out[i], &copies[found[i].copy], sizeof(SmAuditRecord));
	pfree(copies);
	pfree(found);
	return n;
}

/*
 * Write this database's queued records in the current transaction (SPI
 * connected, as a role that may write the audit tables): one chained
 * INSERT per tenant.  They leave the queue when the transaction commits.
 * Returns how many were written.
 */
int
sm_audit_drain(void)
{
	SmAuditRecord *batch;
	int			n;

	if (queue == NULL)
		return 0;
	if (GetCurrentTransactionNestLevel() > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("the audit queue cannot be drained inside a subtransaction")));
	if (nclaimed > 0)
		return 0;				/* drained already in this transaction */
	batch = palloc(sizeof(SmAuditRecord) * QUEUE_SLOTS);
	n = claim_batch(batch);
	sm_audit_insert_many(batch, n);
	pfree(batch);
	return n;
}

/* Databases other than ours with unclaimed records (at most `max`). */
static int
other_databases(Oid *out, int max)
{
	int			n = 0;

	LWLockAcquire(queue->lock, LW_SHARED);
	for (int i = 0; i < QUEUE_SLOTS && n < max; i++)
	{
		Oid			db = queue->slots[i].dboid;
		bool		seen = false;

		if (!OidIsValid(db) || db == MyDatabaseId || queue->slots[i].claimed_by != 0)
			continue;
		for (int j = 0; j < n; j++)
			seen |= out[j] == db;
		if (!seen)
			out[n++] = db;
	}
	LWLockRelease(queue->lock);
	return n;
}

static bool
pending_here(void)
{
	bool		found = false;

	LWLockAcquire(queue->lock, LW_SHARED);
	for (int i = 0; i < QUEUE_SLOTS && !found; i++)
		found = queue->slots[i].dboid == MyDatabaseId;
	LWLockRelease(queue->lock);
	return found;
}

/* The per-database flushers this (main) flusher started. */
static struct
{
	Oid			dboid;
	BackgroundWorkerHandle *handle;
}			db_flushers[MAX_DB_FLUSHERS];

/* Start a flusher for each other database with records waiting. */
static void
start_database_flushers(void)
{
	Oid			dbs[MAX_DB_FLUSHERS];
	int			n = other_databases(dbs, MAX_DB_FLUSHERS);

	for (int i = 0; i < MAX_DB_FLUSHERS; i++)
	{
		pid_t		pid;

		if (db_flushers[i].handle &&
			GetBackgroundWorkerPid(db_flushers[i].handle, &pid) == BGWH_STOPPED)
		{
			pfree(db_flushers[i].handle);
			db_flushers[i].handle = NULL;
			db_flushers[i].dboid = InvalidOid;
		}
	}
	for (int d = 0; d < n; d++)
	{
		BackgroundWorker worker;
		int			free_slot = -1;
		bool		running = false;

		for (int i = 0; i < MAX_DB_FLUSHERS; i++)
		{
			if (db_flushers[i].handle && db_flushers[i].dboid == dbs[d])
				running = true;
			else if (!db_flushers[i].handle && free_slot < 0)
				free_slot = i;
		}
		if (running || free_slot < 0)
			continue;
		memset(&worker, 0, sizeof(worker));
		worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
		worker.bgw_restart_time = BGW_NEVER_RESTART;
		snprintf(worker.bgw_library_name, BGW_MAXLEN, "secret_mgmt");
		snprintf(worker.bgw_function_name, BGW_MAXLEN, "sm_audit_flusher_main");
		snprintf(worker.bgw_name, BGW_MAXLEN, "secret_mgmt audit flusher for database %u",
				 dbs[d]);
		snprintf(worker.bgw_type, BGW_MAXLEN, "secret_mgmt audit flusher");
		worker.bgw_main_arg = ObjectIdGetDatum(dbs[d]);
		worker.bgw_notify_pid = MyProcPid;
		if (RegisterDynamicBackgroundWorker(&worker, &db_flushers[free_slot].handle))
			db_flushers[free_slot].dboid = dbs[d];
		else
			db_flushers[free_slot].handle = NULL;
	}
}

/* One pass: write what is queued for this database, in one transaction. */
static int
flush_pass(void)
{
	int			n = 0;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "writing queued audit records");
	if (sm_audit_installed())
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		n = sm_audit_drain();
		SPI_finish();
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return n;
}

static void
flusher_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * Main of the audit flushers.  arg is InvalidOid for the main flusher
 * (secret_mgmt.database), or the database a per-database flusher serves.
 */
void
sm_audit_flusher_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	bool		main_flusher = !OidIsValid(dboid);
	int			idle_passes = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, flusher_sigterm);
	BackgroundWorkerUnblockSignals();

	if (main_flusher)
		BackgroundWorkerInitializeConnection(flusher_database(), NULL, 0);
	else
		BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	/* Never wait long on a lock: a stuck flusher would hold up shutdown. */
	SetConfigOption("lock_timeout", "10s", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("application_name", "secret_mgmt audit flusher", PGC_SUSET, PGC_S_OVERRIDE);

	if (main_flusher)
	{
		LWLockAcquire(queue->lock, LW_EXCLUSIVE);
		queue->flusher_latch = MyLatch;
		LWLockRelease(queue->lock);
	}

	for (;;)
	{
		int			n;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		n = flush_pass();
		if (main_flusher)
			start_database_flushers();
		else if (n == 0 && !pending_here() && ++idle_passes >= 3)
			break;
		else if (n > 0)
			idle_passes = 0;

		if (got_sigterm)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 main_flusher ? FLUSHER_NAPTIME_MS : 100L, PG_WAIT_EXTENSION);
	}

	if (main_flusher)
	{
		LWLockAcquire(queue->lock, LW_EXCLUSIVE);
		if (queue->flusher_latch == MyLatch)
			queue->flusher_latch = NULL;
		LWLockRelease(queue->lock);
	}
	proc_exit(0);
}

/*
 * The queue's figures, for the metrics and secret_health(): false, with
 * zeros, when shared memory is missing (not preloaded).
 */
bool
sm_audit_queue_stats(SmAuditQueueStats *out)
{
	memset(out, 0, sizeof(*out));
	out->capacity = QUEUE_SLOTS;
	if (queue == NULL)
		return false;
	LWLockAcquire(queue->lock, LW_SHARED);
	out->used = queue->used;
	out->enqueued = queue->enqueued;
	out->flushed = queue->flushed;
	out->rejected = queue->rejected;
	LWLockRelease(queue->lock);
	return true;
}

/*
 * SQL: secret_audit_queue() returns (pending, capacity, enqueued, flushed,
 * rejected): the state of the audit queue.  rejected counts requests that
 * failed because the queue stayed full; it should stay zero.  Platform
 * administrator only.
 */
Datum
secret_audit_queue(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	SmAuditQueueStats st;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied to read the audit queue"),
				 errdetail("Only the platform administrator (a superuser) reads the audit queue.")));
	if (!sm_audit_queue_stats(&st))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("secret_mgmt must be loaded via shared_preload_libraries")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = Int32GetDatum(st.used);
	values[1] = Int32GetDatum(st.capacity);
	values[2] = Int64GetDatum((int64) st.enqueued);
	values[3] = Int64GetDatum((int64) st.flushed);
	values[4] = Int64GetDatum((int64) st.rejected);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
