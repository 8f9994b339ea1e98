/*-------------------------------------------------------------------------
 *
 * backend_vault.c
 *		The HashiCorp Vault (and OpenBao) client: configuration, token and
 *		AppRole authentication, the Transit calls the KMS makes, and the KV
 *		version 2 calls of a secret-store backend (outbox.c, store.c).
 *
 * Credentials are never SQL literals or settings: a configuration names a
 * secret of the global tenant (credentials_path), read here internally,
 * holding either the token itself (auth "token") or the JSON object
 * {"role_id": ..., "secret_id": ...} (auth "approle").
 *
 * Each backend process keeps the Vault token it obtained, per address,
 * namespace, auth method and credential path, in memory wiped when it is
 * replaced.  An AppRole login's token is renewed with renew-self once two
 * thirds of its lease have passed, and obtained again by logging in when
 * renewal is refused or it expired; a configured token is looked up once
 * (lookup-self) to learn whether and when to renew it.  A 403 answer drops
 * the token, and the request is made once more with a fresh one (the
 * credential secret may have changed, or the token expired early).
 *
 * Errors name the Vault address and the operation, never a token, a
 * credential or a value; the first message of Vault's own error list is
 * passed on in the detail, reduced to printable ASCII.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "backend.h"
#include "common/base64.h"
#include "crypto.h"
#include "store.h"
#include "http.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define TOKEN_SLOTS			8
#define MAX_NAME_LEN		128
#define MAX_CIPHERTEXT_LEN	4096
#define MAX_TOKEN_LEN		1024

/*
 * A KV read answers with a value of up to SM_MAX_VALUE_BYTES, escaped in
 * JSON (at most six bytes per byte), with its metadata around it.
 */
#define KV_READ_MAX_RESPONSE	((size_t) SM_MAX_VALUE_BYTES * 6 + 64 * 1024)

/* A Vault token this backend holds. */
typedef struct TokenSlot
{
	bool		used;
	uint8		id[32];			/* digest of where and how it was obtained */
	char	   *token;			/* TopMemoryContext; wiped before release */
	TimestampTz renew_after;	/* 0: never renew */
	TimestampTz expires_at;		/* 0: does not expire */
	bool		renewable;
} TokenSlot;

static TokenSlot tokens[TOKEN_SLOTS];

/* ---------------------------------------------------------------------
 * Configuration
 * ---------------------------------------------------------------------
 */

static void
config_error(const char *detail, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid vault configuration"),
			 errdetail("%s", detail),
			 hint ? errhint("%s", hint) : 0));
}

/* A mount or namespace: segments of [A-Za-z0-9._-] joined by '/'. */
static bool
valid_mount(const char *s)
{
	size_t		len = strlen(s);
	size_t		seg = 0;

	if (len == 0 || len > MAX_NAME_LEN)
		return false;
	for (size_t i = 0; i <= len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '/' || c == '\0')
		{
			size_t		n = i - seg;

			if (n == 0 || (n == 1 && s[seg] == '.') ||
				(n == 2 && s[seg] == '.' && s[seg + 1] == '.'))
				return false;
			seg = i + 1;
		}
		else if (!(isalnum(c) || c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* A key name: one segment. */
static bool
valid_name(const char *s)
{
	return valid_mount(s) && strchr(s, '/') == NULL;
}

/* The "tenants" array of a backend's configuration. */
static List *
config_tenants(JsonbContainer *array)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	List	   *tenants = NIL;

	if (!JsonContainerIsArray(array))
		config_error("Key \"tenants\" is an array of tenant names.", NULL);
	it = JsonbIteratorInit(array);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *name;

		if (tok != WJB_ELEM)
			continue;
		if (v.type != jbvString)
			config_error("Key \"tenants\" is an array of tenant names.", NULL);
		name = pnstrdup(v.val.string.val, v.val.string.len);
		if (!valid_name(name))
			config_error(psprintf("\"%s\" is not a tenant name.", name), NULL);
		tenants = lappend(tenants, name);
	}
	if (tenants == NIL)
		config_error("Key \"tenants\" names at least one tenant.",
					 "Leave the key out to let every tenant store secrets in the backend.");
	return tenants;
}

/*
 * Validate a Vault configuration and fill `out`.  For a KMS (Transit) the
 * credential path and the key are part of the configuration; a secret-store
 * backend gets its credential path from secret_backend_create().
 */
void
sm_vault_config_parse(Jsonb *config, SmVaultUse use, const char *credentials_path,
					  SmVaultConfig *out)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;

	memset(out, 0, sizeof(*out));
	if (!JB_ROOT_IS_OBJECT(config) || JB_ROOT_IS_SCALAR(config))
		config_error("The configuration must be a JSON object.", NULL);

	it = JsonbIteratorInit(&config->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *str = NULL;

		if (tok == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (tok != WJB_VALUE)
			continue;

		if (strcmp(key, "token") == 0 || strcmp(key, "role_id") == 0 ||
			strcmp(key, "secret_id") == 0 || strcmp(key, "password") == 0 ||
			strcmp(key, "client_token") == 0)
			config_error(psprintf("Key \"%s\" would put a credential into SQL.", key),
						 "Store credentials as a secret of the global tenant and name it in credentials_path.");
		if (strcmp(key, "tenants") == 0)
		{
			if (use != SM_VAULT_KV || v.type != jbvBinary)
				config_error("Key \"tenants\" is an array of tenant names, and only for a backend.", NULL);
			out->tenants = config_tenants(v.val.binary.data);
			continue;
		}
		if (strcmp(key, "derived") == 0)
		{
			if (use != SM_VAULT_TRANSIT || v.type != jbvBool)
				config_error("Key \"derived\" is a boolean, and only for a KMS.", NULL);
			out->derived = v.val.boolean;
			continue;
		}
		if (v.type != jbvString)
			config_error(psprintf("Key \"%s\" must be a string.", key), NULL);
		str = pnstrdup(v.val.string.val, v.val.string.len);

		if (strcmp(key, "address") == 0)
		{
			sm_http_check_address("vault", str);
			out->address = str;
		}
		else if (strcmp(key, "mount") == 0)
		{
			if (!valid_mount(str))
				config_error("The mount is one or more segments of letters, digits, '.', '_' and '-', joined by '/'.", NULL);
			out->mount = str;
		}
		else if (strcmp(key, "namespace") == 0)
		{
			if (!valid_mount(str))
				config_error("The namespace is one or more segments of letters, digits, '.', '_' and '-', joined by '/'.", NULL);
			out->namespace = str;
		}
		else if (strcmp(key, "ca_file") == 0)
		{
			bool		ok = str[0] == '/' && strlen(str) < MAXPGPATH;

			for (char *p = str; ok && *p; p++)
				ok = (unsigned char) *p >= 0x20 && *p != 0x7f;
			if (!ok)
				config_error("The CA file is an absolute path.", NULL);
			out->ca_file = str;
		}
		else if (strcmp(key, "auth") == 0)
		{
			if (strcmp(str, "token") != 0 && strcmp(str, "approle") != 0)
				config_error("The auth method is \"token\" or \"approle\".", NULL);
			out->auth = str;
		}
		else if (strcmp(key, "auth_mount") == 0)
		{
			if (!valid_mount(str))
				config_error("The auth mount is one or more segments of letters, digits, '.', '_' and '-', joined by '/'.", NULL);
			out->auth_mount = str;
		}
		else if (strcmp(key, "key") == 0 && use == SM_VAULT_TRANSIT)
		{
			if (!valid_name(str))
				config_error("The Transit key name is letters, digits, '.', '_' and '-'.", NULL);
			out->key = str;
		}
		else if (strcmp(key, "credentials_path") == 0 && use == SM_VAULT_TRANSIT)
		{
			sm_store_check_path(str);
			out->credentials_path = str;
		}
		else if (strcmp(key, "credentials_path") == 0)
			config_error("The credential path of a backend is an argument of its own.",
						 "Pass it as credentials_path to secret_mgmt.secret_backend_create().");
		else
			config_error(psprintf("Unknown key \"%s\".", key),
						 use == SM_VAULT_TRANSIT ?
						 "A Vault KMS takes address, key, credentials_path, mount, namespace, ca_file, auth, auth_mount and derived." :
						 "A Vault backend takes address, mount, namespace, ca_file, auth, auth_mount and tenants.");
	}

	if (use == SM_VAULT_KV && credentials_path != NULL)
	{
		sm_store_check_path(credentials_path);
		out->credentials_path = pstrdup(credentials_path);
	}
	if (out->address == NULL)
		config_error("The address (https://host:port) is missing.", NULL);
	if (out->credentials_path == NULL)
		config_error("The credential path is missing.",
					 "Store the token, or the AppRole role_id and secret_id, as a secret of the global tenant and name its path.");
	if (use == SM_VAULT_TRANSIT && out->key == NULL)
		config_error("The Transit key name (key) is missing.", NULL);
	if (out->mount == NULL)
		out->mount = pstrdup(use == SM_VAULT_TRANSIT ? "transit" : "secret");
	if (out->auth == NULL)
		out->auth = pstrdup("token");
	if (out->auth_mount == NULL)
		out->auth_mount = pstrdup("approle");
}

/* ---------------------------------------------------------------------
 * Requests
 * ---------------------------------------------------------------------
 */

/* Vault's first error message, as printable ASCII, or NULL. */
static char *
vault_error_text(const SmHttpResponse *resp)
{
	SmJsonFields f = {1, {"errors.0"}};
	char	   *msg = NULL;

	if (resp->body_len > 0 && sm_json_pick(resp->body, resp->body_len, &f) &&
		f.values[0] != NULL)
	{
		size_t		n = Min(strlen(f.values[0]), 200);

		msg = pnstrdup(f.values[0], n);
		for (char *p = msg; *p; p++)
			if ((unsigned char) *p < 0x20 || (unsigned char) *p > 0x7e)
				*p = '?';
	}
	sm_json_forget(&f);
	return msg;
}

/*
 * Raise the error for an unsuccessful answer to `what`.  A 400 from an
 * operation that authenticates data is an integrity failure (SM005) when
 * `bad_request_is_integrity`; everything else is SM006.
 */
static void
vault_fail(const SmVaultConfig *cfg, const SmHttpResponse *resp, const char *what,
		   bool bad_request_is_integrity)
{
	char	   *vmsg = vault_error_text(resp);
	char	   *detail;
	const char *hint = "Nothing was changed.";
	int			code = ERRCODE_SM_BACKEND;
	char	   *msg;

	if (vmsg)
		detail = psprintf("Vault answered HTTP %ld: %s.", resp->status, vmsg);
	else
		detail = psprintf("Vault answered HTTP %ld.", resp->status);

	switch (resp->status)
	{
		case 503:
			msg = psprintf("vault at %s is sealed or unavailable", cfg->address);
			hint = "Nothing was changed.  Retry once Vault is unsealed and active.";
			break;
		case 429:
			msg = psprintf("vault at %s is rate limiting requests", cfg->address);
			break;
		case 403:
			msg = psprintf("vault at %s denied permission to %s", cfg->address, what);
			hint = "Nothing was changed.  Check the Vault policy of the credentials (see docs/backends.md).";
			break;
		case 404:
			msg = psprintf("vault at %s could not %s: not found", cfg->address, what);
			hint = "Nothing was changed.  Check the mount and key names of the configuration.";
			break;
		case 400:
			if (bad_request_is_integrity)
			{
				code = ERRCODE_SM_INTEGRITY;
				msg = psprintf("vault at %s could not %s: the ciphertext does not authenticate",
							   cfg->address, what);
				hint = "The wrapped key was altered, moved, or wrapped under another Transit key.";
				break;
			}
			/* FALLTHROUGH */
		default:
			msg = psprintf("vault at %s failed to %s", cfg->address, what);
			break;
	}
	ereport(ERROR,
			(errcode(code),
			 errmsg_internal("%s", msg),
			 errdetail_internal("%s", detail),
			 errhint("%s", hint)));
}

/* Raise SM006 for an answer that is not the JSON expected. */
static void
invalid_response(const SmVaultConfig *cfg, SmHttpResponse *resp, const char *what)
{
	sm_http_free(resp);
	ereport(ERROR,
			(errcode(ERRCODE_SM_BACKEND),
			 errmsg("vault at %s sent an invalid response", cfg->address),
			 errdetail("The answer to %s is not the JSON expected.", what),
			 errhint("Nothing was changed.")));
}

/* Fill the header lines common to every request; returns the next index. */
static int
base_headers(const SmVaultConfig *cfg, SmHttpRequest *req, char *token_header)
{
	int			n = 0;

	if (token_header)
		req->headers[n++] = token_header;
	req->headers[n++] = "X-Vault-Request: true";
	if (cfg->namespace)
		req->headers[n++] = psprintf("X-Vault-Namespace: %s", cfg->namespace);
	req->headers[n] = NULL;
	return n;
}

/*
 * A request, with the token header given (NULL for a login).  Answers
 * longer than `max_response` bytes (0: the client's default) fail.
 */
static void
vault_send(const SmVaultConfig *cfg, const char *method, const char *path,
		   const StringInfo body, bool idempotent, char *token_header,
		   size_t max_response, SmHttpResponse *resp)
{
	SmHttpRequest req;

	memset(&req, 0, sizeof(req));
	req.service = "vault";
	req.endpoint = cfg->address;
	req.method = method;
	req.path = path;
	req.ca_file = cfg->ca_file;
	req.idempotent = idempotent;
	req.max_response = max_response;
	if (body)
	{
		req.body = body->data;
		req.body_len = body->len;
	}
	base_headers(cfg, &req, token_header);
	sm_http_request(&req, resp);
}

/*
 * vault_send(), then wipe the token header and (when `wipe_body`) the
 * body.  Both are wiped allocations, so an error on the way wipes them too,
 * when the memory context is reset.
 */
static void
vault_send_wiping(const SmVaultConfig *cfg, const char *method, const char *path,
				  StringInfo body, bool wipe_body, bool idempotent,
				  char *token_header, size_t max_response, SmHttpResponse *resp)
{
	vault_send(cfg, method, path, body, idempotent, token_header, max_response, resp);
	if (token_header)
		sm_wipe(token_header, strlen(token_header));
	if (wipe_body && body)
		sm_wipe_stringinfo(body);
}

/* The slot id of a configuration's token. */
static void
token_id(const SmVaultConfig *cfg, uint8 *id)
{
	char	   *s = psprintf("%s|%s|%s|%s|%s", cfg->address,
							 cfg->namespace ? cfg->namespace : "",
							 cfg->auth, cfg->auth_mount, cfg->credentials_path);
	unsigned int n = 32;

	if (EVP_Digest(s, strlen(s), id, &n, EVP_sha256(), NULL) != 1)
		elog(ERROR, "could not compute a digest");
	pfree(s);
}

static void
token_drop(TokenSlot *slot)
{
	if (slot->token)
	{
		sm_wipe(slot->token, strlen(slot->token));
		pfree(slot->token);
	}
	memset(slot, 0, sizeof(*slot));
}

/* Remember a token with a lease of `lease_s` seconds (0: none). */
static TokenSlot *
token_store(const uint8 *id, const char *token, int64 lease_s, bool renewable)
{
	TokenSlot  *slot = NULL;
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < TOKEN_SLOTS && slot == NULL; i++)
		if (tokens[i].used && memcmp(tokens[i].id, id, 32) == 0)
			slot = &tokens[i];
	for (int i = 0; i < TOKEN_SLOTS && slot == NULL; i++)
		if (!tokens[i].used)
			slot = &tokens[i];
	if (slot == NULL)
		slot = &tokens[0];
	token_drop(slot);
	slot->used = true;
	memcpy(slot->id, id, 32);
	slot->token = MemoryContextStrdup(TopMemoryContext, token);
	slot->renewable = renewable;
	if (lease_s > 0)
	{
		slot->expires_at = TimestampTzPlusMilliseconds(now, lease_s * 1000);
		slot->renew_after = TimestampTzPlusMilliseconds(now, lease_s * 2000 / 3);
	}
	return slot;
}

static bool
token_chars_ok(const char *s, size_t len)
{
	if (len == 0 || len > MAX_TOKEN_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char) s[i] <= 0x20 || (unsigned char) s[i] >= 0x7f)
			return false;
	return true;
}

static char *
token_header(const char *token)
{
	size_t		n = strlen("X-Vault-Token: ") + strlen(token) + 1;
	char	   *h = sm_secure_alloc(n);

	snprintf(h, n, "X-Vault-Token: %s", token);
	return h;
}

static int64
field_int(const char *s)
{
	return s ? strtol(s, NULL, 10) : 0;
}

static bool
field_bool(const char *s)
{
	return s && strcmp(s, "true") == 0;
}

/* Log in with AppRole; returns the new token's slot. */
static TokenSlot *
approle_login(const SmVaultConfig *cfg, const uint8 *id, const uint8 *cred, size_t len)
{
	SmJsonFields c = {2, {"role_id", "secret_id"}};
	SmJsonFields a = {3, {"auth.client_token", "auth.lease_duration", "auth.renewable"}};
	StringInfo	body = sm_secure_stringinfo(SM_HTTP_SMALL_BODY);
	SmHttpResponse resp;
	TokenSlot  *slot;
	char	   *path;

	if (!sm_json_pick((const char *) cred, len, &c) || c.values[0] == NULL || c.values[1] == NULL)
	{
		sm_json_forget(&c);
		ereport(ERROR,
				(errcode(ERRCODE_SM_BACKEND),
				 errmsg("the vault credentials in secret \"%s\" are not an AppRole login",
						cfg->credentials_path),
				 errdetail("With auth \"approle\" the secret holds a JSON object with role_id and secret_id.")));
	}
	appendStringInfoString(body, "{\"role_id\":");
	sm_json_append_string(body, c.values[0]);
	appendStringInfoString(body, ",\"secret_id\":");
	sm_json_append_string(body, c.values[1]);
	appendStringInfoChar(body, '}');
	sm_json_forget(&c);

	path = psprintf("/v1/auth/%s/login", cfg->auth_mount);
	vault_send_wiping(cfg, "POST", path, body, true, false, NULL, 0, &resp);
	if (resp.status != 200)
		vault_fail(cfg, &resp, "log in with AppRole", false);
	if (!sm_json_pick(resp.body, resp.body_len, &a) || a.values[0] == NULL ||
		!token_chars_ok(a.values[0], strlen(a.values[0])))
	{
		sm_http_free(&resp);
		ereport(ERROR,
				(errcode(ERRCODE_SM_BACKEND),
				 errmsg("vault at %s sent an invalid response", cfg->address),
				 errdetail("The answer to the AppRole login holds no usable token."),
				 errhint("Nothing was changed.")));
	}
	sm_http_free(&resp);
	slot = token_store(id, a.values[0], field_int(a.values[1]), field_bool(a.values[2]));
	sm_json_forget(&a);
	return slot;
}

/* Adopt a configured token, learning its lease with lookup-self. */
static TokenSlot *
token_adopt(const SmVaultConfig *cfg, const uint8 *id, const uint8 *cred, size_t len)
{
	SmJsonFields d = {2, {"data.ttl", "data.renewable"}};
	SmHttpResponse resp;
	char	   *token;
	char	   *header;
	TokenSlot  *slot;

	/* Surrounding white space (a trailing newline) is not part of it. */
	while (len > 0 && isspace(cred[len - 1]))
		len--;
	while (len > 0 && isspace(cred[0]))
	{
		cred++;
		len--;
	}
	if (!token_chars_ok((const char *) cred, len))
		ereport(ERROR,
				(errcode(ERRCODE_SM_BACKEND),
				 errmsg("the vault credentials in secret \"%s\" are not a token",
						cfg->credentials_path),
				 errdetail("With auth \"token\" the secret holds the token: printable characters, no spaces.")));
	token = sm_secure_alloc(len + 1);
	memcpy(token, cred, len);
	header = token_header(token);
	vault_send_wiping(cfg, "GET", "/v1/auth/token/lookup-self", NULL, false, true,
					  header, 0, &resp);
	if (resp.status != 200)
	{
		sm_wipe(token, len);
		vault_fail(cfg, &resp, "look up its token", false);
	}
	if (!sm_json_pick(resp.body, resp.body_len, &d))
	{
		sm_wipe(token, len);
		invalid_response(cfg, &resp, "the token lookup");
	}
	sm_http_free(&resp);
	slot = token_store(id, token, field_int(d.values[0]), field_bool(d.values[1]));
	sm_json_forget(&d);
	sm_wipe(token, len);
	return slot;
}

/* Renew a token in place; false if Vault refused (the caller logs in again). */
static bool
token_renew(const SmVaultConfig *cfg, TokenSlot *slot)
{
	SmJsonFields a = {2, {"auth.lease_duration", "auth.renewable"}};
	SmHttpResponse resp;
	StringInfo	body = sm_secure_stringinfo(SM_HTTP_SMALL_BODY);
	char	   *header = token_header(slot->token);
	int64		lease;
	TimestampTz now = GetCurrentTimestamp();

	appendStringInfoString(body, "{}");
	vault_send_wiping(cfg, "POST", "/v1/auth/token/renew-self", body, false, true,
					  header, 0, &resp);
	if (resp.status == 400 || resp.status == 403)
	{
		sm_http_free(&resp);
		return false;
	}
	if (resp.status != 200)
		vault_fail(cfg, &resp, "renew its token", false);
	if (!sm_json_pick(resp.body, resp.body_len, &a))
		invalid_response(cfg, &resp, "the token renewal");
	sm_http_free(&resp);
	lease = field_int(a.values[0]);
	slot->renewable = field_bool(a.values[1]);
	slot->expires_at = lease > 0 ? TimestampTzPlusMilliseconds(now, lease * 1000) : 0;
	slot->renew_after = lease > 0 ? TimestampTzPlusMilliseconds(now, lease * 2000 / 3) : 0;
	sm_json_forget(&a);
	return true;
}

/*
 * The token to use for `cfg`: the one held, renewed when due, or a fresh
 * one (always, with `fresh`).  *obtained says whether it was just obtained.
 */
static TokenSlot *
token_get(const SmVaultConfig *cfg, bool fresh, bool *obtained)
{
	uint8		id[32];
	TokenSlot  *slot = NULL;
	TimestampTz now = GetCurrentTimestamp();
	uint8	   *cred;
	size_t		len;

	token_id(cfg, id);
	for (int i = 0; i < TOKEN_SLOTS; i++)
		if (tokens[i].used && memcmp(tokens[i].id, id, 32) == 0)
			slot = &tokens[i];
	*obtained = false;
	if (slot && fresh)
		token_drop(slot);
	else if (slot && slot->expires_at != 0 && now >= slot->expires_at)
		token_drop(slot);
	else if (slot)
	{
		if (slot->renewable && slot->renew_after != 0 && now >= slot->renew_after &&
			!token_renew(cfg, slot))
			token_drop(slot);
		else
			return slot;
	}

	if (cfg->credential != NULL)
	{
		/* Read beforehand by a caller with no transaction open (outbox.c). */
		len = cfg->credential_len;
		cred = sm_secure_alloc(len + 1);
		memcpy(cred, cfg->credential, len);
	}
	else
		cred = sm_platform_secret(cfg->credentials_path, &len);
	if (strcmp(cfg->auth, "approle") == 0)
		slot = approle_login(cfg, id, cred, len);
	else
		slot = token_adopt(cfg, id, cred, len);
	sm_wipe(cred, len);
	*obtained = true;
	return slot;
}

/*
 * An authenticated request.  A 403 with a token held from before is
 * retried once with a fresh token.  The body is wiped afterwards, error or
 * not, when `wipe_body`.  Answers longer than `max_response` bytes (0: the
 * client's default) fail.  Returns the answer for the caller to judge.
 */
static void
vault_call(const SmVaultConfig *cfg, const char *method, const char *path,
		   StringInfo body, bool wipe_body, bool idempotent, size_t max_response,
		   SmHttpResponse *resp)
{
	for (int round = 0; round < 2; round++)
	{
		bool		obtained = false;
		TokenSlot  *slot = token_get(cfg, round > 0, &obtained);

		vault_send_wiping(cfg, method, path, body, false, idempotent,
						  token_header(slot->token), max_response, resp);
		if (resp->status != 403 || obtained)
			break;
		sm_http_free(resp);
	}
	if (wipe_body && body)
		sm_wipe_stringinfo(body);
}

/* ---------------------------------------------------------------------
 * Transit
 * ---------------------------------------------------------------------
 */

/* Is this a Transit ciphertext, "vault:v<N>:<base64>"? */
bool
sm_vault_ciphertext_valid(const char *s, size_t len)
{
	size_t		i = 7;

	if (len < 10 || len > MAX_CIPHERTEXT_LEN || strncmp(s, "vault:v", 7) != 0)
		return false;
	while (i < len && isdigit((unsigned char) s[i]))
		i++;
	if (i == 7 || i > 16 || i >= len || s[i] != ':')
		return false;
	for (i++; i < len; i++)
		if (!(isalnum((unsigned char) s[i]) || s[i] == '+' || s[i] == '/' || s[i] == '='))
			return false;
	return true;
}

/* Append ,"name":"<base64 of data>" to a request body. */
static void
append_b64_field(StringInfo body, const char *name, const uint8 *data, size_t len)
{
	int			enclen = pg_b64_enc_len((int) len);
	char	   *enc = sm_secure_alloc(enclen + 1);
	int			n = pg_b64_encode((const char *) data, (int) len, enc, enclen);

	if (n < 0)
		elog(ERROR, "could not encode base64");
	appendStringInfo(body, "\"%s\":\"", name);
	appendBinaryStringInfo(body, enc, n);
	appendStringInfoChar(body, '"');
	sm_wipe(enc, enclen);
}

/* The "ciphertext" of a Transit answer, checked. */
static char *
transit_ciphertext(const SmVaultConfig *cfg, SmHttpResponse *resp, const char *what)
{
	SmJsonFields f = {1, {"data.ciphertext"}};
	char	   *out;

	if (!sm_json_pick(resp->body, resp->body_len, &f) || f.values[0] == NULL ||
		!sm_vault_ciphertext_valid(f.values[0], strlen(f.values[0])))
	{
		sm_json_forget(&f);
		sm_http_free(resp);
		ereport(ERROR,
				(errcode(ERRCODE_SM_BACKEND),
				 errmsg("vault at %s sent an invalid response", cfg->address),
				 errdetail("The answer to %s holds no Transit ciphertext.", what),
				 errhint("Nothing was changed.")));
	}
	out = pstrdup(f.values[0]);
	sm_json_forget(&f);
	sm_http_free(resp);
	return out;
}

/* Encrypt with the configured Transit key; returns "vault:vN:...". */
char *
sm_vault_transit_encrypt(const SmVaultConfig *cfg, const uint8 *plain, size_t len,
						 const uint8 *context, size_t context_len)
{
	StringInfo	body = sm_secure_stringinfo(SM_HTTP_SMALL_BODY);
	SmHttpResponse resp;
	char	   *path = psprintf("/v1/%s/encrypt/%s", cfg->mount, cfg->key);
	char	   *what = psprintf("encrypt with Transit key \"%s\"", cfg->key);

	appendStringInfoChar(body, '{');
	append_b64_field(body, "plaintext", plain, len);
	if (context)
	{
		appendStringInfoChar(body, ',');
		append_b64_field(body, "context", context, context_len);
	}
	appendStringInfoChar(body, '}');
	vault_call(cfg, "POST", path, body, true, true, 0, &resp);
	if (resp.status != 200)
		vault_fail(cfg, &resp, what, false);
	return transit_ciphertext(cfg, &resp, what);
}

/* Decrypt a Transit ciphertext; the plaintext is a wiped allocation. */
uint8 *
sm_vault_transit_decrypt(const SmVaultConfig *cfg, const char *ciphertext,
						 const uint8 *context, size_t context_len, size_t *len)
{
	StringInfo	body = sm_secure_stringinfo(SM_HTTP_SMALL_BODY);
	SmHttpResponse resp;
	SmJsonFields f = {1, {"data.plaintext"}};
	char	   *path = psprintf("/v1/%s/decrypt/%s", cfg->mount, cfg->key);
	char	   *what = psprintf("decrypt with Transit key \"%s\"", cfg->key);
	uint8	   *plain;
	int			declen;
	int			n;

	appendStringInfoString(body, "{\"ciphertext\":");
	sm_json_append_string(body, ciphertext);
	if (context)
	{
		appendStringInfoChar(body, ',');
		append_b64_field(body, "context", context, context_len);
	}
	appendStringInfoChar(body, '}');
	vault_call(cfg, "POST", path, body, false, true, 0, &resp);
	if (resp.status != 200)
		vault_fail(cfg, &resp, what, true);
	if (!sm_json_pick(resp.body, resp.body_len, &f) || f.values[0] == NULL)
	{
		sm_json_forget(&f);
		sm_http_free(&resp);
		ereport(ERROR,
				(errcode(ERRCODE_SM_BACKEND),
				 errmsg("vault at %s sent an invalid response", cfg->address),
				 errdetail("The answer to %s holds no plaintext.", what),
				 errhint("Nothing was changed.")));
	}
	sm_http_free(&resp);
	declen = pg_b64_dec_len((int) strlen(f.values[0]));
	plain = sm_secure_alloc(declen + 1);
	n = pg_b64_decode(f.values[0], (int) strlen(f.values[0]), (char *) plain, declen);
	sm_json_forget(&f);
	if (n < 0)
		ereport(ERROR,
				(errcode(ERRCODE_SM_BACKEND),
				 errmsg("vault at %s sent an invalid response", cfg->address),
				 errdetail("The plaintext in the answer to %s is not base64.", what),
				 errhint("Nothing was changed.")));
	*len = (size_t) n;
	return plain;
}

/* Rewrap a Transit ciphertext under the key's latest version. */
char *
sm_vault_transit_rewrap(const SmVaultConfig *cfg, const char *ciphertext,
						const uint8 *context, size_t context_len)
{
	StringInfo	body = sm_secure_stringinfo(SM_HTTP_SMALL_BODY);
	SmHttpResponse resp;
	char	   *path = psprintf("/v1/%s/rewrap/%s", cfg->mount, cfg->key);
	char	   *what = psprintf("rewrap with Transit key \"%s\"", cfg->key);

	appendStringInfoString(body, "{\"ciphertext\":");
	sm_json_append_string(body, ciphertext);
	if (context)
	{
		appendStringInfoChar(body, ',');
		append_b64_field(body, "context", context, context_len);
	}
	appendStringInfoChar(body, '}');
	vault_call(cfg, "POST", path, body, false, true, 0, &resp);
	if (resp.status != 200)
		vault_fail(cfg, &resp, what, true);
	return transit_ciphertext(cfg, &resp, what);
}

/* ---------------------------------------------------------------------
 * KV version 2
 *
 * A secret lives at <mount>/data/<tenant>/<path>.  Its data holds one
 * field: "value" (the value as text) when the value is valid UTF-8 without
 * NUL bytes, else "value_base64" (standard base64).  Vault numbers the
 * versions of a key itself; outbox.c records which of ours each holds.
 * ---------------------------------------------------------------------
 */

/* Is this answer Vault's check-and-set refusal? */
static bool
cas_refused(const SmHttpResponse *resp)
{
	char	   *msg;
	bool		refused;

	if (resp->status != 400)
		return false;
	msg = vault_error_text(resp);
	refused = msg != NULL && strstr(msg, "check-and-set") != NULL;
	return refused;
}

/*
 * Write a new version with check-and-set `cas` (0: the key must not
 * exist).  Returns the version Vault assigned, or 0 with *cas_mismatch
 * when Vault's current version is not `cas`.  Anything else raises SM006.
 */
int32
sm_vault_kv_write(const SmVaultConfig *cfg, const char *kvpath, const uint8 *value,
				  size_t len, int32 cas, bool *cas_mismatch)
{
	/* JSON escapes a byte as at most six; base64 takes less. */
	StringInfo	body = sm_secure_stringinfo(512 + 6 * len);
	SmHttpResponse resp;
	SmJsonFields f = {1, {"data.version"}};
	char	   *path = psprintf("/v1/%s/data/%s", cfg->mount, kvpath);
	char	   *what = psprintf("write KV secret \"%s\"", kvpath);
	bool		text = memchr(value, '\0', len) == NULL &&
		pg_encoding_verifymbstr(PG_UTF8, (const char *) value, (int) len) == (int) len;
	int32		version;

	*cas_mismatch = false;
	appendStringInfo(body, "{\"options\":{\"cas\":%d},\"data\":{", cas);
	if (text)
	{
		char	   *s = sm_secure_alloc(len + 1);

		memcpy(s, value, len);
		appendStringInfoString(body, "\"value\":");
		sm_json_append_string(body, s);
		sm_wipe(s, len);
	}
	else
		append_b64_field(body, "value_base64", value, len);
	appendStringInfoString(body, "}}");

	/* With check-and-set a repeated write cannot land twice: idempotent. */
	vault_call(cfg, "POST", path, body, true, true, 0, &resp);
	if (cas_refused(&resp))
	{
		sm_http_free(&resp);
		*cas_mismatch = true;
		return 0;
	}
	if (resp.status != 200)
		vault_fail(cfg, &resp, what, false);
	if (!sm_json_pick(resp.body, resp.body_len, &f) || f.values[0] == NULL ||
		(version = (int32) field_int(f.values[0])) <= 0)
	{
		sm_json_forget(&f);
		invalid_response(cfg, &resp, what);
	}
	sm_json_forget(&f);
	sm_http_free(&resp);
	return version;
}

/* The current version of a KV key (metadata), 0 if the key does not exist. */
int32
sm_vault_kv_current(const SmVaultConfig *cfg, const char *kvpath)
{
	SmHttpResponse resp;
	SmJsonFields f = {1, {"data.current_version"}};
	char	   *path = psprintf("/v1/%s/metadata/%s", cfg->mount, kvpath);
	char	   *what = psprintf("read the metadata of KV secret \"%s\"", kvpath);
	int32		version;

	vault_call(cfg, "GET", path, NULL, false, true, 0, &resp);
	if (resp.status == 404)
	{
		sm_http_free(&resp);
		return 0;
	}
	if (resp.status != 200)
		vault_fail(cfg, &resp, what, false);
	if (!sm_json_pick(resp.body, resp.body_len, &f) || f.values[0] == NULL)
	{
		sm_json_forget(&f);
		invalid_response(cfg, &resp, what);
	}
	version = (int32) field_int(f.values[0]);
	sm_json_forget(&f);
	sm_http_free(&resp);
	return version;
}

/*
 * Read version `version` of a KV key (0: the latest).  Returns the value
 * in a wiped allocation, or NULL when the key or version does not exist or
 * is deleted or destroyed: Vault answers those with a 404 that carries the
 * version's metadata, which is not an outage.
 */
uint8 *
sm_vault_kv_read(const SmVaultConfig *cfg, const char *kvpath, int32 version,
				 SmKvRead *out, size_t *len)
{
	SmHttpResponse resp;
	SmJsonFields f = {5, {"data.metadata.version", "data.metadata.deletion_time",
	"data.metadata.destroyed", "data.data.value", "data.data.value_base64"}};
	char	   *path;
	char	   *what = psprintf("read KV secret \"%s\"", kvpath);
	uint8	   *value = NULL;

	memset(out, 0, sizeof(*out));
	*len = 0;
	if (version > 0)
		path = psprintf("/v1/%s/data/%s?version=%d", cfg->mount, kvpath, version);
	else
		path = psprintf("/v1/%s/data/%s", cfg->mount, kvpath);
	vault_call(cfg, "GET", path, NULL, false, true, KV_READ_MAX_RESPONSE, &resp);
	if (resp.status != 200 && resp.status != 404)
		vault_fail(cfg, &resp, what, false);
	if (resp.body_len == 0 || !sm_json_pick(resp.body, resp.body_len, &f))
	{
		sm_json_forget(&f);
		invalid_response(cfg, &resp, what);
	}
	sm_http_free(&resp);
	if (f.values[0] != NULL)
	{
		out->found = true;
		out->version = (int32) field_int(f.values[0]);
		out->deleted = f.values[1] != NULL && f.values[1][0] != '\0';
		out->destroyed = field_bool(f.values[2]);
	}
	if (resp.status == 200 && out->found && !out->deleted && !out->destroyed)
	{
		if (f.values[3] != NULL)
		{
			*len = strlen(f.values[3]);
			value = sm_secure_alloc(*len + 1);
			memcpy(value, f.values[3], *len);
		}
		else if (f.values[4] != NULL)
		{
			int			declen = pg_b64_dec_len((int) strlen(f.values[4]));
			int			n;

			value = sm_secure_alloc(declen + 1);
			n = pg_b64_decode(f.values[4], (int) strlen(f.values[4]), (char *) value, declen);
			if (n < 0)
			{
				sm_json_forget(&f);
				ereport(ERROR,
						(errcode(ERRCODE_SM_BACKEND),
						 errmsg("vault at %s sent an invalid response", cfg->address),
						 errdetail("The value_base64 field of KV secret \"%s\" is not base64.", kvpath),
						 errhint("Nothing was changed.")));
			}
			*len = (size_t) n;
		}
		else
		{
			sm_json_forget(&f);
			ereport(ERROR,
					(errcode(ERRCODE_SM_BACKEND),
					 errmsg("KV secret \"%s\" at %s is not in the format of secret_mgmt",
							kvpath, cfg->address),
					 errdetail("Its data has neither a \"value\" nor a \"value_base64\" field."),
					 errhint("Nothing was changed.  Write it with secret_mgmt, or with one of those fields.")));
		}
	}
	else if (resp.status == 200)
	{
		sm_json_forget(&f);
		ereport(ERROR,
				(errcode(ERRCODE_SM_BACKEND),
				 errmsg("vault at %s sent an invalid response", cfg->address),
				 errdetail("The answer to %s has no version metadata.", what),
				 errhint("Nothing was changed.")));
	}
	sm_json_forget(&f);
	return value;
}

/* POST <mount>/<op>/<kvpath> {"versions": [...]}: delete, undelete, destroy. */
void
sm_vault_kv_versions(const SmVaultConfig *cfg, const char *kvpath, const char *op,
					 const int32 *versions, int n)
{
	StringInfo	body = sm_secure_stringinfo(SM_HTTP_SMALL_BODY);
	SmHttpResponse resp;
	char	   *path = psprintf("/v1/%s/%s/%s", cfg->mount, op, kvpath);
	char	   *what = psprintf("%s versions of KV secret \"%s\"", op, kvpath);

	if (n == 0)
		return;
	appendStringInfoString(body, "{\"versions\":[");
	for (int i = 0; i < n; i++)
		appendStringInfo(body, "%s%d", i ? "," : "", versions[i]);
	appendStringInfoString(body, "]}");
	vault_call(cfg, "POST", path, body, false, true, 0, &resp);
	if (resp.status != 200 && resp.status != 204)
		vault_fail(cfg, &resp, what, false);
	sm_http_free(&resp);
}

/* DELETE <mount>/metadata/<kvpath>: every version and the key; gone is fine. */
void
sm_vault_kv_purge(const SmVaultConfig *cfg, const char *kvpath)
{
	SmHttpResponse resp;
	char	   *path = psprintf("/v1/%s/metadata/%s", cfg->mount, kvpath);
	char	   *what = psprintf("delete KV secret \"%s\"", kvpath);

	vault_call(cfg, "DELETE", path, NULL, false, true, 0, &resp);
	if (resp.status != 200 && resp.status != 204 && resp.status != 404)
		vault_fail(cfg, &resp, what, false);
	sm_http_free(&resp);
}
