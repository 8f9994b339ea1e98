/*-------------------------------------------------------------------------
 *
 * render.c
 *		secret_render(template): configuration text with secrets filled in.
 *
 * References are ${path} (the current value) and ${path#key} (a top-level
 * key of a JSON value); $${ stands for a literal ${.  A value may itself
 * hold references, which are rendered in turn, at most ten levels deep; a
 * reference back to a secret being rendered is a cycle and an error.  Every
 * reference is resolved through sm_store_resolve(), so it is checked for
 * the read capability exactly like secret_resolve().
 *
 * The output is built in a buffer that is wiped whenever it grows and when
 * rendering ends; error messages name paths and keys from the template,
 * never a value.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "audit.h"
#include "crypto.h"
#include "fmgr.h"
#include "loghygiene.h"
#include "mb/pg_wchar.h"
#include "store.h"
#include "types.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

PG_FUNCTION_INFO_V1(secret_render);

#define RENDER_MAX_DEPTH	10

/* A growable buffer whose old contents are wiped when it moves. */
typedef struct SecureBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} SecureBuf;

static void
buf_append(SecureBuf *b, const char *s, size_t n)
{
	if (b->len + n > SM_MAX_VALUE_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("rendered template is too large"),
				 errdetail("The result may be at most %d bytes.", SM_MAX_VALUE_BYTES)));
	if (b->len + n > b->cap)
	{
		size_t		cap = Max(b->cap * 2, b->len + n + 256);
		char	   *data = sm_secure_alloc(cap);

		if (b->len > 0)
			memcpy(data, b->data, b->len);
		sm_wipe(b->data, b->cap);
		b->data = data;
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
}

typedef struct RenderState
{
	const SmCaller *caller;
	List	   *stack;			/* paths being rendered, innermost last */
} RenderState;

/* The text of top-level key `key` of a JSON value, appended to `out`. */
static void
append_json_key(SecureBuf *out, const char *path, const uint8 *value, size_t len,
				const char *key)
{
	Jsonb	   *jb = DatumGetJsonbP(sm_value_to_jsonb(value, len));
	JsonbValue	k;
	JsonbValue *v;

	if (!JB_ROOT_IS_OBJECT(jb))
		ereport(ERROR,
				(errcode(ERRCODE_SM_INVALID_VALUE),
				 errmsg("secret \"%s\" is not a JSON object", path)));
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k);
	if (v == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SM_NOT_FOUND),
				 errmsg("secret \"%s\" has no key \"%s\"", path, key)));
	if (v->type == jbvString)
		buf_append(out, v->val.string.val, v->val.string.len);
	else
	{
		Jsonb	   *sub = JsonbValueToJsonb(v);
		StringInfoData s;

		initStringInfo(&s);
		(void) JsonbToCString(&s, &sub->root, VARSIZE(sub));
		buf_append(out, s.data, s.len);
		sm_wipe(s.data, s.len);
		sm_wipe(sub, VARSIZE(sub));
	}
	sm_wipe(jb, VARSIZE(jb));
}

static void
render_into(RenderState *st, SecureBuf *out, const char *tmpl, size_t len, int depth)
{
	size_t		i = 0;

	while (i < len)
	{
		const char *close;
		char	   *ref;
		char	   *key;
		uint8	   *value;
		size_t		vlen;
		ListCell   *lc;

		if (tmpl[i] == '$' && i + 2 < len && tmpl[i + 1] == '$' && tmpl[i + 2] == '{')
		{
			buf_append(out, "${", 2);
			i += 3;
			continue;
		}
		if (!(tmpl[i] == '$' && i + 1 < len && tmpl[i + 1] == '{'))
		{
			buf_append(out, tmpl + i, 1);
			i++;
			continue;
		}
		close = memchr(tmpl + i + 2, '}', len - i - 2);
		if (close == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unterminated reference in template"),
					 errdetail("A \"${\" at byte %zu has no closing \"}\".", i + 1)));
		ref = pnstrdup(tmpl + i + 2, close - (tmpl + i + 2));
		key = strchr(ref, '#');
		if (key)
			*key++ = '\0';
		sm_store_check_path(ref);
		if (depth >= RENDER_MAX_DEPTH)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("template references nest deeper than %d levels", RENDER_MAX_DEPTH),
					 errdetail("The reference to secret \"%s\" is one level too deep.", ref)));
		foreach(lc, st->stack)
			if (strcmp((char *) lfirst(lc), ref) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("template references form a cycle through secret \"%s\"", ref)));

		value = sm_store_resolve(st->caller, ref, "current", false, 0, &vlen);
		if (memchr(value, '\0', vlen) != NULL ||
			!pg_verifymbstr((const char *) value, (int) vlen, true))
			ereport(ERROR,
					(errcode(ERRCODE_SM_INVALID_VALUE),
					 errmsg("secret \"%s\" is not valid text and cannot be rendered", ref)));
		if (key)
			append_json_key(out, ref, value, vlen, key);
		else
		{
			st->stack = lappend(st->stack, ref);
			render_into(st, out, (const char *) value, vlen, depth + 1);
			st->stack = list_delete_last(st->stack);
		}
		sm_wipe(value, vlen);
		i = (close - tmpl) + 1;
	}
}

/* SQL: secret_render(template) returns text */
Datum
secret_render(PG_FUNCTION_ARGS)
{
	text	   *tmpl;
	SmSession	session;
	SmCaller	c;
	RenderState st;
	SecureBuf	out = {NULL, 0, 0};
	text	   *result;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	tmpl = PG_GETARG_TEXT_PP(0);
	sm_loghygiene_value_op("secret_render");
	sm_audit_begin("render", NULL);
	sm_session_init(&session);
	sm_caller_resolve(&session, &c, NULL);
	st.caller = &c;
	st.stack = NIL;
	render_into(&st, &out, VARDATA_ANY(tmpl), VARSIZE_ANY_EXHDR(tmpl), 0);
	result = cstring_to_text_with_len(out.data ? out.data : "", (int) out.len);
	sm_wipe(out.data, out.cap);
	PG_RETURN_TEXT_P(result);
}
