/*-------------------------------------------------------------------------
 *
 * webhook.c
 *		Delivering events to HTTPS webhooks, signed with HMAC-SHA256.
 *
 * A deliberately small libcurl client, used only by the worker with no
 * transaction open: HTTPS only, certificates verified (against the sink's
 * ca_file when it names one), no redirects followed, connect and total
 * timeouts always set, CURLOPT_NOSIGNAL, and a progress callback that
 * aborts the transfer when the worker is told to stop.  Response bodies
 * are discarded.  No palloc or ereport runs inside a libcurl callback.
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

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "events.h"
#include "miscadmin.h"

static bool curl_ready = false;

/* Discard the response body. */
static size_t
discard_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	return size * nmemb;
}

/* Abort the transfer when the process has been asked to stop. */
static int
progress_check(void *clientp, curl_off_t dltotal, curl_off_t dlnow,
			   curl_off_t ultotal, curl_off_t ulnow)
{
	return (ProcDiePending || QueryCancelPending) ? 1 : 0;
}

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
 * POST each message to `url`; returns how many were accepted, in order.
 * On a failure `err` says what went wrong (never a value).
 */
int
sm_webhook_send(const char *url, const char *ca_file, int timeout_ms,
				const uint8 *key, size_t key_len,
				SmOutMessage *msgs, int n, char *err, size_t errlen)
{
	CURL	   *curl;
	int			sent = 0;
	char		curl_err[CURL_ERROR_SIZE];

	err[0] = '\0';
	if (url == NULL || strncmp(url, "https://", 8) != 0)
	{
		strlcpy(err, "the webhook url is not https", errlen);
		return 0;
	}
	if (!curl_ready)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		{
			strlcpy(err, "could not initialise libcurl", errlen);
			return 0;
		}
		curl_ready = true;
	}
	curl = curl_easy_init();
	if (curl == NULL)
	{
		strlcpy(err, "could not create a libcurl handle", errlen);
		return 0;
	}

	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "https");
#else
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS, CURLPROTO_HTTPS);
	curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS, CURLPROTO_HTTPS);
#endif
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
	if (ca_file && ca_file[0])
		curl_easy_setopt(curl, CURLOPT_CAINFO, ca_file);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(timeout_ms, 10000));
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long) timeout_ms);
	curl_easy_setopt(curl, CURLOPT_VERBOSE, 0L);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, progress_check);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard_body);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "secret_mgmt");
	curl_easy_setopt(curl, CURLOPT_POST, 1L);

	for (int i = 0; i < n; i++)
	{
		SmOutMessage *m = &msgs[i];
		struct curl_slist *headers = NULL;
		char		h_event[128];
		char		h_time[64];
		char		h_sig[128];
		CURLcode	rc;
		long		status = 0;

		snprintf(h_event, sizeof(h_event), "X-Secret-Mgmt-Event: %s", m->message_id);
		snprintf(h_time, sizeof(h_time), "X-Secret-Mgmt-Timestamp: " INT64_FORMAT, m->timestamp);
		sign(key, key_len, m, h_sig, sizeof(h_sig));
		headers = curl_slist_append(headers, "Content-Type: application/json");
		headers = curl_slist_append(headers, h_event);
		headers = curl_slist_append(headers, h_time);
		headers = curl_slist_append(headers, h_sig);
		headers = curl_slist_append(headers, "Expect:");
		curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, m->body);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long) m->body_len);
		curl_err[0] = '\0';
		rc = curl_easy_perform(curl);
		curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
		curl_slist_free_all(headers);
		explicit_bzero(h_sig, sizeof(h_sig));
		if (rc != CURLE_OK)
		{
			snprintf(err, errlen, "%s", curl_err[0] ? curl_err : curl_easy_strerror(rc));
			break;
		}
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
		if (status < 200 || status > 299)
		{
			snprintf(err, errlen, "the webhook answered with HTTP status %ld", status);
			break;
		}
		sent++;
	}
	curl_easy_cleanup(curl);
	return sent;
}
