/*-------------------------------------------------------------------------
 *
 * compat.h
 *		Small shims over differences between PostgreSQL major versions.
 *
 * PostgreSQL 15 is the primary target; 16 and 17 are kept reachable here
 * rather than with #if blocks spread through the sources.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_COMPAT_H
#define SECRET_MGMT_COMPAT_H

#include "postgres.h"

/*
 * Test builds (make SM_ASSERTS=1) check assertions even against a server
 * built without --enable-cassert.  ExceptionalCondition() is compiled into
 * every server, only its signature changed in 16.
 */
#if defined(SM_ENABLE_ASSERTS) && !defined(USE_ASSERT_CHECKING)
#undef Assert
#if PG_VERSION_NUM >= 160000
#define Assert(condition) \
	do { \
		if (!(condition)) \
			ExceptionalCondition(#condition, __FILE__, __LINE__); \
	} while (0)
#else
#define Assert(condition) \
	do { \
		if (!(condition)) \
			ExceptionalCondition(#condition, "FailedAssertion", \
								 __FILE__, __LINE__); \
	} while (0)
#endif
#endif

/*
 * JSON parser callbacks (common/jsonapi.h) return JsonParseErrorType from
 * 16 on, and the lexer constructor takes a context to fill from 17 on.
 */
#if PG_VERSION_NUM >= 160000
#define SM_JSON_ACTION			JsonParseErrorType
#define SM_JSON_ACTION_DONE		return JSON_SUCCESS
#else
#define SM_JSON_ACTION			void
#define SM_JSON_ACTION_DONE		return
#endif
#if PG_VERSION_NUM >= 170000
#define sm_json_lexer(json, len) \
	makeJsonLexContextCstringLen(NULL, (json), (len), PG_UTF8, true)
#define sm_json_lexer_free(lex) freeJsonLexContext(lex)
#else
#define sm_json_lexer(json, len) \
	makeJsonLexContextCstringLen((json), (len), PG_UTF8, true)
#define sm_json_lexer_free(lex) \
	do { \
		if ((lex)->strval) \
		{ \
			pfree((lex)->strval->data); \
			pfree((lex)->strval); \
		} \
		pfree(lex); \
	} while (0)
#endif

/* Nanoseconds of an instr_time (16 has it; 15 keeps a struct timespec). */
#if PG_VERSION_NUM < 160000
#include "portability/instr_time.h"
#define INSTR_TIME_GET_NANOSEC(t) \
	((int64) (t).tv_sec * INT64CONST(1000000000) + (int64) (t).tv_nsec)
#endif

#endif							/* SECRET_MGMT_COMPAT_H */
