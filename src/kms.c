/*-------------------------------------------------------------------------
 *
 * kms.c
 *		What wraps a tenant's data keys: the local root key (keyring.c) or
 *		HashiCorp Vault Transit.  Also secret_rekey().
 *
 * A tenant chooses its KMS when it is created (secret_tenant_create's kms
 * and kms_config) and keeps it.  With kms 'vault' a data key is wrapped by
 * Transit's encrypt endpoint before its row is inserted, and unwrapped by
 * the decrypt endpoint on first use in each backend process; keyring.c
 * caches the result for secret_mgmt.cache_ttl seconds like any other data
 * key.
 *
 * What Transit encrypts is not the bare data key but a small binding
 * record, so that a wrapped key copied to another row is refused even with
 * a non-derived Transit key:
 *
 *	 "SMK1" | key id (uint32, big-endian) | tenant length (1 byte) | tenant |
 *	 data key (32 bytes)
 *
 * Transit's AES-256-GCM authenticates the whole record; after decrypting,
 * the tenant and key id in it must be those of the row.  With "derived":
 * true in kms_config the Transit key is a derived one and every call also
 * sends the context "secret_mgmt/dek|<tenant>|<key id>", so Vault itself
 * refuses a moved ciphertext.  The stored wrapped form is Transit's own
 * ciphertext text, "vault:v<N>:<base64>", which names the Transit key
 * version; kek_id is "vault:<key name>".
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "audit.h"
#include "backend.h"
#include "crypto.h"
#include "store.h"
#include "fmgr.h"
#include "keyring.h"
#include "kms.h"
#include "lookup.h"
#include "miscadmin.h"
#include "query.h"
#include "tenant.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(secret_rekey);

#define BINDING_MAGIC		"SMK1"
#define BINDING_MAX			(4 + 4 + 1 + 255 + SM_KEY_LEN)

/*
 * Validate a tenant's KMS choice at secret_tenant_create().  The credential
 * secret must already exist in the global tenant.
 */
void
sm_kms_check_config(const char *kms, Jsonb *config)
{
	if (strcmp(kms, "local") == 0)
	{
		if (!JB_ROOT_IS_OBJECT(config) || JB_ROOT_COUNT(config) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("kms \"local\" takes no configuration"),
					 errdetail("The local KMS is the root key of secret_mgmt.key_file or secret_mgmt.key_command.")));
		return;
	}
	if (strcmp(kms, "vault") == 0)
	{
		SmVaultConfig cfg;

		sm_vault_config_parse(config, SM_VAULT_TRANSIT, NULL, &cfg);
		if (!sm_platform_secret_exists(cfg.credentials_path))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("credential secret \"%s\" does not exist in the global tenant",
							cfg.credentials_path),
					 errhint("Create it first, after secret_mgmt.secret_use_tenant('global').")));
		return;
	}
	if (strcmp(kms, "aws") == 0 || strcmp(kms, "azure") == 0 || strcmp(kms, "gcp") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("KMS \"%s\" is not supported by this version", kms),
				 errhint("Use kms => 'local' or kms => 'vault'.")));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown KMS \"%s\"", kms),
			 errhint("The KMS is 'local' or 'vault'.")));
}

/* Was this data key wrapped by an external KMS? */
bool
sm_kms_external_kek(const char *kek_id)
{
	return strncmp(kek_id, SM_KEK_VAULT_PREFIX, strlen(SM_KEK_VAULT_PREFIX)) == 0;
}

/* The binding record of a data key, in a wiped allocation. */
static uint8 *
binding(const char *tenant, int32 key_id, const uint8 *dek, size_t *len)
{
	size_t		tlen = strlen(tenant);
	uint8	   *b;

	if (tlen > 255)
		elog(ERROR, "tenant name too long");
	b = sm_secure_alloc(BINDING_MAX);
	memcpy(b, BINDING_MAGIC, 4);
	b[4] = (uint8) ((uint32) key_id >> 24);
	b[5] = (uint8) ((uint32) key_id >> 16);
	b[6] = (uint8) ((uint32) key_id >> 8);
	b[7] = (uint8) key_id;
	b[8] = (uint8) tlen;
	memcpy(b + 9, tenant, tlen);
	memcpy(b + 9 + tlen, dek, SM_KEY_LEN);
	*len = 9 + tlen + SM_KEY_LEN;
	return b;
}

/* The Transit context of a data key, for derived keys; NULL otherwise. */
static char *
context_of(const SmVaultConfig *cfg, const char *tenant, int32 key_id)
{
	return cfg->derived ? psprintf("secret_mgmt/dek|%s|%d", tenant, key_id) : NULL;
}

static void
integrity_error(const char *tenant, int32 key_id, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_SM_INTEGRITY),
			 errmsg("data key %d of tenant \"%s\" failed its integrity check", key_id, tenant),
			 errdetail("%s", detail)));
}

/* The Vault configuration of a tenant whose data key has `kek_id`. */
static void
tenant_vault_config(const char *tenant, int32 key_id, const char *kek_id,
					SmVaultConfig *cfg)
{
	char	   *kms;
	Jsonb	   *config;

	if (!sm_lookup_tenant_kms(tenant, &kms, &config))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("tenant \"%s\" does not exist", tenant)));
	if (strcmp(kms, "vault") != 0)
		integrity_error(tenant, key_id,
						"The key row says Vault Transit wrapped it, but the tenant's KMS is another.");
	sm_vault_config_parse(config, SM_VAULT_TRANSIT, NULL, cfg);
	if (strcmp(kek_id + strlen(SM_KEK_VAULT_PREFIX), cfg->key) != 0)
		integrity_error(tenant, key_id,
						"The key row names another Transit key than the tenant's configuration.");
}

/* The Transit ciphertext text of a wrapped key, checked. */
static char *
wrapped_text(const char *tenant, int32 key_id, const bytea *wrapped)
{
	size_t		len = VARSIZE_ANY_EXHDR(wrapped);
	const char *p = VARDATA_ANY(wrapped);

	if (!sm_vault_ciphertext_valid(p, len))
		integrity_error(tenant, key_id, "The wrapped key is not a Transit ciphertext.");
	return pnstrdup(p, len);
}

/*
 * Wrap a new data key with the tenant's Transit key.  Returns the wrapped
 * form to store; *kek_id gets the kek_id to store with it.  Called before
 * the key's row is inserted, so a failure leaves nothing behind.
 */
bytea *
sm_kms_wrap(const char *tenant, Jsonb *config, int32 key_id, const uint8 *dek,
			char **kek_id)
{
	SmVaultConfig cfg;
	size_t		blen;
	uint8	   *b;
	char	   *ctx;
	char	   *ct;
	bytea	   *out;

	sm_vault_config_parse(config, SM_VAULT_TRANSIT, NULL, &cfg);
	b = binding(tenant, key_id, dek, &blen);
	ctx = context_of(&cfg, tenant, key_id);
	ct = sm_vault_transit_encrypt(&cfg, b, blen, (uint8 *) ctx, ctx ? strlen(ctx) : 0);
	sm_wipe(b, blen);
	out = (bytea *) cstring_to_text(ct);
	*kek_id = psprintf("%s%s", SM_KEK_VAULT_PREFIX, cfg.key);
	return out;
}

/* Unwrap a data key wrapped by Transit into `dek` (SM_KEY_LEN bytes). */
void
sm_kms_unwrap(const char *tenant, int32 key_id, const bytea *wrapped,
			  const char *kek_id, uint8 *dek)
{
	SmVaultConfig cfg;
	char	   *ct;
	char	   *ctx;
	uint8	   *plain;
	size_t		len;
	size_t		expect_len;
	uint8	   *expect;
	static const uint8 zero[SM_KEY_LEN];

	tenant_vault_config(tenant, key_id, kek_id, &cfg);
	ct = wrapped_text(tenant, key_id, wrapped);
	ctx = context_of(&cfg, tenant, key_id);
	plain = sm_vault_transit_decrypt(&cfg, ct, (uint8 *) ctx, ctx ? strlen(ctx) : 0, &len);

	/* The record must name this tenant and key id. */
	expect = binding(tenant, key_id, zero, &expect_len);
	if (len != expect_len || memcmp(plain, expect, len - SM_KEY_LEN) != 0)
	{
		sm_wipe(plain, len);
		integrity_error(tenant, key_id,
						"Vault decrypted it, but it was wrapped for another tenant or key id; it was moved.");
	}
	memcpy(dek, plain + len - SM_KEY_LEN, SM_KEY_LEN);
	sm_wipe(plain, len);
}

/* Rewrap a data key under the latest version of its Transit key. */
bytea *
sm_kms_rewrap(const char *tenant, int32 key_id, const bytea *wrapped,
			  const char *kek_id)
{
	SmVaultConfig cfg;
	char	   *ctx;
	char	   *ct;

	tenant_vault_config(tenant, key_id, kek_id, &cfg);
	ctx = context_of(&cfg, tenant, key_id);
	ct = sm_vault_transit_rewrap(&cfg, wrapped_text(tenant, key_id, wrapped),
								 (uint8 *) ctx, ctx ? strlen(ctx) : 0);
	return (bytea *) cstring_to_text(ct);
}

/*
 * SQL: secret_rekey(tenant) returns the number of data keys rewrapped.
 * A null tenant means every tenant and is for the platform administrator;
 * a tenant's administrators may rekey their own tenant.  All or nothing:
 * the first failure rolls everything back.
 */
Datum
secret_rekey(PG_FUNCTION_ARGS)
{
	static SmStmt all_tenants = {
		"SELECT tenant_id FROM secret_mgmt.secret_tenant ORDER BY tenant_id",
		0, {InvalidOid}
	};
	SmSession	session;
	List	   *tenants = NIL;
	ListCell   *lc;
	int64		total = 0;

	sm_audit_begin("rekey", NULL);
	sm_enter(&session);
	if (PG_ARGISNULL(0))
	{
		int			n;

		if (!superuser_arg(session.caller))
			ereport(ERROR,
					(errcode(ERRCODE_SM_PERMISSION),
					 errmsg("permission denied to rekey every tenant"),
					 errdetail("Only the platform administrator rekeys all tenants at once."),
					 errhint("Name your tenant: secret_mgmt.secret_rekey('tenant').")));
		n = sm_exec(&all_tenants, NULL, NULL, 0);
		for (int i = 0; i < n; i++)
			tenants = lappend(tenants, sm_col_text(i, 1));
	}
	else
	{
		char	   *tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));

		sm_require_tenant_admin(&session, tenant);
		tenants = list_make1(tenant);
	}
	foreach(lc, tenants)
		total += sm_keyring_rekey((const char *) lfirst(lc));
	sm_leave(&session);
	PG_RETURN_INT64(total);
}
