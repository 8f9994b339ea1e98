/*-------------------------------------------------------------------------
 *
 * audit.c
 *		The audit trail: what is recorded, the per-tenant hash chain, and
 *		the SQL functions that read and verify it.
 *
 * Every attempt becomes one row of secret_mgmt.secret_audit: who (role or
 * token subject, session user, client address, application, backend pid),
 * what (action, path, secret id, version), how it ended (ok, denied,
 * not_found, error and the SQLSTATE), and -- where a value was served or
 * written -- a keyed fingerprint of it, HMAC-SHA256 under a key derived
 * from the root key per tenant.  Never the value.
 *
 * Where rows come from:
 *
 *	- Writes call sm_audit_write(), which keeps the record with the
 *	  transaction; sm_audit_pre_commit() chains and inserts it when the
 *	  transaction commits: if it cannot be written, the transaction fails
 *	  (fail closed).  Records of a subtransaction rolled back go with it.
 *	- Successful reads call sm_audit_read(), which follows
 *	  secret_mgmt.audit_reads: sync keeps the record like a write, async
 *	  hands it to the shared queue (flusher.c), off records nothing.
 *	- Refusals are recorded where they are raised.  An API entry point
 *	  notes its action and path with sm_audit_begin() (a copy into static
 *	  memory, no catalog access); the few functions that raise the
 *	  product's refusals -- sm_report_not_found, sm_acl_require, tenant
 *	  membership checks, expiry, integrity and type checks, token
 *	  rejection -- call sm_audit_refused() just before they raise.  That
 *	  queues the record: the caller's transaction is about to roll back, so
 *	  the flusher writes it in a transaction of its own.  One attempt is
 *	  recorded once, however many layers report it.
 *
 * Each of these entry points also counts the attempt for the metrics
 * (metrics.c): a write when its record is chained at commit, a read when
 * its value is served (whatever audit_reads says), a refusal once.
 *
 * The chain: each tenant has a head row (secret_audit_head) holding the
 * last sequence number and hash.  A chain writer (pre-commit, or the
 * flusher) takes the tenant's chain lock (lock_chain) until its
 * transaction ends, so the chain cannot fork; it reads the head with the
 * latest snapshot, inserts its row with seq = head + 1, prev_hash = the
 * head's hash and hash = SHA-256(canonical fields || prev_hash), and moves
 * the head.  The first row's prev_hash is 32 zero bytes.  secret_audit_verify() recomputes every
 * link and compares the head with the last row, so an altered, deleted or
 * truncated row is reported.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "access/xact.h"
#include "acl.h"
#include "audit.h"
#include "loghygiene.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "crypto.h"
#include "fmgr.h"
#include "funcapi.h"
#include "keyring.h"
#include "metrics.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "storage/lock.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(secret_audit_verify);
PG_FUNCTION_INFO_V1(secret_audit_find_value);
PG_FUNCTION_INFO_V1(secret_audit_log);
PG_FUNCTION_INFO_V1(secret_audit_flush);

int			sm_audit_reads = SM_AUDIT_READS_OFF;

static const struct config_enum_entry audit_reads_options[] = {
	{"off", SM_AUDIT_READS_OFF, false},
	{"async", SM_AUDIT_READS_ASYNC, false},
	{"sync", SM_AUDIT_READS_SYNC, false},
	{NULL, 0, false}
};

static const char *const outcome_names[] = {"ok", "denied", "not_found", "error"};

#define FINGERPRINT_LABEL	"secret_mgmt audit fingerprint"

/*
 * The attempt in progress in this backend (sm_audit_begin), so that a
 * refusal raised deep inside can be recorded with its action and caller.
 */
static struct
{
	bool		active;
	bool		recorded;
	TimestampTz statement;		/* start of the statement that began it */
	Oid			roleid;
	char		action[SM_AUDIT_ACTION_LEN];
	char		path[SM_AUDIT_PATH_LEN];
	char		tenant[SM_AUDIT_TENANT_LEN];
	char		principal[SM_AUDIT_PRINCIPAL_LEN];
}			attempt;

/* Called from define_gucs() (secret_mgmt.c), before the prefix is reserved. */
void
sm_audit_define_gucs(void)
{
	DefineCustomEnumVariable("secret_mgmt.audit_reads",
							 "How successful reads are audited: sync, async or off.",
							 "sync writes the row in the reader's transaction; async queues it for the audit flusher; off records no successful read (refusals are always recorded).",
							 &sm_audit_reads, SM_AUDIT_READS_OFF, audit_reads_options,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);
	sm_flusher_define_gucs();
}

/* Copy a string into a fixed buffer; NULL becomes "" (stored as NULL). */
static void
copy_field(char *dst, size_t size, const char *src)
{
	strlcpy(dst, src ? src : "", size);
}

/* Note the action and path of the API call starting now. */
void
sm_audit_begin(const char *action, const char *path)
{
	attempt.active = true;
	attempt.recorded = false;
	attempt.statement = GetCurrentStatementStartTimestamp();
	attempt.roleid = GetUserId();
	copy_field(attempt.action, sizeof(attempt.action), action);
	copy_field(attempt.path, sizeof(attempt.path), path);
	attempt.tenant[0] = '\0';
	attempt.principal[0] = '\0';
}

/* Rename the attempt in progress (a refusal's reason, for instance). */
void
sm_audit_set_action(const char *action)
{
	if (attempt.active)
		copy_field(attempt.action, sizeof(attempt.action), action);
}

/* Note who the caller turned out to be. */
void
sm_audit_caller(const SmCaller *c)
{
	if (!attempt.active)
		return;
	copy_field(attempt.tenant, sizeof(attempt.tenant), c->tenant);
	copy_field(attempt.principal, sizeof(attempt.principal), c->rolename);
}

/* Forget the attempt at transaction end. */
void
sm_audit_xact_end(void)
{
	attempt.active = false;
}

/* The client's address (NULL over a Unix socket), computed once. */
static const char *
client_address(void)
{
	static bool done = false;
	static char addr[SM_AUDIT_ADDR_LEN];

	if (!done)
	{
		LOCAL_FCINFO(fcinfo, 0);
		Datum		d;

		InitFunctionCallInfoData(*fcinfo, NULL, 0, InvalidOid, NULL, NULL);
		d = inet_client_addr(fcinfo);
		addr[0] = '\0';
		if (!fcinfo->isnull)
			strlcpy(addr, DatumGetCString(DirectFunctionCall1(inet_out, d)), sizeof(addr));
		done = true;
	}
	return addr[0] ? addr : NULL;
}

/* The session-level fields every record carries. */
static void
fill_session(SmAuditRecord *rec)
{
	char	   *name = GetUserNameFromId(GetSessionUserId(), true);

	rec->at = GetCurrentTimestamp();
	copy_field(rec->session_user, sizeof(rec->session_user), name);
	copy_field(rec->client_addr, sizeof(rec->client_addr), client_address());
	copy_field(rec->application, sizeof(rec->application), application_name);
	rec->pid = MyProcPid;
}

/* The keyed fingerprint of a value in a tenant; false if no root key. */
static bool
fingerprint(const char *tenant, const uint8 *value, size_t len, uint8 *out)
{
	uint8		key[SM_KEY_LEN];
	unsigned int outlen = 0;
	static const uint8 empty = 0;
	bool		ok;

	if (!sm_keyring_derive(FINGERPRINT_LABEL, tenant, key))
		return false;
	ok = HMAC(EVP_sha256(), key, SM_KEY_LEN, len > 0 ? value : &empty, len,
			  out, &outlen) != NULL && outlen == SM_FINGERPRINT_LEN;
	sm_wipe(key, sizeof(key));
	return ok;
}

/* A record of a successful operation by `c`. */
static void
fill_ok(SmAuditRecord *rec, const SmCaller *c, const char *action, const char *path,
		const pg_uuid_t *secret_id, int32 version, const uint8 *value, size_t len)
{
	memset(rec, 0, sizeof(*rec));
	fill_session(rec);
	copy_field(rec->tenant, sizeof(rec->tenant), c->tenant);
	copy_field(rec->principal, sizeof(rec->principal), c->rolename);
	copy_field(rec->action, sizeof(rec->action), action);
	copy_field(rec->path, sizeof(rec->path), path);
	if (secret_id)
	{
		rec->has_secret_id = true;
		memcpy(&rec->secret_id, secret_id, sizeof(pg_uuid_t));
	}
	rec->has_version = version > 0;
	rec->version = version;
	rec->outcome = SM_AUDIT_OK;
	if (value)
		rec->has_fingerprint = fingerprint(c->tenant, value, len, rec->fingerprint);
}

/*
 * Records of this transaction waiting to be chained at pre-commit, each
 * with the subtransaction that made it (in TopTransactionContext).
 */
typedef struct PendingRecord
{
	SubTransactionId subid;
	int			order;			/* creation order, to keep it per tenant */
	bool		count;			/* a write, counted when it commits */
	SmAuditRecord rec;
} PendingRecord;

static List *pending = NIL;
static int	pending_order = 0;

/* Keep a record for this transaction's pre-commit. */
static void
defer_record(const SmAuditRecord *rec, bool count)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	PendingRecord *p = palloc(sizeof(PendingRecord));

	p->subid = GetCurrentSubTransactionId();
	p->order = pending_order++;
	p->count = count;
	memcpy(&p->rec, rec, sizeof(SmAuditRecord));
	pending = lappend(pending, p);
	MemoryContextSwitchTo(old);
}

/*
 * Record a write in the caller's transaction.  The row is chained and
 * inserted at pre-commit (sm_audit_pre_commit): the tenant's chain head is
 * then locked only from there to the commit, so concurrent transactions
 * of one tenant neither queue on it for their whole length nor deadlock
 * through it.  If the row cannot be written, the transaction fails.
 */
void
sm_audit_write(const SmCaller *c, const char *action, const char *path,
			   const pg_uuid_t *secret_id, int32 version,
			   const uint8 *value, size_t len)
{
	SmAuditRecord rec;

	fill_ok(&rec, c, action, path, secret_id, version, value, len);
	defer_record(&rec, true);
	attempt.active = false;
}

/*
 * Record, in the current transaction, an operation by `c` that failed
 * with `sqlerrcode` without dooming the transaction: a step of the
 * worker's that ran in a subtransaction, for instance.
 */
void
sm_audit_write_failed(const SmCaller *c, const char *action, const char *path,
					  const pg_uuid_t *secret_id, int32 version, int sqlerrcode)
{
	SmAuditRecord rec;

	fill_ok(&rec, c, action, path, secret_id, version, NULL, 0);
	rec.outcome = sqlerrcode == ERRCODE_SM_NOT_FOUND ? SM_AUDIT_NOT_FOUND :
		sqlerrcode == ERRCODE_SM_PERMISSION ? SM_AUDIT_DENIED : SM_AUDIT_ERROR;
	strlcpy(rec.sqlstate, unpack_sql_state(sqlerrcode), sizeof(rec.sqlstate));
	defer_record(&rec, true);
}

/*
 * Pre-commit (and pre-prepare): chain and insert this transaction's
 * records, as the extension owner.  An error here aborts the transaction.
 */
void
sm_audit_pre_commit(void)
{
	SmSession	session;
	List	   *todo = pending;
	SmAuditRecord *records;
	ListCell   *lc;
	int			n = 0;

	if (todo == NIL)
		return;
	pending = NIL;
	records = palloc(sizeof(SmAuditRecord) * list_length(todo));
	foreach(lc, todo)
		memcpy(&records[n++], &((PendingRecord *) lfirst(lc))->rec, sizeof(SmAuditRecord));
	PushActiveSnapshot(GetLatestSnapshot());
	sm_enter(&session);
	sm_audit_insert_many(records, n);
	sm_leave(&session);
	PopActiveSnapshot();
	pfree(records);
	/* Written: the writes count as done (reads counted when served). */
	foreach(lc, todo)
	{
		PendingRecord *p = lfirst(lc);

		if (p->count)
			sm_metrics_operation(p->rec.action, p->rec.outcome);
	}
}

/* Transaction end: pending records are gone with their memory. */
void
sm_audit_forget_pending(void)
{
	pending = NIL;
	pending_order = 0;
}

/* A subtransaction ended: its records go to its parent, or away. */
void
sm_audit_subxact(bool commit, SubTransactionId mySubid, SubTransactionId parentSubid)
{
	ListCell   *lc;

	foreach(lc, pending)
	{
		PendingRecord *p = lfirst(lc);

		if (p->subid != mySubid)
			continue;
		if (commit)
			p->subid = parentSubid;
		else
			pending = foreach_delete_current(pending, lc);
	}
}

/*
 * Record a tenant-level change (membership, brokers, token keys, tenant
 * creation) made by role `caller`, in the caller's transaction.  `object`
 * names what changed.  Runs inside sm_enter().
 */
void
sm_audit_tenant_change(const char *tenant, Oid caller, const char *action,
					   const char *object)
{
	SmCaller	c;

	memset(&c, 0, sizeof(c));
	c.tenant = (char *) tenant;
	c.rolename = attempt.active && attempt.principal[0] ? attempt.principal :
		GetUserNameFromId(caller, false);
	sm_audit_write(&c, action, object, NULL, 0, NULL, 0);
}

/* Record a successful read, as secret_mgmt.audit_reads says. */
void
sm_audit_read(const SmCaller *c, const char *path, const pg_uuid_t *secret_id,
			  int32 version, const uint8 *value, size_t len)
{
	SmAuditRecord rec;

	/* Counted whatever audit_reads says: the value was served. */
	sm_metrics_read_served();
	/* The attempt stays open: secret_render reads several references. */
	if (sm_audit_reads == SM_AUDIT_READS_OFF)
		return;
	fill_ok(&rec, c, "read", path, secret_id, version, value, len);
	if (sm_audit_reads == SM_AUDIT_READS_SYNC)
		defer_record(&rec, false);
	else
		sm_audit_enqueue(&rec);
}

/*
 * Record the refusal about to be raised with `sqlerrcode`, through the
 * queue: the caller's transaction will roll back.  Once per attempt.
 */
void
sm_audit_refused(int sqlerrcode, const char *path)
{
	sm_audit_refused_as(sqlerrcode == ERRCODE_SM_NOT_FOUND ? SM_AUDIT_NOT_FOUND :
						sqlerrcode == ERRCODE_SM_PERMISSION ? SM_AUDIT_DENIED :
						SM_AUDIT_ERROR, sqlerrcode, path);
}

/*
 * The same with the outcome given: a caller refused for lack of a grant
 * is told SM001 when it may not even list the path, but its attempt was
 * denied.
 */
void
sm_audit_refused_as(SmAuditOutcome outcome, int sqlerrcode, const char *path)
{
	SmAuditRecord rec;
	const char *state;

	/* No attempt of this statement: nothing to attribute the refusal to. */
	if (!attempt.active || attempt.recorded ||
		attempt.statement != GetCurrentStatementStartTimestamp())
		return;
	attempt.recorded = true;
	memset(&rec, 0, sizeof(rec));
	fill_session(&rec);
	strlcpy(rec.tenant, attempt.tenant, sizeof(rec.tenant));
	if (attempt.principal[0])
		strlcpy(rec.principal, attempt.principal, sizeof(rec.principal));
	else
		copy_field(rec.principal, sizeof(rec.principal),
				   GetUserNameFromId(attempt.roleid, true));
	strlcpy(rec.action, attempt.action, sizeof(rec.action));
	if (attempt.path[0] == '\0' && path)
		copy_field(rec.path, sizeof(rec.path), path);
	else
		strlcpy(rec.path, attempt.path, sizeof(rec.path));
	rec.outcome = outcome;
	state = unpack_sql_state(sqlerrcode);
	strlcpy(rec.sqlstate, state, sizeof(rec.sqlstate));
	sm_metrics_operation(rec.action, outcome);
	sm_audit_enqueue(&rec);
}

/* Note the tenant a refusal concerns, when no caller was resolved yet. */
void
sm_audit_note_tenant(const char *tenant)
{
	if (attempt.active && attempt.tenant[0] == '\0')
		copy_field(attempt.tenant, sizeof(attempt.tenant), tenant);
}

/* ---------------------------------------------------------------------
 * The chain
 * --------------------------------------------------------------------- */

/* The fields a row's hash covers, as read back or about to be written. */
typedef struct ChainRow
{
	const char *tenant;
	int64		seq;
	TimestampTz at;
	const char *principal;
	const char *session_user;
	const char *client_addr;	/* NULL: none */
	const char *application;	/* NULL: none */
	int32		pid;
	const char *action;
	const char *path;			/* NULL: none */
	const uint8 *secret_id;		/* NULL: none */
	bool		has_version;
	int32		version;
	const char *outcome;
	const char *sqlstate;		/* NULL: none */
	const uint8 *fingerprint;	/* NULL: none */
	const uint8 *prev_hash;		/* 32 bytes */
} ChainRow;

/* Length-prefixed (4 bytes, big-endian; all ones for NULL) field. */
static void
put_field(EVP_MD_CTX *ctx, const void *data, size_t len)
{
	uint8		hdr[4];
	uint32		n = data ? (uint32) len : 0xFFFFFFFF;

	hdr[0] = n >> 24;
	hdr[1] = n >> 16;
	hdr[2] = n >> 8;
	hdr[3] = n;
	EVP_DigestUpdate(ctx, hdr, 4);
	if (data && len > 0)
		EVP_DigestUpdate(ctx, data, len);
}

static void
put_text(EVP_MD_CTX *ctx, const char *s)
{
	put_field(ctx, s, s ? strlen(s) : 0);
}

static void
put_int64(EVP_MD_CTX *ctx, int64 v)
{
	uint8		b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8) ((uint64) v >> (56 - 8 * i));
	put_field(ctx, b, 8);
}

/* hash = SHA-256 over the canonical encoding of the row and prev_hash. */
static void
chain_hash(const ChainRow *r, uint8 *out)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int len = 0;
	static const char domain[] = "secret_mgmt audit row v1";

	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		elog(ERROR, "could not initialise SHA-256");
	put_text(ctx, domain);
	put_text(ctx, r->tenant);
	put_int64(ctx, r->seq);
	put_int64(ctx, r->at);
	put_text(ctx, r->principal);
	put_text(ctx, r->session_user);
	put_text(ctx, r->client_addr);
	put_text(ctx, r->application);
	put_int64(ctx, r->pid);
	put_text(ctx, r->action);
	put_text(ctx, r->path);
	put_field(ctx, r->secret_id, SM_UUID_LEN);
	if (r->has_version)
		put_int64(ctx, r->version);
	else
		put_field(ctx, NULL, 0);
	put_text(ctx, r->outcome);
	put_text(ctx, r->sqlstate);
	put_field(ctx, r->fingerprint, SM_FINGERPRINT_LEN);
	put_field(ctx, r->prev_hash, 32);
	if (EVP_DigestFinal_ex(ctx, out, &len) != 1 || len != 32)
		elog(ERROR, "could not compute SHA-256");
	EVP_MD_CTX_free(ctx);
}

static bytea *
bytes_to_bytea(const uint8 *data, size_t len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), data, len);
	return b;
}

static const char *
nullif_empty(const char *s)
{
	return s[0] ? s : NULL;
}

/* Is the extension (with its audit table) installed in this database? */
bool
sm_audit_installed(void)
{
	Oid			nspid = get_namespace_oid("secret_mgmt", true);

	return OidIsValid(nspid) && OidIsValid(get_relname_relid("secret_audit", nspid));
}

/*
 * Run an internal statement against the latest committed state rather
 * than the transaction's snapshot: under REPEATABLE READ a chain head
 * moved by another transaction since this one began must be seen, and
 * updated without a serialization failure (the chain lock, not the
 * snapshot, orders the writers).
 */
static int
exec_latest(SmStmt *stmt, Datum *values, const char *nulls, long tcount)
{
	int			rc;

	if (stmt->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(stmt->sql, stmt->nargs, stmt->argtypes);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		stmt->plan = plan;
	}
	rc = SPI_execute_snapshot(stmt->plan, values, nulls, GetLatestSnapshot(),
							  InvalidSnapshot, false, false, tcount);
	if (rc < 0)
		elog(ERROR, "SPI_execute_snapshot failed: %s", SPI_result_code_string(rc));
	return (int) SPI_processed;
}

/*
 * Serialise the writers of one tenant's chain until the end of the
 * transaction: a heavyweight lock on a tag no SQL-level advisory lock
 * function can take (its fourth field is not 1 or 2).  Taken at
 * pre-commit or in the flusher's short transactions, tenants in name
 * order, so it is held briefly and cannot deadlock with other chain
 * writers.
 */
static void
lock_chain(const char *tenant)
{
	LOCKTAG		tag;
	uint64		h = hash_bytes_extended((const unsigned char *) tenant,
										(int) strlen(tenant), 0);

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h, 0x534D);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/* A one-dimensional array of n elements of type `elemtype`. */
static Datum
batch_array(Datum *values, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1];
	int			lbs[1];

	dims[0] = n;
	lbs[0] = 1;
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs, elemtype,
											  typlen, typbyval, typalign));
}

/* The columns of secret_audit a batch fills, in the INSERT's order. */
#define AUDIT_COLUMNS 17

static const Oid audit_column_types[AUDIT_COLUMNS] = {
	TEXTOID, INT8OID, TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, INT4OID, TEXTOID, TEXTOID, UUIDOID, INT4OID,
	TEXTOID, TEXTOID, BYTEAOID, BYTEAOID, BYTEAOID
};

/*
 * Chain and insert records[0..n-1], which all belong to `tenant`, in that
 * order: one lock of the chain head, one INSERT of the whole run, one
 * move of the head.
 */
static void
insert_run(const char *tenant, const SmAuditRecord *const *records, int n)
{
	static SmStmt lock_head = {
		"INSERT INTO secret_mgmt.secret_audit_head AS h (tenant_id, seq, hash)"
		" VALUES ($1, 0, NULL)"
		" ON CONFLICT (tenant_id) DO UPDATE SET seq = h.seq"
		" RETURNING h.seq, h.hash",
		1, {TEXTOID}
	};
	static SmStmt insert_rows = {
		"INSERT INTO secret_mgmt.secret_audit"
		" (tenant_id, seq, logged_at, principal, session_user_name, client_addr,"
		"  application_name, backend_pid, action, path, secret_id, version,"
		"  outcome, sqlstate, fingerprint, prev_hash, hash)"
		" SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
		"  pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
		"  pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8),"
		"  pg_catalog.unnest($9), pg_catalog.unnest($10), pg_catalog.unnest($11),"
		"  pg_catalog.unnest($12), pg_catalog.unnest($13), pg_catalog.unnest($14),"
		"  pg_catalog.unnest($15), pg_catalog.unnest($16), pg_catalog.unnest($17))",
		17, {TEXTARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID,
			TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID, TEXTARRAYOID,
			TEXTARRAYOID, UUIDARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		BYTEAARRAYOID, BYTEAARRAYOID, BYTEAARRAYOID}
	};
	static SmStmt move_head = {
		"UPDATE secret_mgmt.secret_audit_head SET seq = $2, hash = $3"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1",
		3, {TEXTOID, INT8OID, BYTEAOID}
	};
	Datum	   *values[AUDIT_COLUMNS];
	bool	   *nulls[AUDIT_COLUMNS];
	Datum		args[AUDIT_COLUMNS];
	uint8		prev[32];
	uint8		hash[32];
	int64		seq;
	bool		isnull;
	Datum		d;

	lock_chain(tenant);
	args[0] = CStringGetTextDatum(tenant);
	if (exec_latest(&lock_head, args, NULL, 0) != 1)
		elog(ERROR, "could not lock the audit chain of tenant \"%s\"", tenant);
	seq = DatumGetInt64(sm_col(0, 1, &isnull));
	d = sm_col(0, 2, &isnull);
	if (isnull)
		memset(prev, 0, sizeof(prev));
	else
	{
		bytea	   *b = DatumGetByteaPP(d);

		if (VARSIZE_ANY_EXHDR(b) != 32)
			elog(ERROR, "audit chain head of tenant \"%s\" is malformed", tenant);
		memcpy(prev, VARDATA_ANY(b), 32);
	}

	for (int k = 0; k < AUDIT_COLUMNS; k++)
	{
		values[k] = palloc(sizeof(Datum) * n);
		nulls[k] = palloc0(sizeof(bool) * n);
	}
	for (int i = 0; i < n; i++)
	{
		const SmAuditRecord *rec = records[i];
		ChainRow	r;

		r.tenant = tenant;
		r.seq = ++seq;
		r.at = rec->at;
		r.principal = rec->principal;
		r.session_user = rec->session_user;
		r.client_addr = nullif_empty(rec->client_addr);
		r.application = nullif_empty(rec->application);
		r.pid = rec->pid;
		r.action = rec->action;
		r.path = nullif_empty(rec->path);
		r.secret_id = rec->has_secret_id ? rec->secret_id.data : NULL;
		r.has_version = rec->has_version;
		r.version = rec->version;
		r.outcome = outcome_names[rec->outcome];
		r.sqlstate = nullif_empty(rec->sqlstate);
		r.fingerprint = rec->has_fingerprint ? rec->fingerprint : NULL;
		r.prev_hash = prev;
		chain_hash(&r, hash);

		values[0][i] = CStringGetTextDatum(tenant);
		values[1][i] = Int64GetDatum(r.seq);
		values[2][i] = TimestampTzGetDatum(r.at);
		values[3][i] = CStringGetTextDatum(r.principal);
		values[4][i] = CStringGetTextDatum(r.session_user);
		if (r.client_addr)
			values[5][i] = CStringGetTextDatum(r.client_addr);
		else
			nulls[5][i] = true;
		if (r.application)
			values[6][i] = CStringGetTextDatum(r.application);
		else
			nulls[6][i] = true;
		values[7][i] = Int32GetDatum(r.pid);
		values[8][i] = CStringGetTextDatum(r.action);
		if (r.path)
			values[9][i] = CStringGetTextDatum(r.path);
		else
			nulls[9][i] = true;
		if (r.secret_id)
			values[10][i] = UUIDPGetDatum(&rec->secret_id);
		else
			nulls[10][i] = true;
		if (r.has_version)
			values[11][i] = Int32GetDatum(r.version);
		else
			nulls[11][i] = true;
		values[12][i] = CStringGetTextDatum(r.outcome);
		if (r.sqlstate)
			values[13][i] = CStringGetTextDatum(r.sqlstate);
		else
			nulls[13][i] = true;
		if (r.fingerprint)
			values[14][i] = PointerGetDatum(bytes_to_bytea(r.fingerprint, SM_FINGERPRINT_LEN));
		else
			nulls[14][i] = true;
		values[15][i] = PointerGetDatum(bytes_to_bytea(prev, 32));
		values[16][i] = PointerGetDatum(bytes_to_bytea(hash, 32));
		memcpy(prev, hash, 32);
	}
	for (int k = 0; k < AUDIT_COLUMNS; k++)
		args[k] = batch_array(values[k], nulls[k], n, audit_column_types[k]);
	if (exec_latest(&insert_rows, args, NULL, 0) != n)
		elog(ERROR, "could not write the audit rows of tenant \"%s\"", tenant);

	args[0] = CStringGetTextDatum(tenant);
	args[1] = Int64GetDatum(seq);
	args[2] = PointerGetDatum(bytes_to_bytea(prev, 32));
	exec_latest(&move_head, args, NULL, 0);
}

/* One record about to be written, with the chain it goes to. */
typedef struct ChainedRecord
{
	const char *tenant;
	int			order;
	const SmAuditRecord *rec;
} ChainedRecord;

static int
chained_cmp(const void *a, const void *b)
{
	const ChainedRecord *ca = a;
	const ChainedRecord *cb = b;
	int			c = strcmp(ca->tenant, cb->tenant);

	if (c != 0)
		return c;
	return ca->order < cb->order ? -1 : ca->order > cb->order;
}

/*
 * Chain and insert records[0..n-1], keeping their order within each
 * tenant; tenants are locked in name order, so writers cannot deadlock on
 * chain heads.  A refusal naming a tenant that does not exist goes to the
 * platform's trail.  SPI must be connected and the current user able to
 * write the audit tables (the extension owner, or the flusher's
 * superuser).
 */
void
sm_audit_insert_many(const SmAuditRecord *records, int n)
{
	static SmStmt tenant_exists = {
		"SELECT 1 FROM secret_mgmt.secret_tenant WHERE tenant_id OPERATOR(pg_catalog.=) $1",
		1, {TEXTOID}
	};
	ChainedRecord *todo;
	const SmAuditRecord **run;
	const char *checked = NULL;
	bool		checked_exists = false;
	int			start;

	if (n <= 0)
		return;
	todo = palloc(sizeof(ChainedRecord) * n);
	for (int i = 0; i < n; i++)
	{
		const SmAuditRecord *rec = &records[i];
		const char *tenant = rec->tenant[0] ? rec->tenant : "global";

		if (rec->outcome != SM_AUDIT_OK)
		{
			if (checked == NULL || strcmp(checked, tenant) != 0)
			{
				Datum		arg = CStringGetTextDatum(tenant);

				checked = tenant;
				checked_exists = exec_latest(&tenant_exists, &arg, NULL, 1) > 0;
			}
			if (!checked_exists)
				tenant = "global";
		}
		todo[i].tenant = tenant;
		todo[i].order = i;
		todo[i].rec = rec;
	}
	qsort(todo, n, sizeof(ChainedRecord), chained_cmp);

	run = palloc(sizeof(SmAuditRecord *) * n);
	start = 0;
	while (start < n)
	{
		int			end = start;

		while (end < n && strcmp(todo[end].tenant, todo[start].tenant) == 0)
		{
			run[end - start] = todo[end].rec;
			end++;
		}
		insert_run(todo[start].tenant, run, end - start);
		start = end;
	}
	pfree(run);
	pfree(todo);
}

/* Chain and insert one record (see sm_audit_insert_many). */
void
sm_audit_insert(const SmAuditRecord *rec)
{
	sm_audit_insert_many(rec, 1);
}

/* ---------------------------------------------------------------------
 * SQL functions
 * --------------------------------------------------------------------- */

/* May `c` read its tenant's audit trail?  Tenant admins and `audit` on **. */
static void
require_auditor(const SmCaller *c)
{
	if (c->is_admin || c->is_superuser || sm_acl_allows_everywhere(c, SM_CAP_AUDIT))
		return;
	sm_audit_refused(ERRCODE_SM_PERMISSION, NULL);
	ereport(ERROR,
			(errcode(ERRCODE_SM_PERMISSION),
			 errmsg("permission denied for the audit trail of tenant \"%s\"", c->tenant),
			 errdetail("Reading the audit trail needs capability \"audit\" on \"**\" or tenant administration.")));
}

static bool
bytes_equal_col(int row, int col, const uint8 *want, size_t len)
{
	bool		isnull;
	Datum		d = sm_col(row, col, &isnull);
	bytea	   *b;

	if (isnull)
		return want == NULL;
	if (want == NULL)
		return false;
	b = DatumGetByteaPP(d);
	return VARSIZE_ANY_EXHDR(b) == len && memcmp(VARDATA_ANY(b), want, len) == 0;
}

static const uint8 *
bytes_col(int row, int col, size_t want_len)
{
	bool		isnull;
	Datum		d = sm_col(row, col, &isnull);
	bytea	   *b;

	if (isnull)
		return NULL;
	b = DatumGetByteaPP(d);
	if (VARSIZE_ANY_EXHDR(b) != want_len)
		return NULL;
	return (const uint8 *) VARDATA_ANY(b);
}

/* Verify one tenant's chain; puts one result row. */
static void
verify_tenant(ReturnSetInfo *rsinfo, const char *tenant)
{
	static SmStmt rows = {
		"SELECT seq, logged_at, principal, session_user_name, client_addr,"
		"       application_name, backend_pid, action, path, secret_id, version,"
		"       outcome, sqlstate, fingerprint, prev_hash, hash"
		"  FROM secret_mgmt.secret_audit"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 ORDER BY seq",
		1, {TEXTOID}
	};
	static SmStmt head = {
		"SELECT seq, hash FROM secret_mgmt.secret_audit_head"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1",
		1, {TEXTOID}
	};
	Datum		args[1];
	int			n;
	uint8		prev[32];
	int64		expected = 1;
	int64		broken = 0;
	char	   *reason = NULL;
	SPITupleTable *tuptable;
	uint64		ntuples;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	memset(prev, 0, sizeof(prev));
	args[0] = CStringGetTextDatum(tenant);
	n = sm_exec(&rows, args, NULL, 0);
	tuptable = SPI_tuptable;
	ntuples = SPI_processed;
	for (int i = 0; i < n && reason == NULL; i++)
	{
		ChainRow	r;
		bool		isnull;
		Datum		d;
		uint8		hash[32];
		const uint8 *stored;

		SPI_tuptable = tuptable;
		SPI_processed = ntuples;
		r.tenant = tenant;
		r.seq = DatumGetInt64(sm_col(i, 1, &isnull));
		r.at = DatumGetTimestampTz(sm_col(i, 2, &isnull));
		r.principal = sm_col_text(i, 3);
		r.session_user = sm_col_text(i, 4);
		r.client_addr = sm_col_text(i, 5);
		r.application = sm_col_text(i, 6);
		r.pid = sm_col_int32(i, 7);
		r.action = sm_col_text(i, 8);
		r.path = sm_col_text(i, 9);
		d = sm_col(i, 10, &isnull);
		r.secret_id = isnull ? NULL : DatumGetUUIDP(d)->data;
		d = sm_col(i, 11, &isnull);
		r.has_version = !isnull;
		r.version = isnull ? 0 : DatumGetInt32(d);
		r.outcome = sm_col_text(i, 12);
		r.sqlstate = sm_col_text(i, 13);
		r.fingerprint = bytes_col(i, 14, SM_FINGERPRINT_LEN);
		if (sm_col_isnull(i, 14) != (r.fingerprint == NULL))
		{
			broken = r.seq;
			reason = "fingerprint is malformed";
			break;
		}
		r.prev_hash = prev;

		if (r.seq != expected)
		{
			broken = expected;
			reason = r.seq > expected ?
				psprintf("row %lld is missing", (long long) expected) :
				psprintf("row %lld appears twice", (long long) r.seq);
			break;
		}
		if (!bytes_equal_col(i, 15, prev, 32))
		{
			broken = r.seq;
			reason = "previous-hash link does not match the row before";
			break;
		}
		chain_hash(&r, hash);
		if (!bytes_equal_col(i, 16, hash, 32))
		{
			broken = r.seq;
			reason = "row hash does not match its contents: the row was altered";
			break;
		}
		stored = bytes_col(i, 16, 32);
		memcpy(prev, stored, 32);
		expected++;
	}

	if (reason == NULL)
	{
		int64		head_seq = 0;
		bool		head_ok;

		if (sm_exec(&head, args, NULL, 1) == 1)
		{
			head_seq = DatumGetInt64(sm_col(0, 1, &head_ok));
			head_ok = head_seq == expected - 1 &&
				(head_seq == 0 || bytes_equal_col(0, 2, prev, 32));
		}
		else
			head_ok = expected == 1;
		if (!head_ok)
		{
			broken = expected;
			reason = head_seq > expected - 1 ?
				psprintf("rows %lld to %lld are missing", (long long) expected,
						 (long long) head_seq) :
				"chain head does not match the last row";
		}
	}

	values[0] = CStringGetTextDatum(tenant);
	values[1] = Int64GetDatum(expected - 1);
	if (reason)
		values[2] = Int64GetDatum(broken);
	else
		nulls[2] = true;
	values[3] = CStringGetTextDatum(reason ? reason : "ok");
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * SQL: secret_audit_verify(tenant default null) returns table(tenant,
 * rows, broken_at, reason): one row per chain checked; broken_at is the
 * sequence number of the first broken link, null where the chain verifies.
 * The platform administrator verifies any or all tenants; a tenant's
 * auditors their own.
 */
Datum
secret_audit_verify(PG_FUNCTION_ARGS)
{
	static SmStmt tenants = {
		"SELECT tenant_id FROM secret_mgmt.secret_audit_head"
		" UNION SELECT tenant_id FROM secret_mgmt.secret_audit ORDER BY 1",
		0, {InvalidOid}
	};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SmSession	session;
	char	   *want = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));

	InitMaterializedSRF(fcinfo, 0);
	sm_audit_begin("audit_verify", NULL);
	sm_enter(&session);
	if (superuser_arg(session.caller))
	{
		if (want)
			verify_tenant(rsinfo, want);
		else
		{
			int			n = sm_exec(&tenants, NULL, NULL, 0);
			List	   *names = NIL;
			ListCell   *lc;

			for (int i = 0; i < n; i++)
				names = lappend(names, sm_col_text(i, 1));
			foreach(lc, names)
				verify_tenant(rsinfo, lfirst(lc));
		}
	}
	else
	{
		SmCaller	c;

		sm_caller_resolve(&session, &c, NULL);
		sm_audit_caller(&c);
		require_auditor(&c);
		if (want && strcmp(want, c.tenant) != 0)
		{
			sm_audit_note_tenant(c.tenant);
			sm_audit_refused(ERRCODE_SM_PERMISSION, NULL);
			ereport(ERROR,
					(errcode(ERRCODE_SM_PERMISSION),
					 errmsg("permission denied for the audit trail of tenant \"%s\"", want),
					 errdetail("A tenant's auditors verify only their own tenant's chain.")));
		}
		verify_tenant(rsinfo, c.tenant);
	}
	sm_leave(&session);
	attempt.active = false;
	return (Datum) 0;
}

/*
 * SQL: secret_audit_find_value(value) returns table(principal, action,
 * path, version, times, first_at, last_at): who was served or wrote this
 * value in the caller's tenant, found by its fingerprint.  The value is
 * fingerprinted here and goes nowhere else.
 */
Datum
secret_audit_find_value(PG_FUNCTION_ARGS)
{
	static SmStmt stmt = {
		"SELECT principal, action, path, version, pg_catalog.count(*),"
		"       pg_catalog.min(logged_at), pg_catalog.max(logged_at)"
		"  FROM secret_mgmt.secret_audit"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1"
		"   AND fingerprint OPERATOR(pg_catalog.=) $2"
		" GROUP BY principal, action, path, version"
		" ORDER BY 6, 1, 2, 3, 4",
		2, {TEXTOID, BYTEAOID}
	};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SmSession	session;
	SmCaller	c;
	text	   *value;
	uint8		fp[SM_FINGERPRINT_LEN];
	Datum		args[2];
	int			n;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("value must not be null")));
	value = PG_GETARG_TEXT_PP(0);
	sm_loghygiene_value_op("secret_audit_find_value");
	InitMaterializedSRF(fcinfo, 0);
	sm_audit_begin("audit_find_value", NULL);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, NULL);
	sm_audit_caller(&c);
	require_auditor(&c);
	sm_keyring_require_root();
	if (!fingerprint(c.tenant, (const uint8 *) VARDATA_ANY(value),
					 VARSIZE_ANY_EXHDR(value), fp))
		ereport(ERROR,
				(errcode(ERRCODE_SM_SEALED),
				 errmsg("cannot fingerprint the value: the root key is not loaded")));
	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = PointerGetDatum(bytes_to_bytea(fp, sizeof(fp)));
	n = sm_exec(&stmt, args, NULL, 0);
	for (int i = 0; i < n; i++)
		sm_put_row(rsinfo, i);
	/* The search itself is an audited act (without the value's fingerprint). */
	sm_audit_write(&c, "audit_find_value", NULL, NULL, 0, NULL, 0);
	sm_leave(&session);
	return (Datum) 0;
}

/*
 * SQL: secret_audit_log(since default null, max_rows default 1000): the
 * caller's tenant's audit rows, oldest first.
 */
Datum
secret_audit_log(PG_FUNCTION_ARGS)
{
	static SmStmt stmt = {
		"SELECT seq, logged_at, principal, session_user_name, client_addr,"
		"       application_name, backend_pid, action, path, secret_id, version,"
		"       outcome, sqlstate, fingerprint"
		"  FROM secret_mgmt.secret_audit"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1"
		"   AND ($2 IS NULL OR logged_at OPERATOR(pg_catalog.>=) $2)"
		" ORDER BY seq LIMIT $3",
		3, {TEXTOID, TIMESTAMPTZOID, INT4OID}
	};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SmSession	session;
	SmCaller	c;
	Datum		args[3];
	char		nulls[3] = "   ";
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	sm_audit_begin("audit_log", NULL);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, NULL);
	sm_audit_caller(&c);
	require_auditor(&c);
	args[0] = CStringGetTextDatum(c.tenant);
	if (PG_ARGISNULL(0))
		nulls[1] = 'n';
	else
		args[1] = PG_GETARG_DATUM(0);
	args[2] = Int32GetDatum(PG_ARGISNULL(1) ? 1000 : Max(PG_GETARG_INT32(1), 0));
	n = sm_exec(&stmt, args, nulls, 0);
	for (int i = 0; i < n; i++)
		sm_put_row(rsinfo, i);
	sm_leave(&session);
	attempt.active = false;
	return (Datum) 0;
}

/*
 * SQL: secret_audit_flush() returns the number of queued records written:
 * drain this database's share of the audit queue now, in the caller's
 * transaction (the records leave the queue when it commits).  Platform
 * administrator only; the flusher does the same on its own.
 */
Datum
secret_audit_flush(PG_FUNCTION_ARGS)
{
	SmSession	session;
	int			n;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied to flush the audit queue"),
				 errdetail("Only the platform administrator (a superuser) flushes the audit queue.")));
	sm_enter(&session);
	n = sm_audit_drain();
	sm_leave(&session);
	PG_RETURN_INT32(n);
}
