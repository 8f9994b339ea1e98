/*-------------------------------------------------------------------------
 *
 * loghygiene.c
 *		Log hygiene: keep values out of the server log and statistics.
 *
 * Values reach the extension only as bind parameters, and the extension
 * never writes one into a message.  PostgreSQL itself can still record
 * them: the statement logs (log_statement, log_min_duration_statement)
 * print bind parameters, error reports print them in their CONTEXT line
 * (log_parameter_max_length_on_error), auto_explain prints plans in which
 * the bound values are folded in as constants, pg_stat_statements keeps
 * utility statements as written.  Three defences, from the strongest:
 *
 *	- the logging-profile check (sm_loghygiene_check) names every setting
 *	  in effect that could record a value, why, and the safe setting.  The
 *	  postmaster reports them as WARNINGs at start, once every preloaded
 *	  library has defined its settings; the worker again after each reload;
 *	  secret_health() in the caller's session.
 *
 *	- secret_mgmt.strict_logging refuses every operation that takes or
 *	  returns a value (SQLSTATE 55000) while the check reports anything in
 *	  the caller's session.  The check reads the settings' variables
 *	  directly (core settings by their C variables, other libraries'
 *	  settings through a pointer looked up once), so it costs a few
 *	  comparisons per call and needs no cache that could go stale.
 *
 *	- secret_mgmt.redact_logs installs an emit_log_hook.  A message is
 *	  "about a value call" when the client's statement text names one of
 *	  the extension's value functions (secret_create, secret_update,
 *	  secret_rotate, secret_resolve*, secret_render, ...), or when such a
 *	  function ran in the current statement.  Of those messages it withholds
 *	  from the server log everything below WARNING that PostgreSQL or
 *	  another library wrote (statement and duration logs, auto_explain
 *	  plans, debug trees), and in the others hides the STATEMENT line,
 *	  cuts the bind parameters from the CONTEXT and, in messages that are
 *	  not the extension's own, drops detail, context and anything quoted.
 *	  Counts go to shared memory.
 *
 * The hook runs inside error reporting: it never allocates and never
 * raises.  For a message unrelated to the extension it costs a flag test
 * and one scan of the statement text; messages of processes without a
 * client statement (the postmaster, workers) cost the flag test alone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <dlfcn.h>

#include "access/xact.h"
#include "loghygiene.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "secret_mgmt.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/guc_tables.h"

/* GUC variables */
bool		sm_strict_logging = false;
bool		sm_redact_logs = true;

/* What the hook has done, for every process to see. */
typedef struct LogHygieneShared
{
	pg_atomic_uint64 suppressed;	/* messages withheld from the log */
	pg_atomic_uint64 redacted;	/* messages written without their values */
} LogHygieneShared;

static LogHygieneShared *shared = NULL;
static emit_log_hook_type prev_emit_log_hook = NULL;

/* A value function ran in the statement that started at this time. */
static bool value_call_seen = false;
static TimestampTz value_call_at = 0;

/*
 * A setting of another library (auto_explain, pg_stat_statements,
 * pgaudit).  Once the library has defined it, the definition lives as
 * long as the process, so its address is kept.  Until then the setting is
 * absent or a placeholder (named before the library loaded), which the
 * library frees when it loads; so what is kept is only where the name sits
 * in the sorted array of settings, valid while the array neither moves nor
 * grows: a library that loads either adds settings or replaces the
 * placeholder in its slot.
 */
typedef struct OtherSetting
{
	const char *name;
	enum config_type type;
	struct config_generic *gen; /* the library's definition, once seen */
	struct config_generic **seen_vars;	/* the array searched last */
	int			seen_count;		/* its length then */
	int			slot;			/* the name's index in it, or -1 */
} OtherSetting;

static OtherSetting ae_min_duration = {"auto_explain.log_min_duration", PGC_INT};
static OtherSetting ae_parameters = {"auto_explain.log_parameter_max_length", PGC_INT};
static OtherSetting ae_verbose = {"auto_explain.log_verbose", PGC_BOOL};
static OtherSetting pgss_utility = {"pg_stat_statements.track_utility", PGC_BOOL};
static OtherSetting pgaudit_parameter = {"pgaudit.log_parameter", PGC_BOOL};

/* The extension's value functions, after "secret_" (matched as prefixes). */
static const char *const value_functions[] = {
	"create", "update", "rotate", "resolve", "render", "audit_find_value",
	"token_key_add", "assume", "import", "export", NULL
};

/* The current definition or placeholder of a setting, or NULL. */
static struct config_generic *
find_setting(OtherSetting *s)
{
#if PG_VERSION_NUM >= 160000
	return find_option(s->name, false, true, DEBUG5);
#else
	struct config_generic **vars = get_guc_variables();
	int			count = GetNumConfigOptions();

	if (vars != s->seen_vars || count != s->seen_count)
	{
		/* The array is kept sorted by name, case-insensitively. */
		int			lo = 0;
		int			hi = count - 1;

		s->seen_vars = vars;
		s->seen_count = count;
		s->slot = -1;
		while (lo <= hi)
		{
			int			mid = (lo + hi) / 2;
			int			cmp = pg_strcasecmp(vars[mid]->name, s->name);

			if (cmp == 0)
			{
				s->slot = mid;
				break;
			}
			if (cmp < 0)
				lo = mid + 1;
			else
				hi = mid - 1;
		}
	}
	return s->slot >= 0 ? vars[s->slot] : NULL;
#endif
}

/* The library's definition of a setting, or NULL while it has none. */
static struct config_generic *
other_setting(OtherSetting *s)
{
	struct config_generic *g;

	if (s->gen != NULL)
		return s->gen;
	g = find_setting(s);
	if (g == NULL || (g->flags & GUC_CUSTOM_PLACEHOLDER) || g->vartype != s->type)
		return NULL;
	s->gen = g;
	return g;
}

static bool
other_bool(OtherSetting *s, bool *value)
{
	struct config_generic *g = other_setting(s);

	if (g == NULL)
		return false;
	*value = *((struct config_bool *) g)->variable;
	return true;
}

static bool
other_int(OtherSetting *s, int *value)
{
	struct config_generic *g = other_setting(s);

	if (g == NULL)
		return false;
	*value = *((struct config_int *) g)->variable;
	return true;
}

/* Add one warning, with the setting's current value. */
static void
note(SmLogWarning *out, int max, int *n, const char *setting,
	 const char *reason, const char *safe)
{
	const char *value;

	if (*n >= max)
		return;
	value = GetConfigOption(setting, true, false);
	out[*n].setting = setting;
	strlcpy(out[*n].value, value ? value : "", sizeof(out[*n].value));
	out[*n].reason = reason;
	out[*n].safe = safe;
	(*n)++;
}

#define HAZARD(cond, setting, reason, safe) \
	do { \
		if (cond) \
		{ \
			if (out == NULL) \
				return 1; \
			note(out, max, &n, (setting), (reason), (safe)); \
		} \
	} while (0)

/*
 * The logging-profile check: the settings in effect in this process that
 * could record a value, in `out` (up to `max`); returns how many.  With
 * out == NULL, returns 1 at the first one found and 0 when there is none:
 * the cheap form, for every value operation under strict logging.
 */
int
sm_loghygiene_check(SmLogWarning *out, int max)
{
	int			n = 0;
	int			ae_min;
	int			ae_params = 0;
	bool		flag = false;

	HAZARD(log_parameter_max_length != 0, "log_parameter_max_length",
		   "Statements written to the log by log_statement or log_min_duration_statement carry their bind parameters, values included.",
		   "0");
	HAZARD(log_parameter_max_length_on_error != 0, "log_parameter_max_length_on_error",
		   "An error report carries the bind parameters of the failing statement, values included.",
		   "0");
	HAZARD(log_statement == LOGSTMT_ALL, "log_statement",
		   "The text of every statement is logged, with any value written into it as a literal.",
		   "ddl");
	HAZARD(log_min_duration_statement >= 0, "log_min_duration_statement",
		   "Statements that run longer than this are logged with their text and, unless log_parameter_max_length is 0, their bind parameters.",
		   "-1");
	HAZARD(log_min_duration_sample >= 0 && log_statement_sample_rate > 0,
		   "log_min_duration_sample",
		   "A sample of the statements that run longer than this is logged with their text and bind parameters.",
		   "-1");
	HAZARD(log_xact_sample_rate > 0, "log_transaction_sample_rate",
		   "Every statement of a sample of transactions is logged with its text and bind parameters.",
		   "0");
	HAZARD(log_min_error_statement < ERROR, "log_min_error_statement",
		   "The text of statements that raise a warning, a notice or less is logged, not only that of failing statements.",
		   "error");
	HAZARD(Debug_print_parse, "debug_print_parse",
		   "Parse trees are logged with every constant of the statement.",
		   "off");
	HAZARD(Debug_print_rewritten, "debug_print_rewritten",
		   "Rewritten parse trees are logged with every constant of the statement.",
		   "off");
	HAZARD(Debug_print_plan, "debug_print_plan",
		   "Plans are logged with bound values folded into them as constants.",
		   "off");

	if (other_int(&ae_min_duration, &ae_min) && ae_min >= 0)
	{
		HAZARD(true, "auto_explain.log_min_duration",
			   "Plans of statements that run longer than this are logged with the statement's text.",
			   "-1");
		HAZARD(other_int(&ae_parameters, &ae_params) && ae_params != 0,
			   "auto_explain.log_parameter_max_length",
			   "Logged plans carry the statement's bind parameters, values included.",
			   "0");
		HAZARD(other_bool(&ae_verbose, &flag) && flag, "auto_explain.log_verbose",
			   "Logged plans list the arguments of every function call, bound values folded into them as constants.",
			   "off");
	}
	HAZARD(other_bool(&pgss_utility, &flag) && flag, "pg_stat_statements.track_utility",
		   "Utility statements such as CALL and DO are kept in pg_stat_statements as written, literals included.",
		   "off");
	HAZARD(other_bool(&pgaudit_parameter, &flag) && flag, "pgaudit.log_parameter",
		   "Audited statements are logged with their bind parameters, values included.",
		   "off");
	return n;
}

/* Report each warning of the check at `elevel`. */
void
sm_loghygiene_report(int elevel)
{
	SmLogWarning w[SM_LOG_MAX_WARNINGS];
	int			n = sm_loghygiene_check(w, SM_LOG_MAX_WARNINGS);

	for (int i = 0; i < n; i++)
		ereport(elevel,
				(errcode(ERRCODE_WARNING),
				 errmsg("secret_mgmt: %s = %s could record secret values",
						w[i].setting, w[i].value),
				 errdetail("%s", w[i].reason),
				 errhint("Set %s = %s.", w[i].setting, w[i].safe)));
}

/*
 * Called first by every operation that takes or returns a value: notes
 * the statement for the log hook, and under strict logging refuses while
 * the logging profile could record the value.
 */
void
sm_loghygiene_value_op(const char *function)
{
	SmLogWarning w[SM_LOG_MAX_WARNINGS];
	StringInfoData names;
	int			n;

	value_call_seen = true;
	value_call_at = GetCurrentStatementStartTimestamp();
	if (!sm_strict_logging || sm_loghygiene_check(NULL, 0) == 0)
		return;

	n = sm_loghygiene_check(w, SM_LOG_MAX_WARNINGS);
	initStringInfo(&names);
	for (int i = 0; i < n; i++)
		appendStringInfo(&names, "%s%s = %s", i > 0 ? ", " : "", w[i].setting, w[i].value);
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("%s refused: the logging configuration could record secret values", function),
			 errdetail("secret_mgmt.strict_logging is on, and these settings could record values: %s.",
					   names.data),
			 errhint("Apply the safe logging profile that secret_mgmt.secret_health() reports, or turn secret_mgmt.strict_logging off.")));
}

/* Does the statement text name one of the extension's value functions? */
static bool
names_value_function(const char *q)
{
	for (; *q; q++)
	{
		if ((*q != 's' && *q != 'S') || pg_strncasecmp(q, "secret_", 7) != 0)
			continue;
		for (int i = 0; value_functions[i] != NULL; i++)
			if (pg_strncasecmp(q + 7, value_functions[i], strlen(value_functions[i])) == 0)
				return true;
	}
	return false;
}

/* Is this message about a call that carried or returned a value? */
static bool
about_value_call(void)
{
	if (value_call_seen && value_call_at == GetCurrentStatementStartTimestamp())
		return true;
	return debug_query_string != NULL && names_value_function(debug_query_string);
}

/*
 * Was the message raised by the extension's own code?  ereport() keeps
 * the address of its __FILE__ literal (trimmed to the base name), which
 * lies in the library that raised it.
 */
static bool
raised_here(const ErrorData *edata)
{
	static void *our_base = NULL;
	Dl_info		info;

	if (edata->filename == NULL)
		return false;
	if (our_base == NULL)
	{
		if (dladdr((void *) raised_here, &info) == 0)
			return false;
		our_base = info.dli_fbase;
	}
	return dladdr(edata->filename, &info) != 0 && info.dli_fbase == our_base;
}

/*
 * Cut the bind parameters ("$1 = '...'") out of a CONTEXT: PostgreSQL adds
 * them as the outermost, so last, line; everything from the start of the
 * first line that lists one is dropped.  Returns true if anything was.
 */
static bool
cut_parameters(ErrorData *edata)
{
	char	   *ctx = edata->context;

	if (ctx == NULL)
		return false;
	for (char *p = ctx; *p; p++)
	{
		char	   *d;

		if (*p != '$' || !(p[1] >= '0' && p[1] <= '9'))
			continue;
		for (d = p + 1; *d >= '0' && *d <= '9'; d++)
			;
		if (strncmp(d, " = ", 3) != 0)
			continue;
		while (p > ctx && p[-1] != '\n')
			p--;
		if (p == ctx)
			edata->context = NULL;
		else
			p[-1] = '\0';
		return true;
	}
	return false;
}

/* Keep a message about a value call from putting the value in the log. */
static void
redact(ErrorData *edata)
{
	bool		ours = raised_here(edata);
	bool		changed = false;

	if (edata->elevel < WARNING && !ours)
	{
		/*
		 * Statement and duration logs, plans, debug trees: nothing of them
		 * is worth a value.
		 */
		edata->output_to_server = false;
		if (shared)
			pg_atomic_fetch_add_u64(&shared->suppressed, 1);
		return;
	}

	if (!edata->hide_stmt && debug_query_string != NULL &&
		edata->elevel >= log_min_error_statement)
		changed = true;
	edata->hide_stmt = true;
	changed |= cut_parameters(edata);
	if (!ours)
	{
		char	   *quote = strchr(edata->message ? edata->message : "", '"');

		/* Another's message may quote an input (a value) anywhere. */
		if (quote != NULL)
		{
			while (quote > edata->message && (quote[-1] == ' ' || quote[-1] == ':'))
				quote--;
			*quote = '\0';
			changed = true;
		}
		if (edata->detail || edata->detail_log || edata->context || edata->internalquery)
			changed = true;
		edata->detail = NULL;
		edata->detail_log = NULL;
		edata->context = NULL;
		edata->internalquery = NULL;
	}
	if (changed && shared)
		pg_atomic_fetch_add_u64(&shared->redacted, 1);
}

/*
 * emit_log_hook: redact first, so that the hooks installed before ours,
 * which we call next, see the message redacted too.
 */
static void
secret_mgmt_emit_log_hook(ErrorData *edata)
{
	if (sm_redact_logs && edata->output_to_server && about_value_call())
		redact(edata);
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

uint64
sm_log_suppressions(void)
{
	return shared ? pg_atomic_read_u64(&shared->suppressed) : 0;
}

uint64
sm_log_redactions(void)
{
	return shared ? pg_atomic_read_u64(&shared->redacted) : 0;
}

/* Shared memory request (secret_mgmt.c): the hook's counters. */
void
sm_loghygiene_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(LogHygieneShared)));
}

/* Shared memory startup (AddinShmemInitLock held): find or create them. */
void
sm_loghygiene_shmem_startup(void)
{
	bool		found;

	shared = ShmemInitStruct("secret_mgmt log hygiene", sizeof(LogHygieneShared), &found);
	if (!found)
	{
		pg_atomic_init_u64(&shared->suppressed, 0);
		pg_atomic_init_u64(&shared->redacted, 0);
	}
}

/* Settings (from define_gucs()). */
void
sm_loghygiene_define_gucs(void)
{
	DefineCustomBoolVariable("secret_mgmt.strict_logging",
							 "Refuses operations that take or return a value while logging could record it.",
							 "Such operations fail with SQLSTATE 55000 while secret_health() reports logging warnings.",
							 &sm_strict_logging, false,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("secret_mgmt.redact_logs",
							 "Keeps statements that pass values to the extension out of the server log.",
							 NULL,
							 &sm_redact_logs, true,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);
}

/* The log hook (from _PG_init, while preloading). */
void
sm_loghygiene_init(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = secret_mgmt_emit_log_hook;
}
