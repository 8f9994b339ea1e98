/*-------------------------------------------------------------------------
 *
 * http.c
 *		The one HTTPS client of the extension, shared by every backend
 *		(Vault today), and the JSON reader used on its responses.
 *
 * Every request goes through sm_http_request(), which applies the rules
 * that keep a backend process and its credentials safe:
 *
 *	- HTTPS only, peer and host verification always on, TLS 1.2 or later,
 *	  the CA file of the backend or secret_mgmt.ca_file;
 *	- redirects are never followed (a 3xx is an error), and proxies named in
 *	  the server's environment are ignored, so a credential is only ever
 *	  sent to the configured address;
 *	- secret_mgmt.http_timeout_ms bounds the whole call, connection and
 *	  retries included;
 *	- the transfer runs on libcurl's multi interface in slices of at most
 *	  100 ms, checking for interrupts in between, so pg_cancel_backend()
 *	  and statement_timeout stop it at once; CURLOPT_NOSIGNAL is set and no
 *	  signal handler is touched.  The progress callback aborts the transfer
 *	  too; like every libcurl callback here it never allocates with palloc
 *	  or raises an error;
 *	- the response is capped in size; its buffer, and libcurl's copies of
 *	  the header lines (which may hold a token), are wiped when done;
 *	- idempotent calls are retried after a connection failure, 429 or 5xx,
 *	  at most secret_mgmt.http_retries times, with exponential backoff and
 *	  jitter, within the same time budget;
 *	- a circuit breaker per endpoint, in shared memory: after
 *	  secret_mgmt.http_breaker_failures consecutive failures every process
 *	  fails fast for secret_mgmt.http_breaker_cooldown seconds, then one
 *	  request at a time probes the endpoint again.  The breaker's spinlock is never
 *	  held across network I/O.
 *
 * Nothing here writes a header, a body or a URL with credentials to the
 * log; libcurl's VERBOSE mode stays off.
 *
 * JSON responses are read with PostgreSQL's own parser (common/jsonapi.h):
 * sm_json_pick() keeps the scalars at a few dotted paths in wiped
 * allocations and wipes every other scalar the parser hands out.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "common/jsonapi.h"
#include "common/pg_prng.h"
#include "crypto.h"
#include "http.h"
#include "mb/pg_wchar.h"
#include "metrics.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/json.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#define BREAKER_SLOTS		SM_HTTP_MAX_BREAKERS
#define BREAKER_KEY_LEN		160
#define BACKOFF_BASE_MS		100
#define POLL_SLICE_MS		100

/* One endpoint's breaker. */
typedef struct BreakerSlot
{
	char		endpoint[BREAKER_KEY_LEN];
	int			failures;		/* consecutive */
	TimestampTz open_until;		/* refuse until then, once open */
	TimestampTz last_used;
} BreakerSlot;

typedef struct BreakerShared
{
	slock_t		mutex;
	BreakerSlot slots[BREAKER_SLOTS];
} BreakerShared;

static BreakerShared *breakers = NULL;

/* A response being received; grown with malloc inside the callback. */
typedef struct RecvBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
	size_t		max;
	bool		too_large;
	bool		no_memory;
} RecvBuf;

/* The outcome of one attempt. */
typedef struct Attempt
{
	CURLcode	code;
	long		status;
	char		errbuf[CURL_ERROR_SIZE];
} Attempt;

/* Shared memory request (secret_mgmt.c): the breakers. */
void
sm_http_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(BreakerShared)));
}

/* Shared memory startup (AddinShmemInitLock held): find or create them. */
void
sm_http_shmem_startup(void)
{
	bool		found;

	breakers = ShmemInitStruct("secret_mgmt http breakers",
							   sizeof(BreakerShared), &found);
	if (!found)
	{
		memset(breakers, 0, sizeof(BreakerShared));
		SpinLockInit(&breakers->mutex);
	}
}

/*
 * Called from _PG_init() in the postmaster: set up libcurl (not thread-safe,
 * so once, before any backend exists).
 */
void
sm_http_init(void)
{
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		ereport(WARNING,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("secret_mgmt: could not initialise libcurl")));
}

/* The slot of an endpoint (claiming the least recently used); lock held. */
static BreakerSlot *
breaker_slot(const char *endpoint)
{
	BreakerSlot *victim = &breakers->slots[0];

	for (int i = 0; i < BREAKER_SLOTS; i++)
	{
		BreakerSlot *s = &breakers->slots[i];

		if (strncmp(s->endpoint, endpoint, BREAKER_KEY_LEN - 1) == 0)
			return s;
		if (s->last_used < victim->last_used)
			victim = s;
	}
	memset(victim, 0, sizeof(BreakerSlot));
	strlcpy(victim->endpoint, endpoint, BREAKER_KEY_LEN);
	return victim;
}

/*
 * May a request to `endpoint` go out now?  False while the breaker is
 * open.  Once the cooldown is over, the first caller probes and the
 * breaker stays closed to everybody else for another cooldown: if the
 * probe never reports (it was cancelled, say), the next caller after that
 * probes instead.
 */
static bool
breaker_admit(const char *endpoint, int *retry_in_s)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		admit = true;

	if (breakers == NULL || sm_http_breaker_failures <= 0)
		return true;
	SpinLockAcquire(&breakers->mutex);
	{
		BreakerSlot *s = breaker_slot(endpoint);

		s->last_used = now;
		if (s->failures >= sm_http_breaker_failures)
		{
			if (now < s->open_until)
			{
				admit = false;
				*retry_in_s = (int) Max(1, (s->open_until - now) / USECS_PER_SEC);
			}
			else
				s->open_until = TimestampTzPlusMilliseconds(now,
															(int64) sm_http_breaker_cooldown * 1000);
		}
	}
	SpinLockRelease(&breakers->mutex);
	return admit;
}

/* Record the outcome of a request to `endpoint`. */
static void
breaker_record(const char *endpoint, bool ok)
{
	if (breakers == NULL || sm_http_breaker_failures <= 0)
		return;
	SpinLockAcquire(&breakers->mutex);
	{
		BreakerSlot *s = breaker_slot(endpoint);

		if (ok)
			s->failures = 0;
		else if (++s->failures >= sm_http_breaker_failures)
			s->open_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														(int64) sm_http_breaker_cooldown * 1000);
	}
	SpinLockRelease(&breakers->mutex);
}

/* How many endpoints' breakers refuse requests now (for the metrics). */
int
sm_http_breakers_open(void)
{
	SmBreakerState b[SM_HTTP_MAX_BREAKERS];
	int			n = sm_http_breakers(b, SM_HTTP_MAX_BREAKERS);
	TimestampTz now = GetCurrentTimestamp();
	int			open = 0;

	for (int i = 0; i < n; i++)
		if (b[i].open && now < b[i].open_until)
			open++;
	return open;
}

/* Count the outcome of one attempt. */
static void
count_attempt(const Attempt *att)
{
	if (att->code != CURLE_OK)
		sm_metrics_http(SM_HTTP_TRANSPORT_ERROR);
	else if (sm_http_transient(att->status))
		sm_metrics_http(SM_HTTP_RETRYABLE);
	else if (att->status >= 200 && att->status < 300)
		sm_metrics_http(SM_HTTP_SUCCESS);
	else
		sm_metrics_http(SM_HTTP_CLIENT_ERROR);
}

/*
 * The breakers in use, for secret_health(): up to `max` into `out`;
 * returns how many.  A copy taken under the spinlock, nothing more.
 */
int
sm_http_breakers(SmBreakerState *out, int max)
{
	BreakerSlot copy[BREAKER_SLOTS];
	int			n = 0;

	if (breakers == NULL)
		return 0;
	SpinLockAcquire(&breakers->mutex);
	memcpy(copy, breakers->slots, sizeof(copy));
	SpinLockRelease(&breakers->mutex);
	for (int i = 0; i < BREAKER_SLOTS && n < max; i++)
	{
		if (copy[i].endpoint[0] == '\0')
			continue;
		strlcpy(out[n].endpoint, copy[i].endpoint, sizeof(out[n].endpoint));
		out[n].failures = copy[i].failures;
		out[n].open = sm_http_breaker_failures > 0 &&
			copy[i].failures >= sm_http_breaker_failures;
		out[n].open_until = copy[i].open_until;
		out[n].last_used = copy[i].last_used;
		n++;
	}
	return n;
}

/* libcurl write callback: append, within the cap.  No palloc, no ereport. */
static size_t
recv_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	RecvBuf    *buf = (RecvBuf *) userdata;
	size_t		n = size * nmemb;

	if (n > buf->max - buf->len)
	{
		buf->too_large = true;
		return 0;
	}
	if (buf->len + n + 1 > buf->cap)
	{
		size_t		newcap = Max(buf->cap * 2, 4096);
		char	   *grown;

		while (newcap < buf->len + n + 1)
			newcap *= 2;
		newcap = Min(newcap, buf->max + 1);
		grown = malloc(newcap);
		if (grown == NULL)
		{
			buf->no_memory = true;
			return 0;
		}
		if (buf->data)
		{
			memcpy(grown, buf->data, buf->len);
			OPENSSL_cleanse(buf->data, buf->cap);
			free(buf->data);
		}
		buf->data = grown;
		buf->cap = newcap;
	}
	memcpy(buf->data + buf->len, ptr, n);
	buf->len += n;
	return n;
}

/* libcurl progress callback: abort on a pending cancel or termination. */
static int
progress_check(void *clientp, curl_off_t dltotal, curl_off_t dlnow,
			   curl_off_t ultotal, curl_off_t ulnow)
{
	return (QueryCancelPending || ProcDiePending) ? 1 : 0;
}

/* Wipe and free a header list (its lines may hold a token). */
static void
free_headers(struct curl_slist *list)
{
	for (struct curl_slist *l = list; l != NULL; l = l->next)
		if (l->data)
			OPENSSL_cleanse(l->data, strlen(l->data));
	curl_slist_free_all(list);
}

/* Milliseconds left until `deadline`, at least 1 while any is left. */
static long
ms_left(TimestampTz deadline)
{
	TimestampTz now = GetCurrentTimestamp();

	if (now >= deadline)
		return 0;
	return (long) Max(1, (deadline - now) / 1000);
}

/* What an attempt holds that must be released whatever happens. */
typedef struct Handles
{
	CURL	   *easy;
	CURLM	   *multi;
	struct curl_slist *headers;
	RecvBuf		buf;
} Handles;

/*
 * Set up and drive one transfer.  Interrupts are checked every
 * POLL_SLICE_MS; an error raised then leaves the handles to the caller's
 * cleanup.
 */
static void
transfer(const SmHttpRequest *req, const char *url, long timeout_ms,
		 Attempt *att, SmHttpResponse *resp, Handles *hd)
{
	CURL	   *easy;
	bool		failed = false;
	int			running = 1;
	CURLMsg    *msg;
	int			left;
	const char *ca = (req->ca_file && req->ca_file[0]) ? req->ca_file :
		(sm_ca_file && sm_ca_file[0]) ? sm_ca_file : NULL;

	hd->easy = easy = curl_easy_init();
	hd->multi = curl_multi_init();
	if (easy == NULL || hd->multi == NULL)
		failed = true;
	for (int i = 0; !failed && i < lengthof(req->headers) && req->headers[i] != NULL; i++)
	{
		struct curl_slist *n = curl_slist_append(hd->headers, req->headers[i]);

		if (n == NULL)
			failed = true;
		else
			hd->headers = n;
	}
	for (int i = 0; !failed && req->body != NULL && i < 2; i++)
	{
		struct curl_slist *n = curl_slist_append(hd->headers,
												 i == 0 ? "Content-Type: application/json" : "Expect:");

		if (n == NULL)
			failed = true;
		else
			hd->headers = n;
	}

	if (!failed)
	{
		curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, att->errbuf);
		curl_easy_setopt(easy, CURLOPT_URL, url);
		curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "https");
		curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "https");
		curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
		curl_easy_setopt(easy, CURLOPT_MAXREDIRS, 0L);
		curl_easy_setopt(easy, CURLOPT_PROXY, "");
		curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(easy, CURLOPT_VERBOSE, 0L);
		curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
		curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, timeout_ms);
		curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
		curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
		curl_easy_setopt(easy, CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2);
		if (ca)
			curl_easy_setopt(easy, CURLOPT_CAINFO, ca);
		curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) hd->buf.max);
		curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, recv_body);
		curl_easy_setopt(easy, CURLOPT_WRITEDATA, &hd->buf);
		curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, progress_check);
		curl_easy_setopt(easy, CURLOPT_HTTPHEADER, hd->headers);
		curl_easy_setopt(easy, CURLOPT_USERAGENT, "secret_mgmt");
		if (strcmp(req->method, "GET") == 0)
			curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
		else
		{
			if (strcmp(req->method, "POST") == 0)
				curl_easy_setopt(easy, CURLOPT_POST, 1L);
			else
				curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method);
			if (req->body != NULL || strcmp(req->method, "POST") == 0)
			{
				curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body ? req->body : "");
				curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
								 (curl_off_t) (req->body ? req->body_len : 0));
			}
		}
		if (curl_multi_add_handle(hd->multi, easy) != CURLM_OK)
			failed = true;
	}

	/* Drive the transfer in short slices, checking for interrupts. */
	while (!failed && running)
	{
		if (curl_multi_perform(hd->multi, &running) != CURLM_OK)
			failed = true;
		else if (running &&
				 curl_multi_poll(hd->multi, NULL, 0, POLL_SLICE_MS, NULL) != CURLM_OK)
			failed = true;
		CHECK_FOR_INTERRUPTS();
	}

	if (!failed)
	{
		while ((msg = curl_multi_info_read(hd->multi, &left)) != NULL)
			if (msg->msg == CURLMSG_DONE)
				att->code = msg->data.result;
		if (att->code == CURLE_OK)
			curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &att->status);
		else if (att->code == CURLE_WRITE_ERROR && hd->buf.too_large)
			att->code = CURLE_FILESIZE_EXCEEDED;
	}
	if (hd->buf.no_memory)
		att->code = CURLE_OUT_OF_MEMORY;

	if (att->code == CURLE_OK)
	{
		resp->status = att->status;
		resp->body_len = hd->buf.len;
		resp->body = sm_secure_alloc(hd->buf.len + 1);
		if (hd->buf.len > 0)
			memcpy(resp->body, hd->buf.data, hd->buf.len);
		resp->body[hd->buf.len] = '\0';
	}
}

/*
 * One attempt, bounded by `timeout_ms`.  On success the body is copied into
 * a wiped allocation in the caller's memory context.  Whatever ends the
 * attempt, including an error raised by CHECK_FOR_INTERRUPTS(), the
 * handles are released and the buffers wiped.
 */
static void
perform_once(const SmHttpRequest *req, const char *url, long timeout_ms,
			 Attempt *att, SmHttpResponse *resp)
{
	Handles    *hd = palloc0(sizeof(Handles));

	hd->buf.max = req->max_response ? req->max_response : SM_HTTP_MAX_RESPONSE;
	memset(att, 0, sizeof(*att));
	att->code = CURLE_FAILED_INIT;

	PG_TRY();
	{
		transfer(req, url, timeout_ms, att, resp, hd);
	}
	PG_FINALLY();
	{
		if (hd->multi && hd->easy)
			curl_multi_remove_handle(hd->multi, hd->easy);
		if (hd->easy)
			curl_easy_cleanup(hd->easy);
		if (hd->multi)
			curl_multi_cleanup(hd->multi);
		free_headers(hd->headers);
		if (hd->buf.data)
		{
			OPENSSL_cleanse(hd->buf.data, hd->buf.cap);
			free(hd->buf.data);
		}
		pfree(hd);
	}
	PG_END_TRY();
}

/* Is this status worth another try (and a failure for the breaker)? */
bool
sm_http_transient(long status)
{
	return status == 429 || status >= 500;
}

/* Sleep before a retry, interruptibly. */
static void
backoff(int attempt, long max_ms)
{
	long		ms = BACKOFF_BASE_MS << Min(attempt, 6);

	/* Full jitter in [ms/2, ms]. */
	ms = ms / 2 + (long) (pg_prng_double(&pg_global_prng_state) * (ms / 2));
	ms = Min(ms, max_ms);
	if (ms <= 0)
		return;
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/* Raise SM006 for an attempt that failed below HTTP. */
static void
report_transport(const SmHttpRequest *req, const Attempt *att, int attempts, int budget_ms)
{
	const char *what;

	switch (att->code)
	{
		case CURLE_OPERATION_TIMEDOUT:
			what = "did not answer in time";
			break;
		case CURLE_COULDNT_CONNECT:
		case CURLE_COULDNT_RESOLVE_HOST:
			what = "could not be reached";
			break;
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_ISSUER_ERROR:
			what = "failed TLS verification";
			break;
		case CURLE_FILESIZE_EXCEEDED:
			what = "sent a response that is too large";
			break;
		case CURLE_PARTIAL_FILE:
		case CURLE_RECV_ERROR:
		case CURLE_GOT_NOTHING:
			what = "sent an incomplete response";
			break;
		default:
			what = "could not be used";
			break;
	}
	ereport(ERROR,
			(errcode(ERRCODE_SM_BACKEND),
			 errmsg("%s at %s %s", req->service, req->endpoint, what),
			 errdetail("%s (%d attempt%s within a time budget of %d ms).",
					   att->errbuf[0] ? att->errbuf : curl_easy_strerror(att->code),
					   attempts, attempts == 1 ? "" : "s", budget_ms),
			 errhint("Nothing was changed.  Check that the backend is up and that its address and CA file are right.")));
}

/*
 * Perform a request.  Transport failures (after the retries an idempotent
 * request is allowed), an open breaker and redirects raise SM006; every
 * HTTP answer is returned for the caller to judge, its body in a wiped
 * allocation in CurrentMemoryContext.
 */
void
sm_http_request(const SmHttpRequest *req, SmHttpResponse *resp)
{
	int			budget_ms = req->timeout_ms > 0 ? req->timeout_ms : sm_http_timeout_ms;
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), budget_ms);
	char	   *url;
	size_t		elen = strlen(req->endpoint);
	Attempt		att;
	int			attempts = 0;
	int			max_attempts = req->idempotent ? 1 + sm_http_retries : 1;

	memset(resp, 0, sizeof(*resp));
	while (elen > 0 && req->endpoint[elen - 1] == '/')
		elen--;
	url = psprintf("%.*s%s", (int) elen, req->endpoint, req->path);

	for (;;)
	{
		int			retry_in = 0;
		long		left = ms_left(deadline);
		bool		ok;

		if (!breaker_admit(req->endpoint, &retry_in))
		{
			sm_metrics_http(SM_HTTP_BREAKER_OPEN);
			ereport(ERROR,
					(errcode(ERRCODE_SM_BACKEND),
					 errmsg("%s at %s is unavailable", req->service, req->endpoint),
					 errdetail("Its last %d requests failed; requests are refused for about %d more second%s.",
							   sm_http_breaker_failures, retry_in, retry_in == 1 ? "" : "s"),
					 errhint("Nothing was changed.  See secret_mgmt.http_breaker_cooldown.")));
		}
		attempts++;
		if (left <= 0)
		{
			memset(&att, 0, sizeof(att));
			att.code = CURLE_OPERATION_TIMEDOUT;
			count_attempt(&att);
			breaker_record(req->endpoint, false);
			break;
		}
		perform_once(req, url, left, &att, resp);
		count_attempt(&att);
		ok = att.code == CURLE_OK && !sm_http_transient(att.status);
		breaker_record(req->endpoint, ok);
		if (ok)
			break;
		if (attempts >= max_attempts || ms_left(deadline) <= BACKOFF_BASE_MS / 2)
			break;
		if (att.code == CURLE_OK)
			sm_http_free(resp);
		ereport(DEBUG1,
				(errmsg_internal("secret_mgmt: %s %s: attempt %d failed, retrying",
								 req->service, req->method, attempts)));
		backoff(attempts - 1, ms_left(deadline));
	}
	pfree(url);

	if (att.code != CURLE_OK)
		report_transport(req, &att, attempts, budget_ms);
	if (resp->status >= 300 && resp->status < 400)
	{
		sm_http_free(resp);
		ereport(ERROR,
				(errcode(ERRCODE_SM_BACKEND),
				 errmsg("%s at %s answered with a redirect", req->service, req->endpoint),
				 errdetail("Redirects are never followed, so that credentials go only to the configured address."),
				 errhint("Nothing was changed.  Configure the address the backend really serves.")));
	}
}

/* Wipe and release a response body. */
void
sm_http_free(SmHttpResponse *resp)
{
	/* A secure allocation: wiped now, released with its memory context. */
	if (resp->body)
		sm_wipe(resp->body, resp->body_len + 1);
	resp->body = NULL;
	resp->body_len = 0;
}

/*
 * Validate a backend address: https://host[:port], no user information,
 * path, query or fragment.  The host is not resolved here.
 */
void
sm_http_check_address(const char *service, const char *address)
{
	const char *problem = NULL;
	const char *host;
	size_t		len = strlen(address);

	if (strncmp(address, "https://", 8) != 0)
		problem = "The address must start with https://; plain HTTP is never used.";
	else if (len > BREAKER_KEY_LEN - 1)
		problem = "The address is too long.";
	else
	{
		host = address + 8;
		if (*host == '\0' || *host == '/' || *host == ':')
			problem = "The address has no host.";
		for (const char *p = host; problem == NULL && *p; p++)
		{
			unsigned char c = (unsigned char) *p;

			if (c == '/' && p[1] == '\0')
				break;			/* one trailing slash */
			if (!(isalnum(c) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']'))
				problem = "The address is https://host or https://host:port, with no user, path, query or fragment.";
		}
	}
	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s address", service),
				 errdetail("%s", problem)));
}

/* ---------------------------------------------------------------------
 * JSON
 * ---------------------------------------------------------------------
 */

#define JSON_MAX_DEPTH	16

typedef struct PickState
{
	SmJsonFields *fields;
	int			depth;
	char	   *path[JSON_MAX_DEPTH];
	int			index[JSON_MAX_DEPTH];	/* next element index of an array */
	bool		in_array[JSON_MAX_DEPTH];
} PickState;

static void
pick_push(PickState *st, char *name)
{
	if (st->depth < JSON_MAX_DEPTH)
		st->path[st->depth] = name;
	st->depth++;
}

static void
pick_pop(PickState *st)
{
	st->depth--;
	if (st->depth < JSON_MAX_DEPTH && st->path[st->depth])
		pfree(st->path[st->depth]);
}

static SM_JSON_ACTION
pick_field_start(void *state, char *fname, bool isnull)
{
	pick_push((PickState *) state, fname);
	SM_JSON_ACTION_DONE;
}

static SM_JSON_ACTION
pick_field_end(void *state, char *fname, bool isnull)
{
	pick_pop((PickState *) state);
	SM_JSON_ACTION_DONE;
}

static SM_JSON_ACTION
pick_array_start(void *state)
{
	PickState  *st = (PickState *) state;

	if (st->depth < JSON_MAX_DEPTH)
		st->index[st->depth] = 0;
	SM_JSON_ACTION_DONE;
}

static SM_JSON_ACTION
pick_elem_start(void *state, bool isnull)
{
	PickState  *st = (PickState *) state;
	int			i = st->depth < JSON_MAX_DEPTH ? st->index[st->depth]++ : 0;

	pick_push(st, psprintf("%d", i));
	SM_JSON_ACTION_DONE;
}

static SM_JSON_ACTION
pick_elem_end(void *state, bool isnull)
{
	pick_pop((PickState *) state);
	SM_JSON_ACTION_DONE;
}

/* Does the current path equal the dotted `want`? */
static bool
pick_path_is(PickState *st, const char *want)
{
	const char *p = want;

	if (st->depth > JSON_MAX_DEPTH)
		return false;
	for (int i = 0; i < st->depth; i++)
	{
		size_t		n = strlen(st->path[i]);

		if (strncmp(p, st->path[i], n) != 0)
			return false;
		p += n;
		if (i < st->depth - 1)
		{
			if (*p != '.')
				return false;
			p++;
		}
	}
	return *p == '\0';
}

static SM_JSON_ACTION
pick_scalar(void *state, char *token, JsonTokenType tokentype)
{
	PickState  *st = (PickState *) state;
	size_t		len = strlen(token);

	if (tokentype != JSON_TOKEN_NULL)
		for (int i = 0; i < st->fields->nfields; i++)
		{
			if (st->fields->values[i] == NULL &&
				pick_path_is(st, st->fields->paths[i]))
			{
				st->fields->values[i] = sm_secure_alloc(len + 1);
				memcpy(st->fields->values[i], token, len + 1);
				break;
			}
		}
	sm_wipe(token, len);
	pfree(token);
	SM_JSON_ACTION_DONE;
}

/*
 * Parse `json` (which must be valid UTF-8 JSON) and keep the scalars at
 * fields->paths.  Returns false, keeping nothing, when it is not JSON.
 */
bool
sm_json_pick(const char *json, size_t len, SmJsonFields *fields)
{
	JsonLexContext *lex;
	JsonSemAction sem;
	PickState	st;
	JsonParseErrorType rc;

	for (int i = 0; i < fields->nfields; i++)
		fields->values[i] = NULL;
	if (len > INT_MAX || pg_encoding_verifymbstr(PG_UTF8, json, (int) len) != (int) len)
		return false;

	memset(&st, 0, sizeof(st));
	st.fields = fields;
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &st;
	sem.object_field_start = pick_field_start;
	sem.object_field_end = pick_field_end;
	sem.array_start = pick_array_start;
	sem.array_element_start = pick_elem_start;
	sem.array_element_end = pick_elem_end;
	sem.scalar = pick_scalar;

	lex = sm_json_lexer((char *) json, (int) len);
	rc = pg_parse_json(lex, &sem);
	/* The lexer's de-escaped copy of the last string. */
	if (lex->strval)
		sm_wipe(lex->strval->data, lex->strval->maxlen);
	sm_json_lexer_free(lex);
	if (rc != JSON_SUCCESS)
	{
		sm_json_forget(fields);
		return false;
	}
	return true;
}

/* Wipe and release the values picked by sm_json_pick(). */
void
sm_json_forget(SmJsonFields *fields)
{
	for (int i = 0; i < fields->nfields; i++)
	{
		/* Secure allocations: wiped now, released with their context. */
		if (fields->values[i])
			sm_wipe(fields->values[i], strlen(fields->values[i]));
		fields->values[i] = NULL;
	}
}

/* Append a JSON string literal (quoted and escaped). */
void
sm_json_append_string(StringInfo buf, const char *value)
{
	escape_json(buf, value);
}

static void
wipe_stringinfo_cb(void *arg)
{
	StringInfo	buf = (StringInfo) arg;

	if (buf->data)
		sm_wipe(buf->data, buf->maxlen);
}

/*
 * A StringInfo for sensitive text (a request body with a key, a credential
 * or a value), wiped when its memory context goes away, error or not.  It
 * is made with room for `size` bytes, which the caller computes for its
 * largest body: a buffer that grew would leave its old copy unwiped.
 */
StringInfo
sm_secure_stringinfo(size_t size)
{
	StringInfo	buf = makeStringInfo();
	MemoryContextCallback *cb = palloc(sizeof(MemoryContextCallback));

	enlargeStringInfo(buf, (int) Max(size, SM_HTTP_SMALL_BODY));
	cb->func = wipe_stringinfo_cb;
	cb->arg = buf;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	return buf;
}

/* Wipe and release a StringInfo that held sensitive text. */
void
sm_wipe_stringinfo(StringInfo buf)
{
	if (buf->data)
		sm_wipe(buf->data, buf->maxlen);
	buf->len = 0;
	if (buf->data)
		buf->data[0] = '\0';
}
