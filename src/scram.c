/*-------------------------------------------------------------------------
 *
 * scram.c
 *		The built-in rotation target pg_role: a PostgreSQL role's password.
 *
 * secret_target_pg_role(path, version) is a rotation hook.  It reads the
 * version's value, computes its SCRAM-SHA-256 verifier here, in C (random
 * salt, the server's iteration count), and issues
 *
 *	 ALTER ROLE <role> PASSWORD 'SCRAM-SHA-256$<iterations>:<salt>$<keys>'
 *
 * so the statement -- whatever is logged or tracked -- carries the
 * verifier, never the password.  The statement runs as the calling role
 * (the role that configured the rotation, when the worker calls it), so
 * PostgreSQL's own rules decide whose password it may change.
 *
 * secret_test_pg_role(path, version) is the matching test hook: it checks
 * the role's stored verifier against the version's value.
 *
 * The role is named by the secret's tag "pg_role".
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "acl.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "crypto.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "query.h"
#include "rotation.h"
#include "store.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/syscache.h"

/*
 * From the server's libpq/scram.h, which cannot be included without the
 * GSSAPI headers (through libpq-be.h); the signatures are those of
 * PostgreSQL 15 to 17.
 */
extern char *pg_be_scram_build_secret(const char *password);
extern bool scram_verify_plain_password(const char *username,
										const char *password, const char *secret);

PG_FUNCTION_INFO_V1(secret_target_pg_role);
PG_FUNCTION_INFO_V1(secret_test_pg_role);

/* The SCRAM-SHA-256 verifier of a password (salted, server iterations). */
char *
sm_scram_verifier(const char *password)
{
	return pg_be_scram_build_secret(password);
}

/* The password value of version `version` of `path`, as a C string. */
static char *
read_password(const SmCaller *c, const char *path, int32 version)
{
	size_t		len;
	uint8	   *plain = sm_store_resolve(c, path, NULL, true, version, &len);
	char	   *pw;

	if (len == 0 || memchr(plain, '\0', len) != NULL ||
		!pg_verifymbstr((const char *) plain, (int) len, true))
	{
		sm_wipe(plain, len);
		ereport(ERROR,
				(errcode(ERRCODE_SM_INVALID_VALUE),
				 errmsg("version %d of secret \"%s\" is not usable as a password", version, path),
				 errdetail("A role password is non-empty text.")));
	}
	pw = sm_secure_alloc(len + 1);
	memcpy(pw, plain, len);
	pw[len] = '\0';
	sm_wipe(plain, len);
	return pw;
}

/*
 * Identify the caller and the target role of the secret at `path`
 * (its tag "pg_role").  Leaves the session entered (SPI connected, as the
 * extension owner).
 */
static Oid
target_role(SmSession *session, SmCaller *c, const char *path, char **rolename)
{
	static SmStmt stmt = {
		"SELECT tags OPERATOR(pg_catalog.->>) 'pg_role' FROM secret_mgmt.secret_item"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND secret_id OPERATOR(pg_catalog.=) $2",
		2, {TEXTOID, UUIDOID}
	};
	SmSecret	s;
	Datum		args[2];
	Oid			role;

	sm_enter(session);
	sm_caller_resolve(session, c, path);
	sm_acl_require(c, path, SM_CAP_ROTATE);
	sm_store_require(c, path, SM_FIND_LIVE, &s);
	args[0] = CStringGetTextDatum(c->tenant);
	args[1] = UUIDPGetDatum(&s.id);
	if (sm_exec(&stmt, args, NULL, 1) != 1 || sm_col_isnull(0, 1))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("secret \"%s\" names no role", path),
				 errhint("Create it with tags => '{\"pg_role\": \"<role>\"}'.")));
	*rolename = MemoryContextStrdup(session->caller_cxt, sm_col_text(0, 1));
	role = get_role_oid(*rolename, true);
	if (!OidIsValid(role))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" does not exist", *rolename)));
	return role;
}

/* May `caller` set the password of `role`?  (The rule of ALTER ROLE.) */
static bool
may_set_password(Oid caller, Oid role)
{
	if (superuser_arg(caller) || caller == role)
		return true;
	if (superuser_arg(role))
		return false;
	return has_createrole_privilege(caller);
}

static int32
arg_version(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("path and version must not be null")));
	return PG_GETARG_INT32(1);
}

/* SQL: secret_target_pg_role(path, version): set the role's password */
Datum
secret_target_pg_role(PG_FUNCTION_ARGS)
{
	SmSession	session;
	SmCaller	c;
	int32		version = arg_version(fcinfo);
	char	   *path = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *rolename;
	Oid			role;
	char	   *password;
	char	   *verifier;
	StringInfoData sql;
	int			rc;

	sm_store_check_path(path);
	role = target_role(&session, &c, path, &rolename);
	if (!may_set_password(session.caller, role))
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied to set the password of role \"%s\"", rolename),
				 errdetail("The rotation runs as role \"%s\", which may not change that password.",
						   c.rolename)));
	password = read_password(&c, path, version);
	verifier = sm_scram_verifier(password);
	sm_wipe(password, strlen(password));
	sm_leave(&session);

	/* As the caller: PostgreSQL decides whether it may. */
	initStringInfo(&sql);
	appendStringInfo(&sql, "ALTER ROLE %s PASSWORD %s",
					 quote_identifier(rolename), quote_literal_cstr(verifier));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute(sql.data, false, 0);
	if (rc != SPI_OK_UTILITY)
		elog(ERROR, "ALTER ROLE failed: %s", SPI_result_code_string(rc));
	SPI_finish();
	PG_RETURN_VOID();
}

/* SQL: secret_test_pg_role(path, version): does the role's password match? */
Datum
secret_test_pg_role(PG_FUNCTION_ARGS)
{
	SmSession	session;
	SmCaller	c;
	int32		version = arg_version(fcinfo);
	char	   *path = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *rolename;
	Oid			role;
	char	   *password;
	char	   *stored = NULL;
	HeapTuple	tup;
	bool		ok;

	sm_store_check_path(path);
	role = target_role(&session, &c, path, &rolename);
	if (!may_set_password(session.caller, role))
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied to test the password of role \"%s\"", rolename),
				 errdetail("Only a role that may change that password can test it.")));
	password = read_password(&c, path, version);
	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(role));
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = SysCacheGetAttr(AUTHOID, tup, Anum_pg_authid_rolpassword, &isnull);

		if (!isnull)
			stored = TextDatumGetCString(d);
		ReleaseSysCache(tup);
	}
	ok = stored != NULL && strncmp(stored, "SCRAM-SHA-256$", 14) == 0 &&
		scram_verify_plain_password(rolename, password, stored);
	sm_wipe(password, strlen(password));
	sm_leave(&session);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PASSWORD),
				 errmsg("the password of role \"%s\" is not version %d of secret \"%s\"",
						rolename, version, path)));
	PG_RETURN_VOID();
}
