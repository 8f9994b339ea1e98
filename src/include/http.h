/*-------------------------------------------------------------------------
 *
 * http.h
 *		The one HTTPS client of the extension (libcurl), and the small JSON
 *		reader its callers use on responses.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_HTTP_H
#define SECRET_MGMT_HTTP_H

#include "secret_mgmt.h"

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"

/* Room of a request body that carries no value (a key, a credential). */
#define SM_HTTP_SMALL_BODY		4096

/* Largest response body accepted unless a request says otherwise. */
#define SM_HTTP_MAX_RESPONSE	(1024 * 1024)

/* GUC variables (secret_mgmt.c) */
extern int	sm_http_timeout_ms;
extern char *sm_ca_file;
extern int	sm_http_retries;
extern int	sm_http_breaker_failures;
extern int	sm_http_breaker_cooldown;

/*
 * One request.  Header lines may carry credentials: they are wiped from
 * libcurl's copies once the request is over, and never logged.
 */
typedef struct SmHttpRequest
{
	const char *service;		/* for messages and the breaker: "vault" */
	const char *endpoint;		/* base address, e.g. https://host:8200 */
	const char *method;			/* GET, POST, PUT, DELETE or LIST */
	const char *path;			/* appended to endpoint, starts with '/' */
	const char *ca_file;		/* NULL or "": secret_mgmt.ca_file, else system */
	const char *headers[6];		/* "Name: value" lines, NULL-terminated */
	const char *body;			/* NULL: no body */
	size_t		body_len;
	bool		idempotent;		/* may be retried after a transient failure */
	size_t		max_response;	/* 0: SM_HTTP_MAX_RESPONSE */
	int			timeout_ms;		/* 0: secret_mgmt.http_timeout_ms */
} SmHttpRequest;

/* A response: status and body (a wiped allocation, NUL-terminated). */
typedef struct SmHttpResponse
{
	long		status;
	char	   *body;
	size_t		body_len;
} SmHttpResponse;

/* One endpoint's circuit breaker, as secret_health() reports it. */
typedef struct SmBreakerState
{
	char		endpoint[160];
	int			failures;		/* consecutive */
	bool		open;			/* calls fail fast (until open_until) */
	TimestampTz open_until;
	TimestampTz last_used;
} SmBreakerState;

#define SM_HTTP_MAX_BREAKERS	32

extern void sm_http_init(void);
extern void sm_http_shmem_request(void);
extern void sm_http_shmem_startup(void);
extern int	sm_http_breakers(SmBreakerState *out, int max);
extern void sm_http_request(const SmHttpRequest *req, SmHttpResponse *resp);
extern void sm_http_free(SmHttpResponse *resp);
extern bool sm_http_transient(long status);
extern void sm_http_check_address(const char *service, const char *address);
extern int	sm_http_breakers_open(void);

/*
 * JSON fields picked out of a response by dotted path ("auth.client_token",
 * "errors.0").  Values are the scalar's text, in wiped allocations; NULL
 * where the path was absent or not a scalar (or JSON null).
 */
#define SM_JSON_MAX_FIELDS	8

typedef struct SmJsonFields
{
	int			nfields;
	const char *paths[SM_JSON_MAX_FIELDS];
	char	   *values[SM_JSON_MAX_FIELDS];
} SmJsonFields;

extern bool sm_json_pick(const char *json, size_t len, SmJsonFields *fields);
extern void sm_json_forget(SmJsonFields *fields);
extern void sm_json_append_string(StringInfo buf, const char *value);
extern StringInfo sm_secure_stringinfo(size_t size);
extern void sm_wipe_stringinfo(StringInfo buf);

#endif							/* SECRET_MGMT_HTTP_H */
