/*-------------------------------------------------------------------------
 *
 * rotation.c
 *		Rotation: policy, the four steps, and the worker's driver.
 *
 * A rotation moves a secret through four steps; its secret_lifecycle row
 * (rotation_state) records where it stands -- "pending" once the new
 * version is committed, the step that failed after a failure, "idle" when
 * it is done -- so that it resumes where it stopped:
 *
 *	 create   a new version, made by the generator (or given), is inserted
 *			  and labelled "pending"                         (idle -> pending)
 *	 set      the hook applies the pending value to the target system
 *																 (-> set)
 *	 test     the test hook proves that the target accepts it   (-> tested)
 *	 finish   "current" moves to the pending version, the old current
 *			  becomes "previous" for a grace period, and "pending" goes
 *																 (-> idle)
 *
 * A step that fails is rolled back alone (a subtransaction): "current" is
 * untouched, the error is recorded with the number of attempts, and the
 * step is retried after an exponential backoff.  Hooks are called with the
 * secret's path and the pending version number -- never the value; they
 * read it with secret_resolve(path, 'pending') -- as the role that
 * configured the rotation, in a restricted security context, with the
 * tenant selected for the transaction and search_path pinned to
 * pg_catalog, pg_temp.  Hooks must be idempotent for one version: after a
 * crash a step is run again with the same version.
 *
 * The worker commits the "create" step of a batch before any hook runs,
 * so a retried "set" applies the value that was already committed, never
 * a second new one; versions are allocated under the secret's row lock
 * and stay gap-free.  The hook steps of a batch run in transactions that
 * end every ROTATION_SLICE_MS, which bounds how long the rows they lock
 * stay locked.
 *
 * secret_rotate() runs the four steps at once in the caller's transaction
 * and raises the first failure.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "acl.h"
#include "audit.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "crypto.h"
#include "events.h"
#include "fmgr.h"
#include "funcapi.h"
#include "loghygiene.h"
#include "miscadmin.h"
#include "query.h"
#include "outbox.h"
#include "rotation.h"
#include "store.h"
#include "types.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(secret_set_rotation);
PG_FUNCTION_INFO_V1(secret_rotate);
PG_FUNCTION_INFO_V1(secret_rotations);
PG_FUNCTION_INFO_V1(secret_set_max_versions);

#define ROTATION_SLICE_MS	250

/* One rotation in progress. */
typedef struct Rotation
{
	pg_uuid_t	id;
	char	   *path;
	char	   *type;
	char	   *generator;		/* NULL: the type's default */
	char	   *state;
	int32		pending;
	Oid			hook;
	Oid			test_hook;
	Oid			owner;			/* runs hooks and generator functions */
	int			attempts;
	const uint8 *value;			/* given by secret_rotate(), or NULL */
	size_t		value_len;
	bool		external;		/* may be stored in a backend: queue writes */
} Rotation;

/* Interval as seconds, months counted as 30 days (for the lower bound). */
static double
interval_seconds(const Interval *iv)
{
	return (double) iv->month * 30 * SECS_PER_DAY + (double) iv->day * SECS_PER_DAY +
		(double) iv->time / USECS_PER_SEC;
}

static void
check_period(Interval *period)
{
	if (period != NULL && interval_seconds(period) < 1.0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rotation period must be at least one second")));
}

/* A hook must take (text, integer) and be executable by `owner`. */
static void
check_hook(Oid hook, Oid owner, const char *what)
{
	HeapTuple	tup;
	Form_pg_proc proc;
	bool		ok;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(hook));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("%s function %u does not exist", what, hook)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	ok = proc->prokind == PROKIND_FUNCTION && !proc->proretset && proc->pronargs == 2 &&
		proc->proargtypes.values[0] == TEXTOID && proc->proargtypes.values[1] == INT4OID;
	ReleaseSysCache(tup);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s %s must take (path text, version integer)",
						what, format_procedure_qualified(hook))));
	if (pg_proc_aclcheck(hook, owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied for %s %s", what,
						format_procedure_qualified(hook))));
}

/*
 * Call a hook as `owner`: restricted security context, the tenant selected
 * for the transaction, search_path pinned.  Errors propagate.
 */
static void
call_hook(Oid hook, Oid owner, const char *tenant, const char *path, int32 version,
		  const char *what)
{
	Oid			save_user;
	int			save_sec;
	int			level;

	if (!SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(hook)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("%s function %u no longer exists", what, hook),
				 errhint("Configure the rotation again with secret_mgmt.secret_set_rotation().")));
	if (pg_proc_aclcheck(hook, owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied for %s %s", what,
						format_procedure_qualified(hook))));
	sm_tenant_select_for_xact(tenant);
	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	level = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	{
		/* Like OidFunctionCall2(), but a null result (void SQL) is fine. */
		LOCAL_FCINFO(fcinfo, 2);
		FmgrInfo	flinfo;

		fmgr_info(hook, &flinfo);
		InitFunctionCallInfoData(*fcinfo, &flinfo, 2, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = CStringGetTextDatum(path);
		fcinfo->args[0].isnull = false;
		fcinfo->args[1].value = Int32GetDatum(version);
		fcinfo->args[1].isnull = false;
		(void) FunctionCallInvoke(fcinfo);
	}
	AtEOXact_GUC(true, level);
	SetUserIdAndSecContext(save_user, save_sec);
}

static void
update_state(const SmCaller *c, const Rotation *r, const char *state)
{
	static SmStmt stmt = {
		"UPDATE secret_mgmt.secret_lifecycle"
		"   SET rotation_state = $3, pending_version = $4"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2",
		4, {TEXTOID, UUIDOID, TEXTOID, INT4OID}
	};
	Datum		args[4];

	args[0] = CStringGetTextDatum(c->tenant);
	args[1] = UUIDPGetDatum(&r->id);
	args[2] = CStringGetTextDatum(state);
	args[3] = Int32GetDatum(r->pending);
	sm_exec(&stmt, args, NULL, 0);
}

/* Step 1: a new version, labelled pending. */
static void
step_create(const SmCaller *c, Rotation *r)
{
	SmSecret	s;
	int32		version;
	uint8	   *plain;
	size_t		len;

	memset(&s, 0, sizeof(s));
	s.id = r->id;
	version = sm_store_next_version(c, r->path, &s);
	if (r->value)
	{
		plain = (uint8 *) r->value;
		len = r->value_len;
	}
	else
	{
		const char *spec = r->generator ? r->generator : sm_generator_default(r->type);
		SmGenerator g;

		if (spec == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("secret \"%s\" has no generator", r->path),
					 errdetail("Secrets of type \"%s\" have no default generator.", r->type),
					 errhint("Give one with secret_mgmt.secret_set_rotation(), or pass the new value to secret_mgmt.secret_rotate().")));
		sm_generator_parse(spec, InvalidOid, &g);
		plain = sm_generator_run(&g, r->path, OidIsValid(r->owner) ? r->owner : c->roleid, &len);
	}
	sm_store_insert_version(c, &r->id, r->type, version, plain, len);
	sm_audit_write(c, "rotate", r->path, &r->id, version, plain, len);
	if (!r->value)
		sm_wipe(plain, len);
	sm_store_set_label(c, &r->id, "pending", version);
	r->pending = version;
	r->state = "pending";
	update_state(c, r, "pending");
	sm_event_emit(c->tenant, "rotation_started", &r->id, r->path, version,
				  c->rolename, NULL);
}

/* Steps 2 and 3: the hook, then the test hook (either may be absent). */
static void
step_hook(const SmCaller *c, Rotation *r, bool test)
{
	Oid			fn = test ? r->test_hook : r->hook;

	if (OidIsValid(fn))
		call_hook(fn, r->owner, c->tenant, r->path, r->pending,
				  test ? "test hook" : "hook");

	/*
	 * Not recorded: the worker runs set, test and finish in one transaction
	 * and records where a failure left the rotation (record_failure), or
	 * its end (step_finish).  After a crash they run again from "pending",
	 * which hooks must allow anyway.
	 */
	r->state = test ? "tested" : "set";
}

/* Step 4: pending becomes current, current becomes previous. */
static void
step_finish(const SmCaller *c, Rotation *r)
{
	static SmStmt drop_pending = {
		"DELETE FROM secret_mgmt.secret_label"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2"
		"   AND label OPERATOR(pg_catalog.=) 'pending'",
		2, {TEXTOID, UUIDOID}
	};
	static SmStmt done = {
		"INSERT INTO secret_mgmt.secret_lifecycle AS l"
		" (tenant_id, secret_id, last_rotated_at, grace_version, grace_until, due_at)"
		" SELECT $1, $2, pg_catalog.now(), $3,"
		"        pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+)"
		"          pg_catalog.make_interval(secs => $4::pg_catalog.float8),"
		"        pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) i.rotation_period"
		"   FROM secret_mgmt.secret_item i"
		"  WHERE i.tenant_id OPERATOR(pg_catalog.=) $1 AND i.secret_id OPERATOR(pg_catalog.=) $2"
		" ON CONFLICT (tenant_id, secret_id) DO UPDATE"
		" SET rotation_state = 'idle', pending_version = NULL, attempts = 0,"
		"     last_error = NULL, last_error_at = NULL, last_rotated_at = pg_catalog.now(),"
		"     grace_version = EXCLUDED.grace_version,"
		"     grace_until = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+)"
		"        COALESCE(l.grace, pg_catalog.make_interval(secs => $4::pg_catalog.float8)),"
		"     due_at = EXCLUDED.due_at",
		4, {TEXTOID, UUIDOID, INT4OID, INT4OID}
	};
	Datum		args[4];
	int32		old = sm_store_current_version(c, &r->id);

	sm_store_promote(c, &r->id, r->pending);
	if (r->external)
		sm_outbox_queue(c, &r->id, "write", r->pending);
	args[0] = CStringGetTextDatum(c->tenant);
	args[1] = UUIDPGetDatum(&r->id);
	sm_exec(&drop_pending, args, NULL, 0);
	args[2] = Int32GetDatum(old);
	args[3] = Int32GetDatum(sm_rotation_grace);
	sm_exec(&done, args, NULL, 0);
	sm_event_emit(c->tenant, "rotated", &r->id, r->path, r->pending, c->rolename,
				  psprintf("{\"previous\": %d}", old));
	sm_audit_write(c, "rotation_finish", r->path, &r->id, r->pending, NULL, 0);
	r->state = "idle";
}

/* Run the next step of a rotation. */
static void
step(const SmCaller *c, Rotation *r)
{
	if (strcmp(r->state, "idle") == 0)
		step_create(c, r);
	else if (strcmp(r->state, "pending") == 0)
		step_hook(c, r, false);
	else if (strcmp(r->state, "set") == 0)
		step_hook(c, r, true);
	else if (strcmp(r->state, "tested") == 0)
		step_finish(c, r);
	else
		elog(ERROR, "unknown rotation state \"%s\"", r->state);
}

/* Record a failed step: error, attempts, and the time of the next try. */
static void
record_failure(const SmCaller *c, Rotation *r, const char *stepname, ErrorData *edata)
{
	static SmStmt stmt = {
		"UPDATE secret_mgmt.secret_lifecycle"
		"   SET attempts = attempts OPERATOR(pg_catalog.+) 1, last_error = $3,"
		"       last_error_at = pg_catalog.now(), rotation_state = $5, pending_version = $6,"
		"       due_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+)"
		"                pg_catalog.make_interval(secs => $4::pg_catalog.float8 OPERATOR(pg_catalog./) 1000)"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2",
		6, {TEXTOID, UUIDOID, TEXTOID, INT8OID, TEXTOID, INT4OID}
	};
	Datum		args[6];
	char		nulls[6] = "      ";
	char	   *msg = psprintf("%s: %s (SQLSTATE %s)", stepname,
							   edata->message ? edata->message : "error",
							   unpack_sql_state(edata->sqlerrcode));
	StringInfoData detail;

	if (strlen(msg) > 900)
		msg[900] = '\0';
	r->attempts++;
	args[0] = CStringGetTextDatum(c->tenant);
	args[1] = UUIDPGetDatum(&r->id);
	args[2] = CStringGetTextDatum(msg);
	args[3] = Int64GetDatum(sm_backoff_ms(r->attempts));
	args[4] = CStringGetTextDatum(r->state);
	if (strcmp(r->state, "idle") == 0)
	{
		nulls[5] = 'n';
		r->pending = 0;
	}
	else
		args[5] = Int32GetDatum(r->pending);
	sm_exec(&stmt, args, nulls, 0);
	initStringInfo(&detail);
	appendStringInfo(&detail, "{\"step\": \"%s\", \"attempts\": %d, \"sqlstate\": \"%s\"}",
					 stepname, r->attempts, unpack_sql_state(edata->sqlerrcode));
	sm_event_emit(c->tenant, "rotation_failed", &r->id, r->path,
				  r->pending, c->rolename, detail.data);
	sm_audit_write_failed(c, psprintf("rotation_%s", stepname), r->path, &r->id,
						  r->pending, edata->sqlerrcode);
	sm_worker_count(SM_COUNT_FAILURES, 1);
	ereport(LOG,
			(errmsg("secret_mgmt: rotation of secret \"%s\" in tenant \"%s\" failed at step %s, attempt %d",
					r->path, c->tenant, stepname, r->attempts),
			 errdetail_internal("%s", msg)));
}

/*
 * Run one step in a subtransaction.  Returns false, with the failure
 * recorded, if it failed.
 */
static bool
try_step(const SmCaller *c, Rotation *r)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	const char *stepname = strcmp(r->state, "idle") == 0 ? "create" :
		strcmp(r->state, "pending") == 0 ? "set" :
		strcmp(r->state, "set") == 0 ? "test" : "finish";
	volatile bool ok = true;

	/* A step with no hook to call cannot fail: no subtransaction needed. */
	if ((strcmp(r->state, "pending") == 0 && !OidIsValid(r->hook)) ||
		(strcmp(r->state, "set") == 0 && !OidIsValid(r->test_hook)))
	{
		step(c, r);
		return true;
	}

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		step(c, r);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		/* the step's state change was rolled back with it */
		if (strcmp(stepname, "create") == 0)
			r->state = "idle";
		else if (strcmp(stepname, "set") == 0)
			r->state = "pending";
		else if (strcmp(stepname, "test") == 0)
			r->state = "set";
		else
			r->state = "tested";
		record_failure(c, r, stepname, edata);
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/* Rotations of a tenant that are due, locked; idle ones or in-progress ones. */
static int
select_due(const char *tenant, bool idle, int max)
{
	static SmStmt stmt = {
		"SELECT l.secret_id, i.path, i.type, i.generator, l.rotation_state,"
		"       l.pending_version, l.hook::pg_catalog.oid, l.test_hook::pg_catalog.oid,"
		"       l.hook_owner::pg_catalog.oid, l.attempts,"
		"       i.backend OPERATOR(pg_catalog.<>) 'local'"
		"  FROM secret_mgmt.secret_lifecycle l"
		"  JOIN secret_mgmt.secret_item i"
		"    ON i.tenant_id OPERATOR(pg_catalog.=) l.tenant_id"
		"   AND i.secret_id OPERATOR(pg_catalog.=) l.secret_id"
		" WHERE l.tenant_id OPERATOR(pg_catalog.=) $1"
		"   AND l.due_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()"
		"   AND (l.rotation_state OPERATOR(pg_catalog.=) 'idle') OPERATOR(pg_catalog.=) $2"
		"   AND i.deleted_at IS NULL"
		" ORDER BY l.due_at LIMIT $3"
		" FOR UPDATE OF l SKIP LOCKED",
		3, {TEXTOID, BOOLOID, INT4OID}
	};
	Datum		args[3];

	args[0] = CStringGetTextDatum(tenant);
	args[1] = BoolGetDatum(idle);
	args[2] = Int32GetDatum(max);
	return sm_exec(&stmt, args, NULL, 0);
}

/* Row i of select_due()'s result. */
static void
read_rotation(int i, Rotation *r)
{
	bool		isnull;

	memset(r, 0, sizeof(*r));
	memcpy(&r->id, DatumGetUUIDP(sm_col(i, 1, &isnull)), sizeof(pg_uuid_t));
	r->path = sm_col_text(i, 2);
	r->type = sm_col_text(i, 3);
	r->generator = sm_col_text(i, 4);
	r->state = sm_col_text(i, 5);
	r->pending = sm_col_int32(i, 6);
	r->hook = DatumGetObjectId(sm_col(i, 7, &isnull));
	if (isnull)
		r->hook = InvalidOid;
	r->test_hook = DatumGetObjectId(sm_col(i, 8, &isnull));
	if (isnull)
		r->test_hook = InvalidOid;
	r->owner = DatumGetObjectId(sm_col(i, 9, &isnull));
	if (isnull)
		r->owner = InvalidOid;
	r->attempts = sm_col_int32(i, 10);
	r->external = sm_col_bool(i, 11);
}

/* Copy the rows of the last select_due() into `cxt`. */
static Rotation *
read_rotations(int n, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	Rotation   *rs = palloc0(sizeof(Rotation) * Max(n, 1));

	for (int i = 0; i < n; i++)
		read_rotation(i, &rs[i]);
	MemoryContextSwitchTo(old);
	return rs;
}

static void
begin_xact(const char *tenant)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	sm_tenant_select_for_xact(tenant);
}

static void
commit_xact(MemoryContext cxt)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
}

/*
 * The worker's share of rotation for one tenant: up to `max` rotations.
 * Runs with no transaction open.  Returns how many rotations it worked on.
 */
int
sm_rotation_run_due(const char *tenant, int max)
{
	MemoryContext cxt = CurrentMemoryContext;
	SmSession	session;
	SmCaller	c;
	Rotation   *rs;
	int			n;
	int			done = 0;
	int			i;

	/* Phase 1: create the pending versions of due rotations, and commit. */
	begin_xact(tenant);
	sm_enter(&session);
	sm_worker_caller(&c, tenant);
	n = select_due(tenant, true, max);
	rs = read_rotations(n, cxt);
	for (i = 0; i < n; i++)
	{
		Rotation   *r = &rs[i];

		/* Nothing outside the database to update: all four steps at once. */
		if (try_step(&c, r) && !OidIsValid(r->hook) && !OidIsValid(r->test_hook))
			while (strcmp(r->state, "idle") != 0 && try_step(&c, r))
				;
		if (strcmp(r->state, "idle") == 0 && r->pending > 0)
			sm_worker_count(SM_COUNT_ROTATIONS, 1);
	}
	done += n;
	sm_leave(&session);
	commit_xact(cxt);

	/*
	 * Phase 2: hooks and finish of rotations in progress, in slices of
	 * ROTATION_SLICE_MS so that locks are not held long.
	 */
	for (;;)
	{
		TimestampTz start;

		begin_xact(tenant);
		sm_enter(&session);
		sm_worker_caller(&c, tenant);
		n = select_due(tenant, false, max);
		rs = read_rotations(n, cxt);
		start = GetCurrentTimestamp();
		for (i = 0; i < n; i++)
		{
			Rotation   *r = &rs[i];

			CHECK_FOR_INTERRUPTS();
			while (strcmp(r->state, "idle") != 0 && try_step(&c, r))
				;
			if (strcmp(r->state, "idle") == 0)
				sm_worker_count(SM_COUNT_ROTATIONS, 1);
			if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(), ROTATION_SLICE_MS))
			{
				i++;
				break;
			}
		}
		sm_leave(&session);
		commit_xact(cxt);
		done += i;
		/* a full slice: the rest is for another transaction */
		if (i == n || done >= 10 * max)
			break;
	}
	return done;
}

/* The interval argument n, or NULL. */
static Interval *
arg_interval(FunctionCallInfo fcinfo, int n)
{
	return PG_ARGISNULL(n) ? NULL : PG_GETARG_INTERVAL_P(n);
}

/*
 * Store a rotation policy.  generator NULL keeps the type's default;
 * period NULL means rotation on demand only (secret_rotate).
 */
static void
configure(const SmCaller *c, const pg_uuid_t *id, const char *path, const char *type,
		  Interval *period, const char *generator, Oid hook, Oid test_hook,
		  Interval *grace)
{
	static SmStmt item = {
		"UPDATE secret_mgmt.secret_item"
		"   SET rotation_period = $3, generator = $4,"
		"       updated_at = pg_catalog.now(), updated_by = $5"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2",
		5, {TEXTOID, UUIDOID, INTERVALOID, TEXTOID, TEXTOID}
	};
	static SmStmt upsert = {
		"INSERT INTO secret_mgmt.secret_lifecycle AS l"
		" (tenant_id, secret_id, hook, test_hook, hook_owner, grace, due_at)"
		" VALUES ($1, $2, $3, $4, $5, $6,"
		"         pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) $7)"
		" ON CONFLICT (tenant_id, secret_id) DO UPDATE"
		" SET hook = EXCLUDED.hook, test_hook = EXCLUDED.test_hook,"
		"     hook_owner = EXCLUDED.hook_owner, grace = EXCLUDED.grace,"
		"     due_at = CASE WHEN l.rotation_state OPERATOR(pg_catalog.=) 'idle'"
		"                   THEN EXCLUDED.due_at ELSE l.due_at END",
		7, {TEXTOID, UUIDOID, REGPROCEDUREOID, REGPROCEDUREOID, REGROLEOID,
		INTERVALOID, INTERVALOID}
	};
	Datum		args[7];
	char		nulls[7] = "       ";
	const char *canonical = NULL;

	check_period(period);
	if (grace != NULL && interval_seconds(grace) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("grace period must not be negative")));
	if (generator)
	{
		SmGenerator g;

		sm_generator_parse(generator, c->roleid, &g);
		canonical = g.canonical;
	}
	else if (period != NULL && sm_generator_default(type) == NULL && !OidIsValid(hook))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("secrets of type \"%s\" need a generator to rotate", type),
				 errhint("Give a generator, such as password(32, true) or a function returning text.")));
	if (OidIsValid(hook))
		check_hook(hook, c->roleid, "hook");
	if (OidIsValid(test_hook))
		check_hook(test_hook, c->roleid, "test hook");

	args[0] = CStringGetTextDatum(c->tenant);
	args[1] = UUIDPGetDatum(id);
	if (period)
		args[2] = IntervalPGetDatum(period);
	else
		nulls[2] = 'n';
	if (canonical)
		args[3] = CStringGetTextDatum(canonical);
	else
		nulls[3] = 'n';
	args[4] = CStringGetTextDatum(c->rolename);
	sm_exec(&item, args, nulls, 0);

	memset(nulls, ' ', sizeof(nulls));
	args[2] = ObjectIdGetDatum(hook);
	nulls[2] = OidIsValid(hook) ? ' ' : 'n';
	args[3] = ObjectIdGetDatum(test_hook);
	nulls[3] = OidIsValid(test_hook) ? ' ' : 'n';
	args[4] = ObjectIdGetDatum(c->roleid);
	if (grace)
		args[5] = IntervalPGetDatum(grace);
	else
		nulls[5] = 'n';
	if (period)
		args[6] = IntervalPGetDatum(period);
	else
		nulls[6] = 'n';
	sm_exec(&upsert, args, nulls, 0);
	sm_event_emit(c->tenant, "rotation_configured", id, path, 0, c->rolename, NULL);
}

/* secret_create(..., rotation_period, generator): store the policy. */
void
sm_rotation_on_create(const SmCaller *c, const pg_uuid_t *id, const char *path,
					  const char *type, Interval *period, const char *generator)
{
	configure(c, id, path, type, period, generator, InvalidOid, InvalidOid, NULL);
}

/*
 * SQL: secret_set_rotation(path, period, generator, hook, test_hook, grace).
 * The hooks run as the caller.
 */
Datum
secret_set_rotation(PG_FUNCTION_ARGS)
{
	SmSession	session;
	SmCaller	c;
	SmSecret	s;
	char	   *path;
	char	   *generator = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	Oid			hook = PG_ARGISNULL(3) ? InvalidOid : PG_GETARG_OID(3);
	Oid			test_hook = PG_ARGISNULL(4) ? InvalidOid : PG_GETARG_OID(4);

	path = sm_store_arg_path(fcinfo, 0);

	sm_audit_begin("set_rotation", path);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, path);
	sm_acl_require(&c, path, SM_CAP_ROTATE);
	sm_store_require(&c, path, SM_FIND_LIVE, &s);
	configure(&c, &s.id, path, s.type, arg_interval(fcinfo, 1), generator, hook, test_hook,
			  PG_NARGS() > 5 ? arg_interval(fcinfo, 5) : NULL);
	sm_audit_write(&c, "set_rotation", path, &s.id, 0, NULL, 0);
	sm_leave(&session);
	PG_RETURN_VOID();
}

/*
 * SQL: secret_rotate(path, value) returns the new current version.  Runs
 * the four steps now, in the caller's transaction; a null value is made by
 * the secret's generator.
 */
Datum
secret_rotate(PG_FUNCTION_ARGS)
{
	static SmStmt policy = {
		"SELECT l.rotation_state, l.hook::pg_catalog.oid, l.test_hook::pg_catalog.oid,"
		"       l.hook_owner::pg_catalog.oid, i.generator"
		"  FROM secret_mgmt.secret_item i"
		"  LEFT JOIN secret_mgmt.secret_lifecycle l"
		"    ON l.tenant_id OPERATOR(pg_catalog.=) i.tenant_id"
		"   AND l.secret_id OPERATOR(pg_catalog.=) i.secret_id"
		" WHERE i.tenant_id OPERATOR(pg_catalog.=) $1 AND i.secret_id OPERATOR(pg_catalog.=) $2",
		2, {TEXTOID, UUIDOID}
	};
	static SmStmt lock = {
		"SELECT 1 FROM secret_mgmt.secret_lifecycle"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2"
		" FOR UPDATE",
		2, {TEXTOID, UUIDOID}
	};
	SmSession	session;
	SmCaller	c;
	SmSecret	s;
	Rotation	r;
	char	   *path;
	Datum		args[2];
	bool		isnull;
	char	   *state;

	path = sm_store_arg_path(fcinfo, 0);
	if (PG_NARGS() > 1 && !PG_ARGISNULL(1))
		sm_loghygiene_value_op("secret_rotate");

	sm_audit_begin("rotate", path);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, path);
	sm_acl_require(&c, path, SM_CAP_ROTATE);
	sm_store_require(&c, path, SM_FIND_LIVE, &s);
	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = UUIDPGetDatum(&s.id);
	sm_exec(&lock, args, NULL, 0);
	if (sm_exec(&policy, args, NULL, 1) != 1)
		sm_report_not_found(path, NULL);

	memset(&r, 0, sizeof(r));
	r.id = s.id;
	r.path = path;
	r.type = s.type;
	state = sm_col_text(0, 1);
	r.hook = DatumGetObjectId(sm_col(0, 2, &isnull));
	if (isnull)
		r.hook = InvalidOid;
	r.test_hook = DatumGetObjectId(sm_col(0, 3, &isnull));
	if (isnull)
		r.test_hook = InvalidOid;
	r.owner = DatumGetObjectId(sm_col(0, 4, &isnull));
	if (isnull)
		r.owner = c.roleid;
	r.generator = sm_col_text(0, 5);
	if (state != NULL && strcmp(state, "idle") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("a rotation of secret \"%s\" is in progress", path),
				 errdetail("It is at step \"%s\"; the worker retries it.", state),
				 errhint("See secret_mgmt.secret_rotations() for its last error.")));
	r.state = "idle";
	r.external = true;			/* sm_outbox_queue() checks */
	if (PG_NARGS() > 1 && !PG_ARGISNULL(1))
	{
		text	   *v = PG_GETARG_TEXT_PP(1);

		r.value = (const uint8 *) VARDATA_ANY(v);
		r.value_len = VARSIZE_ANY_EXHDR(v);
	}
	while (strcmp(r.state, "idle") != 0 || r.pending == 0)
		step(&c, &r);
	sm_leave(&session);
	PG_RETURN_INT32(r.pending);
}

/* SQL: secret_rotations(prefix) returns the rotation state of secrets */
Datum
secret_rotations(PG_FUNCTION_ARGS)
{
	static SmStmt stmt = {
		"SELECT i.path, i.rotation_period, i.generator, l.hook::pg_catalog.text,"
		"       l.test_hook::pg_catalog.text, COALESCE(l.rotation_state, 'idle'),"
		"       l.pending_version, i.current_version, l.due_at, l.attempts, l.last_error,"
		"       l.last_error_at, l.last_rotated_at, l.max_versions"
		"  FROM secret_mgmt.secret_item i"
		"  LEFT JOIN secret_mgmt.secret_lifecycle l"
		"    ON l.tenant_id OPERATOR(pg_catalog.=) i.tenant_id"
		"   AND l.secret_id OPERATOR(pg_catalog.=) i.secret_id"
		" WHERE i.tenant_id OPERATOR(pg_catalog.=) $1"
		"   AND pg_catalog.starts_with(i.path, $2)"
		"   AND i.deleted_at IS NULL"
		"   AND (i.rotation_period IS NOT NULL OR i.generator IS NOT NULL"
		"        OR l.hook IS NOT NULL OR l.test_hook IS NOT NULL"
		"        OR l.last_rotated_at IS NOT NULL OR l.max_versions IS NOT NULL"
		"        OR l.rotation_state OPERATOR(pg_catalog.<>) 'idle')"
		" ORDER BY i.path, i.scope, i.scope_id",
		2, {TEXTOID, TEXTOID}
	};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SmSession	session;
	SmCaller	c;
	Datum		args[2];
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, NULL);
	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = PG_ARGISNULL(0) ? CStringGetTextDatum("") : PG_GETARG_DATUM(0);
	n = sm_exec(&stmt, args, NULL, 0);
	for (int i = 0; i < n; i++)
	{
		/* Only what the caller may list is shown. */
		if (!sm_acl_allows(&c, sm_col_text(i, 1), SM_CAP_LIST))
			continue;
		sm_put_row(rsinfo, i);
	}
	sm_leave(&session);
	return (Datum) 0;
}

/*
 * SQL: secret_set_max_versions(path, max_versions): the worker destroys
 * the oldest versions beyond that many (never the current one or a
 * labelled one).  Null keeps every version.
 */
Datum
secret_set_max_versions(PG_FUNCTION_ARGS)
{
	static SmStmt upsert = {
		"INSERT INTO secret_mgmt.secret_lifecycle (tenant_id, secret_id, max_versions)"
		" VALUES ($1, $2, $3)"
		" ON CONFLICT (tenant_id, secret_id) DO UPDATE SET max_versions = EXCLUDED.max_versions",
		3, {TEXTOID, UUIDOID, INT4OID}
	};
	SmSession	session;
	SmCaller	c;
	SmSecret	s;
	char	   *path;
	Datum		args[3];
	char		nulls[3] = "   ";

	path = sm_store_arg_path(fcinfo, 0);
	if (!PG_ARGISNULL(1) && PG_GETARG_INT32(1) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_versions must be at least 1")));
	sm_audit_begin("set_max_versions", path);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, path);
	sm_acl_require(&c, path, SM_CAP_UPDATE);
	sm_store_require(&c, path, SM_FIND_LIVE, &s);
	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = UUIDPGetDatum(&s.id);
	if (PG_ARGISNULL(1))
		nulls[2] = 'n';
	else
		args[2] = PG_GETARG_DATUM(1);
	sm_exec(&upsert, args, nulls, 0);
	sm_event_emit(c.tenant, "retention_configured", &s.id, path, 0, c.rolename, NULL);
	sm_audit_write(&c, "set_max_versions", path, &s.id, 0, NULL, 0);
	sm_leave(&session);
	PG_RETURN_VOID();
}
