/*-------------------------------------------------------------------------
 *
 * token.c
 *		Pooled applications: signed tokens, their keys, and brokers.
 *
 * An application behind a transaction-pooling proxy shares server
 * connections with others, so its principal cannot be the role it logs in
 * as.  Instead a broker role -- registered for a tenant, with no access of
 * its own -- calls secret_assume(token) at the start of each transaction.
 * The token is a JWS compact JWT signed with a key registered for the
 * tenant; once verified, its subject, groups and team/project claims are
 * the principal and context until the transaction ends (tenant.c).
 *
 * Verification, all in C with OpenSSL:
 *	 - the header's alg must be exactly the alg registered with the key
 *	   named by kid ("none" never is), so a public key can never be used
 *	   as an HMAC secret (algorithm confusion);
 *	 - HS256 compares in constant time; RS256 is RSASSA-PKCS1-v1_5 with
 *	   SHA-256; ES256 is ECDSA P-256, its raw r||s signature converted to
 *	   DER for OpenSSL;
 *	 - exp is required; exp, nbf and iat are judged with
 *	   secret_mgmt.token_leeway seconds of clock skew; aud and iss must
 *	   match the key's audience and issuer when those are set.
 * A refusal is SM002 "token rejected: <reason>" with a fixed reason word,
 * never any part of the token.
 *
 * Key material is sealed like a secret value under the tenant's data key,
 * since an HS256 key is a secret.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "audit.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "crypto.h"
#include "fmgr.h"
#include "loghygiene.h"
#include "keyring.h"
#include "lookup.h"
#include "miscadmin.h"
#include "tenant.h"
#include "types.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(secret_token_key_add);
PG_FUNCTION_INFO_V1(secret_token_key_remove);
PG_FUNCTION_INFO_V1(secret_broker_add);
PG_FUNCTION_INFO_V1(secret_broker_remove);
PG_FUNCTION_INFO_V1(secret_assume);

#define TOKEN_MAX_BYTES		16384
#define HS256_MIN_KEY		32

/* Refuse a token, saying why in a fixed word and a sentence. */
static void
reject(const char *reason, const char *detail)
{
	char		action[SM_AUDIT_ACTION_LEN];

	snprintf(action, sizeof(action), "assume:%s", reason);
	sm_audit_set_action(action);
	sm_audit_refused(ERRCODE_SM_PERMISSION, NULL);
	ereport(ERROR,
			(errcode(ERRCODE_SM_PERMISSION),
			 errmsg("token rejected: %s", reason),
			 errdetail("%s", detail)));
}

/* Decode base64url (no padding) into a palloc'd buffer; false if invalid. */
static bool
base64url_decode(const char *in, size_t inlen, uint8 **out, size_t *outlen)
{
	uint8	   *buf = palloc(inlen * 3 / 4 + 3);
	size_t		n = 0;
	uint32		acc = 0;
	int			bits = 0;

	for (size_t i = 0; i < inlen; i++)
	{
		char		c = in[i];
		int			v;

		if (c >= 'A' && c <= 'Z')
			v = c - 'A';
		else if (c >= 'a' && c <= 'z')
			v = c - 'a' + 26;
		else if (c >= '0' && c <= '9')
			v = c - '0' + 52;
		else if (c == '-')
			v = 62;
		else if (c == '_')
			v = 63;
		else
			return false;
		acc = (acc << 6) | (uint32) v;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			buf[n++] = (uint8) (acc >> bits);
		}
	}
	if (bits >= 6)
		return false;			/* a lone trailing character */
	*out = buf;
	*outlen = n;
	return true;
}

/* A decoded JSON object part of the token, or a refusal. */
static Jsonb *
decode_json_part(const char *part, size_t len)
{
	MemoryContext cxt = CurrentMemoryContext;
	uint8	   *raw;
	size_t		rawlen;
	Jsonb	   *volatile jb = NULL;

	if (len == 0 || !base64url_decode(part, len, &raw, &rawlen))
		reject("malformed", "The token is not three base64url parts separated by dots.");
	/* sm_value_to_jsonb() never quotes its input; its error becomes ours. */
	PG_TRY();
	{
		jb = DatumGetJsonbP(sm_value_to_jsonb(raw, rawlen));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		jb = NULL;
	}
	PG_END_TRY();
	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
		reject("malformed", "A token part is not a JSON object.");
	return jb;
}

static JsonbValue *
field(Jsonb *jb, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k);
}

/* A string claim, or NULL if absent; a present non-string is refused. */
static char *
string_claim(Jsonb *jb, const char *key, bool required)
{
	JsonbValue *v = field(jb, key);

	if (v == NULL)
	{
		if (required)
			reject("missing_claim", "The token lacks a required claim (tenant, sub, exp, kid or alg).");
		return NULL;
	}
	if (v->type != jbvString || v->val.string.len == 0 || v->val.string.len > 255)
		reject("malformed", "A string claim of the token is not a string of 1 to 255 characters.");
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* A NumericDate claim; false if absent. */
static bool
time_claim(Jsonb *jb, const char *key, double *out)
{
	JsonbValue *v = field(jb, key);

	if (v == NULL)
		return false;
	if (v->type != jbvNumeric)
		reject("malformed", "A time claim of the token is not a number.");
	*out = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow,
											  NumericGetDatum(v->val.numeric)));
	if (isnan(*out) || isinf(*out))
		reject("malformed", "A time claim of the token is not a finite number.");
	return true;
}

/* Does the aud claim (a string or an array of strings) name `audience`? */
static bool
audience_matches(Jsonb *jb, const char *audience)
{
	JsonbValue *v = field(jb, "aud");
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken tok;
	size_t		alen = strlen(audience);

	if (v == NULL)
		return false;
	if (v->type == jbvString)
		return v->val.string.len == alen && memcmp(v->val.string.val, audience, alen) == 0;
	if (v->type != jbvBinary)
		return false;
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
		if (tok == WJB_ELEM && elem.type == jbvString &&
			elem.val.string.len == alen && memcmp(elem.val.string.val, audience, alen) == 0)
			return true;
	return false;
}

/* The groups claim: an array of strings, or none. */
static List *
groups_claim(Jsonb *jb)
{
	JsonbValue *v = field(jb, "groups");
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken tok;
	List	   *groups = NIL;

	if (v == NULL)
		return NIL;
	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		reject("malformed", "The groups claim is not an array.");
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
	{
		if (tok != WJB_ELEM)
			continue;
		if (elem.type != jbvString || elem.val.string.len == 0 || elem.val.string.len > 255)
			reject("malformed", "The groups claim holds something other than names.");
		groups = lappend(groups, pnstrdup(elem.val.string.val, elem.val.string.len));
	}
	return groups;
}

/* Parse a PEM public key and check it fits the algorithm; NULL if not. */
static EVP_PKEY *
public_key_for(const char *alg, const uint8 *pem, size_t len)
{
	BIO		   *bio = BIO_new_mem_buf(pem, (int) len);
	EVP_PKEY   *pkey = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
	bool		ok = false;

	if (bio)
		BIO_free(bio);
	if (pkey == NULL)
		return NULL;
	if (strcmp(alg, "RS256") == 0)
		ok = EVP_PKEY_base_id(pkey) == EVP_PKEY_RSA && EVP_PKEY_bits(pkey) >= 2048;
	else if (strcmp(alg, "ES256") == 0)
	{
		char		group[64];
		size_t		glen = 0;

		ok = EVP_PKEY_base_id(pkey) == EVP_PKEY_EC &&
			EVP_PKEY_get_group_name(pkey, group, sizeof(group), &glen) == 1 &&
			strcmp(group, "prime256v1") == 0;
	}
	if (!ok)
	{
		EVP_PKEY_free(pkey);
		return NULL;
	}
	return pkey;
}

/* Verify an RS256 or ES256 signature; false on any failure. */
static bool
verify_public(const char *alg, EVP_PKEY *pkey, const uint8 *msg, size_t msglen,
			  const uint8 *sig, size_t siglen)
{
	EVP_MD_CTX *ctx;
	uint8	   *der = NULL;
	int			derlen = 0;
	bool		ok = false;

	if (strcmp(alg, "ES256") == 0)
	{
		/* JWS carries r || s, 32 bytes each; OpenSSL wants DER. */
		ECDSA_SIG  *es;
		BIGNUM	   *r,
				   *s;

		if (siglen != 64)
			return false;
		es = ECDSA_SIG_new();
		r = BN_bin2bn(sig, 32, NULL);
		s = BN_bin2bn(sig + 32, 32, NULL);
		if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1)
		{
			BN_free(r);
			BN_free(s);
			ECDSA_SIG_free(es);
			return false;
		}
		derlen = i2d_ECDSA_SIG(es, &der);
		ECDSA_SIG_free(es);
		if (derlen <= 0)
			return false;
		sig = der;
		siglen = (size_t) derlen;
	}
	if ((ctx = EVP_MD_CTX_new()) != NULL)
	{
		ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pkey) == 1 &&
			EVP_DigestVerify(ctx, sig, siglen, msg, msglen) == 1;
		EVP_MD_CTX_free(ctx);
	}
	OPENSSL_free(der);
	return ok;
}

/* Open a token key's sealed material (a secure allocation). */
static uint8 *
open_key_material(const char *tenant, const SmTokenKey *key, size_t *len)
{
	bytea	   *wrapped;
	char	   *kek_id;
	const uint8 *dek;
	SmValueAad	aad;

	if (!sm_lookup_data_key(tenant, key->key_id, &wrapped, &kek_id))
		ereport(ERROR,
				(errcode(ERRCODE_SM_INTEGRITY),
				 errmsg("token key failed its integrity check"),
				 errdetail("Its data key is missing.")));
	dek = sm_dek_for_decrypt(tenant, key->key_id, wrapped, kek_id);
	aad.tenant = tenant;
	aad.secret_id = key->key_uuid.data;
	aad.version = 1;
	aad.key_id = key->key_id;
	return sm_envelope_open(dek, &aad, key->envelope, len);
}

/* SQL: secret_assume(token): act as the token's principal until the transaction ends */
Datum
secret_assume(PG_FUNCTION_ARGS)
{
	text	   *token_text;
	char	   *token;
	size_t		tlen;
	char	   *dot1,
			   *dot2;
	Jsonb	   *header,
			   *claims;
	char	   *alg,
			   *kid,
			   *tenant,
			   *subject;
	SmTokenKey	key;
	uint8	   *sig;
	size_t		siglen;
	uint8	   *material;
	size_t		matlen;
	bool		verified = false;
	double		now,
				exp,
				t;
	Oid			caller = GetUserId();

	sm_check_preloaded();
	sm_loghygiene_value_op("secret_assume");
	sm_audit_begin("assume", NULL);
	if (PG_ARGISNULL(0))
		reject("malformed", "The token is null.");
	token_text = PG_GETARG_TEXT_PP(0);
	tlen = VARSIZE_ANY_EXHDR(token_text);
	if (tlen == 0 || tlen > TOKEN_MAX_BYTES)
		reject("malformed", "The token is empty or longer than 16384 bytes.");
	token = text_to_cstring(token_text);
	dot1 = strchr(token, '.');
	dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	if (dot1 == NULL || dot2 == NULL || strchr(dot2 + 1, '.') != NULL)
		reject("malformed", "The token is not three base64url parts separated by dots.");

	header = decode_json_part(token, dot1 - token);
	claims = decode_json_part(dot1 + 1, dot2 - dot1 - 1);
	alg = string_claim(header, "alg", true);
	kid = string_claim(header, "kid", true);
	tenant = string_claim(claims, "tenant", true);
	subject = string_claim(claims, "sub", true);

	if (!sm_is_broker(caller, tenant))
		reject("not_a_broker", "Only roles registered with secret_broker_add() for the token's tenant may assume its tokens.");
	/* A broker of the claimed tenant: its rejections go to that tenant's trail. */
	sm_audit_note_tenant(tenant);
	if (!sm_lookup_token_key(tenant, kid, &key))
		reject("unknown_key", "No key with the token's kid is registered for its tenant.");
	if (strcmp(alg, key.alg) != 0)
		reject("algorithm_not_allowed", "The token's alg is not the algorithm registered for its key.");
	if (!base64url_decode(dot2 + 1, strlen(dot2 + 1), &sig, &siglen) || siglen == 0)
		reject("malformed", "The token's signature is not base64url.");

	material = open_key_material(tenant, &key, &matlen);
	if (strcmp(alg, "HS256") == 0)
	{
		uint8		mac[EVP_MAX_MD_SIZE];
		unsigned int maclen = 0;

		if (HMAC(EVP_sha256(), material, (int) matlen, (const uint8 *) token,
				 dot2 - token, mac, &maclen) != NULL)
			verified = siglen == maclen && CRYPTO_memcmp(mac, sig, maclen) == 0;
		OPENSSL_cleanse(mac, sizeof(mac));
	}
	else
	{
		EVP_PKEY   *pkey = public_key_for(alg, material, matlen);

		if (pkey)
		{
			verified = verify_public(alg, pkey, (const uint8 *) token, dot2 - token, sig, siglen);
			EVP_PKEY_free(pkey);
		}
	}
	sm_wipe(material, matlen);
	if (!verified)
		reject("bad_signature", "The token's signature does not verify with its key.");

	/* Only now are the claims trusted. */
	now = (double) time(NULL);
	if (!time_claim(claims, "exp", &exp))
		reject("missing_claim", "The token lacks a required claim (tenant, sub, exp, kid or alg).");
	if (now > exp + sm_token_leeway)
		reject("expired", "The token's exp has passed.");
	if (time_claim(claims, "nbf", &t) && now + sm_token_leeway < t)
		reject("not_yet_valid", "The token's nbf has not come yet.");
	if (time_claim(claims, "iat", &t) && now + sm_token_leeway < t)
		reject("issued_in_future", "The token's iat is in the future.");
	if (key.audience && !audience_matches(claims, key.audience))
		reject("wrong_audience", "The token's aud does not name the key's audience.");
	if (key.issuer)
	{
		char	   *iss = string_claim(claims, "iss", false);

		if (iss == NULL || strcmp(iss, key.issuer) != 0)
			reject("wrong_issuer", "The token's iss is not the key's issuer.");
	}

	if (!IsTransactionBlock())
		ereport(WARNING,
				(errcode(ERRCODE_NO_ACTIVE_SQL_TRANSACTION),
				 errmsg("secret_assume() outside a transaction block lasts only for this statement"),
				 errhint("Call it after BEGIN; the principal lasts until the transaction ends.")));
	sm_assume_principal(tenant, subject, groups_claim(claims),
						string_claim(claims, "team", false),
						string_claim(claims, "project", false));
	PG_RETURN_VOID();
}

/* SQL: secret_token_key_add(tenant, kid, alg, key, audience, issuer) */
Datum
secret_token_key_add(PG_FUNCTION_ARGS)
{
	static SmStmt insert = {
		"INSERT INTO secret_mgmt.secret_token_key"
		" (tenant_id, kid, alg, key_uuid, key_id, key_envelope, audience, issuer, created_by)"
		" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
		" ON CONFLICT (tenant_id, kid) DO NOTHING",
		9, {TEXTOID, TEXTOID, TEXTOID, UUIDOID, INT4OID, BYTEAOID, TEXTOID, TEXTOID, TEXTOID}
	};
	SmSession	session;
	char	   *tenant;
	char	   *kid;
	char	   *alg;
	text	   *keytext;
	const uint8 *material;
	size_t		matlen;
	pg_uuid_t	uuid;
	int32		key_id;
	const uint8 *dek;
	SmValueAad	aad;
	Datum		args[9];
	char		nulls[9] = "         ";

	for (int i = 0; i < 4; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("tenant, kid, alg and key must not be null")));
	sm_loghygiene_value_op("secret_token_key_add");
	tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));
	kid = text_to_cstring(PG_GETARG_TEXT_PP(1));
	alg = text_to_cstring(PG_GETARG_TEXT_PP(2));
	keytext = PG_GETARG_TEXT_PP(3);
	material = (const uint8 *) VARDATA_ANY(keytext);
	matlen = VARSIZE_ANY_EXHDR(keytext);
	if (kid[0] == '\0' || strlen(kid) > 255)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a kid is 1 to 255 characters")));
	if (strcmp(alg, "HS256") == 0)
	{
		if (matlen < HS256_MIN_KEY)
			ereport(ERROR,
					(errcode(ERRCODE_SM_INVALID_VALUE),
					 errmsg("an HS256 key must be at least %d bytes", HS256_MIN_KEY)));
	}
	else if (strcmp(alg, "RS256") == 0 || strcmp(alg, "ES256") == 0)
	{
		EVP_PKEY   *pkey = public_key_for(alg, material, matlen);

		if (pkey == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_SM_INVALID_VALUE),
					 errmsg("key is not a PEM public key for %s", alg),
					 errdetail("RS256 needs an RSA key of at least 2048 bits; ES256 a P-256 key.")));
		EVP_PKEY_free(pkey);
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unsupported token algorithm \"%s\"", alg),
				 errhint("Supported: HS256, RS256, ES256.")));

	sm_audit_begin("token_key_add", NULL);
	sm_enter(&session);
	sm_require_tenant_admin(&session, tenant);
	sm_random_bytes(uuid.data, UUID_LEN);
	dek = sm_dek_for_encrypt(tenant, &key_id);
	aad.tenant = tenant;
	aad.secret_id = uuid.data;
	aad.version = 1;
	aad.key_id = key_id;
	args[0] = CStringGetTextDatum(tenant);
	args[1] = CStringGetTextDatum(kid);
	args[2] = CStringGetTextDatum(alg);
	args[3] = UUIDPGetDatum(&uuid);
	args[4] = Int32GetDatum(key_id);
	args[5] = PointerGetDatum(sm_envelope_seal(dek, &aad, material, matlen));
	if (PG_ARGISNULL(4))
		nulls[6] = 'n';
	else
		args[6] = PG_GETARG_DATUM(4);
	if (PG_ARGISNULL(5))
		nulls[7] = 'n';
	else
		args[7] = PG_GETARG_DATUM(5);
	args[8] = CStringGetTextDatum(GetUserNameFromId(session.caller, false));
	if (sm_exec(&insert, args, nulls, 0) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("token key \"%s\" of tenant \"%s\" already exists", kid, tenant),
				 errhint("Remove it with secret_mgmt.secret_token_key_remove() first, or use a new kid.")));
	sm_audit_tenant_change(tenant, session.caller, "token_key_add", kid);
	sm_leave(&session);
	PG_RETURN_VOID();
}

/* SQL: secret_token_key_remove(tenant, kid) */
Datum
secret_token_key_remove(PG_FUNCTION_ARGS)
{
	static SmStmt remove = {
		"DELETE FROM secret_mgmt.secret_token_key"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND kid OPERATOR(pg_catalog.=) $2",
		2, {TEXTOID, TEXTOID}
	};
	SmSession	session;
	char	   *tenant;
	Datum		args[2];

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("tenant and kid must not be null")));
	tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));
	sm_audit_begin("token_key_remove", NULL);
	sm_enter(&session);
	sm_require_tenant_admin(&session, tenant);
	args[0] = CStringGetTextDatum(tenant);
	args[1] = PG_GETARG_DATUM(1);
	if (sm_exec(&remove, args, NULL, 0) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("token key \"%s\" of tenant \"%s\" does not exist",
						text_to_cstring(PG_GETARG_TEXT_PP(1)), tenant)));
	sm_audit_tenant_change(tenant, session.caller, "token_key_remove",
						   text_to_cstring(PG_GETARG_TEXT_PP(1)));
	sm_leave(&session);
	PG_RETURN_VOID();
}

/* SQL: secret_broker_add(tenant, role) */
Datum
secret_broker_add(PG_FUNCTION_ARGS)
{
	static SmStmt insert = {
		"INSERT INTO secret_mgmt.secret_broker (tenant_id, role, added_by)"
		" VALUES ($1, $2::pg_catalog.regrole, $3) ON CONFLICT DO NOTHING",
		3, {TEXTOID, OIDOID, TEXTOID}
	};
	SmSession	session;
	char	   *tenant;
	Datum		args[3];

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("tenant and role must not be null")));
	tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (superuser_arg(DatumGetObjectId(PG_GETARG_DATUM(1))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a superuser cannot be a broker"),
				 errdetail("A broker must be a role with no access of its own.")));
	sm_audit_begin("broker_add", NULL);
	sm_enter(&session);
	sm_require_tenant_admin(&session, tenant);
	sm_require_role_admin(&session, DatumGetObjectId(PG_GETARG_DATUM(1)),
						  psprintf("register a broker for tenant \"%s\"", tenant));
	args[0] = CStringGetTextDatum(tenant);
	args[1] = PG_GETARG_DATUM(1);
	args[2] = CStringGetTextDatum(GetUserNameFromId(session.caller, false));
	sm_exec(&insert, args, NULL, 0);
	sm_lookup_brokers_changed();
	sm_audit_tenant_change(tenant, session.caller, "broker_add", GetUserNameFromId(DatumGetObjectId(PG_GETARG_DATUM(1)), true));
	sm_leave(&session);
	PG_RETURN_VOID();
}

/* SQL: secret_broker_remove(tenant, role) */
Datum
secret_broker_remove(PG_FUNCTION_ARGS)
{
	static SmStmt remove = {
		"DELETE FROM secret_mgmt.secret_broker"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1"
		"   AND role OPERATOR(pg_catalog.=) $2::pg_catalog.regrole",
		2, {TEXTOID, OIDOID}
	};
	SmSession	session;
	char	   *tenant;
	Datum		args[2];

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("tenant and role must not be null")));
	tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));
	sm_audit_begin("broker_remove", NULL);
	sm_enter(&session);
	sm_require_tenant_admin(&session, tenant);
	args[0] = CStringGetTextDatum(tenant);
	args[1] = PG_GETARG_DATUM(1);
	if (sm_exec(&remove, args, NULL, 0) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role is not a broker of tenant \"%s\"", tenant)));
	sm_lookup_brokers_changed();
	sm_audit_tenant_change(tenant, session.caller, "broker_remove", GetUserNameFromId(DatumGetObjectId(PG_GETARG_DATUM(1)), true));
	sm_leave(&session);
	PG_RETURN_VOID();
}
