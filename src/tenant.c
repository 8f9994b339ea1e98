/*-------------------------------------------------------------------------
 *
 * tenant.c
 *		Tenants, membership, and who is calling.
 *
 * A tenant is the hard isolation boundary.  Membership is held by roles
 * (with role inheritance, so a login role that inherits a member group is
 * a member); the superuser is the platform administrator and administers
 * every tenant.  A session acts for the tenant chosen with
 * secret_use_tenant() -- for the session or, with local => true, for the
 * transaction -- or, when it chose none, for the single tenant its role
 * belongs to.  Membership is checked again on every call, so a removal
 * takes effect at the next statement.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "audit.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "kms.h"
#include "lookup.h"
#include "miscadmin.h"
#include "tenant.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(secret_mgmt_current_tenant);
PG_FUNCTION_INFO_V1(secret_tenant_create);
PG_FUNCTION_INFO_V1(secret_tenant_add_member);
PG_FUNCTION_INFO_V1(secret_tenant_remove_member);
PG_FUNCTION_INFO_V1(secret_tenant_set_purge_protection);
PG_FUNCTION_INFO_V1(secret_use_tenant);
PG_FUNCTION_INFO_V1(secret_set_context);

/* Selection and context live in TopMemoryContext. */
static char *session_tenant = NULL;
static char *xact_tenant = NULL;
static char *ctx_team = NULL;
static char *ctx_project = NULL;
static char *ctx_user = NULL;

/* A token principal assumed for the current transaction (secret_assume). */
static MemoryContext assumed_cxt = NULL;
static char *assumed_tenant = NULL;
static char *assumed_subject = NULL;
static List *assumed_groups = NIL;
static char *assumed_team = NULL;
static char *assumed_project = NULL;
static SubTransactionId assumed_subxact = InvalidSubTransactionId;

static void forget_assumed(void);

/* Forget a transaction-local tenant selection at transaction end. */
void
sm_tenant_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			if (xact_tenant)
				pfree(xact_tenant);
			xact_tenant = NULL;
			forget_assumed();
			break;
		default:
			break;
	}
}

static char *
top_strdup(const char *s)
{
	return s ? MemoryContextStrdup(TopMemoryContext, s) : NULL;
}

static void
replace_setting(char **slot, const char *value)
{
	if (*slot)
		pfree(*slot);
	*slot = (value && value[0]) ? top_strdup(value) : NULL;
}

static void
forget_assumed(void)
{
	if (assumed_cxt)
		MemoryContextReset(assumed_cxt);
	assumed_tenant = assumed_subject = assumed_team = assumed_project = NULL;
	assumed_groups = NIL;
	assumed_subxact = InvalidSubTransactionId;
}

/* ROLLBACK TO SAVEPOINT undoes a secret_assume() made after the savepoint. */
void
sm_tenant_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						   SubTransactionId parentSubid, void *arg)
{
	if (assumed_tenant == NULL || mySubid != assumed_subxact)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
		forget_assumed();
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
		assumed_subxact = parentSubid;
}

/*
 * Act as a verified token's principal until the transaction ends.  The
 * caller (token.c) has verified the token and that the role is a broker.
 */
void
sm_assume_principal(const char *tenant, const char *subject, List *groups,
					const char *team, const char *project)
{
	MemoryContext old;
	ListCell   *lc;

	if (assumed_cxt == NULL)
		assumed_cxt = AllocSetContextCreate(TopMemoryContext,
											"secret_mgmt assumed principal",
											ALLOCSET_SMALL_SIZES);
	MemoryContextReset(assumed_cxt);
	old = MemoryContextSwitchTo(assumed_cxt);
	assumed_tenant = pstrdup(tenant);
	assumed_subject = pstrdup(subject);
	assumed_groups = NIL;
	foreach(lc, groups)
		assumed_groups = lappend(assumed_groups, pstrdup(lfirst(lc)));
	assumed_team = team ? pstrdup(team) : NULL;
	assumed_project = project ? pstrdup(project) : NULL;
	assumed_subxact = GetCurrentSubTransactionId();
	MemoryContextSwitchTo(old);
}

/* Is `role` a registered broker of `tenant` (the superuser never is)? */
bool
sm_is_broker(Oid role, const char *tenant)
{
	ListCell   *lc;

	if (superuser_arg(role))
		return false;
	foreach(lc, sm_lookup_brokers(tenant))
	{
		SmMembership *b = lfirst(lc);

		if (has_privs_of_role(role, b->member))
			return true;
	}
	return false;
}

/* Refuse session-level choices inside a transaction that assumed a token. */
static void
refuse_when_assumed(const char *what)
{
	if (assumed_tenant)
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("%s is not allowed after secret_assume()", what),
				 errdetail("The tenant and context of an assumed token come from its verified claims.")));
}

static const char *
selected_tenant(void)
{
	return xact_tenant ? xact_tenant : session_tenant;
}

/*
 * Membership of `role` in `tenant`: returns false when the role is not a
 * member.  Sets *is_admin.
 */
static bool
role_in_tenant(Oid role, const char *tenant, bool *is_admin)
{
	ListCell   *lc;
	bool		member = false;

	*is_admin = false;
	if (sm_is_broker(role, tenant))
		return false;			/* a broker has no access of its own */
	foreach(lc, sm_lookup_members(tenant))
	{
		SmMembership *m = lfirst(lc);

		if (has_privs_of_role(role, m->member))
		{
			member = true;
			*is_admin |= m->is_admin;
		}
	}
	return member;
}

/* The caller's name, for created_by and messages. */
static char *
role_name(Oid roleid)
{
	char	   *name = GetUserNameFromId(roleid, true);

	return name ? name : psprintf("%u", roleid);
}

/*
 * Identify the caller and the tenant it acts for.  `path` is the secret
 * path of the call, if it has one: a caller that belongs to no tenant then
 * gets the same SM001 as for a path that does not exist, so the answer
 * says nothing about what exists anywhere.
 */
void
sm_caller_resolve(SmSession *session, SmCaller *caller, const char *path)
{
	const char *chosen = selected_tenant();
	MemoryContext old;

	memset(caller, 0, sizeof(*caller));
	caller->roleid = session->caller;
	caller->is_superuser = superuser_arg(session->caller);

	if (assumed_tenant)
	{
		ListCell   *lc;

		/* The broker must still be one; then the token is the principal. */
		if (!sm_is_broker(session->caller, assumed_tenant))
		{
			sm_audit_note_tenant(assumed_tenant);
			sm_audit_refused(ERRCODE_SM_PERMISSION, path);
			ereport(ERROR,
					(errcode(ERRCODE_SM_PERMISSION),
					 errmsg("role \"%s\" is no longer a broker of tenant \"%s\"",
							role_name(session->caller), assumed_tenant)));
		}
		old = MemoryContextSwitchTo(session->caller_cxt);
		caller->assumed = true;
		caller->tenant = pstrdup(assumed_tenant);
		caller->subject = pstrdup(assumed_subject);
		foreach(lc, assumed_groups)
			caller->groups = lappend(caller->groups, pstrdup(lfirst(lc)));
		caller->rolename = psprintf("token:%s", assumed_subject);
		caller->team = assumed_team ? pstrdup(assumed_team) : NULL;
		caller->project = assumed_project ? pstrdup(assumed_project) : NULL;
		caller->user = pstrdup(assumed_subject);
		caller->is_superuser = false;
		MemoryContextSwitchTo(old);
		sm_audit_caller(caller);
		return;
	}

	old = MemoryContextSwitchTo(session->caller_cxt);
	caller->rolename = role_name(session->caller);
	caller->team = ctx_team ? pstrdup(ctx_team) : NULL;
	caller->project = ctx_project ? pstrdup(ctx_project) : NULL;
	caller->user = ctx_user ? pstrdup(ctx_user) : NULL;
	MemoryContextSwitchTo(old);

	if (chosen)
	{
		bool		is_admin;
		bool		ok;

		if (caller->is_superuser)
		{
			ok = sm_lookup_tenant_exists(chosen);
			is_admin = true;
		}
		else
			ok = role_in_tenant(caller->roleid, chosen, &is_admin);
		if (!ok)
		{
			sm_audit_note_tenant(chosen);
			sm_audit_refused(ERRCODE_SM_PERMISSION, path);
			ereport(ERROR,
					(errcode(ERRCODE_SM_PERMISSION),
					 errmsg("permission denied for tenant \"%s\"", chosen),
					 errdetail("Role \"%s\" is not a member of the tenant selected for this session.",
							   caller->rolename),
					 errhint("Select another tenant with secret_mgmt.secret_use_tenant().")));
		}
		caller->tenant = MemoryContextStrdup(session->caller_cxt, chosen);
		caller->is_admin = is_admin;
		sm_audit_caller(caller);
		return;
	}

	/* No tenant chosen: the role must belong to exactly one. */
	{
		ListCell   *lc;
		char	   *found = NULL;
		bool		found_admin = false;
		int			ntenants = 0;

		foreach(lc, caller->is_superuser ? NIL : sm_lookup_members(NULL))
		{
			SmMembership *m = lfirst(lc);

			if (!has_privs_of_role(caller->roleid, m->member) ||
				sm_is_broker(caller->roleid, m->tenant))
				continue;
			if (found == NULL)
			{
				found = m->tenant;
				ntenants = 1;
			}
			else if (strcmp(found, m->tenant) != 0)
				ntenants = 2;
			if (strcmp(found, m->tenant) == 0)
				found_admin |= m->is_admin;
		}

		if (caller->is_superuser || ntenants > 1)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("no tenant selected"),
					 errdetail(caller->is_superuser ?
							   "The platform administrator acts for one tenant at a time." :
							   "Role \"%s\" belongs to more than one tenant.",
							   caller->rolename),
					 errhint("Choose one with secret_mgmt.secret_use_tenant().")));
		if (found == NULL)
		{
			char	   *hint = psprintf("Role \"%s\" is not a member of any tenant.",
										caller->rolename);

			if (path)
				sm_report_not_found(path, hint);
			sm_audit_refused(ERRCODE_SM_PERMISSION, path);
			ereport(ERROR,
					(errcode(ERRCODE_SM_PERMISSION),
					 errmsg("role \"%s\" is not a member of any tenant", caller->rolename),
					 errhint("A platform administrator adds roles with secret_mgmt.secret_tenant_add_member().")));
		}
		caller->tenant = MemoryContextStrdup(session->caller_cxt, found);
		caller->is_admin = found_admin;
		sm_audit_caller(caller);
	}
}

/* Validate a tenant name the way the table's CHECK does, with a clear error. */
static void
check_tenant_name(const char *tenant)
{
	size_t		len = strlen(tenant);
	bool		ok = len >= 1 && len <= 63 && IS_ASCII_ALNUM((unsigned char) tenant[0]);

	for (size_t i = 0; ok && i < len; i++)
	{
		unsigned char c = (unsigned char) tenant[i];

		ok = IS_ASCII_ALNUM(c) || c == '.' || c == '_' || c == '-';
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid tenant name \"%s\"", tenant),
				 errdetail("A tenant name is 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit.")));
}

/*
 * Require that the caller administers `tenant`: the superuser, or a member
 * added with admin => true.  Non-members and missing tenants get the same
 * answer.
 */
void
sm_require_tenant_admin(SmSession *session, const char *tenant)
{
	bool		is_admin = false;

	if (superuser_arg(session->caller))
	{
		if (sm_lookup_tenant_exists(tenant))
			return;
	}
	else if (role_in_tenant(session->caller, tenant, &is_admin) && is_admin)
		return;
	sm_audit_note_tenant(tenant);
	sm_audit_refused(ERRCODE_SM_PERMISSION, NULL);
	ereport(ERROR,
			(errcode(ERRCODE_SM_PERMISSION),
			 errmsg("permission denied for tenant \"%s\"", tenant),
			 errdetail("Only the platform administrator and the tenant's administrators may do this.")));
}

/*
 * Select `tenant` for the rest of the current transaction, without a
 * membership check: for the worker, which acts for one tenant at a time.
 */
void
sm_tenant_select_for_xact(const char *tenant)
{
	if (xact_tenant == NULL || strcmp(xact_tenant, tenant) != 0)
		replace_setting(&xact_tenant, tenant);
}

/*
 * Require that the caller administers `role` in PostgreSQL (ADMIN OPTION,
 * or superuser) before a tenant administrator names it as a member or a
 * broker, so that no tenant can make another tenant's role one of its own.
 * `action` completes "permission denied to ...".
 */
void
sm_require_role_admin(SmSession *session, Oid role, const char *action)
{
	if (superuser_arg(session->caller) || is_admin_of_role(session->caller, role))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_SM_PERMISSION),
			 errmsg("permission denied to %s", action),
			 errdetail("A tenant administrator names only roles it holds with ADMIN OPTION.")));
}

/* SQL: the tenant the session has selected (for RLS policies), or NULL. */
Datum
secret_mgmt_current_tenant(PG_FUNCTION_ARGS)
{
	const char *t = selected_tenant();

	if (t == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(t));
}

/* SQL: secret_tenant_create(tenant, kms, kms_config) */
Datum
secret_tenant_create(PG_FUNCTION_ARGS)
{
	static SmStmt insert_tenant = {
		"INSERT INTO secret_mgmt.secret_tenant (tenant_id, kms, kms_config, created_by)"
		" VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO NOTHING",
		4, {TEXTOID, TEXTOID, JSONBOID, TEXTOID}
	};
	SmSession	session;
	char	   *tenant;
	char	   *kms;
	Datum		args[4];

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("tenant, kms and kms_config must not be null")));
	tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));
	kms = text_to_cstring(PG_GETARG_TEXT_PP(1));
	check_tenant_name(tenant);
	sm_audit_begin("tenant_create", NULL);
	if (!superuser())
	{
		sm_audit_refused(ERRCODE_SM_PERMISSION, NULL);
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied to create tenant \"%s\"", tenant),
				 errdetail("Only the platform administrator (a superuser) creates tenants.")));
	}
	/* 'local', or 'vault' with a valid Transit configuration (kms.c). */
	sm_kms_check_config(kms, PG_GETARG_JSONB_P(2));

	sm_enter(&session);
	args[0] = CStringGetTextDatum(tenant);
	args[1] = CStringGetTextDatum(kms);
	args[2] = PG_GETARG_DATUM(2);
	args[3] = CStringGetTextDatum(GetUserNameFromId(session.caller, false));
	if (sm_exec(&insert_tenant, args, NULL, 0) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("tenant \"%s\" already exists", tenant)));
	sm_audit_tenant_change(tenant, session.caller, "tenant_create", NULL);
	sm_leave(&session);
	PG_RETURN_VOID();
}

/* SQL: secret_tenant_add_member(tenant, member, admin) */
Datum
secret_tenant_add_member(PG_FUNCTION_ARGS)
{
	static SmStmt upsert = {
		"INSERT INTO secret_mgmt.secret_member (tenant_id, member, is_admin, added_by)"
		" VALUES ($1, $2::pg_catalog.regrole, $3, $4)"
		" ON CONFLICT (tenant_id, member) DO UPDATE SET is_admin = EXCLUDED.is_admin",
		4, {TEXTOID, OIDOID, BOOLOID, TEXTOID}
	};
	SmSession	session;
	char	   *tenant;
	Datum		args[4];

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("tenant, member and admin must not be null")));
	tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));

	sm_audit_begin("member_add", NULL);
	sm_enter(&session);
	sm_require_tenant_admin(&session, tenant);

	/*
	 * A tenant administrator adds only roles it administers in PostgreSQL,
	 * so it cannot make another tenant's role a member of two tenants.
	 */
	sm_require_role_admin(&session, DatumGetObjectId(PG_GETARG_DATUM(1)),
						  psprintf("add role \"%s\" to tenant \"%s\"",
								   role_name(DatumGetObjectId(PG_GETARG_DATUM(1))), tenant));
	args[0] = CStringGetTextDatum(tenant);
	args[1] = PG_GETARG_DATUM(1);
	args[2] = PG_GETARG_DATUM(2);
	args[3] = CStringGetTextDatum(role_name(session.caller));
	sm_exec(&upsert, args, NULL, 0);
	sm_lookup_members_changed();
	sm_audit_tenant_change(tenant, session.caller, "member_add", role_name(DatumGetObjectId(PG_GETARG_DATUM(1))));
	sm_leave(&session);
	PG_RETURN_VOID();
}

/* SQL: secret_tenant_remove_member(tenant, member) */
Datum
secret_tenant_remove_member(PG_FUNCTION_ARGS)
{
	static SmStmt remove = {
		"DELETE FROM secret_mgmt.secret_member"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1"
		"   AND member OPERATOR(pg_catalog.=) $2::pg_catalog.regrole",
		2, {TEXTOID, OIDOID}
	};
	SmSession	session;
	char	   *tenant;
	Datum		args[2];

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("tenant and member must not be null")));
	tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));

	sm_audit_begin("member_remove", NULL);
	sm_enter(&session);
	sm_require_tenant_admin(&session, tenant);
	args[0] = CStringGetTextDatum(tenant);
	args[1] = PG_GETARG_DATUM(1);
	if (sm_exec(&remove, args, NULL, 0) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" is not a member of tenant \"%s\"",
						role_name(DatumGetObjectId(PG_GETARG_DATUM(1))), tenant)));
	sm_lookup_members_changed();
	sm_audit_tenant_change(tenant, session.caller, "member_remove", role_name(DatumGetObjectId(PG_GETARG_DATUM(1))));
	sm_leave(&session);
	PG_RETURN_VOID();
}

/*
 * SQL: secret_tenant_set_purge_protection(tenant, enabled).  Like Azure Key
 * Vault's, purge protection cannot be switched off once on.
 */
Datum
secret_tenant_set_purge_protection(PG_FUNCTION_ARGS)
{
	static SmStmt get = {
		"SELECT purge_protection FROM secret_mgmt.secret_tenant"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
		1, {TEXTOID}
	};
	static SmStmt set = {
		"UPDATE secret_mgmt.secret_tenant SET purge_protection = true"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1",
		1, {TEXTOID}
	};
	SmSession	session;
	char	   *tenant;
	bool		enable;
	Datum		arg;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("tenant and enabled must not be null")));
	tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));
	enable = PG_GETARG_BOOL(1);

	sm_audit_begin("purge_protection", NULL);
	sm_enter(&session);
	sm_require_tenant_admin(&session, tenant);
	arg = CStringGetTextDatum(tenant);
	sm_exec(&get, &arg, NULL, 1);
	if (sm_col_bool(0, 1) && !enable)
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("purge protection of tenant \"%s\" cannot be disabled", tenant),
				 errdetail("Once enabled, purge protection stays on for the life of the tenant.")));
	if (enable)
		sm_exec(&set, &arg, NULL, 0);
	sm_audit_tenant_change(tenant, session.caller, "purge_protection", enable ? "on" : "off");
	sm_leave(&session);
	PG_RETURN_VOID();
}

/* SQL: secret_use_tenant(tenant, local); a null tenant clears the choice */
Datum
secret_use_tenant(PG_FUNCTION_ARGS)
{
	SmSession	session;
	char	   *tenant;
	bool		local;
	bool		is_admin;
	bool		ok;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("local must not be null")));
	local = PG_GETARG_BOOL(1);
	refuse_when_assumed("secret_use_tenant()");

	/* A null tenant clears the selection. */
	if (PG_ARGISNULL(0))
	{
		replace_setting(local ? &xact_tenant : &session_tenant, NULL);
		PG_RETURN_VOID();
	}
	tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));

	sm_session_init(&session);
	if (superuser_arg(session.caller))
		ok = sm_lookup_tenant_exists(tenant);
	else
		ok = role_in_tenant(session.caller, tenant, &is_admin);
	if (!ok)
	{
		sm_audit_begin("use_tenant", NULL);
		sm_audit_note_tenant(tenant);
		sm_audit_refused(ERRCODE_SM_PERMISSION, NULL);
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied for tenant \"%s\"", tenant),
				 superuser_arg(session.caller) ?
				 errdetail("The tenant does not exist.") :
				 errdetail("Role \"%s\" is not a member of this tenant.",
						   role_name(session.caller))));
	}

	if (local)
	{
		if (!IsTransactionBlock())
			ereport(WARNING,
					(errcode(ERRCODE_NO_ACTIVE_SQL_TRANSACTION),
					 errmsg("secret_use_tenant(local => true) outside a transaction block has no effect")));
		replace_setting(&xact_tenant, tenant);
	}
	else
		replace_setting(&session_tenant, tenant);
	PG_RETURN_VOID();
}

/* SQL: secret_set_context(team, project, user) */
Datum
secret_set_context(PG_FUNCTION_ARGS)
{
	refuse_when_assumed("secret_set_context()");
	replace_setting(&ctx_team, PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0)));
	replace_setting(&ctx_project, PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1)));
	replace_setting(&ctx_user, PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2)));
	PG_RETURN_VOID();
}
