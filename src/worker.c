/*-------------------------------------------------------------------------
 *
 * worker.c
 *		The background worker: rotation, expiry, retention, event delivery.
 *
 * One static worker, registered at preload, connects to
 * secret_mgmt.database (as secret_mgmt.worker_role, or the bootstrap
 * superuser when that is empty) and shows in pg_stat_activity with
 * backend_type "secret_mgmt worker".  Every pass, for each tenant in turn
 * -- in transactions of their own, with the tenant selected for the
 * transaction, so row-level security and every hook see that tenant only
 * -- it advances due rotations (rotation.c) and runs the lifecycle sweeps
 * (lifecycle.c); then it delivers due events to their sinks (events.c)
 * and queued changes to external secret backends (outbox.c), with no
 * transaction open and no lock held while it talks to the network.
 *
 * All work is recorded in the database as it is done, in small
 * transactions, and every step is idempotent, so a worker killed at any
 * point -- or a server stopped with -m immediate -- resumes on restart
 * without doing anything twice or losing anything.  The postmaster
 * restarts a worker that died after bgw_restart_time.
 *
 * The table work itself runs as the extension owner, through the same
 * internal switch as every API call (query.c); hooks and generator
 * functions run as the role that configured them.  So the connection role
 * needs no privilege at all.
 *
 * Shared memory holds the worker's latch (so that a commit with events to
 * deliver can wake it) and counters, under one LWLock of the tranche
 * "secret_mgmt"; never anything secret.  The lock is never held across
 * anything but a few assignments.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "events.h"
#include "keyring.h"
#include "loghygiene.h"
#include "miscadmin.h"
#include "outbox.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "query.h"
#include "rotation.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "worker.h"

PGDLLEXPORT void secret_mgmt_worker_main(Datum arg) pg_attribute_noreturn();

/* What the worker shares. */
typedef struct SmWorkerShared
{
	LWLock	   *lock;
	pid_t		pid;
	Latch	   *latch;
	TimestampTz started_at;
	TimestampTz last_pass;
	int64		counts[SM_NUM_COUNTS];
} SmWorkerShared;

static SmWorkerShared *shared = NULL;

#define SWEEP_BATCH		5000
#define DELIVERY_BATCH	200

/* Shared memory request (secret_mgmt.c): our struct and one LWLock. */
void
sm_worker_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(SmWorkerShared)));
	RequestNamedLWLockTranche("secret_mgmt", 1);
}

/* Shared memory startup (AddinShmemInitLock held): find or create it. */
void
sm_worker_shmem_startup(void)
{
	bool		found;

	shared = ShmemInitStruct("secret_mgmt worker", sizeof(SmWorkerShared), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(SmWorkerShared));
		shared->lock = &(GetNamedLWLockTranche("secret_mgmt"))->lock;
	}
}

/* Register the worker (from _PG_init, while preloading). */
void
sm_worker_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "secret_mgmt");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "secret_mgmt_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "secret_mgmt worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "secret_mgmt worker");
	RegisterBackgroundWorker(&worker);
}

/* Wake the worker (after a commit that left it work). */
void
sm_worker_wake(void)
{
	Latch	   *latch = NULL;

	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_SHARED);
	latch = shared->latch;
	LWLockRelease(shared->lock);
	if (latch)
		SetLatch(latch);
}

/*
 * The worker's state for secret_health(): false when shared memory is
 * missing; otherwise its pid (0 when not running), when it started and
 * when it last finished a pass (0 when never).
 */
bool
sm_worker_status(int *pid, TimestampTz *started_at, TimestampTz *last_pass)
{
	if (shared == NULL)
		return false;
	LWLockAcquire(shared->lock, LW_SHARED);
	*pid = shared->pid;
	*started_at = shared->started_at;
	*last_pass = shared->last_pass;
	LWLockRelease(shared->lock);
	return true;
}

/* Count work done, for operators. */
void
sm_worker_count(int what, int64 n)
{
	if (shared == NULL || n == 0 || what < 0 || what >= SM_NUM_COUNTS)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->counts[what] += n;
	LWLockRelease(shared->lock);
}

/* Copy the SM_NUM_COUNTS counts, since server start, into `out`. */
void
sm_worker_counts(int64 *out)
{
	memset(out, 0, sizeof(int64) * SM_NUM_COUNTS);
	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_SHARED);
	memcpy(out, shared->counts, sizeof(int64) * SM_NUM_COUNTS);
	LWLockRelease(shared->lock);
}

/* Backoff after `attempts` failures: 1 s, 2 s, 4 s, ... up to the maximum. */
int64
sm_backoff_ms(int attempts)
{
	int64		ms = 1000;

	for (int i = 1; i < attempts && ms < (int64) sm_retry_backoff_max * 1000; i++)
		ms *= 2;
	return Min(ms, (int64) sm_retry_backoff_max * 1000);
}

/*
 * The caller the worker acts as inside `tenant`: its connection role, as
 * an administrator of the tenant, with no resolution context.
 */
void
sm_worker_caller(SmCaller *c, const char *tenant)
{
	Oid			role = GetSessionUserId();
	char	   *name = GetUserNameFromId(role, true);

	memset(c, 0, sizeof(*c));
	c->roleid = role;
	c->rolename = name ? name : psprintf("%u", role);
	c->tenant = pstrdup(tenant);
	c->is_admin = true;
	c->is_superuser = superuser_arg(role);
}

static void
worker_detach(int code, Datum arg)
{
	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (shared->pid == MyProcPid)
	{
		shared->pid = 0;
		shared->latch = NULL;
	}
	LWLockRelease(shared->lock);
}

/* The tenants to work for, or NIL when the extension is not installed. */
static pg_noinline List *
list_tenants(MemoryContext cxt)
{
	static SmStmt stmt = {
		"SELECT tenant_id FROM secret_mgmt.secret_tenant ORDER BY tenant_id",
		0, {InvalidOid}
	};
	List	   *tenants = NIL;
	Oid			nsp;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	nsp = get_namespace_oid("secret_mgmt", true);
	if (OidIsValid(nsp) && OidIsValid(get_relname_relid("secret_lifecycle", nsp)))
	{
		SmSession	session;
		int			n;

		sm_enter(&session);
		n = sm_exec(&stmt, NULL, NULL, 0);
		for (int i = 0; i < n; i++)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			tenants = lappend(tenants, sm_col_text(i, 1));
			MemoryContextSwitchTo(old);
		}
		sm_leave(&session);
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return tenants;
}

/* Report an error of one unit of work, and clean up after it. */
static void
recover(MemoryContext cxt)
{
	MemoryContextSwitchTo(cxt);
	EmitErrorReport();
	FlushErrorState();
	AbortOutOfAnyTransaction();
	MemoryContextSwitchTo(cxt);
}

/* One pass over all the work.  Returns true when more is waiting. */
static bool
run_pass(MemoryContext cxt)
{
	List	   *volatile tenants;
	ListCell   *volatile lc;
	volatile bool more = false;
	bool		keys = sm_keyring_root_loaded();

	pgstat_report_activity(STATE_RUNNING, "listing tenants");
	tenants = list_tenants(cxt);
	foreach(lc, tenants)
	{
		char	   *tenant = lfirst(lc);
		char		activity[128];

		CHECK_FOR_INTERRUPTS();
		PG_TRY();
		{
			if (keys)
			{
				snprintf(activity, sizeof(activity), "rotating secrets of tenant %s", tenant);
				pgstat_report_activity(STATE_RUNNING, activity);
				if (sm_rotation_run_due(tenant, sm_worker_batch) >= sm_worker_batch)
					more = true;
			}
			snprintf(activity, sizeof(activity), "expiry and retention of tenant %s", tenant);
			pgstat_report_activity(STATE_RUNNING, activity);
			if (sm_lifecycle_sweep(tenant, SWEEP_BATCH) >= SWEEP_BATCH)
				more = true;
		}
		PG_CATCH();
		{
			recover(cxt);
		}
		PG_END_TRY();
	}

	if (keys && tenants != NIL)
	{
		PG_TRY();
		{
			pgstat_report_activity(STATE_RUNNING, "delivering events");
			if (sm_events_deliver(DELIVERY_BATCH) >= DELIVERY_BATCH)
				more = true;
		}
		PG_CATCH();
		{
			recover(cxt);
		}
		PG_END_TRY();

		PG_TRY();
		{
			pgstat_report_activity(STATE_RUNNING, "delivering to backends");
			if (sm_outbox_deliver(DELIVERY_BATCH) >= DELIVERY_BATCH)
				more = true;
		}
		PG_CATCH();
		{
			recover(cxt);
		}
		PG_END_TRY();
	}

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->last_pass = GetCurrentTimestamp();
	LWLockRelease(shared->lock);
	return more;
}

/* Entry point of the worker. */
void
secret_mgmt_worker_main(Datum arg)
{
	MemoryContext pass_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(sm_worker_database,
										 (sm_worker_role && sm_worker_role[0]) ? sm_worker_role : NULL,
										 0);
	pgstat_report_appname("secret_mgmt worker");

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->pid = MyProcPid;
	shared->latch = MyLatch;
	shared->started_at = GetCurrentTimestamp();
	LWLockRelease(shared->lock);
	before_shmem_exit(worker_detach, (Datum) 0);

	ereport(LOG,
			(errmsg("secret_mgmt worker started in database \"%s\"%s%s%s",
					sm_worker_database,
					(sm_worker_role && sm_worker_role[0]) ? " as role \"" : " as the bootstrap superuser",
					(sm_worker_role && sm_worker_role[0]) ? sm_worker_role : "",
					(sm_worker_role && sm_worker_role[0]) ? "\"" : "")));

	pass_cxt = AllocSetContextCreate(TopMemoryContext, "secret_mgmt worker pass",
									 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		bool		more;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* The logging profile may have changed with the files. */
			sm_loghygiene_report(WARNING);
		}

		MemoryContextSwitchTo(pass_cxt);
		more = run_pass(pass_cxt);
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(pass_cxt);
		pgstat_report_stat(false);
		pgstat_report_activity(STATE_IDLE, NULL);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 more ? 0L : (long) sm_worker_naptime, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
