/*-------------------------------------------------------------------------
 *
 * loghygiene.h
 *		Log hygiene: the logging-profile check, strict logging, and the
 *		emit_log_hook that keeps statements carrying values out of the
 *		server log.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_LOGHYGIENE_H
#define SECRET_MGMT_LOGHYGIENE_H

/* One setting of the logging profile that could record a value. */
typedef struct SmLogWarning
{
	const char *setting;		/* the setting's name */
	char		value[64];		/* its current value, as SHOW prints it */
	const char *reason;			/* what it would record, as a sentence */
	const char *safe;			/* the value to set instead */
} SmLogWarning;

/* Room enough for every check of the profile. */
#define SM_LOG_MAX_WARNINGS		16

/* GUC variables (loghygiene.c) */
extern bool sm_strict_logging;
extern bool sm_redact_logs;

extern void sm_loghygiene_define_gucs(void);
extern void sm_loghygiene_init(void);
extern void sm_loghygiene_shmem_request(void);
extern void sm_loghygiene_shmem_startup(void);
extern int	sm_loghygiene_check(SmLogWarning *out, int max);
extern void sm_loghygiene_report(int elevel);
extern void sm_loghygiene_value_op(const char *function);

/* Messages the hook withheld from, or redacted in, the server log. */
extern uint64 sm_log_suppressions(void);
extern uint64 sm_log_redactions(void);

#endif							/* SECRET_MGMT_LOGHYGIENE_H */
