/*-------------------------------------------------------------------------
 *
 * events.c
 *		The per-tenant event feed, NOTIFY, and delivery to sinks.
 *
 * Every change to a secret appends an event: what happened (kind), to
 * which secret (id, path, version), by whom, and never a value.  Events
 * are collected in memory while the transaction runs -- dropped with a
 * subtransaction that rolls back -- and written just before commit
 * (XACT_EVENT_PRE_COMMIT).  There each tenant's events take consecutive
 * numbers from the tenant's counter row, whose lock is held only from
 * that moment to the commit: the feed of a tenant is gap-free and grows in
 * commit order, so a reader that remembers the last number it saw
 * (secret_events(since)) never misses an event.  Taking the counter last
 * also means it is always the last lock a writer takes, so it cannot be
 * part of a deadlock.
 *
 * Each event is also announced with NOTIFY secret_mgmt, whose payload is
 * the event's random opaque id and nothing else: LISTEN is not access
 * controlled, so the payload tells another tenant nothing.
 *
 * Sinks (webhooks, RabbitMQ) get one delivery row per event, written in
 * the same transaction as the event.  The worker delivers them in event
 * order per sink (sm_events_deliver): it reads a batch and commits, sends
 * with no transaction open and no lock held, then records the outcome in
 * a new transaction.  A failed send stops that sink's batch and retries
 * later with exponential backoff, so a sink that is down delays its events
 * and loses none.  Delivery is at least once (a crash between sending and
 * recording sends again); every message carries the event's opaque id for
 * receivers to drop repeats.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "audit.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "crypto.h"
#include "acl.h"
#include "events.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "query.h"
#include "store.h"
#include "tenant.h"
#include "types.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(secret_events);
PG_FUNCTION_INFO_V1(secret_sink_create);
PG_FUNCTION_INFO_V1(secret_sink_drop);
PG_FUNCTION_INFO_V1(secret_sinks);
PG_FUNCTION_INFO_V1(secret_deliveries);

/* An event waiting for its transaction to commit. */
typedef struct PendingEvent
{
	int			level;			/* subtransaction nesting level */
	char	   *tenant;
	char	   *kind;
	bool		has_secret;
	pg_uuid_t	secret_id;
	char	   *path;
	int32		version;
	char	   *actor;
	char	   *detail;			/* JSON object text, or NULL */
} PendingEvent;

static List *pending_events = NIL;	/* in TopTransactionContext */
static bool wake_worker = false;

static void flush_events(void);

/* Keep the events of committed subtransactions, drop those that aborted. */
static void
events_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	ListCell   *lc;

	if (pending_events == NIL)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		List	   *keep = NIL;
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

		foreach(lc, pending_events)
		{
			PendingEvent *e = lfirst(lc);

			if (e->level < level)
				keep = lappend(keep, e);
		}
		MemoryContextSwitchTo(old);
		pending_events = keep;
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		foreach(lc, pending_events)
		{
			PendingEvent *e = lfirst(lc);

			if (e->level >= level)
				e->level = level - 1;
		}
	}
}

/* Write the events just before commit; wake the worker after it. */
static void
events_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			if (pending_events != NIL)
				flush_events();
			break;
		case XACT_EVENT_COMMIT:
			pending_events = NIL;
			if (wake_worker)
				sm_worker_wake();
			wake_worker = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
			pending_events = NIL;
			wake_worker = false;
			break;
		default:
			break;
	}
}

/* Register the transaction callbacks (from _PG_init). */
void
sm_events_init(void)
{
	RegisterXactCallback(events_xact_callback, NULL);
	RegisterSubXactCallback(events_subxact_callback, NULL);
}

/*
 * Record an event of the current transaction.  `detail` is a JSON object
 * (or NULL) with ids, states and times only -- never a value.
 */
void
sm_event_emit(const char *tenant, const char *kind, const pg_uuid_t *secret_id,
			  const char *path, int32 version, const char *actor,
			  const char *detail)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	PendingEvent *e = palloc0(sizeof(PendingEvent));

	e->level = GetCurrentTransactionNestLevel();
	e->tenant = pstrdup(tenant);
	e->kind = pstrdup(kind);
	if (secret_id)
	{
		e->has_secret = true;
		memcpy(&e->secret_id, secret_id, sizeof(pg_uuid_t));
	}
	e->path = path ? pstrdup(path) : NULL;
	e->version = version;
	e->actor = pstrdup(actor ? actor : "");
	e->detail = detail ? pstrdup(detail) : NULL;
	pending_events = lappend(pending_events, e);
	MemoryContextSwitchTo(old);
}

/* Write the pending events of one tenant, numbered from the counter. */
static void
flush_tenant(const char *tenant, List *events)
{
	static SmStmt counter = {
		"INSERT INTO secret_mgmt.secret_event_counter AS c (tenant_id, last_event_id)"
		" VALUES ($1, $2)"
		" ON CONFLICT (tenant_id) DO UPDATE"
		" SET last_event_id = c.last_event_id OPERATOR(pg_catalog.+) EXCLUDED.last_event_id"
		" RETURNING last_event_id",
		2, {TEXTOID, INT8OID}
	};
	static SmStmt insert = {
		"INSERT INTO secret_mgmt.secret_event"
		" (tenant_id, event_id, notify_id, kind, secret_id, path, version, actor, detail)"
		" VALUES ($1, $2, pg_catalog.gen_random_uuid(), $3, $4, $5, $6, $7,"
		"         COALESCE($8::pg_catalog.jsonb, '{}'::pg_catalog.jsonb))"
		" RETURNING notify_id::pg_catalog.text",
		8, {TEXTOID, INT8OID, TEXTOID, UUIDOID, TEXTOID, INT4OID, TEXTOID, TEXTOID}
	};
	static SmStmt deliveries = {
		"INSERT INTO secret_mgmt.secret_delivery (tenant_id, sink, event_id)"
		" SELECT s.tenant_id, s.name, e"
		"   FROM secret_mgmt.secret_sink s,"
		"        pg_catalog.generate_series($2::pg_catalog.int8, $3::pg_catalog.int8) AS e"
		"  WHERE s.tenant_id OPERATOR(pg_catalog.=) $1 AND s.enabled",
		3, {TEXTOID, INT8OID, INT8OID}
	};
	Datum		args[8];
	char		nulls[8];
	int64		last;
	int64		first;
	int64		id;
	bool		isnull;
	ListCell   *lc;

	args[0] = CStringGetTextDatum(tenant);
	args[1] = Int64GetDatum((int64) list_length(events));
	if (sm_exec(&counter, args, NULL, 0) != 1)
		elog(ERROR, "could not number events");
	last = DatumGetInt64(sm_col(0, 1, &isnull));
	first = last - list_length(events) + 1;

	id = first;
	foreach(lc, events)
	{
		PendingEvent *e = lfirst(lc);

		memset(nulls, ' ', sizeof(nulls));
		args[1] = Int64GetDatum(id);
		args[2] = CStringGetTextDatum(e->kind);
		if (e->has_secret)
			args[3] = UUIDPGetDatum(&e->secret_id);
		else
			nulls[3] = 'n';
		if (e->path)
			args[4] = CStringGetTextDatum(e->path);
		else
			nulls[4] = 'n';
		if (e->version > 0)
			args[5] = Int32GetDatum(e->version);
		else
			nulls[5] = 'n';
		args[6] = CStringGetTextDatum(e->actor);
		if (e->detail)
			args[7] = CStringGetTextDatum(e->detail);
		else
			nulls[7] = 'n';
		if (sm_exec(&insert, args, nulls, 0) != 1)
			elog(ERROR, "could not insert event");
		Async_Notify("secret_mgmt", sm_col_text(0, 1));
		id++;
	}

	args[1] = Int64GetDatum(first);
	args[2] = Int64GetDatum(last);
	if (sm_exec(&deliveries, args, NULL, 0) > 0)
		wake_worker = true;
}

/* Write every pending event, grouped by tenant in first-seen order. */
static void
flush_events(void)
{
	SmSession	session;
	List	   *events = pending_events;

	pending_events = NIL;
	PushActiveSnapshot(GetTransactionSnapshot());
	sm_enter(&session);
	while (events != NIL)
	{
		PendingEvent *head = linitial(events);
		List	   *mine = NIL;
		List	   *rest = NIL;
		ListCell   *lc;

		foreach(lc, events)
		{
			PendingEvent *e = lfirst(lc);

			if (strcmp(e->tenant, head->tenant) == 0)
				mine = lappend(mine, e);
			else
				rest = lappend(rest, e);
		}
		flush_tenant(head->tenant, mine);
		events = rest;
	}
	sm_leave(&session);
	PopActiveSnapshot();
}

/*
 * SQL: secret_events(since, max_events) returns the caller's tenant's
 * events numbered above `since`, oldest first.
 */
Datum
secret_events(PG_FUNCTION_ARGS)
{
	static SmStmt stmt = {
		"SELECT event_id, occurred_at, kind, path, version, actor, detail,"
		"       notify_id::pg_catalog.text"
		"  FROM secret_mgmt.secret_event"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1"
		"   AND event_id OPERATOR(pg_catalog.>) $2"
		" ORDER BY event_id LIMIT $3",
		3, {TEXTOID, INT8OID, INT4OID}
	};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SmSession	session;
	SmCaller	c;
	Datum		args[3];
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, NULL);
	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = Int64GetDatum(PG_ARGISNULL(0) ? 0 : PG_GETARG_INT64(0));
	args[2] = Int32GetDatum(PG_ARGISNULL(1) ? 1000 : Max(PG_GETARG_INT32(1), 0));
	n = sm_exec(&stmt, args, NULL, 0);
	for (int i = 0; i < n; i++)
	{
		char	   *path = sm_col_text(i, 4);

		/* Events of a path go to those who may list it; others to admins. */
		if (path ? !sm_acl_allows(&c, path, SM_CAP_LIST) : !c.is_admin)
			continue;
		sm_put_row(rsinfo, i);
	}
	sm_leave(&session);
	return (Datum) 0;
}

/* A string field of a jsonb object, or NULL. */
static char *
config_text(Jsonb *jb, const char *key)
{
	JsonbValue	k;
	JsonbValue *v;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k);
	if (v == NULL)
		return NULL;
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	if (v->type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out,
												   NumericGetDatum(v->val.numeric)));
	return NULL;
}

static int
config_int(Jsonb *jb, const char *key, int dflt, int min, int max)
{
	char	   *s = config_text(jb, key);
	long		v;
	char	   *end;

	if (s == NULL)
		return dflt;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sink setting \"%s\" must be a whole number from %d to %d",
						key, min, max)));
	return (int) v;
}

/* Check a sink's configuration when it is created. */
static void
check_sink_config(const char *kind, Jsonb *config, const char *credentials_path)
{
	if (!JB_ROOT_IS_OBJECT(config))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sink config must be a JSON object")));
	if (strcmp(kind, "webhook") == 0)
	{
		char	   *url = config_text(config, "url");

		if (url == NULL || strncmp(url, "https://", 8) != 0 || strlen(url) <= 8)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a webhook sink needs an \"url\" starting with https://")));
		if (credentials_path == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a webhook sink needs credentials_path"),
					 errdetail("The secret at that path is the key that signs every request (HMAC-SHA256).")));
		(void) config_int(config, "timeout_ms", 10000, 100, 600000);
	}
	else if (strcmp(kind, "rabbitmq") == 0)
	{
		if (config_text(config, "host") == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a rabbitmq sink needs a \"host\"")));
		if (config_text(config, "routing_key") == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a rabbitmq sink needs a \"routing_key\"")));
		if (credentials_path == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a rabbitmq sink needs credentials_path"),
					 errdetail("The secret at that path is a JSON object with \"username\" and \"password\".")));
		(void) config_int(config, "port", 5672, 1, 65535);
		(void) config_int(config, "timeout_ms", 10000, 100, 600000);
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown sink kind \"%s\"", kind),
				 errhint("Sink kinds are webhook and rabbitmq.")));
}

static void
require_admin(const SmCaller *c, const char *what)
{
	if (!c->is_admin)
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied to %s", what),
				 errdetail("Only tenant administrators manage event sinks.")));
}

static void
check_sink_name(const char *name)
{
	size_t		len = strlen(name);
	bool		ok = len >= 1 && len <= 63 && isalpha((unsigned char) name[0]);

	for (size_t i = 1; ok && i < len; i++)
	{
		unsigned char ch = (unsigned char) name[i];

		ok = isalnum(ch) || ch == '.' || ch == '_' || ch == '-';
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid sink name \"%s\"", name),
				 errdetail("A sink name is 1 to 63 letters, digits, '.', '_' or '-', starting with a letter.")));
}

/*
 * SQL: secret_sink_create(name, kind, config, credentials_path).  Events
 * from now on are delivered to it.  Credentials are a secret of the
 * tenant, named by path, never a literal.
 */
Datum
secret_sink_create(PG_FUNCTION_ARGS)
{
	static SmStmt insert = {
		"INSERT INTO secret_mgmt.secret_sink"
		" (tenant_id, name, kind, config, credentials_path, created_by)"
		" VALUES ($1, $2, $3, $4, $5, $6)"
		" ON CONFLICT (tenant_id, name) DO NOTHING",
		6, {TEXTOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, TEXTOID}
	};
	SmSession	session;
	SmCaller	c;
	char	   *name;
	char	   *kind;
	char	   *cred;
	Datum		args[6];
	char		nulls[6] = "      ";

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name, kind and config must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	kind = text_to_cstring(PG_GETARG_TEXT_PP(1));
	cred = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	check_sink_name(name);
	if (cred)
		sm_store_check_path(cred);
	check_sink_config(kind, PG_GETARG_JSONB_P(2), cred);

	sm_audit_begin("sink_create", name);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, NULL);
	require_admin(&c, "create an event sink");
	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = CStringGetTextDatum(name);
	args[2] = CStringGetTextDatum(kind);
	args[3] = PG_GETARG_DATUM(2);
	if (cred)
		args[4] = CStringGetTextDatum(cred);
	else
		nulls[4] = 'n';
	args[5] = CStringGetTextDatum(c.rolename);
	if (sm_exec(&insert, args, nulls, 0) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("event sink \"%s\" already exists", name)));
	sm_audit_write(&c, "sink_create", name, NULL, 0, NULL, 0);
	sm_leave(&session);
	PG_RETURN_VOID();
}

/* SQL: secret_sink_drop(name); its undelivered events are dropped too */
Datum
secret_sink_drop(PG_FUNCTION_ARGS)
{
	static SmStmt drop = {
		"DELETE FROM secret_mgmt.secret_sink"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND name OPERATOR(pg_catalog.=) $2",
		2, {TEXTOID, TEXTOID}
	};
	SmSession	session;
	SmCaller	c;
	char	   *name;
	Datum		args[2];

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	sm_audit_begin("sink_drop", name);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, NULL);
	require_admin(&c, "drop an event sink");
	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = CStringGetTextDatum(name);
	if (sm_exec(&drop, args, NULL, 0) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("event sink \"%s\" does not exist", name)));
	sm_audit_write(&c, "sink_drop", name, NULL, 0, NULL, 0);
	sm_leave(&session);
	PG_RETURN_VOID();
}

/* SQL: secret_sinks() returns the tenant's sinks and their delivery state */
Datum
secret_sinks(PG_FUNCTION_ARGS)
{
	static SmStmt stmt = {
		"SELECT s.name, s.kind, s.config, s.credentials_path, s.enabled,"
		"       (SELECT pg_catalog.count(*) FROM secret_mgmt.secret_delivery d"
		"         WHERE d.tenant_id OPERATOR(pg_catalog.=) s.tenant_id"
		"           AND d.sink OPERATOR(pg_catalog.=) s.name"
		"           AND d.state OPERATOR(pg_catalog.=) 'pending'),"
		"       (SELECT pg_catalog.count(*) FROM secret_mgmt.secret_delivery d"
		"         WHERE d.tenant_id OPERATOR(pg_catalog.=) s.tenant_id"
		"           AND d.sink OPERATOR(pg_catalog.=) s.name"
		"           AND d.state OPERATOR(pg_catalog.=) 'delivered'),"
		"       (SELECT pg_catalog.max(d.delivered_at) FROM secret_mgmt.secret_delivery d"
		"         WHERE d.tenant_id OPERATOR(pg_catalog.=) s.tenant_id"
		"           AND d.sink OPERATOR(pg_catalog.=) s.name),"
		"       (SELECT d.last_error FROM secret_mgmt.secret_delivery d"
		"         WHERE d.tenant_id OPERATOR(pg_catalog.=) s.tenant_id"
		"           AND d.sink OPERATOR(pg_catalog.=) s.name"
		"           AND d.state OPERATOR(pg_catalog.=) 'pending'"
		"           AND d.last_error IS NOT NULL"
		"         ORDER BY d.event_id LIMIT 1)"
		"  FROM secret_mgmt.secret_sink s"
		" WHERE s.tenant_id OPERATOR(pg_catalog.=) $1"
		" ORDER BY s.name",
		1, {TEXTOID}
	};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SmSession	session;
	SmCaller	c;
	Datum		arg;
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, NULL);
	require_admin(&c, "list event sinks");
	arg = CStringGetTextDatum(c.tenant);
	n = sm_exec(&stmt, &arg, NULL, 0);
	for (int i = 0; i < n; i++)
		sm_put_row(rsinfo, i);
	sm_leave(&session);
	return (Datum) 0;
}

/* SQL: secret_deliveries(sink, since) returns the delivery state per event */
Datum
secret_deliveries(PG_FUNCTION_ARGS)
{
	static SmStmt stmt = {
		"SELECT event_id, state, attempts, next_attempt_at, last_error, delivered_at"
		"  FROM secret_mgmt.secret_delivery"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND sink OPERATOR(pg_catalog.=) $2"
		"   AND event_id OPERATOR(pg_catalog.>) $3"
		" ORDER BY event_id LIMIT 10000",
		3, {TEXTOID, TEXTOID, INT8OID}
	};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SmSession	session;
	SmCaller	c;
	Datum		args[3];
	int			n;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("sink must not be null")));
	InitMaterializedSRF(fcinfo, 0);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, NULL);
	require_admin(&c, "read deliveries");
	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = PG_GETARG_DATUM(0);
	args[2] = Int64GetDatum(PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1));
	n = sm_exec(&stmt, args, NULL, 0);
	for (int i = 0; i < n; i++)
		sm_put_row(rsinfo, i);
	sm_leave(&session);
	return (Datum) 0;
}

/* ---------------------------------------------------------------------
 * Delivery (the worker)
 * ---------------------------------------------------------------------
 */

/* One sink's share of a delivery batch. */
typedef struct SinkBatch
{
	char	   *tenant;
	char	   *sink;
	bool		is_webhook;
	char	   *credentials_path;
	/* settings, read while the transaction is open */
	char	   *url;
	char	   *ca_file;
	char	   *host;
	int			port;
	char	   *vhost;
	char	   *exchange;
	char	   *routing_key;
	int			timeout_ms;
	/* credentials: secure allocations, wiped after the batch */
	uint8	   *key;
	size_t		key_len;
	char	   *user;
	char	   *password;
	SmOutMessage *msgs;
	int			n;
	int			sent;			/* how many were accepted, in order */
	char		error[256];
} SinkBatch;

/* JSON body of an event message (ids and metadata only). */
static void
build_body(SmOutMessage *m, const char *tenant, const char *kind, const char *path,
		   bool version_null, int32 version, const char *actor,
		   TimestampTz at, const char *detail)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"id\": \"%s\", \"event_id\": " INT64_FORMAT ", \"tenant\": ",
					 m->message_id, m->event_id);
	escape_json(&buf, tenant);
	appendStringInfoString(&buf, ", \"kind\": ");
	escape_json(&buf, kind);
	appendStringInfoString(&buf, ", \"path\": ");
	if (path)
		escape_json(&buf, path);
	else
		appendStringInfoString(&buf, "null");
	if (version_null)
		appendStringInfoString(&buf, ", \"version\": null");
	else
		appendStringInfo(&buf, ", \"version\": %d", version);
	appendStringInfoString(&buf, ", \"actor\": ");
	escape_json(&buf, actor ? actor : "");
	appendStringInfoString(&buf, ", \"occurred_at\": ");
	escape_json(&buf, timestamptz_to_str(at));
	appendStringInfo(&buf, ", \"detail\": %s}", detail ? detail : "{}");
	m->body = buf.data;
	m->body_len = buf.len;
	m->timestamp = (int64) (at / USECS_PER_SEC +
							(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY);
}

/* Copy a sink's settings out of its configuration. */
static void
read_settings(SinkBatch *b, const char *kind, Jsonb *config)
{
	b->is_webhook = strcmp(kind, "webhook") == 0;
	b->timeout_ms = config_int(config, "timeout_ms", 10000, 100, 600000);
	if (b->is_webhook)
	{
		b->url = config_text(config, "url");
		b->ca_file = config_text(config, "ca_file");
	}
	else
	{
		b->host = config_text(config, "host");
		b->port = config_int(config, "port", 5672, 1, 65535);
		b->vhost = config_text(config, "vhost");
		if (b->vhost == NULL)
			b->vhost = "/";
		b->exchange = config_text(config, "exchange");
		if (b->exchange == NULL)
			b->exchange = "";
		b->routing_key = config_text(config, "routing_key");
	}
}

/*
 * Read a batch of due deliveries into `cxt`, grouped by sink in event
 * order; returns the groups.
 */
static List *
read_batch(int max_messages, MemoryContext cxt)
{
	static SmStmt due = {
		"SELECT d.tenant_id, d.sink, s.kind, s.config, s.credentials_path,"
		"       d.event_id, e.notify_id::pg_catalog.text, e.kind, e.path, e.version,"
		"       e.actor, e.occurred_at, e.detail::pg_catalog.text"
		"  FROM secret_mgmt.secret_delivery d"
		"  JOIN secret_mgmt.secret_sink s"
		"    ON s.tenant_id OPERATOR(pg_catalog.=) d.tenant_id"
		"   AND s.name OPERATOR(pg_catalog.=) d.sink"
		"  JOIN secret_mgmt.secret_event e"
		"    ON e.tenant_id OPERATOR(pg_catalog.=) d.tenant_id"
		"   AND e.event_id OPERATOR(pg_catalog.=) d.event_id"
		" WHERE d.state OPERATOR(pg_catalog.=) 'pending'"
		"   AND d.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()"
		"   AND s.enabled"
		" ORDER BY d.tenant_id, d.sink, d.event_id"
		" LIMIT $1",
		1, {INT4OID}
	};
	SmSession	session;
	Datum		arg = Int32GetDatum(max_messages);
	List	   *groups = NIL;
	SinkBatch  *cur = NULL;
	int			n;

	sm_enter(&session);
	n = sm_exec(&due, &arg, NULL, 0);
	for (int i = 0; i < n; i++)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);
		char	   *tenant = sm_col_text(i, 1);
		char	   *sink = sm_col_text(i, 2);
		SmOutMessage *m;
		bool		isnull;
		Datum		d;

		if (cur == NULL || strcmp(cur->tenant, tenant) != 0 || strcmp(cur->sink, sink) != 0)
		{
			cur = palloc0(sizeof(SinkBatch));
			cur->tenant = tenant;
			cur->sink = sink;
			read_settings(cur, sm_col_text(i, 3), DatumGetJsonbP(sm_col(i, 4, &isnull)));
			cur->credentials_path = sm_col_text(i, 5);
			cur->msgs = palloc0(sizeof(SmOutMessage) * n);
			groups = lappend(groups, cur);
		}
		m = &cur->msgs[cur->n++];
		m->event_id = DatumGetInt64(sm_col(i, 6, &isnull));
		m->message_id = sm_col_text(i, 7);
		d = sm_col(i, 10, &isnull);
		build_body(m, tenant, sm_col_text(i, 8), sm_col_text(i, 9), isnull,
				   isnull ? 0 : DatumGetInt32(d), sm_col_text(i, 11),
				   DatumGetTimestampTz(sm_col(i, 12, &isnull)), sm_col_text(i, 13));
		MemoryContextSwitchTo(old);
	}
	sm_leave(&session);
	return groups;
}

/* Copy a string field of a credential object into secure memory. */
static char *
secure_field(Jsonb *jb, const char *key)
{
	JsonbValue	k;
	JsonbValue *v;
	char	   *out;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k);
	if (v == NULL || v->type != jbvString)
		return NULL;
	out = sm_secure_alloc(v->val.string.len + 1);
	memcpy(out, v->val.string.val, v->val.string.len);
	out[v->val.string.len] = '\0';
	return out;
}

/*
 * Read each sink's credentials (a secret of its tenant, resolved as the
 * worker in that tenant) into secure memory in `cxt`.  A sink whose
 * credentials cannot be read gets that as its error for this batch; each
 * read runs in a subtransaction so that one failure spoils nothing else.
 */
static void
read_credentials(List *groups, MemoryContext cxt)
{
	ListCell   *lc;

	foreach(lc, groups)
	{
		SinkBatch  *b = lfirst(lc);
		ResourceOwner owner = CurrentResourceOwner;
		MemoryContext old = CurrentMemoryContext;

		if (b->credentials_path == NULL)
		{
			strlcpy(b->error, "the sink has no credentials", sizeof(b->error));
			continue;
		}
		BeginInternalSubTransaction(NULL);
		PG_TRY();
		{
			SmCaller	c;
			uint8	   *plain;
			size_t		len;

			sm_worker_caller(&c, b->tenant);
			MemoryContextSwitchTo(cxt);
			plain = sm_store_resolve(&c, b->credentials_path, "current", false, 0, &len);
			if (b->is_webhook)
			{
				b->key = plain;
				b->key_len = len;
			}
			else
			{
				Jsonb	   *jb = DatumGetJsonbP(sm_value_to_jsonb(plain, len));

				b->user = secure_field(jb, "username");
				b->password = secure_field(jb, "password");
				sm_wipe(jb, VARSIZE(jb));
				sm_wipe(plain, len);
				if (b->user == NULL || b->password == NULL)
					strlcpy(b->error,
							"credentials: not a JSON object with string \"username\" and \"password\"",
							sizeof(b->error));
			}
			MemoryContextSwitchTo(old);
			ReleaseCurrentSubTransaction();
			CurrentResourceOwner = owner;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(old);
			CurrentResourceOwner = owner;
			snprintf(b->error, sizeof(b->error), "credentials: %s", edata->message);
			FreeErrorData(edata);
		}
		PG_END_TRY();
	}
}

/* Send one sink's messages; sets b->sent and b->error. */
static void
send_batch(SinkBatch *b)
{
	b->sent = 0;
	if (b->error[0] != '\0')
		return;
	if (b->is_webhook)
		b->sent = sm_webhook_send(b->url, b->ca_file, b->timeout_ms,
								  b->key, b->key_len, b->msgs, b->n,
								  b->error, sizeof(b->error));
	else
		b->sent = sm_amqp_send(b->host, b->port, b->vhost, b->user, b->password,
							   b->exchange, b->routing_key, b->timeout_ms,
							   b->msgs, b->n, b->error, sizeof(b->error));
}

/* Record what was sent and schedule retries of the rest. */
static void
record_batch(List *groups)
{
	static SmStmt delivered = {
		"UPDATE secret_mgmt.secret_delivery"
		"   SET state = 'delivered', delivered_at = pg_catalog.now(),"
		"       attempts = attempts OPERATOR(pg_catalog.+) 1, last_error = NULL"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND sink OPERATOR(pg_catalog.=) $2"
		"   AND event_id OPERATOR(pg_catalog.=) ANY ($3)"
		"   AND state OPERATOR(pg_catalog.=) 'pending'",
		3, {TEXTOID, TEXTOID, INT8ARRAYOID}
	};
	static SmStmt failed = {
		"UPDATE secret_mgmt.secret_delivery"
		"   SET attempts = attempts OPERATOR(pg_catalog.+) 1, last_error = $4"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND sink OPERATOR(pg_catalog.=) $2"
		"   AND event_id OPERATOR(pg_catalog.=) $3"
		" RETURNING attempts",
		4, {TEXTOID, TEXTOID, INT8OID, TEXTOID}
	};
	static SmStmt postpone = {
		"UPDATE secret_mgmt.secret_delivery"
		"   SET next_attempt_at = pg_catalog.clock_timestamp()"
		"       OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $3::pg_catalog.float8 OPERATOR(pg_catalog./) 1000)"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND sink OPERATOR(pg_catalog.=) $2"
		"   AND state OPERATOR(pg_catalog.=) 'pending'",
		3, {TEXTOID, TEXTOID, INT8OID}
	};
	SmSession	session;
	ListCell   *lc;

	sm_enter(&session);
	foreach(lc, groups)
	{
		SinkBatch  *b = lfirst(lc);
		Datum		args[4];

		args[0] = CStringGetTextDatum(b->tenant);
		args[1] = CStringGetTextDatum(b->sink);
		if (b->sent > 0)
		{
			Datum	   *ids = palloc(sizeof(Datum) * b->sent);

			for (int i = 0; i < b->sent; i++)
				ids[i] = Int64GetDatum(b->msgs[i].event_id);
			args[2] = PointerGetDatum(construct_array(ids, b->sent, INT8OID, 8,
													  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
			sm_exec(&delivered, args, NULL, 0);
			sm_worker_count(SM_COUNT_DELIVERED, b->sent);
		}
		if (b->sent < b->n)
		{
			int			attempts;

			args[2] = Int64GetDatum(b->msgs[b->sent].event_id);
			args[3] = CStringGetTextDatum(b->error[0] ? b->error : "not confirmed");
			if (sm_exec(&failed, args, NULL, 0) != 1)
				continue;
			attempts = sm_col_int32(0, 1);
			args[2] = Int64GetDatum(sm_backoff_ms(attempts));
			sm_exec(&postpone, args, NULL, 0);
			sm_worker_count(SM_COUNT_UNDELIVERED, 1);
			ereport(LOG,
					(errmsg("secret_mgmt: delivery to sink \"%s\" of tenant \"%s\" failed, attempt %d",
							b->sink, b->tenant, attempts),
					 errdetail_internal("%s", b->error)));
		}
	}
	sm_leave(&session);
}

/*
 * Deliver up to max_messages due events to their sinks.  Runs in the
 * worker with no transaction open; opens its own, and allocates in the
 * caller's (per-pass) memory context.  Returns how many messages it
 * attempted (0: nothing was due).
 */
int
sm_events_deliver(int max_messages)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *groups;
	ListCell   *lc;
	int			attempted = 0;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	groups = read_batch(max_messages, cxt);
	read_credentials(groups, cxt);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	if (groups == NIL)
		return 0;

	/* No transaction, no lock: the network may take its time. */
	foreach(lc, groups)
	{
		SinkBatch  *b = lfirst(lc);

		CHECK_FOR_INTERRUPTS();
		pgstat_report_activity(STATE_RUNNING, "delivering events");
		send_batch(b);
		attempted += b->n;
		if (b->key)
			sm_wipe(b->key, b->key_len);
		if (b->password)
			sm_wipe(b->password, strlen(b->password));
	}

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	record_batch(groups);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return attempted;
}
