/*-------------------------------------------------------------------------
 *
 * lifecycle.c
 *		The worker's sweeps of one tenant: expiry, grace, purge, pruning.
 *
 *	 expiry warning  a secret whose expiry is within secret_mgmt.expiry_warning
 *					 gets one "expiry_warning" event per expiry time
 *	 expired		 a secret past its expiry is marked, with one "expired"
 *					 event per expiry time (resolve refuses it with SM003 at
 *					 read time whether or not the worker has run)
 *	 grace			 when a rotation's grace period ends, the "previous" label
 *					 that still points at the replaced version is removed
 *	 purge			 a secret deleted longer than secret_mgmt.recovery_window
 *					 ago is destroyed with all its versions ("purged")
 *	 pruning		 versions beyond a secret's max_versions newest are
 *					 destroyed -- their ciphertext erased, the row kept so
 *					 the version history stays gap-free -- except the current
 *					 version and labelled ones ("version_pruned")
 *
 * Each sweep is one set-based statement with a LIMIT, marks what it did in
 * the same statement, and so is idempotent: a sweep interrupted by a crash
 * rolls back and is simply done again.  The marks are the expiry time
 * warned about or marked, so moving an expiry warns again.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "audit.h"
#include "catalog/pg_type.h"
#include "events.h"
#include "miscadmin.h"
#include "outbox.h"
#include "query.h"
#include "rotation.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "worker.h"

/*
 * A change made by the worker: its event and, unless it is only a
 * warning, its audit row (principal: the worker's role).
 */
static void
worker_change(const char *tenant, const char *kind, pg_uuid_t *id, const char *path,
			  int32 version, const char *actor, const char *detail)
{
	SmCaller	worker;

	sm_event_emit(tenant, kind, id, path, version, actor, detail);
	if (strcmp(kind, "expiry_warning") == 0)
		return;
	memset(&worker, 0, sizeof(worker));
	worker.tenant = (char *) tenant;
	worker.rolename = (char *) actor;
	sm_audit_write(&worker, kind, path, id, version, NULL, 0);
}

/* One change per result row: (secret_id, path, version, detail). */
static int
emit_rows(int n, const char *tenant, const char *kind, const char *actor)
{
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		worker_change(tenant, kind, DatumGetUUIDP(sm_col(i, 1, &isnull)),
					  sm_col_text(i, 2), sm_col_int32(i, 3), actor, sm_col_text(i, 4));
	}
	return n;
}

/*
 * Queue, for secrets stored in an external backend, the change `op` of
 * each result row: (secret_id, path, version, detail, backend).
 */
static void
queue_rows(int n, const char *tenant, const char *op, const char *actor)
{
	pg_uuid_t  *ids = palloc(sizeof(pg_uuid_t) * (n + 1));
	char	  **paths = palloc(sizeof(char *) * (n + 1));
	char	  **backends = palloc(sizeof(char *) * (n + 1));
	int32	   *versions = palloc(sizeof(int32) * (n + 1));

	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		memcpy(&ids[i], DatumGetUUIDP(sm_col(i, 1, &isnull)), sizeof(pg_uuid_t));
		paths[i] = sm_col_text(i, 2);
		versions[i] = sm_col_int32(i, 3);
		backends[i] = sm_col_text(i, 5);
	}
	for (int i = 0; i < n; i++)
		if (backends[i] != NULL && strcmp(backends[i], "local") != 0)
			sm_outbox_queue_for(tenant, &ids[i], paths[i], backends[i], op,
								strcmp(op, "purge") == 0 ? 0 : versions[i], actor);
}

/* Warn ahead of expiry, and mark expired secrets. */
static int
sweep_expiry(const char *tenant, int max, const char *actor)
{
	static SmStmt warn = {
		"WITH due AS ("
		"  SELECT i.secret_id, i.path, i.expires_at"
		"    FROM secret_mgmt.secret_item i"
		"    LEFT JOIN secret_mgmt.secret_lifecycle l"
		"      ON l.tenant_id OPERATOR(pg_catalog.=) i.tenant_id"
		"     AND l.secret_id OPERATOR(pg_catalog.=) i.secret_id"
		"   WHERE i.tenant_id OPERATOR(pg_catalog.=) $1"
		"     AND i.deleted_at IS NULL AND i.expires_at IS NOT NULL"
		"     AND i.expires_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp()"
		"     AND i.expires_at OPERATOR(pg_catalog.<=) (pg_catalog.clock_timestamp()"
		"         OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $3::pg_catalog.float8))"
		"     AND l.warned_for IS DISTINCT FROM i.expires_at"
		"   LIMIT $2)"
		" INSERT INTO secret_mgmt.secret_lifecycle AS l (tenant_id, secret_id, warned_for)"
		" SELECT $1, secret_id, expires_at FROM due"
		" ON CONFLICT (tenant_id, secret_id) DO UPDATE SET warned_for = EXCLUDED.warned_for"
		" RETURNING l.secret_id,"
		"   (SELECT i.path FROM secret_mgmt.secret_item i"
		"     WHERE i.tenant_id OPERATOR(pg_catalog.=) $1"
		"       AND i.secret_id OPERATOR(pg_catalog.=) l.secret_id),"
		"   NULL::pg_catalog.int4,"
		"   pg_catalog.json_build_object('expires_at', l.warned_for)::pg_catalog.text",
		3, {TEXTOID, INT4OID, INT4OID}
	};
	static SmStmt expire = {
		"WITH due AS ("
		"  SELECT i.secret_id, i.path, i.expires_at"
		"    FROM secret_mgmt.secret_item i"
		"    LEFT JOIN secret_mgmt.secret_lifecycle l"
		"      ON l.tenant_id OPERATOR(pg_catalog.=) i.tenant_id"
		"     AND l.secret_id OPERATOR(pg_catalog.=) i.secret_id"
		"   WHERE i.tenant_id OPERATOR(pg_catalog.=) $1"
		"     AND i.deleted_at IS NULL AND i.expires_at IS NOT NULL"
		"     AND i.expires_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()"
		"     AND l.expired_for IS DISTINCT FROM i.expires_at"
		"   LIMIT $2)"
		" INSERT INTO secret_mgmt.secret_lifecycle AS l (tenant_id, secret_id, expired_for)"
		" SELECT $1, secret_id, expires_at FROM due"
		" ON CONFLICT (tenant_id, secret_id) DO UPDATE SET expired_for = EXCLUDED.expired_for"
		" RETURNING l.secret_id,"
		"   (SELECT i.path FROM secret_mgmt.secret_item i"
		"     WHERE i.tenant_id OPERATOR(pg_catalog.=) $1"
		"       AND i.secret_id OPERATOR(pg_catalog.=) l.secret_id),"
		"   NULL::pg_catalog.int4,"
		"   pg_catalog.json_build_object('expires_at', l.expired_for)::pg_catalog.text",
		2, {TEXTOID, INT4OID}
	};
	Datum		args[3];
	int			n;
	int			done = 0;

	args[0] = CStringGetTextDatum(tenant);
	args[1] = Int32GetDatum(max);
	args[2] = Int32GetDatum(sm_expiry_warning);
	if (sm_expiry_warning > 0)
	{
		n = emit_rows(sm_exec(&warn, args, NULL, 0), tenant, "expiry_warning", actor);
		sm_worker_count(SM_COUNT_WARNED, n);
		done += n;
	}
	n = emit_rows(sm_exec(&expire, args, NULL, 0), tenant, "expired", actor);
	sm_worker_count(SM_COUNT_EXPIRED, n);
	return done + n;
}

/* End grace periods: drop "previous" where it still names the old version. */
static int
sweep_grace(const char *tenant, int max, const char *actor)
{
	static SmStmt stmt = {
		"WITH due AS ("
		"  SELECT l.secret_id, l.grace_version FROM secret_mgmt.secret_lifecycle l"
		"   WHERE l.tenant_id OPERATOR(pg_catalog.=) $1"
		"     AND l.grace_until OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()"
		"   LIMIT $2 FOR UPDATE SKIP LOCKED),"
		" dropped AS ("
		"  DELETE FROM secret_mgmt.secret_label b USING due"
		"   WHERE b.tenant_id OPERATOR(pg_catalog.=) $1"
		"     AND b.secret_id OPERATOR(pg_catalog.=) due.secret_id"
		"     AND b.label OPERATOR(pg_catalog.=) 'previous'"
		"     AND b.version OPERATOR(pg_catalog.=) due.grace_version"
		"  RETURNING b.secret_id, b.version)"
		" UPDATE secret_mgmt.secret_lifecycle l"
		"    SET grace_until = NULL, grace_version = NULL"
		"   FROM due"
		"  WHERE l.tenant_id OPERATOR(pg_catalog.=) $1"
		"    AND l.secret_id OPERATOR(pg_catalog.=) due.secret_id"
		" RETURNING l.secret_id,"
		"   (SELECT i.path FROM secret_mgmt.secret_item i"
		"     WHERE i.tenant_id OPERATOR(pg_catalog.=) $1"
		"       AND i.secret_id OPERATOR(pg_catalog.=) l.secret_id),"
		"   (SELECT d.version FROM dropped d WHERE d.secret_id OPERATOR(pg_catalog.=) l.secret_id),"
		"   NULL::pg_catalog.text",
		2, {TEXTOID, INT4OID}
	};
	Datum		args[2];
	int			n;

	args[0] = CStringGetTextDatum(tenant);
	args[1] = Int32GetDatum(max);
	n = sm_exec(&stmt, args, NULL, 0);
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		if (sm_col_isnull(i, 3))
			continue;			/* "previous" had moved on */
		worker_change(tenant, "grace_ended", DatumGetUUIDP(sm_col(i, 1, &isnull)),
					  sm_col_text(i, 2), sm_col_int32(i, 3), actor, NULL);
	}
	return n;
}

/* Purge secrets deleted longer than the recovery window ago. */
static int
sweep_purge(const char *tenant, int max, const char *actor)
{
	static SmStmt stmt = {
		"DELETE FROM secret_mgmt.secret_item i"
		" USING (SELECT secret_id FROM secret_mgmt.secret_item"
		"         WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND deleted_at IS NOT NULL"
		"           AND (deleted_at OPERATOR(pg_catalog.+)"
		"                pg_catalog.make_interval(secs => $3::pg_catalog.float8))"
		"               OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()"
		"         LIMIT $2 FOR UPDATE SKIP LOCKED) d"
		" WHERE i.tenant_id OPERATOR(pg_catalog.=) $1"
		"   AND i.secret_id OPERATOR(pg_catalog.=) d.secret_id"
		" RETURNING i.secret_id, i.path, i.last_version,"
		"   pg_catalog.json_build_object('deleted_at', i.deleted_at)::pg_catalog.text,"
		"   i.backend",
		3, {TEXTOID, INT4OID, INT4OID}
	};
	Datum		args[3];
	int			n;

	args[0] = CStringGetTextDatum(tenant);
	args[1] = Int32GetDatum(max);
	args[2] = Int32GetDatum(sm_recovery_window);
	n = emit_rows(sm_exec(&stmt, args, NULL, 0), tenant, "purged", actor);
	queue_rows(n, tenant, "purge", actor);
	sm_worker_count(SM_COUNT_PURGED, n);
	return n;
}

/* Destroy versions beyond max_versions (not current, not labelled). */
static int
sweep_prune(const char *tenant, int max, const char *actor)
{
	static SmStmt stmt = {
		"WITH ranked AS ("
		"  SELECT v.secret_id, v.version, l.max_versions, i.current_version,"
		"         pg_catalog.row_number() OVER"
		"           (PARTITION BY v.secret_id ORDER BY v.version DESC) AS rn"
		"    FROM secret_mgmt.secret_lifecycle l"
		"    JOIN secret_mgmt.secret_item i"
		"      ON i.tenant_id OPERATOR(pg_catalog.=) l.tenant_id"
		"     AND i.secret_id OPERATOR(pg_catalog.=) l.secret_id"
		"    JOIN secret_mgmt.secret_version v"
		"      ON v.tenant_id OPERATOR(pg_catalog.=) l.tenant_id"
		"     AND v.secret_id OPERATOR(pg_catalog.=) l.secret_id"
		"   WHERE l.tenant_id OPERATOR(pg_catalog.=) $1 AND l.max_versions IS NOT NULL"
		"     AND v.state OPERATOR(pg_catalog.<>) 'destroyed'),"
		" victims AS ("
		"  SELECT r.secret_id, r.version FROM ranked r"
		"   WHERE r.rn OPERATOR(pg_catalog.>) r.max_versions"
		"     AND r.version OPERATOR(pg_catalog.<>) r.current_version"
		"     AND NOT EXISTS (SELECT 1 FROM secret_mgmt.secret_label b"
		"                      WHERE b.tenant_id OPERATOR(pg_catalog.=) $1"
		"                        AND b.secret_id OPERATOR(pg_catalog.=) r.secret_id"
		"                        AND b.version OPERATOR(pg_catalog.=) r.version)"
		"   LIMIT $2)"
		" UPDATE secret_mgmt.secret_version v"
		"    SET state = 'destroyed', envelope = NULL, key_id = NULL,"
		"        destroyed_at = pg_catalog.now()"
		"   FROM victims"
		"  WHERE v.tenant_id OPERATOR(pg_catalog.=) $1"
		"    AND v.secret_id OPERATOR(pg_catalog.=) victims.secret_id"
		"    AND v.version OPERATOR(pg_catalog.=) victims.version"
		" RETURNING v.secret_id,"
		"   (SELECT i.path FROM secret_mgmt.secret_item i"
		"     WHERE i.tenant_id OPERATOR(pg_catalog.=) $1"
		"       AND i.secret_id OPERATOR(pg_catalog.=) v.secret_id),"
		"   v.version, NULL::pg_catalog.text,"
		"   (SELECT i.backend FROM secret_mgmt.secret_item i"
		"     WHERE i.tenant_id OPERATOR(pg_catalog.=) $1"
		"       AND i.secret_id OPERATOR(pg_catalog.=) v.secret_id)",
		2, {TEXTOID, INT4OID}
	};
	Datum		args[2];
	int			n;

	args[0] = CStringGetTextDatum(tenant);
	args[1] = Int32GetDatum(max);
	n = emit_rows(sm_exec(&stmt, args, NULL, 0), tenant, "version_pruned", actor);
	queue_rows(n, tenant, "destroy", actor);
	sm_worker_count(SM_COUNT_PRUNED, n);
	return n;
}

/*
 * Run every sweep of one tenant once, in one transaction, each doing at
 * most `max` items.  Runs with no transaction open.  Returns how many
 * items were handled (a result of `max` or more means: call again).
 */
int
sm_lifecycle_sweep(const char *tenant, int max)
{
	MemoryContext cxt = CurrentMemoryContext;
	SmSession	session;
	SmCaller	c;
	int			done = 0;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	sm_tenant_select_for_xact(tenant);
	sm_enter(&session);
	sm_worker_caller(&c, tenant);
	done += sweep_expiry(tenant, max, c.rolename);
	done += sweep_grace(tenant, max, c.rolename);
	done += sweep_purge(tenant, max, c.rolename);
	done += sweep_prune(tenant, max, c.rolename);
	sm_leave(&session);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return done;
}
