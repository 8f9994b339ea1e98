/*-------------------------------------------------------------------------
 *
 * types.c
 *		Secret types: what a valid value of each type looks like.
 *
 * A type validates its value on every write.  Validation never quotes the
 * value: errors say which rule failed, with SQLSTATE SM007, and parsers
 * that would echo their input (PostgreSQL's JSON input function does) run
 * under PG_TRY with their error discarded and replaced by ours.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "audit.h"
#include "crypto.h"
#include "mb/pg_wchar.h"
#include "types.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

static const char *const type_names[] = {
	"generic", "password", "api_key", "oauth_token", "connection_string",
	"certificate", "ssh_key", "cloud_credentials", "json", NULL
};

/* Reject unknown type names. */
void
sm_type_check_name(const char *type)
{
	for (int i = 0; type_names[i]; i++)
		if (strcmp(type, type_names[i]) == 0)
			return;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown secret type \"%s\"", type),
			 errhint("Known types: generic, password, api_key, oauth_token, connection_string, certificate, ssh_key, cloud_credentials, json.")));
}

static void
invalid(const char *type, const char *rule)
{
	sm_audit_refused(ERRCODE_SM_INVALID_VALUE, NULL);
	ereport(ERROR,
			(errcode(ERRCODE_SM_INVALID_VALUE),
			 errmsg("invalid value for secret type \"%s\"", type),
			 errdetail("%s", rule)));
}

/*
 * Parse a value as jsonb.  Any parse error is replaced by SM007 so that no
 * fragment of the value reaches a message.
 */
Datum
sm_value_to_jsonb(const uint8 *value, size_t len)
{
	MemoryContext cxt = CurrentMemoryContext;
	char	   *s;
	volatile Datum result = (Datum) 0;
	volatile bool failed = false;

	if (memchr(value, '\0', len) != NULL ||
		!pg_verifymbstr((const char *) value, (int) len, true))
	{
		sm_audit_refused(ERRCODE_SM_INVALID_VALUE, NULL);
		ereport(ERROR,
				(errcode(ERRCODE_SM_INVALID_VALUE),
				 errmsg("secret value is not valid JSON"),
				 errdetail("The value is not valid text in the database encoding.")));
	}
	s = palloc(len + 1);
	memcpy(s, value, len);
	s[len] = '\0';
	PG_TRY();
	{
		result = DirectFunctionCall1(jsonb_in, CStringGetDatum(s));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		failed = true;
	}
	PG_END_TRY();
	memset(s, 0, len);
	pfree(s);
	if (failed)
	{
		sm_audit_refused(ERRCODE_SM_INVALID_VALUE, NULL);
		ereport(ERROR,
				(errcode(ERRCODE_SM_INVALID_VALUE),
				 errmsg("secret value is not valid JSON")));
	}
	return result;
}

/* Look up a top-level key of a jsonb object; NULL if absent. */
static JsonbValue *
object_field(Jsonb *jb, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k);
}

/* Validate a JSON type; the parsed copy is wiped before returning. */
static void
validate_json(const char *type, const uint8 *value, size_t len)
{
	Jsonb	   *jb = DatumGetJsonbP(sm_value_to_jsonb(value, len));
	const char *problem = NULL;

	if (strcmp(type, "json") != 0 && !JB_ROOT_IS_OBJECT(jb))
		problem = "The value must be a JSON object.";
	else if (strcmp(type, "oauth_token") == 0)
	{
		JsonbValue *v = object_field(jb, "access_token");

		if (v == NULL || v->type != jbvString || v->val.string.len == 0)
			problem = "The object must have a non-empty string \"access_token\".";
	}
	sm_wipe(jb, VARSIZE(jb));
	if (problem)
		invalid(type, problem);
}

static bool
has_prefix(const uint8 *value, size_t len, const char *prefix)
{
	size_t		plen = strlen(prefix);

	return len >= plen && memcmp(value, prefix, plen) == 0;
}

static bool
contains(const uint8 *value, size_t len, const char *needle)
{
	size_t		nlen = strlen(needle);

	for (size_t i = 0; i + nlen <= len; i++)
		if (memcmp(value + i, needle, nlen) == 0)
			return true;
	return false;
}

/* URI (scheme://...) or libpq keyword=value connection string. */
static void
validate_connection_string(const uint8 *value, size_t len)
{
	size_t		i = 0;

	if (len == 0)
		invalid("connection_string", "The value is empty.");
	while (i < len && (isalnum(value[i]) || value[i] == '+' || value[i] == '.' || value[i] == '-'))
		i++;
	if (i > 0 && i + 3 <= len && memcmp(value + i, "://", 3) == 0)
		return;
	if (memchr(value, '=', len) != NULL)
		return;
	invalid("connection_string",
			"The value must be a URI (scheme://...) or keyword=value pairs.");
}

/* Convert an ASN1_TIME to a timestamptz; false if it cannot be read. */
static bool
asn1_to_timestamptz(const ASN1_TIME *t, TimestampTz *out)
{
	struct tm	tm;

	if (ASN1_TIME_to_tm(t, &tm) != 1)
		return false;
	*out = time_t_to_timestamptz(timegm(&tm));
	return true;
}

/*
 * PEM certificate chain, optionally followed by its private key.  The
 * leaf (first) certificate's notAfter becomes the secret's expiry.
 */
static void
validate_certificate(const uint8 *value, size_t len,
					 TimestampTz *not_after, bool *has_not_after)
{
	BIO		   *bio;
	X509	   *cert;
	int			ncerts = 0;
	bool		ok_time = false;
	TimestampTz leaf_end = 0;

	if (len > INT_MAX)
		invalid("certificate", "The value is too large.");
	bio = BIO_new_mem_buf(value, (int) len);
	if (bio == NULL)
		elog(ERROR, "out of memory");
	while ((cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
	{
		if (ncerts == 0)
			ok_time = asn1_to_timestamptz(X509_get0_notAfter(cert), &leaf_end);
		ncerts++;
		X509_free(cert);
	}
	ERR_clear_error();
	BIO_free(bio);
	if (ncerts == 0)
		invalid("certificate", "The value must hold at least one PEM certificate.");
	if (!ok_time)
		invalid("certificate", "The certificate's expiry date cannot be read.");
	*not_after = leaf_end;
	*has_not_after = true;
}

/*
 * Validate a value for its type.  For certificates, *not_after receives
 * the certificate's expiry and *has_not_after is set.
 */
void
sm_type_validate(const char *type, const uint8 *value, size_t len,
				 TimestampTz *not_after, bool *has_not_after)
{
	*has_not_after = false;
	sm_type_check_name(type);

	if (strcmp(type, "generic") == 0)
		return;
	if (strcmp(type, "password") == 0)
	{
		if (len == 0)
			invalid(type, "A password must not be empty.");
		return;
	}
	if (strcmp(type, "api_key") == 0)
	{
		if (len == 0)
			invalid(type, "An API key must not be empty.");
		for (size_t i = 0; i < len; i++)
			if (value[i] <= ' ' || value[i] == 0x7f)
				invalid(type, "An API key must not contain white space or control characters.");
		return;
	}
	if (strcmp(type, "json") == 0 || strcmp(type, "oauth_token") == 0 ||
		strcmp(type, "cloud_credentials") == 0)
	{
		validate_json(type, value, len);
		return;
	}
	if (strcmp(type, "connection_string") == 0)
	{
		validate_connection_string(value, len);
		return;
	}
	if (strcmp(type, "certificate") == 0)
	{
		validate_certificate(value, len, not_after, has_not_after);
		return;
	}
	if (strcmp(type, "ssh_key") == 0)
	{
		if (!has_prefix(value, len, "-----BEGIN ") ||
			!contains(value, len, "PRIVATE KEY-----"))
			invalid(type, "The value must be a PEM or OpenSSH private key.");
		return;
	}
}
