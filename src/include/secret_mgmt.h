/*-------------------------------------------------------------------------
 *
 * secret_mgmt.h
 *		Declarations shared by every subsystem of the secret store.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_H
#define SECRET_MGMT_H

#include "compat.h"

#include "utils/elog.h"

/* Fixed SQLSTATEs of the product (see docs/sql-reference.md). */
#define ERRCODE_SM_NOT_FOUND		MAKE_SQLSTATE('S','M','0','0','1')
#define ERRCODE_SM_PERMISSION		MAKE_SQLSTATE('S','M','0','0','2')
#define ERRCODE_SM_EXPIRED			MAKE_SQLSTATE('S','M','0','0','3')
#define ERRCODE_SM_SEALED			MAKE_SQLSTATE('S','M','0','0','4')
#define ERRCODE_SM_INTEGRITY		MAKE_SQLSTATE('S','M','0','0','5')
#define ERRCODE_SM_BACKEND			MAKE_SQLSTATE('S','M','0','0','6')
#define ERRCODE_SM_INVALID_VALUE	MAKE_SQLSTATE('S','M','0','0','7')

/* Names and paths are ASCII, whatever the server's locale. */
#define IS_ASCII_ALPHA(c)	(((c) >= 'A' && (c) <= 'Z') || ((c) >= 'a' && (c) <= 'z'))
#define IS_ASCII_ALNUM(c)	(IS_ASCII_ALPHA(c) || ((c) >= '0' && (c) <= '9'))

/* Largest value the store accepts, in bytes. */
#define SM_MAX_VALUE_BYTES			(16 * 1024 * 1024)

/* GUC variables (secret_mgmt.c) */
extern char *sm_key_file;
extern char *sm_key_command;
extern int	sm_recovery_window;
extern int	sm_cache_ttl;
extern int	sm_data_key_rotate_after;
extern int	sm_token_leeway;

/* secret_mgmt.c */
extern bool sm_preloaded;
extern void sm_check_preloaded(void);

/* store.c: the one "not found" error, identical wherever the path is */
extern void sm_report_not_found(const char *path, const char *hint) pg_attribute_noreturn();

#endif							/* SECRET_MGMT_H */
