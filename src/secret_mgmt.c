/*-------------------------------------------------------------------------
 *
 * secret_mgmt.c
 *		Module entry point: configuration, preload check, install check.
 *
 * The library must be in shared_preload_libraries: the root key is read
 * once in the postmaster, before any client connects, and inherited by
 * every backend.  Loaded any other way the library defines its settings
 * but refuses every operation with a message that says what to change.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "audit.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "http.h"
#include "keyring.h"
#include "loghygiene.h"
#include "metrics.h"
#include "miscadmin.h"
#include "query.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "tenant.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "events.h"
#include "worker.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(secret_mgmt_install_check);

/* GUC variables */
char	   *sm_key_file = NULL;
char	   *sm_key_command = NULL;
int			sm_recovery_window = 7 * 24 * 3600;
int			sm_cache_ttl = 300;
int			sm_data_key_rotate_after = INT_MAX;
int			sm_token_leeway = 30;

/* GUC variables of external backends (http.c) */
int			sm_http_timeout_ms = 5000;
char	   *sm_ca_file = NULL;
int			sm_http_retries = 2;
int			sm_http_breaker_failures = 5;
int			sm_http_breaker_cooldown = 30;

/* GUC variables of the worker (worker.h) */
char	   *sm_worker_database = NULL;
char	   *sm_worker_role = NULL;
int			sm_worker_naptime = 10000;
int			sm_worker_batch = 500;
int			sm_expiry_warning = 7 * 24 * 3600;
int			sm_rotation_grace = 24 * 3600;
int			sm_retry_backoff_max = 3600;

bool		sm_preloaded = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);

/* shmem_request_hook: the space and locks of every subsystem. */
static void
secret_mgmt_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	sm_worker_shmem_request();
	sm_flusher_shmem_request();
	sm_http_shmem_request();
	sm_metrics_shmem_request();
	sm_loghygiene_shmem_request();
}

/*
 * shmem_startup_hook: find (or, first, create) every subsystem's struct;
 * then, in the postmaster, the logging-profile check -- by now every
 * library in shared_preload_libraries, before or after this one, has
 * defined its settings.
 */
static void
secret_mgmt_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	sm_worker_shmem_startup();
	sm_flusher_shmem_startup();
	sm_http_shmem_startup();
	sm_metrics_shmem_startup();
	sm_loghygiene_shmem_startup();
	LWLockRelease(AddinShmemInitLock);
	if (!IsUnderPostmaster)
		sm_loghygiene_report(WARNING);
}

/* Settings of the background worker (worker.c). */
static void
define_worker_gucs(void)
{
	DefineCustomStringVariable("secret_mgmt.database",
							   "Database the background worker works in.",
							   NULL,
							   &sm_worker_database, "postgres",
							   PGC_POSTMASTER, 0,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("secret_mgmt.worker_role",
							   "Role the background worker connects as (empty: the bootstrap superuser).",
							   "It needs LOGIN and no other privilege; its work runs as the extension owner and hooks as the roles that configured them.",
							   &sm_worker_role, "",
							   PGC_POSTMASTER, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("secret_mgmt.worker_naptime",
							"Time the background worker sleeps between passes when idle.",
							NULL,
							&sm_worker_naptime, 10000, 10, 24 * 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("secret_mgmt.worker_batch",
							"Rotations the background worker handles per tenant and transaction.",
							NULL,
							&sm_worker_batch, 500, 1, 100000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("secret_mgmt.expiry_warning",
							"How long before a secret expires the worker emits an expiry_warning event.",
							"Zero disables the warnings.",
							&sm_expiry_warning, 7 * 24 * 3600, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("secret_mgmt.rotation_grace",
							"How long the replaced version stays resolvable as \"previous\" after a rotation.",
							"A rotation policy can set its own grace period.",
							&sm_rotation_grace, 24 * 3600, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("secret_mgmt.retry_backoff_max",
							"Longest wait between retries of a failed rotation step or event delivery.",
							"Retries start after one second and double up to this.",
							&sm_retry_backoff_max, 3600, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
}

static void
define_gucs(void)
{
	DefineCustomStringVariable("secret_mgmt.key_file",
							   "File holding the root key as 64 hexadecimal digits.",
							   "Read once at server start; keep it outside the data directory, mode 0600.",
							   &sm_key_file, "",
							   PGC_POSTMASTER, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("secret_mgmt.key_command",
							   "Shell command that prints the root key as 64 hexadecimal digits.",
							   "Run once at server start by the postmaster.",
							   &sm_key_command, "",
							   PGC_POSTMASTER, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("secret_mgmt.recovery_window",
							"How long a deleted secret stays recoverable.",
							"With purge protection, no purge happens before it ends.",
							&sm_recovery_window, 7 * 24 * 3600, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("secret_mgmt.cache_ttl",
							"How long a backend keeps an unwrapped data key.",
							NULL,
							&sm_cache_ttl, 300, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("secret_mgmt.data_key_rotate_after",
							"Encryptions after which a tenant's data key is retired and replaced.",
							"AES-GCM with random nonces must stay well below 2^32 encryptions per key.",
							&sm_data_key_rotate_after, INT_MAX, 1, INT_MAX,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("secret_mgmt.token_leeway",
							"Clock skew allowed when judging a token's exp, nbf and iat.",
							NULL,
							&sm_token_leeway, 30, 0, 300,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	/* External backends (http.c) */
	DefineCustomIntVariable("secret_mgmt.http_timeout_ms",
							"Time limit of one call to an external backend or KMS, retries included.",
							NULL,
							&sm_http_timeout_ms, 5000, 100, 600000,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomStringVariable("secret_mgmt.ca_file",
							   "CA certificates that external backends' TLS certificates must chain to.",
							   "Empty: the system's CA store.  A backend's own ca_file takes precedence.",
							   &sm_ca_file, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("secret_mgmt.http_retries",
							"Retries of an idempotent backend call after a connection failure, 429 or 5xx.",
							"Retries back off exponentially with jitter, within secret_mgmt.http_timeout_ms.",
							&sm_http_retries, 2, 0, 10,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("secret_mgmt.http_breaker_failures",
							"Consecutive failures after which calls to a backend fail fast; 0 disables.",
							NULL,
							&sm_http_breaker_failures, 5, 0, 1000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("secret_mgmt.http_breaker_cooldown",
							"How long calls to a failing backend fail fast before one probes it again.",
							NULL,
							&sm_http_breaker_cooldown, 30, 1, 3600,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	/* The worker and events (worker.c, events.c) */
	define_worker_gucs();

	/* The audit trail (audit.c, flusher.c) */
	sm_audit_define_gucs();

	/* Log hygiene (loghygiene.c) */
	sm_loghygiene_define_gucs();
	MarkGUCPrefixReserved("secret_mgmt");
}

void
_PG_init(void)
{
	if (IsBinaryUpgrade)
		return;

	/*
	 * Loaded late (by CREATE EXTENSION or a function call) the library does
	 * nothing but refuse, through sm_check_preloaded(): postmaster settings
	 * cannot be defined once the server runs.
	 */
	if (!process_shared_preload_libraries_in_progress)
		return;
	define_gucs();
	sm_preloaded = true;

	sm_keyring_load_root();
	if (!sm_keyring_root_loaded())
		ereport(WARNING,
				(errcode(ERRCODE_SM_SEALED),
				 errmsg("secret_mgmt: secret store is sealed: the root key is not loaded"),
				 errdetail_internal("%s", sm_keyring_root_error()),
				 errhint("Set secret_mgmt.key_file (a file holding 64 hex digits) or secret_mgmt.key_command and restart the server.")));

	RegisterXactCallback(sm_tenant_xact_callback, NULL);
	RegisterSubXactCallback(sm_tenant_subxact_callback, NULL);

	/* The audit flusher, libcurl, events, the log hook, the worker */
	sm_flusher_init();
	sm_http_init();
	sm_events_init();
	sm_loghygiene_init();
	sm_worker_register();

	/* Shared memory of every subsystem */
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = secret_mgmt_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = secret_mgmt_shmem_startup;
}

/* Refuse to work unless preloaded, saying how to fix it. */
void
sm_check_preloaded(void)
{
	if (!sm_preloaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("secret_mgmt must be loaded via shared_preload_libraries"),
				 errhint("Add secret_mgmt to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/*
 * Run first by the install script.  Refuses unless the library is
 * preloaded and the schema is the installer's own and empty but for this
 * function, so objects planted in a pre-created schema cannot become part
 * of the extension or shadow its members.
 */
Datum
secret_mgmt_install_check(PG_FUNCTION_ARGS)
{
	static const char *count_sql =
		"SELECT n.nspowner,"
		"       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c"
		"         WHERE c.relnamespace OPERATOR(pg_catalog.=) n.oid)"
		"     OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p"
		"         WHERE p.pronamespace OPERATOR(pg_catalog.=) n.oid"
		"           AND p.proname OPERATOR(pg_catalog.<>) '_install_check')"
		"     OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_type t"
		"         WHERE t.typnamespace OPERATOR(pg_catalog.=) n.oid)"
		"     OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_operator o"
		"         WHERE o.oprnamespace OPERATOR(pg_catalog.=) n.oid)"
		"  FROM pg_catalog.pg_namespace n"
		" WHERE n.nspname OPERATOR(pg_catalog.=) 'secret_mgmt'";
	bool		isnull;
	Oid			owner;
	int64		others;

	sm_check_preloaded();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute(count_sql, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not inspect schema secret_mgmt");
	owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull));
	others = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 2, &isnull));
	SPI_finish();

	if (owner != GetUserId())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("schema \"secret_mgmt\" is owned by another role"),
				 errdetail("The extension installs only into a schema that the installing superuser owns."),
				 errhint("Drop the schema, or let CREATE EXTENSION create it.")));
	if (others > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("schema \"secret_mgmt\" already contains objects"),
				 errdetail("The extension installs only into an empty schema, so that no object planted there can shadow its own."),
				 errhint("Drop the schema, or let CREATE EXTENSION create it.")));
	PG_RETURN_VOID();
}
