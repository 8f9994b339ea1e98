/*-------------------------------------------------------------------------
 *
 * backend.c
 *		The registry of external secret backends (secret_backend_create).
 *
 * A backend is a named place where values can live outside the database
 * (HashiCorp Vault KV v2 today).  Registering one is the platform
 * administrator's job: the configuration is validated here, and its
 * credentials are not part of it but a secret of the global platform
 * tenant, named by credentials_path, so that no token ever travels as a
 * SQL literal or a setting.  Registry rows belong to the global tenant.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "backend.h"
#include "store.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "query.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(secret_backend_create);

/* A backend name: 1 to 63 letters, digits, '.', '_' or '-'. */
static void
check_backend_name(const char *name)
{
	size_t		len = strlen(name);
	bool		ok = len >= 1 && len <= 63 && isalnum((unsigned char) name[0]);

	for (size_t i = 0; ok && i < len; i++)
	{
		unsigned char c = (unsigned char) name[i];

		ok = isalnum(c) || c == '.' || c == '_' || c == '-';
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid backend name \"%s\"", name),
				 errdetail("A backend name is 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit.")));
	if (strcmp(name, "local") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("backend \"local\" is built in")));
}

/* SQL: secret_backend_create(name, kind, config, credentials_path) */
Datum
secret_backend_create(PG_FUNCTION_ARGS)
{
	static SmStmt insert = {
		"INSERT INTO secret_mgmt.secret_backend"
		" (tenant_id, name, kind, config, credentials_path, created_by)"
		" VALUES ('global', $1, $2, $3, $4, $5)"
		" ON CONFLICT (tenant_id, name) DO NOTHING",
		5, {TEXTOID, TEXTOID, JSONBOID, TEXTOID, TEXTOID}
	};
	SmSession	session;
	char	   *name;
	char	   *kind;
	char	   *credentials_path = NULL;
	SmVaultConfig cfg;
	Datum		args[5];

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name, kind and config must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	kind = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!PG_ARGISNULL(3))
		credentials_path = text_to_cstring(PG_GETARG_TEXT_PP(3));
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied to create backend \"%s\"", name),
				 errdetail("Only the platform administrator (a superuser) registers backends.")));
	check_backend_name(name);

	if (strcmp(kind, "aws") == 0 || strcmp(kind, "azure") == 0 || strcmp(kind, "gcp") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("backend kind \"%s\" is not supported by this version", kind),
				 errhint("Use kind 'vault'.")));
	if (strcmp(kind, "vault") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown backend kind \"%s\"", kind),
				 errhint("The kind is 'vault'.")));
	if (credentials_path == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a vault backend needs credentials_path"),
				 errhint("Store the token, or the AppRole role_id and secret_id, as a secret of the global tenant and name its path.")));
	sm_vault_config_parse(PG_GETARG_JSONB_P(2), SM_VAULT_KV, credentials_path, &cfg);
	if (!sm_platform_secret_exists(cfg.credentials_path))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("credential secret \"%s\" does not exist in the global tenant",
						cfg.credentials_path),
				 errhint("Create it first, after secret_mgmt.secret_use_tenant('global').")));

	sm_enter(&session);
	args[0] = CStringGetTextDatum(name);
	args[1] = CStringGetTextDatum(kind);
	args[2] = PG_GETARG_DATUM(2);
	args[3] = CStringGetTextDatum(cfg.credentials_path);
	args[4] = CStringGetTextDatum(GetUserNameFromId(session.caller, false));
	if (sm_exec(&insert, args, NULL, 0) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("backend \"%s\" already exists", name)));
	sm_leave(&session);
	PG_RETURN_VOID();
}

/*
 * Read registered backend `name` (inside sm_enter()).  Returns false when
 * there is none; otherwise sets *kind and, for kind vault, parses the
 * configuration into `cfg`, allocated in `cxt`.
 */
bool
sm_backend_load(const char *name, MemoryContext cxt, char **kind, SmVaultConfig *cfg)
{
	static SmStmt stmt = {
		"SELECT kind, config, credentials_path FROM secret_mgmt.secret_backend"
		" WHERE tenant_id OPERATOR(pg_catalog.=) 'global' AND name OPERATOR(pg_catalog.=) $1",
		1, {TEXTOID}
	};
	Datum		arg = CStringGetTextDatum(name);
	MemoryContext old;
	bool		isnull;

	if (sm_exec(&stmt, &arg, NULL, 1) != 1)
		return false;
	old = MemoryContextSwitchTo(cxt);
	*kind = sm_col_text(0, 1);
	if (strcmp(*kind, "vault") == 0)
		sm_vault_config_parse(DatumGetJsonbPCopy(sm_col(0, 2, &isnull)), SM_VAULT_KV,
							  sm_col_text(0, 3), cfg);
	MemoryContextSwitchTo(old);
	return true;
}
