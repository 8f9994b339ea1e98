/*-------------------------------------------------------------------------
 *
 * store.c
 *		Secrets and their versions: create, resolve, update, roll back,
 *		label, disable/enable/destroy, delete, restore, purge, list.
 *
 * Every SQL-callable function here follows one shape: check its arguments,
 * sm_enter() (become the extension owner, connect SPI), identify the caller
 * and its tenant, do the work with bound-parameter statements that all name
 * the tenant, copy results to the caller's memory context, sm_leave().
 *
 * Writes allocate a version number by incrementing secret_item.last_version
 * in an UPDATE, which also locks the secret: concurrent writers queue on
 * that row, version numbers stay gap-free, and check-and-set compares with
 * what the lock returned.  A value is encrypted before its first INSERT;
 * plaintext buffers are secure allocations wiped with their memory context.
 *
 * A secret that does not exist in the caller's tenant -- whether it exists
 * in another tenant or nowhere -- produces the same SM001 error, built in
 * one place (sm_report_not_found).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "backend.h"
#include "catalog/pg_type.h"
#include "acl.h"
#include "audit.h"
#include "crypto.h"
#include "fmgr.h"
#include "funcapi.h"
#include "keyring.h"
#include "lookup.h"
#include "loghygiene.h"
#include "metrics.h"
#include "outbox.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "tenant.h"
#include "events.h"
#include "rotation.h"
#include "store.h"
#include "types.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#define SM_PATH_MAX			512

PG_FUNCTION_INFO_V1(secret_create_text);
PG_FUNCTION_INFO_V1(secret_create_bytea);
PG_FUNCTION_INFO_V1(secret_create_jsonb);
PG_FUNCTION_INFO_V1(secret_resolve_text);
PG_FUNCTION_INFO_V1(secret_resolve_fresh);
PG_FUNCTION_INFO_V1(secret_resolve_jsonb);
PG_FUNCTION_INFO_V1(secret_resolve_bytea);
PG_FUNCTION_INFO_V1(secret_update_text);
PG_FUNCTION_INFO_V1(secret_update_bytea);
PG_FUNCTION_INFO_V1(secret_update_jsonb);
PG_FUNCTION_INFO_V1(secret_rollback);
PG_FUNCTION_INFO_V1(secret_versions);
PG_FUNCTION_INFO_V1(secret_list);
PG_FUNCTION_INFO_V1(secret_label);
PG_FUNCTION_INFO_V1(secret_version_disable);
PG_FUNCTION_INFO_V1(secret_version_enable);
PG_FUNCTION_INFO_V1(secret_version_destroy);
PG_FUNCTION_INFO_V1(secret_delete);
PG_FUNCTION_INFO_V1(secret_restore);
PG_FUNCTION_INFO_V1(secret_purge);
PG_FUNCTION_INFO_V1(secret_set_expiry);


/* The search order of scopes, most specific first (used by several statements). */
#define SCOPE_CHAIN \
	"   AND (scope OPERATOR(pg_catalog.=) ANY (ARRAY['organization', 'global'])" \
	"        OR (scope OPERATOR(pg_catalog.=) 'team' AND scope_id OPERATOR(pg_catalog.=) $3)" \
	"        OR (scope OPERATOR(pg_catalog.=) 'project' AND scope_id OPERATOR(pg_catalog.=) $4)" \
	"        OR (scope OPERATOR(pg_catalog.=) 'user' AND scope_id OPERATOR(pg_catalog.=) $5))"
#define SCOPE_RANK \
	" CASE WHEN scope OPERATOR(pg_catalog.=) 'user' THEN 1" \
	"      WHEN scope OPERATOR(pg_catalog.=) 'project' THEN 2" \
	"      WHEN scope OPERATOR(pg_catalog.=) 'team' THEN 3" \
	"      WHEN scope OPERATOR(pg_catalog.=) 'organization' THEN 4 ELSE 5 END"

void
sm_report_not_found(const char *path, const char *hint)
{
	sm_audit_refused(ERRCODE_SM_NOT_FOUND, path);
	ereport(ERROR,
			(errcode(ERRCODE_SM_NOT_FOUND),
			 errmsg("secret \"%s\" not found", path),
			 hint ? errhint("%s", hint) : 0));
}

/* Validate a secret path: segments of [A-Za-z0-9._-], no "." or "..". */
void
sm_store_check_path(const char *path)
{
	size_t		len = strlen(path);
	const char *problem = NULL;
	size_t		seg = 0;

	if (len == 0)
		problem = "The path is empty.";
	else if (len > SM_PATH_MAX)
		problem = "A path is at most 512 bytes.";
	for (size_t i = 0; problem == NULL && i <= len; i++)
	{
		unsigned char c = (unsigned char) path[i];

		if (c == '/' || c == '\0')
		{
			size_t		seglen = i - seg;

			if (seglen == 0)
				problem = "A path has no empty segments (no leading, trailing or doubled '/').";
			else if ((seglen == 1 && path[seg] == '.') ||
					 (seglen == 2 && path[seg] == '.' && path[seg + 1] == '.'))
				problem = "A path has no \".\" or \"..\" segments.";
			seg = i + 1;
		}
		else if (!(IS_ASCII_ALNUM(c) || c == '.' || c == '_' || c == '-'))
			problem = "A path segment holds only letters, digits, '.', '_' and '-'.";
	}
	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid secret path \"%s\"", path),
				 errdetail("%s", problem)));
}

/* Validate a label name (the table's CHECK, with a clear message). */
static void
check_label(const char *label)
{
	size_t		len = strlen(label);
	bool		ok = len >= 1 && len <= 64 && IS_ASCII_ALPHA((unsigned char) label[0]);

	for (size_t i = 1; ok && i < len; i++)
	{
		unsigned char c = (unsigned char) label[i];

		ok = IS_ASCII_ALNUM(c) || c == '.' || c == '_' || c == '-';
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid label \"%s\"", label),
				 errdetail("A label is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter.")));
}

static char *
arg_text(FunctionCallInfo fcinfo, int n, const char *name)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
	return text_to_cstring(PG_GETARG_TEXT_PP(n));
}

/* Argument n: a secret path, not null and well formed. */
char *
sm_store_arg_path(FunctionCallInfo fcinfo, int n)
{
	char	   *path = arg_text(fcinfo, n, "path");

	sm_store_check_path(path);
	return path;
}

/*
 * The bytes of a value argument of type text, bytea or jsonb.  jsonb is
 * stored as its canonical text, built in a wiped allocation.
 */
static uint8 *
arg_value(FunctionCallInfo fcinfo, int n, size_t *len)
{
	Oid			argtype = get_fn_expr_argtype(fcinfo->flinfo, n);

	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("value must not be null")));
	if (argtype == JSONBOID)
	{
		Jsonb	   *jb = PG_GETARG_JSONB_P(n);
		StringInfoData buf;

		uint8	   *copy;

		initStringInfo(&buf);
		(void) JsonbToCString(&buf, &jb->root, VARSIZE(jb));
		copy = sm_secure_alloc(buf.len);
		memcpy(copy, buf.data, buf.len);
		sm_wipe(buf.data, buf.len);
		*len = buf.len;
		return copy;
	}
	else
	{
		struct varlena *v = PG_GETARG_VARLENA_PP(n);

		*len = VARSIZE_ANY_EXHDR(v);
		return (uint8 *) VARDATA_ANY(v);
	}
}

static void
bind_context(Datum *args, char *nulls, const SmCaller *c)
{
	nulls[2] = c->team ? ' ' : 'n';
	args[2] = c->team ? CStringGetTextDatum(c->team) : (Datum) 0;
	nulls[3] = c->project ? ' ' : 'n';
	args[3] = c->project ? CStringGetTextDatum(c->project) : (Datum) 0;
	nulls[4] = c->user ? ' ' : 'n';
	args[4] = c->user ? CStringGetTextDatum(c->user) : (Datum) 0;
}

/*
 * Locate a secret by path in the caller's tenant, most specific scope
 * first.  Returns false if there is none of the wanted kind.
 */
bool
sm_store_find(const SmCaller *c, const char *path, SmFind want, SmSecret *out)
{
	static SmStmt stmt = {
		"SELECT secret_id, type, last_version, deleted_at"
		"  FROM secret_mgmt.secret_item"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND path OPERATOR(pg_catalog.=) $2"
		SCOPE_CHAIN
		"   AND ((deleted_at IS NULL AND $6) OR (deleted_at IS NOT NULL AND $7))"
		" ORDER BY" SCOPE_RANK ", deleted_at IS NOT NULL"
		" LIMIT 1",
		7, {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, BOOLOID, BOOLOID}
	};
	Datum		args[7];
	char		nulls[7] = "       ";
	bool		isnull;
	Datum		d;

	args[0] = CStringGetTextDatum(c->tenant);
	args[1] = CStringGetTextDatum(path);
	bind_context(args, nulls, c);
	args[5] = BoolGetDatum(want != SM_FIND_DELETED);
	args[6] = BoolGetDatum(want != SM_FIND_LIVE);
	if (sm_exec(&stmt, args, nulls, 1) == 0)
		return false;
	memcpy(&out->id, DatumGetUUIDP(sm_col(0, 1, &isnull)), sizeof(pg_uuid_t));
	out->type = sm_col_text(0, 2);
	out->last_version = sm_col_int32(0, 3);
	d = sm_col(0, 4, &isnull);
	out->deleted = !isnull;
	out->deleted_at = isnull ? 0 : DatumGetTimestampTz(d);
	return true;
}

void
sm_store_require(const SmCaller *c, const char *path, SmFind want, SmSecret *out)
{
	if (!sm_store_find(c, path, want, out))
		sm_report_not_found(path, want == SM_FIND_DELETED ?
							"Only a deleted secret can be restored or purged." : NULL);
}

/*
 * Validate a value for the secret's type, encrypt it as a new version and
 * insert it.  A certificate's expiry becomes the version's expiry.
 */
void
sm_store_insert_version(const SmCaller *c, const pg_uuid_t *id, const char *type,
			   int32 version, const uint8 *plain, size_t len)
{
	static SmStmt stmt = {
		"INSERT INTO secret_mgmt.secret_version"
		" (tenant_id, secret_id, version, key_id, envelope, created_by, expires_at)"
		" VALUES ($1, $2, $3, $4, $5, $6, $7)",
		7, {TEXTOID, UUIDOID, INT4OID, INT4OID, BYTEAOID, TEXTOID, TIMESTAMPTZOID}
	};
	SmValueAad aad;
	int32		key_id;
	const uint8 *dek;
	bytea	   *envelope;
	TimestampTz not_after;
	bool		has_not_after;
	Datum		args[7];
	char		nulls[7] = "       ";

	sm_type_validate(type, plain, len, &not_after, &has_not_after);
	dek = sm_dek_for_encrypt(c->tenant, &key_id);
	aad.tenant = c->tenant;
	aad.secret_id = id->data;
	aad.version = version;
	aad.key_id = key_id;
	envelope = sm_envelope_seal(dek, &aad, plain, len);

	args[0] = CStringGetTextDatum(c->tenant);
	args[1] = UUIDPGetDatum(id);
	args[2] = Int32GetDatum(version);
	args[3] = Int32GetDatum(key_id);
	args[4] = PointerGetDatum(envelope);
	args[5] = CStringGetTextDatum(c->rolename);
	if (has_not_after)
		args[6] = TimestampTzGetDatum(not_after);
	else
		nulls[6] = 'n';
	sm_exec(&stmt, args, nulls, 0);
}

/* Point a label at a version. */
void
sm_store_set_label(const SmCaller *c, const pg_uuid_t *id, const char *label, int32 version)
{
	static SmStmt stmt = {
		"INSERT INTO secret_mgmt.secret_label (tenant_id, secret_id, label, version)"
		" VALUES ($1, $2, $3, $4)"
		" ON CONFLICT (tenant_id, secret_id, label)"
		" DO UPDATE SET version = EXCLUDED.version, updated_at = pg_catalog.now()",
		4, {TEXTOID, UUIDOID, TEXTOID, INT4OID}
	};
	Datum		args[4];

	args[0] = CStringGetTextDatum(c->tenant);
	args[1] = UUIDPGetDatum(id);
	args[2] = CStringGetTextDatum(label);
	args[3] = Int32GetDatum(version);
	sm_exec(&stmt, args, NULL, 0);
}

/* The current version of a secret (secret_item.current_version). */
int32
sm_store_current_version(const SmCaller *c, const pg_uuid_t *id)
{
	static SmStmt stmt = {
		"SELECT current_version FROM secret_mgmt.secret_item"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2",
		2, {TEXTOID, UUIDOID}
	};
	Datum		args[2];

	args[0] = CStringGetTextDatum(c->tenant);
	args[1] = UUIDPGetDatum(id);
	if (sm_exec(&stmt, args, NULL, 1) != 1)
		elog(ERROR, "secret vanished while locked");
	return sm_col_int32(0, 1);
}

/* Make `version` current; the old current becomes previous. */
void
sm_store_promote(const SmCaller *c, const pg_uuid_t *id, int32 version)
{
	static SmStmt stmt = {
		"UPDATE secret_mgmt.secret_item SET current_version = $3"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2",
		3, {TEXTOID, UUIDOID, INT4OID}
	};
	int32		old = sm_store_current_version(c, id);
	Datum		args[3];

	if (old == version)
		return;
	sm_store_set_label(c, id, "previous", old);
	args[0] = CStringGetTextDatum(c->tenant);
	args[1] = UUIDPGetDatum(id);
	args[2] = Int32GetDatum(version);
	sm_exec(&stmt, args, NULL, 0);
}

/*
 * Lock a live secret and allocate its next version number.  Returns the
 * new number; the previous newest is that minus one.
 */
int32
sm_store_next_version(const SmCaller *c, const char *path, const SmSecret *s)
{
	static SmStmt stmt = {
		"UPDATE secret_mgmt.secret_item"
		"   SET last_version = last_version OPERATOR(pg_catalog.+) 1,"
		"       updated_at = pg_catalog.now(), updated_by = $3"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2"
		"   AND deleted_at IS NULL"
		" RETURNING last_version",
		3, {TEXTOID, UUIDOID, TEXTOID}
	};
	Datum		args[3];

	args[0] = CStringGetTextDatum(c->tenant);
	args[1] = UUIDPGetDatum(&s->id);
	args[2] = CStringGetTextDatum(c->rolename);
	if (sm_exec(&stmt, args, NULL, 0) != 1)
		sm_report_not_found(path, NULL);	/* deleted concurrently */
	return sm_col_int32(0, 1);
}

/* Touch a secret's updated_at/by, locking it. */
static void
touch_secret(const SmCaller *c, const SmSecret *s)
{
	static SmStmt stmt = {
		"UPDATE secret_mgmt.secret_item"
		"   SET updated_at = pg_catalog.now(), updated_by = $3"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2",
		3, {TEXTOID, UUIDOID, TEXTOID}
	};
	Datum		args[3];

	args[0] = CStringGetTextDatum(c->tenant);
	args[1] = UUIDPGetDatum(&s->id);
	args[2] = CStringGetTextDatum(c->rolename);
	sm_exec(&stmt, args, NULL, 0);
}

/*
 * Decrypt the envelope in column `col` (key id in col+1, wrapped data key
 * and its root key id in col+2, col+3) of result row 0, for version
 * `version` of secret `id`.  The plaintext is a secure allocation in
 * `cxt`.
 */
static uint8 *
open_row_value(const SmCaller *c, const pg_uuid_t *id, int32 version,
			   int col, MemoryContext cxt, size_t *len)
{
	bool		isnull;
	bytea	   *envelope = DatumGetByteaPP(sm_col(0, col, &isnull));
	int32		key_id = sm_col_int32(0, col + 1);
	bytea	   *wrapped;
	char	   *kek;
	const uint8 *dek;
	SmValueAad	aad;
	uint8	   *plain;
	uint8	   *out;
	MemoryContext old;

	wrapped = DatumGetByteaPP(sm_col(0, col + 2, &isnull));
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_SM_INTEGRITY),
				 errmsg("secret value failed its integrity check"),
				 errdetail("Its data key is missing.")));
	kek = sm_col_text(0, col + 3);
	dek = sm_dek_for_decrypt(c->tenant, key_id, wrapped, kek);
	aad.tenant = c->tenant;
	aad.secret_id = id->data;
	aad.version = version;
	aad.key_id = key_id;
	plain = sm_envelope_open(dek, &aad, envelope, len);

	old = MemoryContextSwitchTo(cxt);
	out = sm_secure_alloc(*len);
	MemoryContextSwitchTo(old);
	if (*len > 0)
		memcpy(out, plain, *len);
	sm_wipe(plain, *len);
	return out;
}

/*
 * Decrypt a version found by sm_lookup_resolve() in `tenant`.  A data key
 * this backend already unwrapped is used without reading its row: the tag
 * proves it right.  If it does not authenticate, the key row is read and
 * unwrapped afresh before the value is judged.
 */
static uint8 *
open_resolved(const char *tenant, const SmResolved *r, size_t *len)
{
	SmValueAad	aad;
	const uint8 *dek;
	bytea	   *wrapped;
	char	   *kek_id;

	aad.tenant = tenant;
	aad.secret_id = r->secret_id.data;
	aad.version = r->version;
	aad.key_id = r->key_id;
	if ((dek = sm_dek_cached(tenant, r->key_id)) != NULL)
	{
		uint8	   *plain = sm_envelope_try_open(dek, &aad, r->envelope, len);

		if (plain != NULL)
			return plain;
		sm_dek_evict(tenant, r->key_id);
	}
	if (!sm_lookup_data_key(tenant, r->key_id, &wrapped, &kek_id))
		ereport(ERROR,
				(errcode(ERRCODE_SM_INTEGRITY),
				 errmsg("secret value failed its integrity check"),
				 errdetail("Its data key is missing.")));
	dek = sm_dek_for_decrypt(tenant, r->key_id, wrapped, kek_id);
	return sm_envelope_open(dek, &aad, r->envelope, len);
}

/*
 * The plaintext of a version of the secret at `path`, as `c` may read it:
 * `label`, or `version` when by_version.  Capability read is checked
 * first; a path the tenant lacks is looked up in the platform tenant where
 * granted.  The plaintext is a secure allocation in CurrentMemoryContext.
 * This is the hot path: it reads through direct index lookups (lookup.c),
 * not SPI.
 */
uint8 *
sm_store_resolve(const SmCaller *c, const char *path, const char *label,
				 bool by_version, int32 want_version, size_t *len)
{
	return sm_store_resolve_ex(c, path, label, by_version, want_version, false, len);
}

/*
 * sm_store_resolve(), and for a secret stored in an external backend, the
 * backend's current version when the local copy of the current version is
 * not known to be fresh, or always when `fresh` (outbox.c).
 */
uint8 *
sm_store_resolve_ex(const SmCaller *c, const char *path, const char *label,
					bool by_version, int32 want_version, bool fresh, size_t *len)
{
	SmContext	context;
	SmResolved	r;
	const char *tenant = c->tenant;
	uint8	   *plain;

	sm_acl_require(c, path, SM_CAP_READ);
	context.team = c->team;
	context.project = c->project;
	context.user = c->user;
	sm_lookup_resolve(tenant, path, &context, label, by_version, want_version, &r);
	/* Nothing of the tenant's own: a platform secret, where granted. */
	if (!r.found_secret && strcmp(tenant, "global") != 0 &&
		sm_acl_tenant_may_read_global(tenant, path))
	{
		tenant = "global";
		sm_lookup_resolve(tenant, path, &context, label, by_version, want_version, &r);
	}

	if (!r.found_secret)
		sm_report_not_found(path, NULL);
	if (!r.found_version)
	{
		sm_audit_refused(ERRCODE_SM_NOT_FOUND, path);
		if (by_version)
			ereport(ERROR,
					(errcode(ERRCODE_SM_NOT_FOUND),
					 errmsg("version %d of secret \"%s\" not found", want_version, path)));
		ereport(ERROR,
				(errcode(ERRCODE_SM_NOT_FOUND),
				 errmsg("label \"%s\" of secret \"%s\" not found", label, path)));
	}
	if (strcmp(r.state, "enabled") != 0)
	{
		sm_audit_refused(ERRCODE_SM_NOT_FOUND, path);
		ereport(ERROR,
				(errcode(ERRCODE_SM_NOT_FOUND),
				 errmsg("version %d of secret \"%s\" is %s", r.version, path, r.state),
				 strcmp(r.state, "disabled") == 0 ?
				 errhint("Enable it with secret_mgmt.secret_version_enable().") : 0));
	}
	if (r.expired)
	{
		sm_audit_refused(ERRCODE_SM_EXPIRED, path);
		ereport(ERROR,
				(errcode(ERRCODE_SM_EXPIRED),
				 errmsg("secret \"%s\" has expired", path),
				 errhint("Move or clear the expiry with secret_mgmt.secret_set_expiry().")));
	}

	plain = NULL;
	if (r.backend != NULL && !by_version && strcmp(label, "current") == 0)
		plain = sm_outbox_read_through(tenant, path, &r, fresh, len);
	if (plain == NULL)
		plain = open_resolved(tenant, &r, len);
	sm_audit_read(c, path, &r.secret_id, r.version, plain, *len);
	return plain;
}

/*
 * The core of every secret_resolve variant: argument 1, when present, is a
 * version number (integer) or a label (text).
 */
static uint8 *
resolve_value(FunctionCallInfo fcinfo, size_t *len)
{
	SmSession	session;
	SmCaller	c;
	char	   *path = sm_store_arg_path(fcinfo, 0);
	char	   *label = "current";
	bool		by_version = false;
	int32		want_version = 0;
	bool		fresh = false;
	instr_time	start;
	uint8	   *plain;

	INSTR_TIME_SET_CURRENT(start);
	if (fcinfo->flinfo && fcinfo->flinfo->fn_addr == secret_resolve_fresh)
		fresh = PG_NARGS() > 1 && !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
	else if (PG_NARGS() > 1)
	{
		if (PG_ARGISNULL(1))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("version or label must not be null")));
		if (get_fn_expr_argtype(fcinfo->flinfo, 1) == INT4OID)
		{
			by_version = true;
			want_version = PG_GETARG_INT32(1);
		}
		else
			label = text_to_cstring(PG_GETARG_TEXT_PP(1));
	}
	sm_loghygiene_value_op("secret_resolve");
	sm_audit_begin("read", path);
	sm_session_init(&session);
	sm_caller_resolve(&session, &c, path);
	plain = sm_store_resolve_ex(&c, path, label, by_version, want_version, fresh, len);
	sm_metrics_resolve_done(start);
	return plain;
}

/* SQL: secret_resolve(path [, version | label]) returns text */
Datum
secret_resolve_text(PG_FUNCTION_ARGS)
{
	size_t		len;
	uint8	   *plain = resolve_value(fcinfo, &len);
	text	   *result;

	if (memchr(plain, '\0', len) != NULL ||
		!pg_verifymbstr((const char *) plain, (int) len, true))
	{
		sm_wipe(plain, len);
		ereport(ERROR,
				(errcode(ERRCODE_SM_INVALID_VALUE),
				 errmsg("secret value is not valid text"),
				 errhint("Read binary values with secret_mgmt.secret_resolve_bytea().")));
	}
	result = cstring_to_text_with_len((const char *) plain, (int) len);
	sm_wipe(plain, len);
	PG_RETURN_TEXT_P(result);
}

/* SQL: secret_resolve(path, fresh) returns text */
Datum
secret_resolve_fresh(PG_FUNCTION_ARGS)
{
	return secret_resolve_text(fcinfo);
}

/* SQL: secret_resolve_jsonb(path [, version | label]) returns jsonb */
Datum
secret_resolve_jsonb(PG_FUNCTION_ARGS)
{
	size_t		len;
	uint8	   *plain = resolve_value(fcinfo, &len);
	Datum		result = sm_value_to_jsonb(plain, len);

	sm_wipe(plain, len);
	PG_RETURN_DATUM(result);
}

/* SQL: secret_resolve_bytea(path [, version | label]) returns bytea */
Datum
secret_resolve_bytea(PG_FUNCTION_ARGS)
{
	size_t		len;
	uint8	   *plain = resolve_value(fcinfo, &len);
	bytea	   *result = palloc(VARHDRSZ + len);

	SET_VARSIZE(result, VARHDRSZ + len);
	memcpy(VARDATA(result), plain, len);
	sm_wipe(plain, len);
	PG_RETURN_BYTEA_P(result);
}

/* Validate scope and scope_id together; returns the stored scope_id. */
static const char *
check_scope(const SmCaller *c, const char *scope, const char *scope_id)
{
	bool		needs_id = strcmp(scope, "team") == 0 || strcmp(scope, "project") == 0 ||
		strcmp(scope, "user") == 0;

	if (!needs_id && strcmp(scope, "organization") != 0 && strcmp(scope, "global") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown scope \"%s\"", scope),
				 errhint("Scopes are global, organization, team, project and user.")));
	if (strcmp(scope, "global") == 0 && strcmp(c->tenant, "global") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("scope \"global\" belongs to the platform tenant"),
				 errhint("Platform administrators create global secrets after secret_mgmt.secret_use_tenant('global').")));
	if (needs_id && (scope_id == NULL || scope_id[0] == '\0'))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("scope \"%s\" needs a scope_id", scope)));
	if (!needs_id && scope_id != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("scope \"%s\" takes no scope_id", scope)));
	return needs_id ? scope_id : "";
}

/* Shared body of the three secret_create variants. */
static Datum
create_secret(FunctionCallInfo fcinfo)
{
	static SmStmt insert_item = {
		"INSERT INTO secret_mgmt.secret_item"
		" (tenant_id, secret_id, path, scope, scope_id, type, description, tags,"
		"  backend, expires_at, last_version, created_by, updated_by)"
		" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11, $11)"
		" ON CONFLICT (tenant_id, path, scope, scope_id) DO NOTHING",
		11, {TEXTOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		JSONBOID, TEXTOID, TIMESTAMPTZOID, TEXTOID}
	};
	static SmStmt existing = {
		"SELECT deleted_at IS NOT NULL FROM secret_mgmt.secret_item"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND path OPERATOR(pg_catalog.=) $2"
		"   AND scope OPERATOR(pg_catalog.=) $3 AND scope_id OPERATOR(pg_catalog.=) $4",
		4, {TEXTOID, TEXTOID, TEXTOID, TEXTOID}
	};
	SmSession	session;
	SmCaller	c;
	char	   *path = sm_store_arg_path(fcinfo, 0);
	size_t		len;
	uint8	   *value = arg_value(fcinfo, 1, &len);
	char	   *type = arg_text(fcinfo, 2, "type");
	char	   *scope = arg_text(fcinfo, 4, "scope");
	char	   *scope_id = PG_ARGISNULL(5) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(5));
	char	   *backend = arg_text(fcinfo, 9, "backend");
	bool		has_expiry = !PG_ARGISNULL(6);
	TimestampTz expires_at = has_expiry ? PG_GETARG_TIMESTAMPTZ(6) : 0;
	Datum		tags;
	pg_uuid_t	id;
	Datum		args[11];
	char		nulls[11] = "           ";

	tags = PG_ARGISNULL(10) ? DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")) :
		PG_GETARG_DATUM(10);
	if (!JB_ROOT_IS_OBJECT(DatumGetJsonbP(tags)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tags must be a JSON object")));
	sm_type_check_name(type);

	sm_loghygiene_value_op("secret_create");
	sm_audit_begin("create", path);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, path);
	sm_acl_require(&c, path, SM_CAP_CREATE);
	scope_id = (char *) check_scope(&c, scope, scope_id);
	if (strcmp(backend, "local") != 0)
		sm_outbox_check_backend(backend, c.tenant, scope);

	sm_random_bytes(id.data, UUID_LEN);
	id.data[6] = (id.data[6] & 0x0f) | 0x40;	/* version 4 */
	id.data[8] = (id.data[8] & 0x3f) | 0x80;	/* RFC 4122 variant */

	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = UUIDPGetDatum(&id);
	args[2] = CStringGetTextDatum(path);
	args[3] = CStringGetTextDatum(scope);
	args[4] = CStringGetTextDatum(scope_id);
	args[5] = CStringGetTextDatum(type);
	if (PG_ARGISNULL(3))
		nulls[6] = 'n';
	else
		args[6] = PG_GETARG_DATUM(3);
	args[7] = tags;
	args[8] = CStringGetTextDatum(backend);
	if (has_expiry)
		args[9] = TimestampTzGetDatum(expires_at);
	else
		nulls[9] = 'n';
	args[10] = CStringGetTextDatum(c.rolename);
	if (sm_exec(&insert_item, args, nulls, 0) == 0)
	{
		Datum		key[4];
		bool		deleted;

		key[0] = args[0];		/* tenant */
		key[1] = args[2];		/* path */
		key[2] = args[3];		/* scope */
		key[3] = args[4];		/* scope_id */
		if (sm_exec(&existing, key, NULL, 1) != 1)
			elog(ERROR, "secret \"%s\" conflicts with a row that cannot be found", path);
		deleted = sm_col_bool(0, 1);
		if (deleted)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("secret \"%s\" already exists and is deleted", path),
					 errhint("Restore it with secret_mgmt.secret_restore() or purge it with secret_mgmt.secret_purge().")));
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("secret \"%s\" already exists", path),
				 errhint("Write a new version with secret_mgmt.secret_update().")));
	}
	sm_store_insert_version(&c, &id, type, 1, value, len);
	if (strcmp(backend, "local") != 0)
		sm_outbox_queue(&c, &id, "write", 1);
	if (!PG_ARGISNULL(7) || !PG_ARGISNULL(8))
		sm_rotation_on_create(&c, &id, path, type,
							  PG_ARGISNULL(7) ? NULL : PG_GETARG_INTERVAL_P(7),
							  PG_ARGISNULL(8) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(8)));
	sm_event_emit(c.tenant, "created", &id, path, 1, c.rolename, NULL);
	sm_audit_write(&c, "create", path, &id, 1, value, len);
	sm_leave(&session);

	PG_RETURN_UUID_P(memcpy(palloc(sizeof(pg_uuid_t)), &id, sizeof(pg_uuid_t)));
}

Datum
secret_create_text(PG_FUNCTION_ARGS)
{
	return create_secret(fcinfo);
}

Datum
secret_create_bytea(PG_FUNCTION_ARGS)
{
	return create_secret(fcinfo);
}

Datum
secret_create_jsonb(PG_FUNCTION_ARGS)
{
	return create_secret(fcinfo);
}

/* Shared body of the three secret_update variants. */
static Datum
update_secret(FunctionCallInfo fcinfo)
{
	SmSession	session;
	SmCaller	c;
	SmSecret	s;
	char	   *path = sm_store_arg_path(fcinfo, 0);
	size_t		len;
	uint8	   *value = arg_value(fcinfo, 1, &len);
	int32		version;

	sm_loghygiene_value_op("secret_update");
	sm_audit_begin("update", path);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, path);
	sm_acl_require(&c, path, SM_CAP_UPDATE);
	sm_store_require(&c, path, SM_FIND_LIVE, &s);
	version = sm_store_next_version(&c, path, &s);
	/* Check-and-set against the version readers get, under the row lock. */
	if (!PG_ARGISNULL(2))
	{
		int32		current = sm_store_current_version(&c, &s.id);

		if (PG_GETARG_INT32(2) != current)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("version conflict on secret \"%s\"", path),
					 errdetail("Expected version %d, but the current version is %d.",
							   PG_GETARG_INT32(2), current),
					 errhint("Read the current version and retry with its number.")));
	}
	sm_store_insert_version(&c, &s.id, s.type, version, value, len);
	sm_store_promote(&c, &s.id, version);
	sm_outbox_queue(&c, &s.id, "write", version);
	sm_event_emit(c.tenant, "updated", &s.id, path, version, c.rolename, NULL);
	sm_audit_write(&c, "update", path, &s.id, version, value, len);
	sm_leave(&session);
	PG_RETURN_INT32(version);
}

Datum
secret_update_text(PG_FUNCTION_ARGS)
{
	return update_secret(fcinfo);
}

Datum
secret_update_bytea(PG_FUNCTION_ARGS)
{
	return update_secret(fcinfo);
}

Datum
secret_update_jsonb(PG_FUNCTION_ARGS)
{
	return update_secret(fcinfo);
}

/* Fetch one version row (state, envelope, key) of a secret; false if none. */
static bool
fetch_version(const SmCaller *c, const SmSecret *s, int32 version, bool lock)
{
	static SmStmt plain = {
		"SELECT v.state, v.envelope, v.key_id, d.wrapped, d.kek_id"
		"  FROM secret_mgmt.secret_version v"
		"  LEFT JOIN secret_mgmt.secret_data_key d"
		"         ON d.tenant_id OPERATOR(pg_catalog.=) v.tenant_id"
		"        AND d.key_id OPERATOR(pg_catalog.=) v.key_id"
		" WHERE v.tenant_id OPERATOR(pg_catalog.=) $1"
		"   AND v.secret_id OPERATOR(pg_catalog.=) $2"
		"   AND v.version OPERATOR(pg_catalog.=) $3",
		3, {TEXTOID, UUIDOID, INT4OID}
	};
	static SmStmt locked = {
		"SELECT state FROM secret_mgmt.secret_version"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1"
		"   AND secret_id OPERATOR(pg_catalog.=) $2"
		"   AND version OPERATOR(pg_catalog.=) $3 FOR UPDATE",
		3, {TEXTOID, UUIDOID, INT4OID}
	};
	Datum		args[3];

	args[0] = CStringGetTextDatum(c->tenant);
	args[1] = UUIDPGetDatum(&s->id);
	args[2] = Int32GetDatum(version);
	return sm_exec(lock ? &locked : &plain, args, NULL, 1) == 1;
}

static void
report_version_not_found(const char *path, int32 version)
{
	ereport(ERROR,
			(errcode(ERRCODE_SM_NOT_FOUND),
			 errmsg("version %d of secret \"%s\" not found", version, path)));
}

/* SQL: secret_rollback(path, to_version) returns the new version */
Datum
secret_rollback(PG_FUNCTION_ARGS)
{
	SmSession	session;
	SmCaller	c;
	SmSecret	s;
	char	   *path = sm_store_arg_path(fcinfo, 0);
	int32		to_version;
	int32		version;
	char	   *state;
	uint8	   *plain;
	size_t		len;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("to_version must not be null")));
	to_version = PG_GETARG_INT32(1);

	sm_audit_begin("rollback", path);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, path);
	sm_acl_require(&c, path, SM_CAP_UPDATE);
	sm_store_require(&c, path, SM_FIND_LIVE, &s);
	version = sm_store_next_version(&c, path, &s);
	if (!fetch_version(&c, &s, to_version, false))
		report_version_not_found(path, to_version);
	state = sm_col_text(0, 1);
	if (strcmp(state, "enabled") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot roll back to version %d of secret \"%s\": it is %s",
						to_version, path, state)));
	plain = open_row_value(&c, &s.id, to_version, 2, CurrentMemoryContext, &len);
	sm_store_insert_version(&c, &s.id, s.type, version, plain, len);
	sm_audit_write(&c, "rollback", path, &s.id, version, plain, len);
	sm_wipe(plain, len);
	sm_store_promote(&c, &s.id, version);
	sm_outbox_queue(&c, &s.id, "write", version);
	sm_event_emit(c.tenant, "rolled_back", &s.id, path, version, c.rolename,
				  psprintf("{\"to_version\": %d}", to_version));
	sm_leave(&session);
	PG_RETURN_INT32(version);
}

/* SQL: secret_versions(path) returns table of version metadata */
Datum
secret_versions(PG_FUNCTION_ARGS)
{
	static SmStmt stmt = {
		"SELECT v.version, v.state,"
		"       ARRAY(SELECT x FROM (SELECT 'current' COLLATE \"C\" AS x"
		"                             WHERE v.version OPERATOR(pg_catalog.=) i.current_version"
		"                            UNION ALL"
		"                            SELECT l.label FROM secret_mgmt.secret_label l"
		"                             WHERE l.tenant_id OPERATOR(pg_catalog.=) v.tenant_id"
		"                               AND l.secret_id OPERATOR(pg_catalog.=) v.secret_id"
		"                               AND l.version OPERATOR(pg_catalog.=) v.version) s"
		"             ORDER BY x),"
		"       v.created_at, v.created_by, v.expires_at"
		"  FROM secret_mgmt.secret_version v"
		"  JOIN secret_mgmt.secret_item i"
		"    ON i.tenant_id OPERATOR(pg_catalog.=) v.tenant_id"
		"   AND i.secret_id OPERATOR(pg_catalog.=) v.secret_id"
		" WHERE v.tenant_id OPERATOR(pg_catalog.=) $1"
		"   AND v.secret_id OPERATOR(pg_catalog.=) $2"
		" ORDER BY v.version",
		2, {TEXTOID, UUIDOID}
	};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SmSession	session;
	SmCaller	c;
	SmSecret	s;
	char	   *path = sm_store_arg_path(fcinfo, 0);
	Datum		args[2];
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	sm_audit_begin("versions", path);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, path);
	sm_acl_require(&c, path, SM_CAP_LIST);
	sm_store_require(&c, path, SM_FIND_ANY, &s);
	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = UUIDPGetDatum(&s.id);
	n = sm_exec(&stmt, args, NULL, 0);
	for (int i = 0; i < n; i++)
		sm_put_row(rsinfo, i);
	sm_leave(&session);
	return (Datum) 0;
}

/* SQL: secret_list(prefix, include_deleted) returns table of metadata */
Datum
secret_list(PG_FUNCTION_ARGS)
{
	static SmStmt stmt = {
		"SELECT i.path, i.scope, NULLIF(i.scope_id, ''), i.type, i.description,"
		"       i.tags, i.backend, i.current_version, i.last_version, i.created_at,"
		"       i.updated_at,"
		"       LEAST(i.expires_at,"
		"             (SELECT v.expires_at FROM secret_mgmt.secret_version v"
		"               WHERE v.tenant_id OPERATOR(pg_catalog.=) i.tenant_id"
		"                 AND v.secret_id OPERATOR(pg_catalog.=) i.secret_id"
		"                 AND v.version OPERATOR(pg_catalog.=) i.current_version)),"
		"       i.deleted_at"
		"  FROM secret_mgmt.secret_item i"
		" WHERE i.tenant_id OPERATOR(pg_catalog.=) $1"
		"   AND pg_catalog.starts_with(i.path, $2)"
		"   AND ($3 OR i.deleted_at IS NULL)"
		" ORDER BY i.path, i.scope, i.scope_id",
		3, {TEXTOID, TEXTOID, BOOLOID}
	};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SmSession	session;
	SmCaller	c;
	char	   *prefix = PG_ARGISNULL(0) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	bool		include_deleted = !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
	Datum		args[3];
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	sm_audit_begin("list", prefix);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, NULL);
	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = CStringGetTextDatum(prefix);
	args[2] = BoolGetDatum(include_deleted);
	n = sm_exec(&stmt, args, NULL, 0);
	for (int i = 0; i < n; i++)
	{
		/* Only what the caller may list, and nothing else, is shown. */
		if (!sm_acl_allows(&c, sm_col_text(i, 1), SM_CAP_LIST))
			continue;
		sm_put_row(rsinfo, i);
	}
	sm_leave(&session);
	return (Datum) 0;
}

/*
 * SQL: secret_label(path, label, version).  A null version removes the
 * label.  Moving "current" moves "previous" along, as staging labels do.
 */
Datum
secret_label(PG_FUNCTION_ARGS)
{
	static SmStmt remove = {
		"DELETE FROM secret_mgmt.secret_label"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2"
		"   AND label OPERATOR(pg_catalog.=) $3",
		3, {TEXTOID, UUIDOID, TEXTOID}
	};
	SmSession	session;
	SmCaller	c;
	SmSecret	s;
	char	   *path = sm_store_arg_path(fcinfo, 0);
	char	   *label = arg_text(fcinfo, 1, "label");

	check_label(label);
	sm_audit_begin("label", path);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, path);
	sm_acl_require(&c, path, SM_CAP_UPDATE);
	sm_store_require(&c, path, SM_FIND_LIVE, &s);
	touch_secret(&c, &s);
	if (PG_ARGISNULL(2))
	{
		Datum		args[3];

		if (strcmp(label, "current") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the \"current\" label cannot be removed"),
					 errhint("Point it at another version instead.")));
		args[0] = CStringGetTextDatum(c.tenant);
		args[1] = UUIDPGetDatum(&s.id);
		args[2] = CStringGetTextDatum(label);
		if (sm_exec(&remove, args, NULL, 0) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_SM_NOT_FOUND),
					 errmsg("label \"%s\" of secret \"%s\" not found", label, path)));
		sm_event_emit(c.tenant, "label_removed", &s.id, path, 0, c.rolename,
					  psprintf("{\"label\": \"%s\"}", label));
	}
	else
	{
		int32		version = PG_GETARG_INT32(2);

		if (!fetch_version(&c, &s, version, true))
			report_version_not_found(path, version);
		if (strcmp(sm_col_text(0, 1), "destroyed") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("version %d of secret \"%s\" is destroyed", version, path)));
		if (strcmp(label, "current") == 0 && strcmp(sm_col_text(0, 1), "enabled") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("version %d of secret \"%s\" is disabled and cannot be current",
							version, path),
					 errhint("Enable it first with secret_mgmt.secret_version_enable().")));
		if (strcmp(label, "current") == 0)
			sm_store_promote(&c, &s.id, version);
		else
			sm_store_set_label(&c, &s.id, label, version);
		sm_event_emit(c.tenant, "labelled", &s.id, path, version, c.rolename,
					  psprintf("{\"label\": \"%s\"}", label));
	}
	sm_audit_write(&c, "label", path, &s.id, PG_ARGISNULL(2) ? 0 : PG_GETARG_INT32(2),
				   NULL, 0);
	sm_leave(&session);
	PG_RETURN_VOID();
}

typedef enum VersionAction
{
	VERSION_DISABLE,
	VERSION_ENABLE,
	VERSION_DESTROY
} VersionAction;

/* Shared body of secret_version_disable/enable/destroy. */
static Datum
change_version_state(FunctionCallInfo fcinfo, VersionAction action)
{
	static SmStmt set_state = {
		"UPDATE secret_mgmt.secret_version SET state = $4"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2"
		"   AND version OPERATOR(pg_catalog.=) $3",
		4, {TEXTOID, UUIDOID, INT4OID, TEXTOID}
	};
	static SmStmt destroy = {
		"UPDATE secret_mgmt.secret_version"
		"   SET state = 'destroyed', envelope = NULL, key_id = NULL,"
		"       destroyed_at = pg_catalog.now()"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2"
		"   AND version OPERATOR(pg_catalog.=) $3",
		3, {TEXTOID, UUIDOID, INT4OID}
	};
	static SmStmt drop_labels = {
		"DELETE FROM secret_mgmt.secret_label"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2"
		"   AND version OPERATOR(pg_catalog.=) $3",
		3, {TEXTOID, UUIDOID, INT4OID}
	};
	SmSession	session;
	SmCaller	c;
	SmSecret	s;
	char	   *path = sm_store_arg_path(fcinfo, 0);
	int32		version;
	char	   *state;
	Datum		args[4];
	const char *action_name = action == VERSION_DISABLE ? "version_disable" :
		action == VERSION_ENABLE ? "version_enable" : "version_destroy";

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("version must not be null")));
	version = PG_GETARG_INT32(1);

	sm_audit_begin(action_name, path);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, path);
	sm_acl_require(&c, path, action == VERSION_DESTROY ? SM_CAP_DELETE : SM_CAP_UPDATE);
	sm_store_require(&c, path, SM_FIND_LIVE, &s);
	touch_secret(&c, &s);
	if (!fetch_version(&c, &s, version, true))
		report_version_not_found(path, version);
	state = sm_col_text(0, 1);
	if (strcmp(state, "destroyed") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("version %d of secret \"%s\" is destroyed", version, path),
				 errdetail("A destroyed version cannot be changed.")));
	if (action != VERSION_ENABLE && sm_store_current_version(&c, &s.id) == version)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("version %d is the current version of secret \"%s\"", version, path),
				 errhint("Make another version current first, with secret_mgmt.secret_label() or secret_mgmt.secret_rollback().")));

	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = UUIDPGetDatum(&s.id);
	args[2] = Int32GetDatum(version);
	if (action == VERSION_DESTROY)
	{
		sm_exec(&drop_labels, args, NULL, 0);
		sm_exec(&destroy, args, NULL, 0);
	}
	else
	{
		args[3] = CStringGetTextDatum(action == VERSION_ENABLE ? "enabled" : "disabled");
		sm_exec(&set_state, args, NULL, 0);
	}
	sm_outbox_queue(&c, &s.id, action == VERSION_DESTROY ? "destroy" :
					action == VERSION_ENABLE ? "enable" : "disable", version);
	sm_event_emit(c.tenant,
				  action == VERSION_DESTROY ? "version_destroyed" :
				  action == VERSION_ENABLE ? "version_enabled" : "version_disabled",
				  &s.id, path, version, c.rolename, NULL);
	sm_audit_write(&c, action_name, path, &s.id, version, NULL, 0);
	sm_leave(&session);
	PG_RETURN_VOID();
}

Datum
secret_version_disable(PG_FUNCTION_ARGS)
{
	return change_version_state(fcinfo, VERSION_DISABLE);
}

Datum
secret_version_enable(PG_FUNCTION_ARGS)
{
	return change_version_state(fcinfo, VERSION_ENABLE);
}

Datum
secret_version_destroy(PG_FUNCTION_ARGS)
{
	return change_version_state(fcinfo, VERSION_DESTROY);
}

/* SQL: secret_delete(path): soft delete, recoverable with secret_restore */
Datum
secret_delete(PG_FUNCTION_ARGS)
{
	static SmStmt stmt = {
		"UPDATE secret_mgmt.secret_item"
		"   SET deleted_at = pg_catalog.now(), deleted_by = $3,"
		"       updated_at = pg_catalog.now(), updated_by = $3"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2"
		"   AND deleted_at IS NULL",
		3, {TEXTOID, UUIDOID, TEXTOID}
	};
	SmSession	session;
	SmCaller	c;
	SmSecret	s;
	char	   *path = sm_store_arg_path(fcinfo, 0);
	Datum		args[3];

	sm_audit_begin("delete", path);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, path);
	sm_acl_require(&c, path, SM_CAP_DELETE);
	sm_store_require(&c, path, SM_FIND_LIVE, &s);
	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = UUIDPGetDatum(&s.id);
	args[2] = CStringGetTextDatum(c.rolename);
	if (sm_exec(&stmt, args, NULL, 0) != 1)
		sm_report_not_found(path, NULL);
	sm_outbox_queue(&c, &s.id, "delete", 0);
	sm_event_emit(c.tenant, "deleted", &s.id, path, 0, c.rolename, NULL);
	sm_audit_write(&c, "delete", path, &s.id, 0, NULL, 0);
	sm_leave(&session);
	PG_RETURN_VOID();
}

/* SQL: secret_restore(path): undo a soft delete */
Datum
secret_restore(PG_FUNCTION_ARGS)
{
	static SmStmt stmt = {
		"UPDATE secret_mgmt.secret_item"
		"   SET deleted_at = NULL, deleted_by = NULL,"
		"       updated_at = pg_catalog.now(), updated_by = $3"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2"
		"   AND deleted_at IS NOT NULL",
		3, {TEXTOID, UUIDOID, TEXTOID}
	};
	SmSession	session;
	SmCaller	c;
	SmSecret	s;
	char	   *path = sm_store_arg_path(fcinfo, 0);
	Datum		args[3];

	sm_audit_begin("restore", path);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, path);
	sm_acl_require(&c, path, SM_CAP_DELETE);
	sm_store_require(&c, path, SM_FIND_DELETED, &s);
	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = UUIDPGetDatum(&s.id);
	args[2] = CStringGetTextDatum(c.rolename);
	if (sm_exec(&stmt, args, NULL, 0) != 1)
		sm_report_not_found(path, NULL);
	sm_outbox_queue(&c, &s.id, "restore", 0);
	sm_event_emit(c.tenant, "restored", &s.id, path, 0, c.rolename, NULL);
	sm_audit_write(&c, "restore", path, &s.id, 0, NULL, 0);
	sm_leave(&session);
	PG_RETURN_VOID();
}

/*
 * SQL: secret_purge(path): destroy a deleted secret and all its versions
 * for good.  Tenant administrators only; refused while the tenant has
 * purge protection and the recovery window is still open.
 */
Datum
secret_purge(PG_FUNCTION_ARGS)
{
	static SmStmt protection = {
		"SELECT purge_protection FROM secret_mgmt.secret_tenant"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1",
		1, {TEXTOID}
	};
	static SmStmt purge = {
		"DELETE FROM secret_mgmt.secret_item"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2"
		"   AND deleted_at IS NOT NULL",
		2, {TEXTOID, UUIDOID}
	};
	SmSession	session;
	SmCaller	c;
	SmSecret	s;
	char	   *path = sm_store_arg_path(fcinfo, 0);
	Datum		args[2];

	sm_audit_begin("purge", path);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, path);
	sm_acl_require(&c, path, SM_CAP_ADMIN);
	sm_store_require(&c, path, SM_FIND_DELETED, &s);
	args[0] = CStringGetTextDatum(c.tenant);
	sm_exec(&protection, args, NULL, 1);
	if (sm_col_bool(0, 1))
	{
		TimestampTz until = TimestampTzPlusMilliseconds(s.deleted_at,
														(int64) sm_recovery_window * 1000);

		if (GetCurrentTransactionStartTimestamp() < until)
			ereport(ERROR,
					(errcode(ERRCODE_SM_PERMISSION),
					 errmsg("secret \"%s\" is protected from purge until %s",
							path, timestamptz_to_str(until)),
					 errdetail("Tenant \"%s\" has purge protection; deleted secrets stay recoverable for secret_mgmt.recovery_window.",
							   c.tenant)));
	}
	args[1] = UUIDPGetDatum(&s.id);
	sm_outbox_queue(&c, &s.id, "purge", 0);
	sm_exec(&purge, args, NULL, 0);
	sm_event_emit(c.tenant, "purged", &s.id, path, 0, c.rolename, NULL);
	sm_audit_write(&c, "purge", path, &s.id, 0, NULL, 0);
	sm_leave(&session);
	PG_RETURN_VOID();
}

/* SQL: secret_set_expiry(path, expires_at): a null expiry clears it */
Datum
secret_set_expiry(PG_FUNCTION_ARGS)
{
	static SmStmt stmt = {
		"UPDATE secret_mgmt.secret_item"
		"   SET expires_at = $3, updated_at = pg_catalog.now(), updated_by = $4"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2"
		"   AND deleted_at IS NULL",
		4, {TEXTOID, UUIDOID, TIMESTAMPTZOID, TEXTOID}
	};
	SmSession	session;
	SmCaller	c;
	SmSecret	s;
	char	   *path = sm_store_arg_path(fcinfo, 0);
	Datum		args[4];
	char		nulls[4] = "    ";

	sm_audit_begin("set_expiry", path);
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
	args[3] = CStringGetTextDatum(c.rolename);
	if (sm_exec(&stmt, args, nulls, 0) != 1)
		sm_report_not_found(path, NULL);
	sm_event_emit(c.tenant, "expiry_changed", &s.id, path, 0, c.rolename, NULL);
	sm_audit_write(&c, "set_expiry", path, &s.id, 0, NULL, 0);
	sm_leave(&session);
	PG_RETURN_VOID();
}

/*
 * The plaintext of version `version` of secret `id` in the caller's
 * tenant, a secure allocation in `cxt`; NULL when the version does not
 * exist or is destroyed.  For the outbox, which delivers values it does not
 * keep.
 */
uint8 *
sm_store_version_value(const SmCaller *c, const pg_uuid_t *id, int32 version,
					   MemoryContext cxt, size_t *len)
{
	SmSecret	s;

	memset(&s, 0, sizeof(s));
	s.id = *id;
	if (!fetch_version(c, &s, version, false) || sm_col_isnull(0, 2))
		return NULL;
	return open_row_value(c, id, version, 2, cxt, len);
}

/* ---------------------------------------------------------------------
 * Backend credentials
 *
 * Backends (backend_vault.c) read their credentials -- a Vault token, an
 * AppRole login -- from secrets of the global platform tenant, internally
 * and whoever the caller is: the configuration naming the secret was made
 * by the platform administrator.  Nothing here is reachable from SQL, and
 * nothing returns the value to a caller.
 * ---------------------------------------------------------------------
 */

/* Find the current version of a global-tenant secret; false if unusable. */
static bool
platform_lookup(const char *path, SmResolved *r)
{
	SmContext	context = {NULL, NULL, NULL};

	sm_lookup_resolve("global", path, &context, "current", false, 0, r);
	return r->found_secret && r->found_version && !r->expired &&
		strcmp(r->state, "enabled") == 0 && r->envelope != NULL;
}

bool
sm_platform_secret_exists(const char *path)
{
	SmResolved	r;

	return platform_lookup(path, &r);
}

/*
 * The value of a global-tenant secret, in a wiped allocation in the
 * current memory context.  For backend credentials only.
 */
uint8 *
sm_platform_secret(const char *path, size_t *len)
{
	SmResolved	r;

	if (!platform_lookup(path, &r))
		ereport(ERROR,
				(errcode(ERRCODE_SM_BACKEND),
				 errmsg("backend credential secret \"%s\" cannot be read", path),
				 errdetail("It does not exist in the global tenant, or its current version is disabled or expired."),
				 errhint("Nothing was changed.  The platform administrator stores backend credentials as secrets of the global tenant.")));
	return open_resolved("global", &r, len);
}
