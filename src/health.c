/*-------------------------------------------------------------------------
 *
 * health.c
 *		secret_health(): one jsonb document on the state of the store.
 *
 * Everything reported comes from this process or from shared memory --
 * the keyring, the worker's slot, the audit queue, the log hook's
 * counters, the backends' circuit breakers -- and from the logging
 * profile as this session sees it, except the outbox backlog: three
 * aggregates over the undelivered rows of secret_outbox (a partial
 * index), read as the extension owner.  Nothing is decrypted, so the
 * function answers when the store is sealed, and it reveals nothing of
 * any tenant's secrets.  Backend endpoints are those of
 * every tenant, so the caller must be a superuser or a member of
 * pg_monitor.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "audit.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "http.h"
#include "keyring.h"
#include "lib/stringinfo.h"
#include "loghygiene.h"
#include "miscadmin.h"
#include "query.h"
#include "secret_mgmt.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(secret_health);

/* "key": the escaped string, or null */
static void
add_string(StringInfo buf, const char *key, const char *value)
{
	appendStringInfo(buf, "\"%s\": ", key);
	if (value)
		escape_json(buf, value);
	else
		appendStringInfoString(buf, "null");
}

/* "key": the timestamp in ISO 8601, or null for 0 */
static void
add_time(StringInfo buf, const char *key, TimestampTz t)
{
	char		iso[MAXDATELEN + 1];

	if (t == 0)
	{
		add_string(buf, key, NULL);
		return;
	}
	add_string(buf, key, JsonEncodeDateTime(iso, TimestampTzGetDatum(t), TIMESTAMPTZOID, NULL));
}

/* The outbox of this database: undelivered writes to external backends. */
static void
add_outbox(StringInfo buf)
{
	static SmStmt stmt = {
		"SELECT pg_catalog.count(*) FILTER (WHERE state OPERATOR(pg_catalog.=) 'pending'),"
		"       pg_catalog.count(*) FILTER (WHERE state OPERATOR(pg_catalog.=) 'conflict'),"
		"       pg_catalog.min(created_at)"
		"  FROM secret_mgmt.secret_outbox"
		" WHERE state OPERATOR(pg_catalog.<>) 'delivered'",
		0, {InvalidOid}
	};
	SmSession	session;
	bool		isnull;
	Datum		oldest;

	sm_enter(&session);
	sm_exec(&stmt, NULL, NULL, 1);
	appendStringInfo(buf, "\"outbox\": {\"pending\": " INT64_FORMAT ", \"conflicts\": " INT64_FORMAT ", ",
					 DatumGetInt64(sm_col(0, 1, &isnull)),
					 DatumGetInt64(sm_col(0, 2, &isnull)));
	oldest = sm_col(0, 3, &isnull);
	add_time(buf, "oldest", isnull ? 0 : DatumGetTimestampTz(oldest));
	appendStringInfoChar(buf, '}');
	sm_leave(&session);
}

static void
add_worker(StringInfo buf)
{
	int			pid = 0;
	TimestampTz started = 0;
	TimestampTz last = 0;

	(void) sm_worker_status(&pid, &started, &last);
	appendStringInfo(buf, "\"worker\": {\"alive\": %s, \"pid\": ", pid != 0 ? "true" : "false");
	if (pid != 0)
		appendStringInfo(buf, "%d", pid);
	else
		appendStringInfoString(buf, "null");
	appendStringInfoString(buf, ", ");
	add_time(buf, "started_at", pid != 0 ? started : 0);
	appendStringInfoString(buf, ", ");
	add_time(buf, "last_run", last);
	appendStringInfoChar(buf, '}');
}

static void
add_audit_queue(StringInfo buf)
{
	SmAuditQueueStats st;

	if (!sm_audit_queue_stats(&st))
	{
		appendStringInfoString(buf, "\"audit_queue\": null");
		return;
	}
	appendStringInfo(buf,
					 "\"audit_queue\": {\"pending\": %d, \"capacity\": %d, "
					 "\"enqueued\": " UINT64_FORMAT ", \"flushed\": " UINT64_FORMAT
					 ", \"rejected\": " UINT64_FORMAT "}",
					 st.used, st.capacity, st.enqueued, st.flushed, st.rejected);
}

static void
add_logging(StringInfo buf)
{
	SmLogWarning w[SM_LOG_MAX_WARNINGS];
	int			n = sm_loghygiene_check(w, SM_LOG_MAX_WARNINGS);

	appendStringInfo(buf,
					 "\"logging\": {\"safe\": %s, \"strict_logging\": %s, \"redact_logs\": %s, "
					 "\"suppressed\": " UINT64_FORMAT ", \"redacted\": " UINT64_FORMAT
					 ", \"warnings\": [",
					 n == 0 ? "true" : "false",
					 sm_strict_logging ? "true" : "false",
					 sm_redact_logs ? "true" : "false",
					 sm_log_suppressions(), sm_log_redactions());
	for (int i = 0; i < n; i++)
	{
		appendStringInfoString(buf, i > 0 ? ", {" : "{");
		add_string(buf, "setting", w[i].setting);
		appendStringInfoString(buf, ", ");
		add_string(buf, "value", w[i].value);
		appendStringInfoString(buf, ", ");
		add_string(buf, "reason", w[i].reason);
		appendStringInfoString(buf, ", ");
		add_string(buf, "safe", w[i].safe);
		appendStringInfoChar(buf, '}');
	}
	appendStringInfoString(buf, "]}");
}

static void
add_backends(StringInfo buf)
{
	SmBreakerState b[SM_HTTP_MAX_BREAKERS];
	int			n = sm_http_breakers(b, SM_HTTP_MAX_BREAKERS);

	appendStringInfoString(buf, "\"backends\": [");
	for (int i = 0; i < n; i++)
	{
		appendStringInfoString(buf, i > 0 ? ", {" : "{");
		add_string(buf, "endpoint", b[i].endpoint);
		appendStringInfo(buf, ", \"reachable\": %s, \"failures\": %d, ",
						 b[i].open ? "false" : "true", b[i].failures);
		add_time(buf, "open_until", b[i].open ? b[i].open_until : 0);
		appendStringInfoString(buf, ", ");
		add_time(buf, "last_used", b[i].last_used);
		appendStringInfoChar(buf, '}');
	}
	appendStringInfoChar(buf, ']');
}

/* SQL: secret_health() returns jsonb */
Datum
secret_health(PG_FUNCTION_ARGS)
{
	StringInfoData buf;
	bool		loaded;

	sm_check_preloaded();
	if (!superuser() && !has_privs_of_role(GetUserId(), ROLE_PG_MONITOR))
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied to read the health of the secret store"),
				 errdetail("Only superusers and members of pg_monitor read secret_health().")));

	loaded = sm_keyring_root_loaded();
	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"key_loaded\": %s, \"sealed\": %s, ",
					 loaded ? "true" : "false", loaded ? "false" : "true");
	add_worker(&buf);
	appendStringInfoString(&buf, ", ");
	add_audit_queue(&buf);
	appendStringInfoString(&buf, ", ");
	add_outbox(&buf);
	appendStringInfoString(&buf, ", ");
	add_logging(&buf);
	appendStringInfoString(&buf, ", ");
	add_backends(&buf);
	appendStringInfoChar(&buf, '}');
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
