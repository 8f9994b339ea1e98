/*-------------------------------------------------------------------------
 *
 * webhook.c
 *		Delivering events to HTTPS webhooks, signed with HMAC-SHA256.
 *
 * Messages go through the extension's one HTTPS client (http.c): HTTPS
 * only, certificates verified (against the sink's ca_file when it names
 * one), no redirects followed, the sink's timeout_ms as the time budget,
 * interruptible, and the per-endpoint circuit breaker.  Its errors are
 * caught here and turned into the delivery's recorded error.
 *
 * Each event is one POST of its JSON body with the headers
 *
 *	 X-Secret-Mgmt-Event:     the event's opaque id (for de-duplication)
 *	 X-Secret-Mgmt-Timestamp: Unix seconds
 *	 X-Secret-Mgmt-Signature: v1=<hex HMAC-SHA256(key, timestamp "." body)>
 *
 * where the key is the value of the sink's credentials secret.  Sending
 * stops at the first message that is not answered with a 2xx status, so
 * messages are accepted in event order.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "events.h"
#include "http.h"
#include "utils/memutils.h"

/* The signature header of one message. */
static void
sign(const uint8 *key, size_t key_len, const SmOutMessage *m, char *out, size_t outlen)
{
	char		prefix[32];
	uint8		mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	HMAC_CTX   *ctx;
	int			n;

	snprintf(prefix, sizeof(prefix), INT64_FORMAT ".", m->timestamp);
	ctx = HMAC_CTX_new();
	if (ctx == NULL ||
		HMAC_Init_ex(ctx, key, (int) key_len, EVP_sha256(), NULL) != 1 ||
		HMAC_Update(ctx, (const unsigned char *) prefix, strlen(prefix)) != 1 ||
		HMAC_Update(ctx, (const unsigned char *) m->body, m->body_len) != 1 ||
		HMAC_Final(ctx, mac, &maclen) != 1)
		maclen = 0;
	HMAC_CTX_free(ctx);
	n = snprintf(out, outlen, "X-Secret-Mgmt-Signature: v1=");
	for (unsigned int i = 0; i < maclen && n + 3 < (int) outlen; i++)
		n += snprintf(out + n, outlen - n, "%02x", mac[i]);
}

/*
 * POST one message; true if it was answered with a 2xx status.  Any
 * failure -- an error raised by the HTTP client included -- is described
 * in `err` (never a value) and returns false.
 */
static bool
post_one(const char *url, const char *ca_file, int timeout_ms,
		 const uint8 *key, size_t key_len, const SmOutMessage *m,
		 char *err, size_t errlen)
{
	MemoryContext cxt = CurrentMemoryContext;
	SmHttpRequest req;
	SmHttpResponse resp;
	char		h_event[128];
	char		h_time[64];
	char		h_sig[128];
	volatile bool ok = false;

	snprintf(h_event, sizeof(h_event), "X-Secret-Mgmt-Event: %s", m->message_id);
	snprintf(h_time, sizeof(h_time), "X-Secret-Mgmt-Timestamp: " INT64_FORMAT, m->timestamp);
	sign(key, key_len, m, h_sig, sizeof(h_sig));

	memset(&req, 0, sizeof(req));
	req.service = "webhook";
	req.endpoint = url;
	req.method = "POST";
	req.path = "";
	req.ca_file = ca_file;
	req.headers[0] = "Content-Type: application/json";
	req.headers[1] = h_event;
	req.headers[2] = h_time;
	req.headers[3] = h_sig;
	req.headers[4] = NULL;
	req.body = m->body;
	req.body_len = m->body_len;
	req.idempotent = false;		/* the delivery is retried by the worker */
	req.timeout_ms = timeout_ms;

	PG_TRY();
	{
		sm_http_request(&req, &resp);
		if (resp.status >= 200 && resp.status <= 299)
			ok = true;
		else
			snprintf(err, errlen, "the webhook answered with HTTP status %ld", resp.status);
		sm_http_free(&resp);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		snprintf(err, errlen, "%s", edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	explicit_bzero(h_sig, sizeof(h_sig));
	return ok;
}

/*
 * POST each message to `url`; returns how many were accepted, in order
 * (sending stops at the first failure).  On a failure `err` says what
 * went wrong (never a value).
 */
int
sm_webhook_send(const char *url, const char *ca_file, int timeout_ms,
				const uint8 *key, size_t key_len,
				SmOutMessage *msgs, int n, char *err, size_t errlen)
{
	int			sent = 0;

	err[0] = '\0';
	if (url == NULL || strncmp(url, "https://", 8) != 0)
	{
		strlcpy(err, "the webhook url is not https", errlen);
		return 0;
	}
	while (sent < n &&
		   post_one(url, ca_file, timeout_ms, key, key_len, &msgs[sent], err, errlen))
		sent++;
	return sent;
}
