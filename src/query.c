/*-------------------------------------------------------------------------
 *
 * query.c
 *		Running the extension's internal statements as the extension owner.
 *
 * The API functions are plain (not SECURITY DEFINER) C functions so that
 * they can see who really called them.  Once they have checked the caller
 * they reach the tables by switching to the owner of the extension's
 * tables, exactly as fmgr does for a SECURITY DEFINER function: the user id
 * is changed with SECURITY_LOCAL_USERID_CHANGE and
 * SECURITY_RESTRICTED_OPERATION, and search_path is pinned to
 * "pg_catalog, pg_temp" in a new GUC nest level.  Transaction and
 * subtransaction abort restore both, so an error needs no cleanup here.
 *
 * Statements are fully schema-qualified, take every value as a bound
 * parameter, and are prepared once per backend.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "query.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

/* The role that owns the extension's tables (the extension owner). */
static Oid
extension_table_owner(void)
{
	Oid			nspid;
	Oid			relid;
	HeapTuple	tup;
	Oid			owner;

	nspid = get_namespace_oid("secret_mgmt", true);
	relid = OidIsValid(nspid) ? get_relname_relid("secret_item", nspid) : InvalidOid;
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"secret_mgmt\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION secret_mgmt as a superuser.")));
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Begin an API call that needs no SPI (the read path): note the caller and
 * where results go.
 */
void
sm_session_init(SmSession *session)
{
	sm_check_preloaded();
	session->caller_cxt = CurrentMemoryContext;
	GetUserIdAndSecContext(&session->save_userid, &session->save_sec_context);
	session->caller = session->save_userid;
}

/* Begin an API call: connect SPI and become the extension owner. */
void
sm_enter(SmSession *session)
{
	Oid			owner;

	sm_session_init(session);
	owner = extension_table_owner();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	SetUserIdAndSecContext(owner,
						   session->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	session->guc_level = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/* End an API call: restore the caller's identity and settings. */
void
sm_leave(SmSession *session)
{
	AtEOXact_GUC(true, session->guc_level);
	SetUserIdAndSecContext(session->save_userid, session->save_sec_context);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
}

/*
 * Execute an internal statement with bound parameters.  Returns the number
 * of rows processed; the rows are in SPI_tuptable.
 */
int
sm_exec(SmStmt *stmt, Datum *values, const char *nulls, long tcount)
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
	rc = SPI_execute_plan(stmt->plan, values, nulls, false, tcount);
	if (rc < 0)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	return (int) SPI_processed;
}

Datum
sm_col(int row, int col, bool *isnull)
{
	Assert(SPI_tuptable != NULL && (uint64) row < SPI_processed);
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
						 col, isnull);
}

bool
sm_col_isnull(int row, int col)
{
	bool		isnull;

	(void) sm_col(row, col, &isnull);
	return isnull;
}

/* A text column as a C string, or NULL. */
char *
sm_col_text(int row, int col)
{
	bool		isnull;
	Datum		d = sm_col(row, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

int32
sm_col_int32(int row, int col)
{
	bool		isnull;
	Datum		d = sm_col(row, col, &isnull);

	return isnull ? 0 : DatumGetInt32(d);
}

bool
sm_col_bool(int row, int col)
{
	bool		isnull;
	Datum		d = sm_col(row, col, &isnull);

	return isnull ? false : DatumGetBool(d);
}

/*
 * Append row `row` of the current SPI result, column for column, to the
 * result of a set-returning function set up by InitMaterializedSRF():
 * the query's select list is the function's result row.
 */
void
sm_put_row(ReturnSetInfo *rsinfo, int row)
{
	int			natts = rsinfo->setDesc->natts;
	Datum	   *values;
	bool	   *nulls;

	if (SPI_tuptable->tupdesc->natts != natts)
		elog(ERROR, "query returns %d columns, the function %d",
			 SPI_tuptable->tupdesc->natts, natts);
	values = palloc(sizeof(Datum) * natts);
	nulls = palloc(sizeof(bool) * natts);
	for (int col = 0; col < natts; col++)
		values[col] = sm_col(row, col + 1, &nulls[col]);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	pfree(values);
	pfree(nulls);
}
