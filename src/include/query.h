/*-------------------------------------------------------------------------
 *
 * query.h
 *		Running the extension's internal statements as the extension owner.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_QUERY_H
#define SECRET_MGMT_QUERY_H

#include "secret_mgmt.h"

#include "executor/spi.h"

#define SM_STMT_MAX_ARGS	18

/*
 * One internal statement.  Declared static at its call site; the plan is
 * prepared on first use and kept for the life of the backend.  Values only
 * ever travel as the $n parameters declared here.
 */
typedef struct SmStmt
{
	const char *sql;
	int			nargs;
	Oid			argtypes[SM_STMT_MAX_ARGS];
	SPIPlanPtr	plan;
} SmStmt;

/*
 * An API call in progress: who called, and what to restore on the way out.
 * Between sm_enter() and sm_leave() the backend runs as the extension owner
 * with search_path pinned to pg_catalog, pg_temp, and SPI is connected.
 */
typedef struct SmSession
{
	Oid			caller;			/* current_user of the caller */
	Oid			save_userid;
	int			save_sec_context;
	int			guc_level;
	MemoryContext caller_cxt;	/* where results must be built */
} SmSession;

extern void sm_session_init(SmSession *session);
extern void sm_enter(SmSession *session);
extern void sm_leave(SmSession *session);
extern int	sm_exec(SmStmt *stmt, Datum *values, const char *nulls, long tcount);

/* Column accessors for the current SPI result. */
extern bool sm_col_isnull(int row, int col);
extern Datum sm_col(int row, int col, bool *isnull);
extern char *sm_col_text(int row, int col);
extern int32 sm_col_int32(int row, int col);
extern bool sm_col_bool(int row, int col);

/* Copy a row of the current SPI result into a materialized SRF's result. */
struct ReturnSetInfo;
extern void sm_put_row(struct ReturnSetInfo *rsinfo, int row);

#endif							/* SECRET_MGMT_QUERY_H */
