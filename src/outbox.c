/*-------------------------------------------------------------------------
 *
 * outbox.c
 *		Secrets stored in an external backend (HashiCorp Vault KV version
 *		2): the outbox the worker delivers, reads through to the backend,
 *		migration between backends.
 *
 * A secret created with backend => <a registered vault backend> keeps its
 * local encrypted versions like any other; every change to it also queues
 * a row in secret_outbox, in the changing transaction (sm_outbox_queue).
 * A row names the change and the version, never a value.  An aborted
 * transaction leaves no row, so nothing reaches Vault; a committed one
 * leaves rows that survive any crash until delivered.
 *
 * The worker delivers (sm_outbox_deliver) the oldest open row of each
 * (tenant, path) -- the backend's key is per path, so rows of one path go
 * in order, and one that cannot go holds back those behind it.  For each
 * row it reads what it needs in a short transaction (the backend's
 * configuration and credential, the version's plaintext decrypted from the
 * local copy), talks to Vault with no transaction open, then records the
 * outcome in another.  A write is a KV write with check-and-set: cas is the
 * newest KV version recorded for the secret (0 for a new one), and the
 * version Vault assigns is recorded against ours (secret_version.
 * backend_version).  If Vault refuses the cas, the worker reads the key's
 * metadata: when Vault's current version is the next one and holds our
 * value, it is our own earlier write whose outcome was lost (a crash
 * between Vault's answer and the record) and is recorded as delivered;
 * anything else is somebody else's write -- the row becomes a conflict,
 * an event says so, and nothing is overwritten until an operator calls
 * secret_outbox_retry().  Other failures are recorded on the row (SQLSTATE
 * and message, never a value) and retried with the worker's exponential
 * backoff.
 *
 * Reads (sm_outbox_read_through) serve the local copy of the current
 * version while it is fresh: not yet delivered (the backend is behind us),
 * or confirmed as the backend's newest version within
 * secret_mgmt.cache_ttl, by the worker's delivery or by this session's
 * last read through.  Otherwise, or always when asked for a fresh read,
 * they ask Vault for its newest version.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/crypto.h>

#include "access/xact.h"
#include "acl.h"
#include "audit.h"
#include "backend.h"
#include "catalog/pg_type.h"
#include "crypto.h"
#include "events.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "outbox.h"
#include "pgstat.h"
#include "query.h"
#include "store.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(secret_migrate);
PG_FUNCTION_INFO_V1(secret_outbox_status);
PG_FUNCTION_INFO_V1(secret_outbox_retry);

#define CONFIRM_SLOTS	32

/* A read through that found the local copy current, remembered. */
typedef struct Confirmation
{
	char		tenant[64];
	pg_uuid_t	secret_id;
	int32		backend_version;
	TimestampTz at;
} Confirmation;

static Confirmation confirmations[CONFIRM_SLOTS];
static int	next_confirmation = 0;

static bool wake_after_commit = false;
static bool callback_registered = false;

/* One outbox row on its way. */
typedef struct Delivery
{
	char	   *tenant;
	int64		seq;
	pg_uuid_t	secret_id;
	char	   *path;
	char	   *backend;
	char	   *op;
	int32		version;		/* 0: none */
	bool		rebase;
	char	   *kvpath;
	SmVaultConfig cfg;
	uint8	   *value;			/* write: the plaintext (secure) */
	size_t		len;
	bool		gone;			/* write: the version was destroyed meanwhile */
	int32		cas;			/* write: the KV version expected current */
	int32	   *kv;				/* the KV versions an operation acts on */
	int			nkv;
	/* outcome */
	bool		ok;
	bool		conflict;
	int32		result;			/* the KV version written or found */
	char		error[512];
} Delivery;

/* Wake the worker once a transaction that queued rows has committed. */
static void
outbox_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (wake_after_commit)
				sm_worker_wake();
			wake_after_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			wake_after_commit = false;
			break;
		default:
			break;
	}
}

/* The backend's key of a secret: "<tenant>/<path>". */
static char *
kv_path(const char *tenant, const char *path)
{
	return psprintf("%s/%s", tenant, path);
}

/*
 * Check that a secret of `tenant` can be stored in `backend` (inside
 * sm_enter()): a registered backend of kind vault that serves the tenant,
 * and a scope that maps to one KV key.
 */
void
sm_outbox_check_backend(const char *backend, const char *tenant, const char *scope)
{
	ListCell   *lc;
	bool		served;

	SmVaultConfig cfg;
	char	   *kind;

	if (!sm_backend_load(backend, CurrentMemoryContext, &kind, &cfg))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("backend \"%s\" does not exist", backend),
				 errhint("The platform administrator registers backends with secret_mgmt.secret_backend_create().")));
	if (strcmp(kind, "vault") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("backend \"%s\" of kind \"%s\" cannot store secrets", backend, kind),
				 errhint("Secrets are stored in 'local' or in a backend of kind 'vault'.")));
	served = cfg.tenants == NIL;
	foreach(lc, cfg.tenants)
		served |= strcmp((char *) lfirst(lc), tenant) == 0;
	if (!served)
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied to store secrets of tenant \"%s\" in backend \"%s\"",
						tenant, backend),
				 errdetail("The backend serves only the tenants its configuration lists."),
				 errhint("The platform administrator decides which tenants a backend serves.")));
	if (strcmp(scope, "organization") != 0 && strcmp(scope, "global") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a secret of scope \"%s\" cannot be stored in backend \"%s\"",
						scope, backend),
				 errdetail("A backend holds one key per tenant and path; only organization and global secrets are stored there."),
				 errhint("Use backend => 'local' for team, project and user secrets.")));
}

/*
 * Queue a change of a secret for its backend, in the current transaction
 * (inside sm_enter()).  Does nothing for a local secret.  `op` is write,
 * disable, enable or destroy (of `version`), or delete, restore or purge
 * (of the secret: version 0).  Returns whether a row was queued.
 */
bool
sm_outbox_queue(const SmCaller *c, const pg_uuid_t *id, const char *op, int32 version)
{
	static SmStmt stmt = {
		"INSERT INTO secret_mgmt.secret_outbox"
		" (tenant_id, secret_id, path, backend, op, version, created_by)"
		" SELECT i.tenant_id, i.secret_id, i.path, i.backend, $3, $4, $5"
		"   FROM secret_mgmt.secret_item i"
		"  WHERE i.tenant_id OPERATOR(pg_catalog.=) $1"
		"    AND i.secret_id OPERATOR(pg_catalog.=) $2"
		"    AND i.backend OPERATOR(pg_catalog.<>) 'local'",
		5, {TEXTOID, UUIDOID, TEXTOID, INT4OID, TEXTOID}
	};
	Datum		args[5];
	char		nulls[5] = "     ";

	args[0] = CStringGetTextDatum(c->tenant);
	args[1] = UUIDPGetDatum(id);
	args[2] = CStringGetTextDatum(op);
	args[3] = Int32GetDatum(version);
	if (version == 0)
		nulls[3] = 'n';
	args[4] = CStringGetTextDatum(c->rolename);
	if (sm_exec(&stmt, args, nulls, 0) == 0)
		return false;
	if (!callback_registered)
	{
		RegisterXactCallback(outbox_xact_callback, NULL);
		callback_registered = true;
	}
	wake_after_commit = true;
	return true;
}

/*
 * Queue a change for a secret known to be stored in `backend` (inside
 * sm_enter()), for the worker's own sweeps: purges after the recovery
 * window and versions pruned by max_versions.
 */
void
sm_outbox_queue_for(const char *tenant, const pg_uuid_t *id, const char *path,
					const char *backend, const char *op, int32 version,
					const char *actor)
{
	static SmStmt stmt = {
		"INSERT INTO secret_mgmt.secret_outbox"
		" (tenant_id, secret_id, path, backend, op, version, created_by)"
		" VALUES ($1, $2, $3, $4, $5, $6, $7)",
		7, {TEXTOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, TEXTOID}
	};
	Datum		args[7];
	char		nulls[7] = "       ";

	args[0] = CStringGetTextDatum(tenant);
	args[1] = UUIDPGetDatum(id);
	args[2] = CStringGetTextDatum(path);
	args[3] = CStringGetTextDatum(backend);
	args[4] = CStringGetTextDatum(op);
	args[5] = Int32GetDatum(version);
	if (version == 0)
		nulls[5] = 'n';
	args[6] = CStringGetTextDatum(actor);
	sm_exec(&stmt, args, nulls, 0);
}

/* ---------------------------------------------------------------------
 * Reads
 * ---------------------------------------------------------------------
 */

static bool
confirmed_recently(const char *tenant, const SmResolved *r, TimestampTz now)
{
	for (int i = 0; i < CONFIRM_SLOTS; i++)
	{
		Confirmation *k = &confirmations[i];

		if (k->at != 0 && k->backend_version == r->backend_version &&
			memcmp(&k->secret_id, &r->secret_id, sizeof(pg_uuid_t)) == 0 &&
			strcmp(k->tenant, tenant) == 0)
			return !TimestampDifferenceExceeds(k->at, now, sm_cache_ttl * 1000);
	}
	return false;
}

static void
remember_confirmation(const char *tenant, const SmResolved *r, TimestampTz now)
{
	Confirmation *k = NULL;

	for (int i = 0; i < CONFIRM_SLOTS && k == NULL; i++)
		if (memcmp(&confirmations[i].secret_id, &r->secret_id, sizeof(pg_uuid_t)) == 0 &&
			strcmp(confirmations[i].tenant, tenant) == 0)
			k = &confirmations[i];
	if (k == NULL)
	{
		k = &confirmations[next_confirmation];
		next_confirmation = (next_confirmation + 1) % CONFIRM_SLOTS;
	}
	strlcpy(k->tenant, tenant, sizeof(k->tenant));
	k->secret_id = r->secret_id;
	k->backend_version = r->backend_version;
	k->at = now;
}

/*
 * The value to serve for the current version of a backend-stored secret
 * that resolved to `r`: NULL when the local copy is to be served (fresh
 * enough, or confirmed now), else the backend's newest value (written
 * there by somebody else), a secure allocation.  Vault unreachable on a
 * read that needs it raises SM006; a key or newest version that Vault
 * reports missing, deleted or destroyed raises SM001.
 */
uint8 *
sm_outbox_read_through(const char *tenant, const char *path, const SmResolved *r,
					   bool fresh, size_t *len)
{
	static SmStmt newest = {
		"SELECT COALESCE(pg_catalog.max(backend_version), 0) FROM secret_mgmt.secret_version"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2",
		2, {TEXTOID, UUIDOID}
	};
	TimestampTz now = GetCurrentTimestamp();
	SmSession	session;
	SmVaultConfig cfg;
	char	   *kind;
	int32		delivered;
	Datum		args[2];
	SmKvRead	kr;
	uint8	   *value;
	size_t		vlen;
	MemoryContext cxt = CurrentMemoryContext;

	if (!fresh)
	{
		if (r->backend_version == 0)
			return NULL;		/* ours is newer: not delivered yet */
		if (r->backend_confirmed_at != 0 &&
			!TimestampDifferenceExceeds(r->backend_confirmed_at, now, sm_cache_ttl * 1000))
			return NULL;
		if (confirmed_recently(tenant, r, now))
			return NULL;
	}

	sm_enter(&session);
	if (!sm_backend_load(r->backend, cxt, &kind, &cfg) || strcmp(kind, "vault") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_SM_BACKEND),
				 errmsg("backend \"%s\" of secret \"%s\" is not registered", r->backend, path),
				 errhint("The platform administrator registers it again with secret_mgmt.secret_backend_create().")));
	args[0] = CStringGetTextDatum(tenant);
	args[1] = UUIDPGetDatum(&r->secret_id);
	sm_exec(&newest, args, NULL, 1);
	delivered = sm_col_int32(0, 1);
	sm_leave(&session);

	value = sm_vault_kv_read(&cfg, kv_path(tenant, path), 0, &kr, &vlen);
	if (!kr.found && delivered > 0)
		ereport(ERROR,
				(errcode(ERRCODE_SM_NOT_FOUND),
				 errmsg("secret \"%s\" not found in backend \"%s\"", path, r->backend),
				 errdetail("The backend holds no key for it, although version %d was delivered there.",
						   delivered),
				 errhint("See \"Conflicts\" in docs/backends.md.")));
	if (kr.found && (kr.deleted || kr.destroyed))
		ereport(ERROR,
				(errcode(ERRCODE_SM_NOT_FOUND),
				 errmsg("the newest version of secret \"%s\" is %s in backend \"%s\"", path,
						kr.destroyed ? "destroyed" : "deleted", r->backend),
				 errhint("See \"Lifecycle\" in docs/backends.md.")));
	if (!kr.found || kr.version <= delivered)
	{
		/* Nothing newer than what we wrote: the local copy is current. */
		if (value)
			sm_wipe(value, vlen);
		if (kr.found && kr.version == r->backend_version)
			remember_confirmation(tenant, r, now);
		return NULL;
	}
	*len = vlen;
	return value;
}

/* ---------------------------------------------------------------------
 * Delivery (the worker)
 * ---------------------------------------------------------------------
 */

static void
begin_xact(const char *tenant)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (tenant)
		sm_tenant_select_for_xact(tenant);
}

static void
commit_xact(MemoryContext cxt)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
}

/* Keep an error's SQLSTATE and message (never a value) as the outcome. */
static void
keep_error(Delivery *d, MemoryContext cxt)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	snprintf(d->error, sizeof(d->error), "%s: %s",
			 unpack_sql_state(edata->sqlerrcode), edata->message);
	FreeErrorData(edata);
	d->ok = false;
}

/* The oldest open row of each (tenant, path), where it is due. */
static List *
select_due(int max, MemoryContext cxt)
{
	static SmStmt stmt = {
		"SELECT o.tenant_id, o.seq, o.secret_id, o.path, o.backend, o.op, o.version, o.rebase"
		"  FROM (SELECT DISTINCT ON (tenant_id, path) *"
		"          FROM secret_mgmt.secret_outbox"
		"         WHERE state OPERATOR(pg_catalog.<>) 'delivered'"
		"         ORDER BY tenant_id, path, seq) o"
		" WHERE o.state OPERATOR(pg_catalog.=) 'pending'"
		"   AND o.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()"
		" ORDER BY o.seq LIMIT $1",
		1, {INT4OID}
	};
	SmSession	session;
	Datum		arg = Int32GetDatum(max);
	List	   *rows = NIL;
	int			n;

	sm_enter(&session);
	n = sm_exec(&stmt, &arg, NULL, 0);
	for (int i = 0; i < n; i++)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);
		Delivery   *d = palloc0(sizeof(Delivery));
		bool		isnull;
		Datum		v;

		d->tenant = sm_col_text(i, 1);
		d->seq = DatumGetInt64(sm_col(i, 2, &isnull));
		memcpy(&d->secret_id, DatumGetUUIDP(sm_col(i, 3, &isnull)), sizeof(pg_uuid_t));
		d->path = sm_col_text(i, 4);
		d->backend = sm_col_text(i, 5);
		d->op = sm_col_text(i, 6);
		v = sm_col(i, 7, &isnull);
		d->version = isnull ? 0 : DatumGetInt32(v);
		d->rebase = sm_col_bool(i, 8);
		d->kvpath = kv_path(d->tenant, d->path);
		rows = lappend(rows, d);
		MemoryContextSwitchTo(old);
	}
	sm_leave(&session);
	return rows;
}

/*
 * Read what a delivery needs, in the current transaction: configuration,
 * credential, and for a write the plaintext and the expected KV version,
 * for the others the KV versions acted on.  Copies go to `cxt`.
 */
static void
prepare(Delivery *d, MemoryContext cxt)
{
	static SmStmt newest = {
		"SELECT COALESCE(pg_catalog.max(backend_version), 0) FROM secret_mgmt.secret_version"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2",
		2, {TEXTOID, UUIDOID}
	};
	static SmStmt versions = {
		"SELECT backend_version FROM secret_mgmt.secret_version"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2"
		"   AND backend_version IS NOT NULL"
		"   AND (version OPERATOR(pg_catalog.=) $3"
		"        OR ($4 AND $3 IS NULL AND state OPERATOR(pg_catalog.<>) 'destroyed')"
		"        OR (NOT $4 AND $3 IS NULL AND state OPERATOR(pg_catalog.=) 'enabled'))"
		" ORDER BY backend_version",
		4, {TEXTOID, UUIDOID, INT4OID, BOOLOID}
	};
	SmSession	session;
	SmCaller	c;
	char	   *kind;
	Datum		args[4];
	char		nulls[4] = "    ";
	uint8	   *cred;
	size_t		cred_len;
	MemoryContext old;

	sm_enter(&session);
	if (!sm_backend_load(d->backend, cxt, &kind, &d->cfg) || strcmp(kind, "vault") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_SM_BACKEND),
				 errmsg("backend \"%s\" is not registered", d->backend)));
	cred = sm_platform_secret(d->cfg.credentials_path, &cred_len);
	old = MemoryContextSwitchTo(cxt);
	d->cfg.credential = sm_secure_alloc(cred_len + 1);
	MemoryContextSwitchTo(old);
	memcpy((uint8 *) d->cfg.credential, cred, cred_len);
	d->cfg.credential_len = cred_len;
	sm_wipe(cred, cred_len);

	args[0] = CStringGetTextDatum(d->tenant);
	args[1] = UUIDPGetDatum(&d->secret_id);
	if (strcmp(d->op, "write") == 0)
	{
		sm_worker_caller(&c, d->tenant);
		d->value = sm_store_version_value(&c, &d->secret_id, d->version, cxt, &d->len);
		d->gone = d->value == NULL;
		sm_exec(&newest, args, NULL, 1);
		d->cas = sm_col_int32(0, 1);
	}
	else if (strcmp(d->op, "purge") != 0)
	{
		int			n;

		args[2] = Int32GetDatum(d->version);
		if (d->version == 0)
			nulls[2] = 'n';
		args[3] = BoolGetDatum(strcmp(d->op, "delete") == 0);
		n = sm_exec(&versions, args, nulls, 0);
		d->kv = MemoryContextAlloc(cxt, sizeof(int32) * (n + 1));
		for (int i = 0; i < n; i++)
			d->kv[i] = sm_col_int32(i, 1);
		d->nkv = n;
	}
	sm_leave(&session);
}

/* Write a version: check-and-set, recognising our own lost write. */
static void
send_write(Delivery *d)
{
	int32		cas = d->rebase ? sm_vault_kv_current(&d->cfg, d->kvpath) : d->cas;
	bool		mismatch;
	int32		current;

	d->result = sm_vault_kv_write(&d->cfg, d->kvpath, d->value, d->len, cas, &mismatch);
	if (!mismatch)
		return;
	current = sm_vault_kv_current(&d->cfg, d->kvpath);
	if (current == cas + 1)
	{
		SmKvRead	kr;
		size_t		len;
		uint8	   *held = sm_vault_kv_read(&d->cfg, d->kvpath, current, &kr, &len);

		if (held != NULL && len == d->len &&
			(len == 0 || CRYPTO_memcmp(held, d->value, len) == 0))
			d->result = current;
		if (held)
			sm_wipe(held, len);
		if (d->result > 0)
			return;
	}
	d->conflict = true;
	d->result = current;
	snprintf(d->error, sizeof(d->error),
			 "conflict: the backend's current version of the key is %d, expected %d; it was written outside secret_mgmt and was not overwritten",
			 current, cas);
}

/* Talk to the backend for one row; no transaction is open. */
static void
send_one(Delivery *d, MemoryContext cxt)
{
	PG_TRY();
	{
		if (strcmp(d->op, "write") == 0)
		{
			if (!d->gone)
				send_write(d);
		}
		else if (strcmp(d->op, "disable") == 0 || strcmp(d->op, "delete") == 0)
			sm_vault_kv_versions(&d->cfg, d->kvpath, "delete", d->kv, d->nkv);
		else if (strcmp(d->op, "enable") == 0 || strcmp(d->op, "restore") == 0)
			sm_vault_kv_versions(&d->cfg, d->kvpath, "undelete", d->kv, d->nkv);
		else if (strcmp(d->op, "destroy") == 0)
			sm_vault_kv_versions(&d->cfg, d->kvpath, "destroy", d->kv, d->nkv);
		else if (strcmp(d->op, "purge") == 0)
			sm_vault_kv_purge(&d->cfg, d->kvpath);
		d->ok = !d->conflict;
	}
	PG_CATCH();
	{
		keep_error(d, cxt);
	}
	PG_END_TRY();
}

/* Record the outcome of one row. */
static void
record(Delivery *d)
{
	static SmStmt delivered = {
		"UPDATE secret_mgmt.secret_outbox"
		"   SET state = 'delivered', delivered_at = pg_catalog.now(), rebase = false,"
		"       attempts = attempts OPERATOR(pg_catalog.+) 1, last_error = NULL,"
		"       backend_version = $3"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND seq OPERATOR(pg_catalog.=) $2",
		3, {TEXTOID, INT8OID, INT4OID}
	};
	static SmStmt mapped = {
		"UPDATE secret_mgmt.secret_version"
		"   SET backend_version = $4, backend_confirmed_at = pg_catalog.now()"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2"
		"   AND version OPERATOR(pg_catalog.=) $3",
		4, {TEXTOID, UUIDOID, INT4OID, INT4OID}
	};
	static SmStmt conflict = {
		"UPDATE secret_mgmt.secret_outbox"
		"   SET state = 'conflict', attempts = attempts OPERATOR(pg_catalog.+) 1,"
		"       last_error = $3, last_error_at = pg_catalog.now(), backend_version = $4"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND seq OPERATOR(pg_catalog.=) $2",
		4, {TEXTOID, INT8OID, TEXTOID, INT4OID}
	};
	static SmStmt failed = {
		"UPDATE secret_mgmt.secret_outbox"
		"   SET attempts = attempts OPERATOR(pg_catalog.+) 1, last_error = $3,"
		"       last_error_at = pg_catalog.now()"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND seq OPERATOR(pg_catalog.=) $2"
		" RETURNING attempts",
		3, {TEXTOID, INT8OID, TEXTOID}
	};
	static SmStmt postpone = {
		"UPDATE secret_mgmt.secret_outbox"
		"   SET next_attempt_at = pg_catalog.clock_timestamp()"
		"       OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $3::pg_catalog.float8 OPERATOR(pg_catalog./) 1000)"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND seq OPERATOR(pg_catalog.=) $2",
		3, {TEXTOID, INT8OID, INT8OID}
	};
	SmSession	session;
	Datum		args[4];
	char		nulls[4] = "    ";

	sm_enter(&session);
	args[0] = CStringGetTextDatum(d->tenant);
	args[1] = Int64GetDatum(d->seq);
	if (d->ok)
	{
		args[2] = Int32GetDatum(d->result);
		if (d->result == 0)
			nulls[2] = 'n';
		sm_exec(&delivered, args, nulls, 0);
		if (strcmp(d->op, "write") == 0 && d->result > 0)
		{
			Datum		m[4];

			m[0] = args[0];
			m[1] = UUIDPGetDatum(&d->secret_id);
			m[2] = Int32GetDatum(d->version);
			m[3] = Int32GetDatum(d->result);
			sm_exec(&mapped, m, NULL, 0);
		}
		sm_worker_count(SM_COUNT_DELIVERED, 1);
	}
	else if (d->conflict)
	{
		SmCaller	c;

		args[2] = CStringGetTextDatum(d->error);
		args[3] = Int32GetDatum(d->result);
		sm_exec(&conflict, args, NULL, 0);
		sm_worker_caller(&c, d->tenant);
		sm_event_emit(d->tenant, "backend_conflict", &d->secret_id, d->path,
					  d->version, c.rolename,
					  psprintf("{\"backend\": \"%s\", \"seq\": " INT64_FORMAT
							   ", \"backend_version\": %d}",
							   d->backend, d->seq, d->result));
		ereport(LOG,
				(errmsg("secret_mgmt: secret \"%s\" of tenant \"%s\" conflicts with backend \"%s\"",
						d->path, d->tenant, d->backend),
				 errdetail_internal("%s", d->error)));
	}
	else
	{
		int			attempts;

		args[2] = CStringGetTextDatum(d->error);
		if (sm_exec(&failed, args, NULL, 0) == 1)
		{
			attempts = sm_col_int32(0, 1);
			args[2] = Int64GetDatum(sm_backoff_ms(attempts));
			sm_exec(&postpone, args, NULL, 0);
			sm_worker_count(SM_COUNT_UNDELIVERED, 1);
			ereport(LOG,
					(errmsg("secret_mgmt: delivery to backend \"%s\" of secret \"%s\" of tenant \"%s\" failed, attempt %d",
							d->backend, d->path, d->tenant, attempts),
					 errdetail_internal("%s", d->error)));
		}
	}
	sm_leave(&session);
}

/* Forget what a delivery held: the value and the credential. */
static void
forget(Delivery *d)
{
	if (d->value)
		sm_wipe(d->value, d->len);
	if (d->cfg.credential)
		sm_wipe((uint8 *) d->cfg.credential, d->cfg.credential_len);
	d->value = NULL;
	d->cfg.credential = NULL;
}

/* Prepare, send and record one row. */
static void
deliver_one(Delivery *d, MemoryContext cxt)
{
	volatile bool prepared = true;

	begin_xact(d->tenant);
	PG_TRY();
	{
		prepare(d, cxt);
		commit_xact(cxt);
	}
	PG_CATCH();
	{
		keep_error(d, cxt);
		AbortCurrentTransaction();
		MemoryContextSwitchTo(cxt);
		prepared = false;
	}
	PG_END_TRY();

	if (prepared)
		send_one(d, cxt);
	forget(d);

	begin_xact(d->tenant);
	record(d);
	commit_xact(cxt);
}

/*
 * Deliver up to `max` outbox rows.  Runs in the worker with no transaction
 * open, allocating in the caller's (per-pass) memory context.  Returns how
 * many rows it attempted.
 */
int
sm_outbox_deliver(int max)
{
	MemoryContext cxt = CurrentMemoryContext;
	int			attempted = 0;

	while (attempted < max)
	{
		List	   *rows;
		ListCell   *lc;

		begin_xact(NULL);
		rows = select_due(max - attempted, cxt);
		commit_xact(cxt);
		if (rows == NIL)
			break;
		foreach(lc, rows)
		{
			CHECK_FOR_INTERRUPTS();
			pgstat_report_activity(STATE_RUNNING, "delivering to backends");
			deliver_one((Delivery *) lfirst(lc), cxt);
			attempted++;
		}
	}
	return attempted;
}

/* ---------------------------------------------------------------------
 * SQL functions
 * ---------------------------------------------------------------------
 */

/* Import the versions the backend holds beyond what we delivered. */
static int
import_versions(const SmCaller *c, const SmSecret *s, const char *path,
				const char *backend)
{
	static SmStmt newest = {
		"SELECT COALESCE(pg_catalog.max(backend_version), 0) FROM secret_mgmt.secret_version"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2",
		2, {TEXTOID, UUIDOID}
	};
	SmVaultConfig cfg;
	char	   *kind;
	char	   *kvpath = kv_path(c->tenant, path);
	int32		delivered;
	int32		current;
	int			imported = 0;
	Datum		args[2];

	if (!sm_backend_load(backend, CurrentMemoryContext, &kind, &cfg) || strcmp(kind, "vault") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_SM_BACKEND),
				 errmsg("backend \"%s\" of secret \"%s\" is not registered", backend, path)));
	args[0] = CStringGetTextDatum(c->tenant);
	args[1] = UUIDPGetDatum(&s->id);
	sm_exec(&newest, args, NULL, 1);
	delivered = sm_col_int32(0, 1);
	current = sm_vault_kv_current(&cfg, kvpath);
	for (int32 v = delivered + 1; v <= current; v++)
	{
		SmKvRead	kr;
		size_t		len;
		uint8	   *value = sm_vault_kv_read(&cfg, kvpath, v, &kr, &len);
		int32		version;

		if (value == NULL)
			continue;			/* deleted or destroyed there */
		version = sm_store_next_version(c, path, s);
		sm_store_insert_version(c, &s->id, s->type, version, value, len);
		sm_store_promote(c, &s->id, version);
		sm_audit_write(c, "import", path, &s->id, version, value, len);
		sm_wipe(value, len);
		imported++;
	}
	return imported;
}

/*
 * SQL: secret_migrate(pattern, to_backend) returns how many secrets moved.
 * Live secrets of the caller's tenant whose path matches the grant-style
 * pattern and that the caller administers; others are left alone.
 */
Datum
secret_migrate(PG_FUNCTION_ARGS)
{
	static SmStmt candidates = {
		"SELECT secret_id, path, scope, backend, type, last_version"
		"  FROM secret_mgmt.secret_item"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND deleted_at IS NULL"
		"   AND backend OPERATOR(pg_catalog.<>) $2"
		" ORDER BY path, scope, scope_id FOR UPDATE",
		2, {TEXTOID, TEXTOID}
	};
	static SmStmt live_versions = {
		"SELECT version, state FROM secret_mgmt.secret_version"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2"
		"   AND state OPERATOR(pg_catalog.<>) 'destroyed'"
		" ORDER BY version",
		2, {TEXTOID, UUIDOID}
	};
	static SmStmt blocked = {
		"SELECT 1 FROM secret_mgmt.secret_outbox"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2"
		"   AND state OPERATOR(pg_catalog.=) 'conflict'",
		2, {TEXTOID, UUIDOID}
	};
	static SmStmt switch_backend = {
		"UPDATE secret_mgmt.secret_item SET backend = $3, updated_at = pg_catalog.now(),"
		"       updated_by = $4"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2",
		4, {TEXTOID, UUIDOID, TEXTOID, TEXTOID}
	};
	static SmStmt unmap = {
		"UPDATE secret_mgmt.secret_version SET backend_version = NULL, backend_confirmed_at = NULL"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2",
		2, {TEXTOID, UUIDOID}
	};
	SmSession	session;
	SmCaller	c;
	char	   *pattern;
	char	   *to;
	int64		moved = 0;
	int			n;
	Datum		args[4];
	MemoryContext cxt;
	typedef struct Candidate
	{
		SmSecret	s;
		char	   *path;
		char	   *scope;
		char	   *from;
	}			Candidate;
	Candidate  *cands;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pattern and to_backend must not be null")));
	pattern = text_to_cstring(PG_GETARG_TEXT_PP(0));
	to = text_to_cstring(PG_GETARG_TEXT_PP(1));
	sm_pattern_check(pattern);

	sm_audit_begin("migrate", pattern);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, NULL);
	if (strcmp(to, "local") != 0)
		sm_outbox_check_backend(to, c.tenant, "organization");
	cxt = CurrentMemoryContext;

	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = CStringGetTextDatum(to);
	n = sm_exec(&candidates, args, NULL, 0);
	cands = palloc0(sizeof(Candidate) * (n + 1));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		memcpy(&cands[i].s.id, DatumGetUUIDP(sm_col(i, 1, &isnull)), sizeof(pg_uuid_t));
		cands[i].path = sm_col_text(i, 2);
		cands[i].scope = sm_col_text(i, 3);
		cands[i].from = sm_col_text(i, 4);
		cands[i].s.type = sm_col_text(i, 5);
		cands[i].s.last_version = sm_col_int32(i, 6);
	}

	for (int i = 0; i < n; i++)
	{
		Candidate  *k = &cands[i];

		if (!sm_pattern_match(pattern, k->path) || !sm_acl_allows(&c, k->path, SM_CAP_ADMIN))
			continue;
		args[0] = CStringGetTextDatum(c.tenant);
		args[1] = UUIDPGetDatum(&k->s.id);
		if (strcmp(k->from, "local") != 0)
		{
			if (sm_exec(&blocked, args, NULL, 1) > 0)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("secret \"%s\" has a conflict with backend \"%s\"", k->path, k->from),
						 errhint("Resolve it first (see \"Conflicts\" in docs/backends.md).")));
			if (strcmp(to, "local") != 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("secret \"%s\" is in backend \"%s\": migrate it to 'local' first",
								k->path, k->from)));
		}
		if (strcmp(to, "local") != 0 && strcmp(k->scope, "organization") != 0 &&
			strcmp(k->scope, "global") != 0)
			continue;			/* cannot live in a backend: stays local */

		if (strcmp(k->from, "local") == 0)
		{
			/* Every version we hold, in order; disabled ones deleted after. */
			int			nv;
			int32	   *vs;
			bool	   *disabled;

			args[2] = CStringGetTextDatum(to);
			args[3] = CStringGetTextDatum(c.rolename);
			sm_exec(&switch_backend, args, NULL, 0);
			sm_exec(&unmap, args, NULL, 0);
			nv = sm_exec(&live_versions, args, NULL, 0);
			vs = palloc(sizeof(int32) * (nv + 1));
			disabled = palloc(sizeof(bool) * (nv + 1));
			for (int j = 0; j < nv; j++)
			{
				vs[j] = sm_col_int32(j, 1);
				disabled[j] = strcmp(sm_col_text(j, 2), "disabled") == 0;
			}
			for (int j = 0; j < nv; j++)
			{
				sm_outbox_queue(&c, &k->s.id, "write", vs[j]);
				if (disabled[j])
					sm_outbox_queue(&c, &k->s.id, "disable", vs[j]);
			}
		}
		else
		{
			/* What the backend holds that we lack comes home first. */
			int			imported = import_versions(&c, &k->s, k->path, k->from);

			sm_outbox_queue(&c, &k->s.id, "purge", 0);
			args[2] = CStringGetTextDatum("local");
			args[3] = CStringGetTextDatum(c.rolename);
			sm_exec(&switch_backend, args, NULL, 0);
			sm_exec(&unmap, args, NULL, 0);
			if (imported > 0)
				ereport(NOTICE,
						(errmsg("imported %d version%s of secret \"%s\" from backend \"%s\"",
								imported, imported == 1 ? "" : "s", k->path, k->from)));
		}
		sm_event_emit(c.tenant, "migrated", &k->s.id, k->path, 0, c.rolename,
					  psprintf("{\"from\": \"%s\", \"to\": \"%s\"}", k->from, to));
		sm_audit_write(&c, "migrate", k->path, &k->s.id, 0, NULL, 0);
		moved++;
		MemoryContextSwitchTo(cxt);
	}
	sm_leave(&session);
	PG_RETURN_INT64(moved);
}

/* SQL: secret_outbox_status(prefix, include_delivered) */
Datum
secret_outbox_status(PG_FUNCTION_ARGS)
{
	static SmStmt stmt = {
		"SELECT seq, path, backend, op, version, state, attempts, next_attempt_at,"
		"       last_error, backend_version, created_at, delivered_at"
		"  FROM secret_mgmt.secret_outbox"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1"
		"   AND pg_catalog.starts_with(path, $2)"
		"   AND ($3 OR state OPERATOR(pg_catalog.<>) 'delivered')"
		" ORDER BY seq",
		3, {TEXTOID, TEXTOID, BOOLOID}
	};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SmSession	session;
	SmCaller	c;
	char	   *prefix = PG_ARGISNULL(0) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	Datum		args[3];
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	sm_audit_begin("outbox", prefix);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, NULL);
	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = CStringGetTextDatum(prefix);
	args[2] = BoolGetDatum(!PG_ARGISNULL(1) && PG_GETARG_BOOL(1));
	n = sm_exec(&stmt, args, NULL, 0);
	for (int i = 0; i < n; i++)
	{
		if (!sm_acl_allows(&c, sm_col_text(i, 2), SM_CAP_LIST))
			continue;
		sm_put_row(rsinfo, i);
	}
	sm_leave(&session);
	return (Datum) 0;
}

/*
 * SQL: secret_outbox_retry(path) -- deliver a secret's conflicting rows
 * after all: each is re-queued to be written over the backend's current
 * version (which stays in the backend's history).  Admin on the path.
 */
Datum
secret_outbox_retry(PG_FUNCTION_ARGS)
{
	static SmStmt stmt = {
		"UPDATE secret_mgmt.secret_outbox"
		"   SET state = 'pending', rebase = true, next_attempt_at = pg_catalog.now(),"
		"       last_error = NULL"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND path OPERATOR(pg_catalog.=) $2"
		"   AND state OPERATOR(pg_catalog.=) 'conflict'",
		2, {TEXTOID, TEXTOID}
	};
	SmSession	session;
	SmCaller	c;
	char	   *path;
	Datum		args[2];
	int			n;

	path = sm_store_arg_path(fcinfo, 0);
	sm_audit_begin("outbox_retry", path);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, path);
	sm_acl_require(&c, path, SM_CAP_ADMIN);
	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = CStringGetTextDatum(path);
	n = sm_exec(&stmt, args, NULL, 0);
	if (n > 0)
	{
		if (!callback_registered)
		{
			RegisterXactCallback(outbox_xact_callback, NULL);
			callback_registered = true;
		}
		wake_after_commit = true;
	}
	sm_audit_write(&c, "outbox_retry", path, NULL, 0, NULL, 0);
	sm_leave(&session);
	PG_RETURN_INT64((int64) n);
}
