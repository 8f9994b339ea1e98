/*-------------------------------------------------------------------------
 *
 * metrics.c
 *		Cluster-wide counters for operators: secret_metrics() and
 *		secret_metrics_prometheus().
 *
 * The counters live in shared memory and count from server start: a
 * restart (or a crash, which reinitialises shared memory) sets them back
 * to zero, as Prometheus expects of counters.  They are fed where the
 * facts are known:
 *
 *	- operations by action and outcome, from the audit trail's entry
 *	  points (audit.c): a write when its transaction commits, a read when
 *	  its value is served (whatever secret_mgmt.audit_reads says), a
 *	  refusal once per attempt where it is raised;
 *	- resolve latency, from secret_resolve*() (store.c), for resolves that
 *	  returned a value;
 *	- data-key cache hits and misses, from the keyring (keyring.c);
 *	- requests to external backends by outcome (http.c).
 *
 * Other figures are read from the subsystem that keeps them when the
 * metrics are read: the audit queue (flusher.c), the background worker's
 * counts (worker.c) and the open circuit breakers (http.c).
 *
 * Locking: none of its own.  Every counter here is a pg_atomic_uint64,
 * incremented with one atomic add, so the read path never waits; a reader
 * may see one counter of a pair (a histogram's sum and its buckets)
 * already moved and the other not yet, which scrapers tolerate.
 *
 * Labels name only fixed words of this file -- actions, outcomes, bucket
 * bounds -- never a tenant, a path, a principal or a value, so that the
 * number of series is bounded and one tenant learns nothing of another.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "common/shortest_dec.h"
#include "fmgr.h"
#include "funcapi.h"
#include "http.h"
#include "lib/stringinfo.h"
#include "loghygiene.h"
#include "metrics.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "secret_mgmt.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(secret_metrics);
PG_FUNCTION_INFO_V1(secret_metrics_prometheus);

/*
 * The actions of the audit trail, in the order they are exported.  An
 * action not listed here counts as "other".  "read" comes first: the hot
 * path counts it by index.
 */
static const char *const action_names[] = {
	"read", "render", "create", "update", "rollback", "label",
	"version_disable", "version_enable", "version_destroy",
	"delete", "restore", "purge", "set_expiry", "versions", "list",
	"grant", "deny", "revoke", "check", "explain_access", "grants",
	"rekey", "tenant_create", "member_add", "member_remove",
	"purge_protection", "use_tenant", "assume",
	"token_key_add", "token_key_remove", "broker_add", "broker_remove",
	"audit_verify", "audit_log", "audit_find_value",
	"set_rotation", "rotate", "rotation_create", "rotation_set", "rotation_test",
	"rotation_finish", "set_max_versions", "expired", "grace_ended", "purged",
	"version_pruned", "sink_create", "sink_drop", "migrate", "import",
	"outbox", "outbox_retry",
	"other"
};

#define NUM_ACTIONS		lengthof(action_names)
#define ACTION_READ		0
#define ACTION_OTHER	(NUM_ACTIONS - 1)
#define NUM_OUTCOMES	4

/* As SmAuditOutcome. */
static const char *const outcome_names[NUM_OUTCOMES] = {
	"ok", "denied", "not_found", "error"
};

static const char *const http_outcome_names[SM_HTTP_NUM_OUTCOMES] = {
	"success", "client_error", "retryable", "transport_error", "breaker_open"
};

/*
 * Resolve latency buckets: upper bounds in nanoseconds and as exported,
 * from 5 microseconds (a cached key, a warm index) to 1 second.
 */
static const int64 bucket_ns[] = {
	5000, 10000, 25000, 50000, 100000, 250000, 500000,
	1000000, 2500000, 5000000, 10000000, 25000000, 50000000,
	100000000, 250000000, 500000000, 1000000000
};
static const char *const bucket_le[] = {
	"5e-06", "1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005",
	"0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
	"0.1", "0.25", "0.5", "1"
};

#define NUM_BOUNDS		lengthof(bucket_ns)

StaticAssertDecl(lengthof(bucket_le) == lengthof(bucket_ns),
				 "every bucket bound needs its label");

typedef struct SmMetricsShared
{
	pg_atomic_uint64 operations[NUM_ACTIONS][NUM_OUTCOMES];
	pg_atomic_uint64 resolve_bucket[NUM_BOUNDS + 1];	/* the last: +Inf */
	pg_atomic_uint64 resolve_sum_ns;
	pg_atomic_uint64 data_key_hits;
	pg_atomic_uint64 data_key_misses;
	pg_atomic_uint64 http[SM_HTTP_NUM_OUTCOMES];
} SmMetricsShared;

static SmMetricsShared *metrics = NULL;

/* Shared memory request (secret_mgmt.c): the counters. */
void
sm_metrics_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(SmMetricsShared)));
}

/*
 * Shared memory startup (AddinShmemInitLock held): find the counters, or
 * create them at zero.
 */
void
sm_metrics_shmem_startup(void)
{
	bool		found;

	metrics = ShmemInitStruct("secret_mgmt metrics", sizeof(SmMetricsShared), &found);
	if (!found)
	{
		pg_atomic_uint64 *c = (pg_atomic_uint64 *) metrics;

		StaticAssertStmt(sizeof(SmMetricsShared) % sizeof(pg_atomic_uint64) == 0,
						 "the counters are an array of atomics");
		for (size_t i = 0; i < sizeof(SmMetricsShared) / sizeof(pg_atomic_uint64); i++)
			pg_atomic_init_u64(&c[i], 0);
	}
}

/* ---------------------------------------------------------------------
 * Feeding the counters
 * --------------------------------------------------------------------- */

/* The index of an audit action; "assume:<reason>" is "assume". */
static int
action_index(const char *action)
{
	size_t		len = strcspn(action, ":");

	for (int i = 0; i < ACTION_OTHER; i++)
		if (strlen(action_names[i]) == len && strncmp(action_names[i], action, len) == 0)
			return i;
	return ACTION_OTHER;
}

/* Count one attempt of `action` that ended with `outcome`. */
void
sm_metrics_operation(const char *action, SmAuditOutcome outcome)
{
	if (metrics == NULL || (int) outcome < 0 || (int) outcome >= NUM_OUTCOMES)
		return;
	pg_atomic_fetch_add_u64(&metrics->operations[action_index(action)][outcome], 1);
}

/* Count one value served by a read (the hot path: no name lookup). */
void
sm_metrics_read_served(void)
{
	if (metrics == NULL)
		return;
	pg_atomic_fetch_add_u64(&metrics->operations[ACTION_READ][SM_AUDIT_OK], 1);
}

/* A resolve that started at `start` returned its value. */
void
sm_metrics_resolve_done(instr_time start)
{
	instr_time	now;
	int64		ns;
	int			b = 0;

	if (metrics == NULL)
		return;
	INSTR_TIME_SET_CURRENT(now);
	INSTR_TIME_SUBTRACT(now, start);
	ns = (int64) INSTR_TIME_GET_NANOSEC(now);
	if (ns < 0)
		ns = 0;
	while (b < (int) NUM_BOUNDS && ns > bucket_ns[b])
		b++;
	pg_atomic_fetch_add_u64(&metrics->resolve_bucket[b], 1);
	pg_atomic_fetch_add_u64(&metrics->resolve_sum_ns, (uint64) ns);
}

/* A data key was found in this backend's cache (hit) or unwrapped (miss). */
void
sm_metrics_data_key(bool hit)
{
	if (metrics == NULL)
		return;
	pg_atomic_fetch_add_u64(hit ? &metrics->data_key_hits : &metrics->data_key_misses, 1);
}

/* One request to an external backend ended with `outcome`. */
void
sm_metrics_http(SmHttpOutcome outcome)
{
	if (metrics == NULL || (int) outcome < 0 || outcome >= SM_HTTP_NUM_OUTCOMES)
		return;
	pg_atomic_fetch_add_u64(&metrics->http[outcome], 1);
}

/* ---------------------------------------------------------------------
 * Reading them
 * --------------------------------------------------------------------- */

/* A metric family: its name, Prometheus type and help text. */
typedef struct Family
{
	const char *name;
	const char *type;
	const char *help;
} Family;

/* Every family exported, in order. */
static const Family families[] = {
#define F_OPERATIONS		0
	{"secret_mgmt_operations_total", "counter",
	"Attempts by audit action and outcome: writes when committed, reads when a value is served, refusals when raised."},
#define F_RESOLVE			1
	{"secret_mgmt_resolve_duration_seconds", "histogram",
	"Time secret_resolve() took to return a value."},
#define F_DEK_HITS			2
	{"secret_mgmt_data_key_cache_hits_total", "counter",
	"Data keys found unwrapped in a backend's cache."},
#define F_DEK_MISSES		3
	{"secret_mgmt_data_key_cache_misses_total", "counter",
	"Data keys that had to be unwrapped by the root key or the KMS."},
#define F_QUEUE_DEPTH		4
	{"secret_mgmt_audit_queue_depth", "gauge",
	"Audit records waiting in shared memory for the audit flusher."},
#define F_QUEUE_CAPACITY	5
	{"secret_mgmt_audit_queue_capacity", "gauge",
	"Slots of the audit queue."},
#define F_QUEUED			6
	{"secret_mgmt_audit_queued_total", "counter",
	"Audit records put in the queue (refusals, asynchronous reads)."},
#define F_FLUSHED			7
	{"secret_mgmt_audit_flushed_total", "counter",
	"Queued audit records written to secret_audit by a flusher."},
#define F_QUEUE_FULL		8
	{"secret_mgmt_audit_queue_full_total", "counter",
	"Requests refused because the audit queue stayed full (SQLSTATE 53000); should stay zero."},
#define F_ROTATIONS			9
	{"secret_mgmt_rotations_total", "counter",
	"Rotations the background worker completed."},
#define F_ROTATION_FAILURES	10
	{"secret_mgmt_rotation_failures_total", "counter",
	"Rotation steps that failed in the background worker (each is retried)."},
#define F_DELIVERED			11
	{"secret_mgmt_events_delivered_total", "counter",
	"Events the background worker delivered to sinks."},
#define F_UNDELIVERED		12
	{"secret_mgmt_event_delivery_failures_total", "counter",
	"Deliveries to a sink that failed (each is retried)."},
#define F_EXPIRED			13
	{"secret_mgmt_secrets_expired_total", "counter",
	"Secrets the background worker marked expired."},
#define F_WARNED			14
	{"secret_mgmt_expiry_warnings_total", "counter",
	"Expiry warnings the background worker emitted."},
#define F_PURGED			15
	{"secret_mgmt_secrets_purged_total", "counter",
	"Deleted secrets the background worker purged after the recovery window."},
#define F_PRUNED			16
	{"secret_mgmt_versions_pruned_total", "counter",
	"Versions the background worker destroyed beyond max_versions."},
#define F_HTTP				17
	{"secret_mgmt_backend_requests_total", "counter",
	"Requests to external backends and KMS by outcome."},
#define F_BREAKERS			18
	{"secret_mgmt_backend_breakers_open", "gauge",
	"Backend endpoints whose circuit breaker currently refuses requests."},
#define F_LOG_SUPPRESSED	19
	{"secret_mgmt_log_suppressed_total", "counter",
	"Server log messages about value calls that secret_mgmt.redact_logs withheld."},
#define F_LOG_REDACTED		20
	{"secret_mgmt_log_redacted_total", "counter",
	"Server log messages about value calls that secret_mgmt.redact_logs redacted."},
};

/* One sample: a family, a name suffix, up to two labels, a value. */
typedef struct Sample
{
	int			family;
	const char *suffix;
	const char *key[2];
	const char *val[2];
	double		value;
} Sample;

typedef struct Samples
{
	Sample	   *s;
	int			n;
	int			cap;
} Samples;

static void
add(Samples *out, int family, const char *suffix, double value,
	const char *k1, const char *v1, const char *k2, const char *v2)
{
	Sample	   *s;

	if (out->n == out->cap)
	{
		out->cap = out->cap ? out->cap * 2 : 64;
		out->s = out->s ? repalloc(out->s, sizeof(Sample) * out->cap) :
			palloc(sizeof(Sample) * out->cap);
	}
	s = &out->s[out->n++];
	s->family = family;
	s->suffix = suffix;
	s->key[0] = k1;
	s->val[0] = v1;
	s->key[1] = k2;
	s->val[1] = v2;
	s->value = value;
}

#define read_u64(c)		((double) pg_atomic_read_u64(c))

/* Refuse unless the caller monitors the cluster. */
static void
require_monitor(void)
{
	sm_check_preloaded();
	if (!has_privs_of_role(GetUserId(), ROLE_PG_MONITOR))
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied to read secret_mgmt metrics"),
				 errdetail("Only superusers and members of pg_monitor read the metrics."),
				 errhint("GRANT pg_monitor to the role that scrapes them.")));
	if (metrics == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("secret_mgmt must be loaded via shared_preload_libraries")));
}

/* Every sample, families in order. */
static void
collect(Samples *out)
{
	SmAuditQueueStats q;
	int64		counts[SM_NUM_COUNTS];
	uint64		cumulative = 0;

	memset(out, 0, sizeof(*out));

	/* Operations: only the pairs that happened, to keep the output short. */
	for (int a = 0; a < (int) NUM_ACTIONS; a++)
		for (int o = 0; o < NUM_OUTCOMES; o++)
		{
			uint64		v = pg_atomic_read_u64(&metrics->operations[a][o]);

			if (v > 0)
				add(out, F_OPERATIONS, "", (double) v,
					"action", action_names[a], "outcome", outcome_names[o]);
		}

	/* The histogram: cumulative buckets; the count is the +Inf bucket. */
	for (int b = 0; b <= (int) NUM_BOUNDS; b++)
	{
		cumulative += pg_atomic_read_u64(&metrics->resolve_bucket[b]);
		add(out, F_RESOLVE, "_bucket", (double) cumulative,
			"le", b < (int) NUM_BOUNDS ? bucket_le[b] : "+Inf", NULL, NULL);
	}
	add(out, F_RESOLVE, "_sum",
		(double) pg_atomic_read_u64(&metrics->resolve_sum_ns) / 1e9,
		NULL, NULL, NULL, NULL);
	add(out, F_RESOLVE, "_count", (double) cumulative, NULL, NULL, NULL, NULL);

	add(out, F_DEK_HITS, "", read_u64(&metrics->data_key_hits), NULL, NULL, NULL, NULL);
	add(out, F_DEK_MISSES, "", read_u64(&metrics->data_key_misses), NULL, NULL, NULL, NULL);

	sm_audit_queue_stats(&q);
	add(out, F_QUEUE_DEPTH, "", q.used, NULL, NULL, NULL, NULL);
	add(out, F_QUEUE_CAPACITY, "", q.capacity, NULL, NULL, NULL, NULL);
	add(out, F_QUEUED, "", (double) q.enqueued, NULL, NULL, NULL, NULL);
	add(out, F_FLUSHED, "", (double) q.flushed, NULL, NULL, NULL, NULL);
	add(out, F_QUEUE_FULL, "", (double) q.rejected, NULL, NULL, NULL, NULL);

	sm_worker_counts(counts);
	add(out, F_ROTATIONS, "", counts[SM_COUNT_ROTATIONS], NULL, NULL, NULL, NULL);
	add(out, F_ROTATION_FAILURES, "", counts[SM_COUNT_FAILURES], NULL, NULL, NULL, NULL);
	add(out, F_DELIVERED, "", counts[SM_COUNT_DELIVERED], NULL, NULL, NULL, NULL);
	add(out, F_UNDELIVERED, "", counts[SM_COUNT_UNDELIVERED], NULL, NULL, NULL, NULL);
	add(out, F_EXPIRED, "", counts[SM_COUNT_EXPIRED], NULL, NULL, NULL, NULL);
	add(out, F_WARNED, "", counts[SM_COUNT_WARNED], NULL, NULL, NULL, NULL);
	add(out, F_PURGED, "", counts[SM_COUNT_PURGED], NULL, NULL, NULL, NULL);
	add(out, F_PRUNED, "", counts[SM_COUNT_PRUNED], NULL, NULL, NULL, NULL);

	for (int o = 0; o < SM_HTTP_NUM_OUTCOMES; o++)
		add(out, F_HTTP, "", read_u64(&metrics->http[o]),
			"outcome", http_outcome_names[o], NULL, NULL);
	add(out, F_BREAKERS, "", sm_http_breakers_open(), NULL, NULL, NULL, NULL);
	add(out, F_LOG_SUPPRESSED, "", sm_log_suppressions(), NULL, NULL, NULL, NULL);
	add(out, F_LOG_REDACTED, "", sm_log_redactions(), NULL, NULL, NULL, NULL);
}

/* A value as Prometheus and jsonb read it back exactly. */
static void
append_value(StringInfo buf, double v)
{
	char		digits[DOUBLE_SHORTEST_DECIMAL_LEN];

	double_to_shortest_decimal_buf(v, digits);
	appendStringInfoString(buf, digits);
}

/*
 * SQL: secret_metrics() returns table (name text, labels jsonb, value
 * double precision).  One row per sample, named as in the exposition
 * format (histogram rows end in _bucket, _sum and _count).
 */
Datum
secret_metrics(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Samples		samples;
	StringInfoData labels;

	require_monitor();
	InitMaterializedSRF(fcinfo, 0);
	collect(&samples);
	initStringInfo(&labels);
	for (int i = 0; i < samples.n; i++)
	{
		Sample	   *s = &samples.s[i];
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		resetStringInfo(&labels);
		appendStringInfoChar(&labels, '{');
		for (int k = 0; k < 2 && s->key[k]; k++)
			appendStringInfo(&labels, "%s\"%s\": \"%s\"", k ? ", " : "",
							 s->key[k], s->val[k]);
		appendStringInfoChar(&labels, '}');
		values[0] = CStringGetTextDatum(psprintf("%s%s", families[s->family].name, s->suffix));
		values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(labels.data));
		values[2] = Float8GetDatum(s->value);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * SQL: secret_metrics_prometheus() returns text: the same samples in the
 * Prometheus text exposition format 0.0.4, with HELP and TYPE lines.
 */
Datum
secret_metrics_prometheus(PG_FUNCTION_ARGS)
{
	Samples		samples;
	StringInfoData buf;
	int			last = -1;

	require_monitor();
	collect(&samples);
	initStringInfo(&buf);
	for (int i = 0; i < samples.n; i++)
	{
		Sample	   *s = &samples.s[i];
		const Family *f = &families[s->family];

		if (s->family != last)
		{
			appendStringInfo(&buf, "# HELP %s %s\n# TYPE %s %s\n",
							 f->name, f->help, f->name, f->type);
			last = s->family;
		}
		appendStringInfo(&buf, "%s%s", f->name, s->suffix);
		if (s->key[0])
		{
			appendStringInfoChar(&buf, '{');
			for (int k = 0; k < 2 && s->key[k]; k++)
				appendStringInfo(&buf, "%s%s=\"%s\"", k ? "," : "", s->key[k], s->val[k]);
			appendStringInfoChar(&buf, '}');
		}
		appendStringInfoChar(&buf, ' ');
		append_value(&buf, s->value);
		appendStringInfoChar(&buf, '\n');
	}
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}
