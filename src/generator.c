/*-------------------------------------------------------------------------
 *
 * generator.c
 *		Generators: how rotation makes a new value.
 *
 * A generator is written as text and stored in its canonical form:
 *
 *	 password(length, symbols)	letters and digits, plus symbols if true
 *								(length 8..1024, default 32; symbols default true)
 *	 hex(n), base64(n)			n random bytes (1..1024, default 32), encoded
 *	 uuid						a random (version 4) UUID
 *	 apikey(prefix)				prefix, '_', 40 random letters and digits
 *	 schema.function(...)		a user function returning text, taking no
 *								argument or the secret's path (text)
 *
 * Randomness comes from OpenSSL's CSPRNG; characters are drawn by
 * rejection sampling, so every character is equally likely.  A user
 * function runs as the role that configured the rotation, in a restricted
 * security context, and its result is copied to wiped memory.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_proc.h"
#include "common/base64.h"
#include "catalog/pg_type.h"
#include "crypto.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "rotation.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

static const char alnum[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
static const char with_symbols[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#%+-.:=@^_~";

static void
bad_generator(const char *spec, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid generator \"%s\"", spec),
			 errdetail("%s", detail),
			 errhint("Generators are password(length, symbols), hex(n), base64(n), uuid, apikey(prefix), or a function returning text.")));
}

/* Split "name(a, b)" into name and up to two trimmed arguments. */
static int
split_call(const char *spec, char *name, size_t namelen, char args[2][64])
{
	const char *open = strchr(spec, '(');
	const char *p;
	int			nargs = 0;
	size_t		len;

	args[0][0] = args[1][0] = '\0';
	len = open ? (size_t) (open - spec) : strlen(spec);
	while (len > 0 && isspace((unsigned char) spec[len - 1]))
		len--;
	if (len >= namelen)
		return -1;
	memcpy(name, spec, len);
	name[len] = '\0';
	if (open == NULL)
		return 0;
	p = open + 1;
	for (;;)
	{
		const char *end = p;
		size_t		alen;

		while (*end && *end != ',' && *end != ')')
			end++;
		if (*end == '\0')
			return -1;
		while (p < end && isspace((unsigned char) *p))
			p++;
		alen = end - p;
		while (alen > 0 && isspace((unsigned char) p[alen - 1]))
			alen--;
		if (alen > 0 || *end == ',' || nargs > 0)
		{
			if (nargs == 2 || alen >= 64)
				return -1;
			memcpy(args[nargs], p, alen);
			args[nargs][alen] = '\0';
			nargs++;
		}
		if (*end == ')')
		{
			end++;
			while (*end && isspace((unsigned char) *end))
				end++;
			return *end == '\0' ? nargs : -1;
		}
		p = end + 1;
	}
}

static int
parse_count(const char *spec, const char *arg, int dflt, int min, int max)
{
	char	   *end;
	long		v;

	if (arg[0] == '\0')
		return dflt;
	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		bad_generator(spec, psprintf("The length must be a whole number from %d to %d.", min, max));
	return (int) v;
}

/* Resolve a user generator function and check its signature. */
static Oid
resolve_function(const char *spec)
{
	Oid			fn;
	HeapTuple	tup;
	Form_pg_proc proc;
	bool		ok;

	/* schema.name(argtypes), or a name alone when it is not overloaded */
	{
		LOCAL_FCINFO(fcinfo, 1);
		Datum		d;

		InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = CStringGetTextDatum(spec);
		fcinfo->args[0].isnull = false;
		d = strchr(spec, '(') != NULL ? to_regprocedure(fcinfo) : to_regproc(fcinfo);
		fn = fcinfo->isnull ? InvalidOid : DatumGetObjectId(d);
	}
	if (!OidIsValid(fn))
		bad_generator(spec, "No such generator or function.");
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(tup))
		bad_generator(spec, "No such generator or function.");
	proc = (Form_pg_proc) GETSTRUCT(tup);
	ok = proc->prorettype == TEXTOID && !proc->proretset && proc->prokind == PROKIND_FUNCTION &&
		(proc->pronargs == 0 ||
		 (proc->pronargs == 1 && proc->proargtypes.values[0] == TEXTOID));
	ReleaseSysCache(tup);
	if (!ok)
		bad_generator(spec, "A generator function returns text and takes no argument or the secret's path (text).");
	return fn;
}

/*
 * Parse a generator.  A user function is resolved and must be executable
 * by `owner`.  Fills *g; g->canonical is what to store.
 */
void
sm_generator_parse(const char *spec, Oid owner, SmGenerator *g)
{
	char		name[64];
	char		args[2][64];
	int			nargs;

	memset(g, 0, sizeof(*g));
	nargs = split_call(spec, name, sizeof(name), args);
	if (nargs >= 0 && strcmp(name, "password") == 0)
	{
		g->kind = SM_GEN_PASSWORD;
		g->n = parse_count(spec, args[0], 32, 8, 1024);
		if (args[1][0] == '\0' || pg_strcasecmp(args[1], "true") == 0)
			g->symbols = true;
		else if (pg_strcasecmp(args[1], "false") == 0)
			g->symbols = false;
		else
			bad_generator(spec, "symbols must be true or false.");
		g->canonical = psprintf("password(%d, %s)", g->n, g->symbols ? "true" : "false");
		return;
	}
	if (nargs >= 0 && nargs <= 1 && (strcmp(name, "hex") == 0 || strcmp(name, "base64") == 0))
	{
		g->kind = strcmp(name, "hex") == 0 ? SM_GEN_HEX : SM_GEN_BASE64;
		g->n = parse_count(spec, args[0], 32, 1, 1024);
		g->canonical = psprintf("%s(%d)", name, g->n);
		return;
	}
	if (nargs == 0 && strcmp(name, "uuid") == 0 && strchr(spec, '(') == NULL)
	{
		g->kind = SM_GEN_UUID;
		g->canonical = pstrdup("uuid");
		return;
	}
	if (nargs >= 0 && nargs <= 1 && strcmp(name, "apikey") == 0)
	{
		const char *p = args[0];
		size_t		len;

		len = strlen(p);
		if (len >= 2 && p[0] == '\'' && p[len - 1] == '\'')
		{
			p++;
			len -= 2;
		}
		if (len >= sizeof(g->prefix))
			bad_generator(spec, "An API key prefix is at most 31 characters.");
		memcpy(g->prefix, p, len);
		g->prefix[len] = '\0';
		len = strlen(g->prefix);
		if (len >= 32)
			bad_generator(spec, "An API key prefix is at most 31 characters.");
		for (size_t i = 0; i < len; i++)
			if (!(isalnum((unsigned char) g->prefix[i]) || g->prefix[i] == '_' || g->prefix[i] == '-'))
				bad_generator(spec, "An API key prefix holds only letters, digits, '_' and '-'.");
		g->kind = SM_GEN_APIKEY;
		g->canonical = psprintf("apikey(%s)", g->prefix);
		return;
	}

	/* A user function. */
	g->kind = SM_GEN_FUNCTION;
	g->fn = resolve_function(spec);
	if (OidIsValid(owner) &&
		pg_proc_aclcheck(g->fn, owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied for generator function %s",
						format_procedure_qualified(g->fn))));
	g->canonical = format_procedure_qualified(g->fn);
}

/* The generator a type uses when none is configured, or NULL. */
const char *
sm_generator_default(const char *type)
{
	if (strcmp(type, "generic") == 0 || strcmp(type, "password") == 0)
		return "password(32, true)";
	if (strcmp(type, "api_key") == 0)
		return "apikey()";
	return NULL;
}

/* `n` characters drawn uniformly from `set`, into out. */
static void
random_chars(const char *set, char *out, int n)
{
	size_t		setlen = strlen(set);
	unsigned int limit = 256 - (256 % setlen);
	uint8		buf[64];
	int			have = 0;
	int			pos = 0;

	while (have < n)
	{
		if (pos == 0)
			sm_random_bytes(buf, sizeof(buf));
		if (buf[pos] < limit)
			out[have++] = set[buf[pos] % setlen];
		pos = (pos + 1) % sizeof(buf);
	}
	sm_wipe(buf, sizeof(buf));
}

/* Run a user generator as `owner`; the value lands in secure memory. */
static uint8 *
run_function(const SmGenerator *g, const char *path, Oid owner, size_t *len)
{
	Oid			save_user;
	int			save_sec;
	Datum		result;
	text	   *t;
	uint8	   *out;

	if (pg_proc_aclcheck(g->fn, owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied for generator function %s",
						format_procedure_qualified(g->fn))));
	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	{
		LOCAL_FCINFO(fcinfo, 1);
		FmgrInfo	flinfo;
		int			nargs = get_func_nargs(g->fn);

		fmgr_info(g->fn, &flinfo);
		InitFunctionCallInfoData(*fcinfo, &flinfo, nargs, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = CStringGetTextDatum(path);
		fcinfo->args[0].isnull = false;
		result = FunctionCallInvoke(fcinfo);
		if (fcinfo->isnull)
			ereport(ERROR,
					(errcode(ERRCODE_SM_INVALID_VALUE),
					 errmsg("generator function %s returned null",
							format_procedure_qualified(g->fn))));
	}
	SetUserIdAndSecContext(save_user, save_sec);
	t = DatumGetTextPP(result);
	*len = VARSIZE_ANY_EXHDR(t);
	out = sm_secure_alloc(*len);
	memcpy(out, VARDATA_ANY(t), *len);
	sm_wipe(VARDATA_ANY(t), *len);
	return out;
}

/*
 * Make a new value.  A user function runs as `owner`.  The result is a
 * secure allocation in CurrentMemoryContext.
 */
uint8 *
sm_generator_run(const SmGenerator *g, const char *path, Oid owner, size_t *len)
{
	uint8	   *raw;
	char	   *out;

	switch (g->kind)
	{
		case SM_GEN_PASSWORD:
			out = sm_secure_alloc(g->n);
			random_chars(g->symbols ? with_symbols : alnum, out, g->n);
			*len = g->n;
			return (uint8 *) out;
		case SM_GEN_HEX:
			raw = sm_secure_alloc(g->n);
			sm_random_bytes(raw, g->n);
			out = sm_secure_alloc(2 * g->n);
			for (int i = 0; i < g->n; i++)
			{
				out[2 * i] = "0123456789abcdef"[raw[i] >> 4];
				out[2 * i + 1] = "0123456789abcdef"[raw[i] & 15];
			}
			sm_wipe(raw, g->n);
			*len = 2 * g->n;
			return (uint8 *) out;
		case SM_GEN_BASE64:
			raw = sm_secure_alloc(g->n);
			sm_random_bytes(raw, g->n);
			out = sm_secure_alloc(pg_b64_enc_len(g->n) + 1);
			*len = pg_b64_encode((const char *) raw, g->n, out, pg_b64_enc_len(g->n));
			sm_wipe(raw, g->n);
			return (uint8 *) out;
		case SM_GEN_UUID:
			raw = sm_secure_alloc(16);
			sm_random_bytes(raw, 16);
			raw[6] = (raw[6] & 0x0f) | 0x40;
			raw[8] = (raw[8] & 0x3f) | 0x80;
			out = sm_secure_alloc(37);
			snprintf(out, 37,
					 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
					 raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
					 raw[8], raw[9], raw[10], raw[11], raw[12], raw[13], raw[14], raw[15]);
			sm_wipe(raw, 16);
			*len = 36;
			return (uint8 *) out;
		case SM_GEN_APIKEY:
			{
				size_t		plen = strlen(g->prefix);
				bool		sep = plen > 0 && g->prefix[plen - 1] != '_' &&
					g->prefix[plen - 1] != '-';

				*len = plen + (sep ? 1 : 0) + 40;
				out = sm_secure_alloc(*len);
				memcpy(out, g->prefix, plen);
				if (sep)
					out[plen] = '_';
				random_chars(alnum, out + plen + (sep ? 1 : 0), 40);
				return (uint8 *) out;
			}
		case SM_GEN_FUNCTION:
			return run_function(g, path, owner, len);
	}
	elog(ERROR, "unknown generator kind %d", (int) g->kind);
	return NULL;
}
