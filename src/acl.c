/*-------------------------------------------------------------------------
 *
 * acl.c
 *		Grants on path patterns: matching, evaluation, delegation.
 *
 * A grant gives a grantee -- a role, a token subject, a token group, or
 * (in the platform tenant) another tenant -- capabilities on the paths a
 * pattern matches; a deny takes them away.  Patterns are paths whose
 * segments may be `+` (exactly one segment), `**` (any number of segments,
 * none included) or end in `*` (the rest of a segment: `db-*`; a lone `*`
 * is any one segment).
 *
 * Deciding capability c on path p for a principal:
 *	 1. tenant administrators (and the superuser) hold everything;
 *	 2. any unexpired deny of the principal matching p for c (or for admin)
 *		denies;
 *	 3. otherwise the most specific matching allow decides: if several
 *		allows match, only those with the most specific pattern count, and
 *		they allow c if any of them has c or admin;
 *	 4. no matching allow: denied.
 * Specificity compares, in order: more literal segments, fewer `**`,
 * fewer `+`, more literal characters in `*` segments, longer pattern.
 * This is the rule of Vault policies: a specific rule overrides a broad
 * one for the paths it covers.
 *
 * A non-administrator may grant, deny or revoke capabilities C on pattern
 * q only if it holds `grant` and every capability in C through allows
 * whose patterns cover q (every path q matches, they match) and none of
 * its denies for those capabilities overlaps q.
 *
 * Grants are read from a per-backend cache (lookup.c) that every change
 * invalidates through PostgreSQL's invalidation messages, so a committed
 * grant or revoke is in force at the next call of every session.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "acl.h"
#include "audit.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "lookup.h"
#include "store.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

PG_FUNCTION_INFO_V1(secret_grant);
PG_FUNCTION_INFO_V1(secret_deny);
PG_FUNCTION_INFO_V1(secret_revoke);
PG_FUNCTION_INFO_V1(secret_check);
PG_FUNCTION_INFO_V1(secret_explain_access);
PG_FUNCTION_INFO_V1(secret_grants);

#define MAX_SEGMENTS	256
#define MAX_DEEP_WILDCARDS	4

static const char *const cap_names[] = {
	"read", "list", "create", "update", "rotate", "delete", "grant", "audit", "admin"
};

/* A capability bit from its name, or an error. */
uint32
sm_cap_parse(const char *name)
{
	for (int i = 0; i < lengthof(cap_names); i++)
		if (strcmp(name, cap_names[i]) == 0)
			return 1U << i;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown capability \"%s\"", name),
			 errhint("Capabilities are read, list, create, update, rotate, delete, grant, audit and admin.")));
	return 0;					/* keep compiler quiet */
}

/* The name of a single capability bit. */
const char *
sm_cap_name(uint32 cap)
{
	for (int i = 0; i < lengthof(cap_names); i++)
		if (cap == (1U << i))
			return cap_names[i];
	return "?";
}

/* The capability bits of a text[]; empty, null or unknown names are errors. */
uint32
sm_caps_from_array(ArrayType *caps)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	uint32		mask = 0;

	deconstruct_array(caps, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("capabilities must not contain nulls")));
		mask |= sm_cap_parse(TextDatumGetCString(elems[i]));
	}
	if (mask == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("at least one capability is needed")));
	return mask;
}

/* The capability bits as a text[] (for result rows). */
static Datum
caps_to_array(uint32 mask)
{
	Datum		elems[lengthof(cap_names)];
	int			n = 0;

	for (int i = 0; i < lengthof(cap_names); i++)
		if (mask & (1U << i))
			elems[n++] = CStringGetTextDatum(cap_names[i]);
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* ---------------------------------------------------------------------
 * Patterns
 * --------------------------------------------------------------------- */

typedef enum SegKind
{
	SEG_LITERAL,				/* exact text */
	SEG_PREFIX,					/* text* : any segment starting with text */
	SEG_ONE,					/* + or * : any one segment */
	SEG_ANY						/* ** : any number of segments */
} SegKind;

typedef struct Seg
{
	SegKind		kind;
	const char *text;			/* literal or prefix, not terminated */
	int			len;
} Seg;

/* Split a pattern (or a path) into segments; false if it is malformed. */
static bool
split(const char *s, bool is_pattern, Seg *segs, int *nsegs)
{
	int			n = 0;
	int			deep = 0;
	const char *p = s;

	if (*s == '\0' || strlen(s) > 512)
		return false;
	for (;;)
	{
		const char *end = strchr(p, '/');
		int			len = end ? (int) (end - p) : (int) strlen(p);
		Seg		   *seg = &segs[n];

		if (len == 0 || n == MAX_SEGMENTS)
			return false;
		seg->text = p;
		seg->len = len;
		seg->kind = SEG_LITERAL;
		if (is_pattern && len == 2 && p[0] == '*' && p[1] == '*')
		{
			seg->kind = SEG_ANY;
			deep++;
		}
		else if (is_pattern && ((len == 1 && (p[0] == '+' || p[0] == '*'))))
			seg->kind = SEG_ONE;
		else if (is_pattern && p[len - 1] == '*')
		{
			seg->kind = SEG_PREFIX;
			seg->len = len - 1;
		}
		for (int i = 0; i < seg->len && seg->kind != SEG_ANY && seg->kind != SEG_ONE; i++)
		{
			unsigned char c = (unsigned char) p[i];

			if (!(IS_ASCII_ALNUM(c) || c == '.' || c == '_' || c == '-'))
				return false;
		}
		if (seg->kind == SEG_LITERAL &&
			((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.')))
			return false;
		n++;
		if (!end)
			break;
		p = end + 1;
	}
	if (deep > MAX_DEEP_WILDCARDS)
		return false;
	*nsegs = n;
	return true;
}

/* Reject malformed patterns with a clear message. */
void
sm_pattern_check(const char *pattern)
{
	Seg			segs[MAX_SEGMENTS];
	int			n;

	if (!split(pattern, true, segs, &n))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid path pattern \"%s\"", pattern),
				 errdetail("A pattern is a path whose segments may be \"+\" (one segment), \"**\" (any number of segments, at most %d times) or end in \"*\" (the rest of a segment).",
						   MAX_DEEP_WILDCARDS)));
}

static bool
seg_equal(const Seg *a, const Seg *b)
{
	return a->len == b->len && memcmp(a->text, b->text, a->len) == 0;
}

static bool
seg_has_prefix(const Seg *s, const Seg *prefix)
{
	return s->len >= prefix->len && memcmp(s->text, prefix->text, prefix->len) == 0;
}

/* Does pattern segment p match the path segment s (a literal)? */
static bool
seg_matches(const Seg *p, const Seg *s)
{
	switch (p->kind)
	{
		case SEG_LITERAL:
			return seg_equal(p, s);
		case SEG_PREFIX:
			return seg_has_prefix(s, p);
		case SEG_ONE:
			return true;
		case SEG_ANY:
			break;
	}
	return false;
}

static bool
match_from(const Seg *p, int np, const Seg *s, int ns)
{
	if (np == 0)
		return ns == 0;
	if (p->kind == SEG_ANY)
	{
		for (int k = 0; k <= ns; k++)
			if (match_from(p + 1, np - 1, s + k, ns - k))
				return true;
		return false;
	}
	return ns > 0 && seg_matches(p, s) && match_from(p + 1, np - 1, s + 1, ns - 1);
}

/* Does `pattern` match `path`? Malformed input matches nothing. */
bool
sm_pattern_match(const char *pattern, const char *path)
{
	Seg			p[MAX_SEGMENTS];
	Seg			s[MAX_SEGMENTS];
	int			np,
				ns;

	if (!split(pattern, true, p, &np) || !split(path, false, s, &ns))
		return false;
	return match_from(p, np, s, ns);
}

/* Does outer segment o match every segment inner segment i matches? */
static bool
seg_covers(const Seg *o, const Seg *i)
{
	switch (o->kind)
	{
		case SEG_LITERAL:
			return i->kind == SEG_LITERAL && seg_equal(o, i);
		case SEG_PREFIX:
			return (i->kind == SEG_LITERAL || i->kind == SEG_PREFIX) && seg_has_prefix(i, o);
		case SEG_ONE:
			return i->kind != SEG_ANY;
		case SEG_ANY:
			break;
	}
	return false;
}

static bool
covers_from(const Seg *o, int no, const Seg *i, int ni)
{
	if (no == 0)
		return ni == 0;
	if (o->kind == SEG_ANY)
	{
		for (int k = 0; k <= ni; k++)
			if (covers_from(o + 1, no - 1, i + k, ni - k))
				return true;
		return false;
	}
	return ni > 0 && seg_covers(o, i) && covers_from(o + 1, no - 1, i + 1, ni - 1);
}

/* Does every path `inner` matches also match `outer`? */
bool
sm_pattern_covers(const char *outer, const char *inner)
{
	Seg			o[MAX_SEGMENTS];
	Seg			i[MAX_SEGMENTS];
	int			no,
				ni;

	if (!split(outer, true, o, &no) || !split(inner, true, i, &ni))
		return false;
	return covers_from(o, no, i, ni);
}

/* Can one path segment match both a and b (neither is **)? */
static bool
seg_overlap(const Seg *a, const Seg *b)
{
	if (a->kind == SEG_ONE || b->kind == SEG_ONE)
		return true;
	if (a->kind == SEG_LITERAL && b->kind == SEG_LITERAL)
		return seg_equal(a, b);
	if (a->kind == SEG_LITERAL)
		return seg_has_prefix(a, b);
	if (b->kind == SEG_LITERAL)
		return seg_has_prefix(b, a);
	return seg_has_prefix(a, b) || seg_has_prefix(b, a);
}

static bool
overlap_from(const Seg *a, int na, const Seg *b, int nb)
{
	if (na == 0 && nb == 0)
		return true;
	if (na > 0 && a->kind == SEG_ANY)
		return overlap_from(a + 1, na - 1, b, nb) ||
			(nb > 0 && overlap_from(a, na, b + 1, nb - 1));
	if (nb > 0 && b->kind == SEG_ANY)
		return overlap_from(a, na, b + 1, nb - 1) ||
			(na > 0 && overlap_from(a + 1, na - 1, b, nb));
	return na > 0 && nb > 0 && seg_overlap(a, b) &&
		overlap_from(a + 1, na - 1, b + 1, nb - 1);
}

/* Is there a path that both patterns match? */
bool
sm_pattern_overlaps(const char *a, const char *b)
{
	Seg			sa[MAX_SEGMENTS];
	Seg			sb[MAX_SEGMENTS];
	int			na,
				nb;

	if (!split(a, true, sa, &na) || !split(b, true, sb, &nb))
		return false;
	return overlap_from(sa, na, sb, nb);
}

/* Compare specificity: > 0 when a is more specific than b. */
static int
specificity_cmp(const char *a, const char *b)
{
	Seg			segs[MAX_SEGMENTS];
	int			score[2][5];
	const char *pats[2] = {a, b};

	for (int k = 0; k < 2; k++)
	{
		int			n;

		memset(score[k], 0, sizeof(score[k]));
		if (!split(pats[k], true, segs, &n))
			continue;
		for (int i = 0; i < n; i++)
		{
			if (segs[i].kind == SEG_LITERAL)
				score[k][0]++;
			else if (segs[i].kind == SEG_ANY)
				score[k][1]--;
			else if (segs[i].kind == SEG_ONE)
				score[k][2]--;
			else
				score[k][3] += segs[i].len;
		}
		score[k][4] = (int) strlen(pats[k]);
	}
	for (int i = 0; i < 5; i++)
		if (score[0][i] != score[1][i])
			return score[0][i] > score[1][i] ? 1 : -1;
	return 0;
}

/* ---------------------------------------------------------------------
 * Evaluation
 * --------------------------------------------------------------------- */

/* Is `g` a grant for this principal, in force now? */
static bool
grant_applies(const SmGrant *g, const SmCaller *c, TimestampTz now)
{
	if (g->has_expiry && g->expires_at <= now)
		return false;
	switch (g->kind)
	{
		case SM_GRANTEE_ROLE:
			return !c->assumed && !c->as_tenant && has_privs_of_role(c->roleid, g->role);
		case SM_GRANTEE_TOKEN:
			return c->assumed && strcmp(g->name, c->subject) == 0;
		case SM_GRANTEE_GROUP:
			if (c->assumed)
			{
				ListCell   *lc;

				foreach(lc, c->groups)
					if (strcmp(g->name, (char *) lfirst(lc)) == 0)
						return true;
			}
			return false;
		case SM_GRANTEE_TENANT:
			return c->as_tenant && strcmp(g->name, c->as_tenant) == 0;
	}
	return false;
}

/* Decide capability `cap` on `path` for the caller (see the file header). */
SmDecision
sm_acl_decide(const SmCaller *c, const char *path, uint32 cap)
{
	SmDecision	d = {false, "none", NULL};
	TimestampTz now = GetCurrentTimestamp();
	const SmGrant *best = NULL;
	uint32		best_caps = 0;
	ListCell   *lc;

	if (c->is_admin)
	{
		d.allowed = true;
		d.rule = "admin";
		return d;
	}
	if (c->outsider)
		return d;
	foreach(lc, sm_lookup_grants(c->tenant))
	{
		const SmGrant *g = lfirst(lc);
		int			cmp;

		if (!grant_applies(g, c, now) || !sm_pattern_match(g->pattern, path))
			continue;
		if (g->deny)
		{
			if (g->caps & (cap | SM_CAP_ADMIN))
			{
				d.rule = "deny";
				d.grant = g;
				return d;
			}
			continue;
		}
		cmp = best ? specificity_cmp(g->pattern, best->pattern) : 1;
		if (cmp > 0)
		{
			best = g;
			best_caps = g->caps;
		}
		else if (cmp == 0)
			best_caps |= g->caps;
	}
	if (best)
	{
		d.allowed = (best_caps & (cap | SM_CAP_ADMIN)) != 0;
		d.rule = d.allowed ? "allow" : "none";
		d.grant = best;
	}
	return d;
}

/*
 * Does `c` hold `cap` on everything ("**"): an allow whose pattern covers
 * "**" and no deny of the capability on any pattern?  For tenant-wide
 * capabilities such as audit.
 */
bool
sm_acl_allows_everywhere(const SmCaller *c, uint32 cap)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		allowed = false;
	ListCell   *lc;

	if (c->is_admin)
		return true;
	if (c->outsider)
		return false;
	foreach(lc, sm_lookup_grants(c->tenant))
	{
		const SmGrant *g = lfirst(lc);

		if (!grant_applies(g, c, now) || (g->caps & (cap | SM_CAP_ADMIN)) == 0)
			continue;
		if (g->deny)
			return false;
		if (sm_pattern_covers(g->pattern, "**"))
			allowed = true;
	}
	return allowed;
}

bool
sm_acl_allows(const SmCaller *c, const char *path, uint32 cap)
{
	return sm_acl_decide(c, path, cap).allowed;
}

/*
 * Require capability `cap` on `path`.  A principal that may at least list
 * the path learns it lacks the capability (SM002); one that may not even
 * list it gets the answer for a path that does not exist (SM001).
 */
void
sm_acl_require(const SmCaller *c, const char *path, uint32 cap)
{
	if (sm_acl_allows(c, path, cap))
		return;
	/* Either way the trail says "denied", whichever SQLSTATE the caller sees. */
	if (cap != SM_CAP_LIST && sm_acl_allows(c, path, SM_CAP_LIST))
	{
		sm_audit_refused(ERRCODE_SM_PERMISSION, path);
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied for secret \"%s\"", path),
				 errdetail("Capability \"%s\" is required.", sm_cap_name(cap))));
	}
	sm_audit_refused_as(SM_AUDIT_DENIED, ERRCODE_SM_NOT_FOUND, path);
	sm_report_not_found(path, NULL);
}

/*
 * May tenant `tenant` read the platform tenant's secret at `path`?  Only
 * where the platform administrator granted it, with a tenant:<name> grant
 * in the platform tenant.
 */
bool
sm_acl_tenant_may_read_global(const char *tenant, const char *path)
{
	SmCaller	as_tenant;

	/* The tenant itself is the principal, judged by the usual rules. */
	memset(&as_tenant, 0, sizeof(as_tenant));
	as_tenant.roleid = InvalidOid;
	as_tenant.tenant = "global";
	as_tenant.as_tenant = tenant;
	return sm_acl_decide(&as_tenant, path, SM_CAP_READ).allowed;
}

/* ---------------------------------------------------------------------
 * SQL functions
 * --------------------------------------------------------------------- */

/* A grantee as written by users, parsed. */
typedef struct SmGrantee
{
	SmGranteeKind kind;
	Oid			role;
	char	   *name;
} SmGrantee;

static SmGrantee
parse_grantee(const char *text, const SmCaller *c)
{
	SmGrantee	g = {SM_GRANTEE_ROLE, InvalidOid, NULL};
	static const struct
	{
		const char *prefix;
		SmGranteeKind kind;
	}			kinds[] = {
		{"token:", SM_GRANTEE_TOKEN}, {"group:", SM_GRANTEE_GROUP}, {"tenant:", SM_GRANTEE_TENANT}
	};

	for (int i = 0; i < lengthof(kinds); i++)
	{
		size_t		plen = strlen(kinds[i].prefix);

		if (strncmp(text, kinds[i].prefix, plen) == 0)
		{
			g.kind = kinds[i].kind;
			g.name = pstrdup(text + plen);
			if (g.name[0] == '\0' || strlen(g.name) > 255)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid grantee \"%s\"", text),
						 errdetail("A token subject, group or tenant name is 1 to 255 characters.")));
			if (g.kind == SM_GRANTEE_TENANT && strcmp(c->tenant, "global") != 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("tenant grantees exist only in the platform tenant"),
						 errhint("The platform administrator grants a tenant access to global secrets after secret_mgmt.secret_use_tenant('global').")));
			return g;
		}
	}
	g.role = get_role_oid(text, false);
	return g;
}

static const char *
grantee_kind_name(SmGranteeKind kind)
{
	switch (kind)
	{
		case SM_GRANTEE_ROLE:
			return "role";
		case SM_GRANTEE_TOKEN:
			return "token";
		case SM_GRANTEE_GROUP:
			return "group";
		case SM_GRANTEE_TENANT:
			return "tenant";
	}
	return "?";
}

/* A grant's grantee as users write it. */
static char *
grantee_text(const SmGrant *g)
{
	if (g->kind == SM_GRANTEE_ROLE)
	{
		char	   *name = GetUserNameFromId(g->role, true);

		return name ? name : psprintf("%u", g->role);
	}
	return psprintf("%s:%s", grantee_kind_name(g->kind), g->name);
}

/*
 * What the caller may delegate on `pattern`: the capabilities of its most
 * specific allows that cover the pattern, less those of any more specific
 * allow that overlaps it (which decides for some of its paths), less every
 * capability of an overlapping deny.  *limit receives the earliest expiry
 * among the rules that gave them (0 when none expires).
 */
static uint32
delegable_caps(const SmCaller *c, const char *pattern, TimestampTz *limit)
{
	TimestampTz now = GetCurrentTimestamp();
	const SmGrant *best = NULL;
	uint32		held = 0;
	uint32		denied = 0;
	ListCell   *lc;

	*limit = 0;
	foreach(lc, sm_lookup_grants(c->tenant))
	{
		const SmGrant *g = lfirst(lc);
		int			cmp;

		if (!grant_applies(g, c, now))
			continue;
		if (g->deny)
		{
			if (sm_pattern_overlaps(g->pattern, pattern))
				denied |= (g->caps & SM_CAP_ADMIN) ? SM_CAP_ALL : g->caps;
			continue;
		}
		if (!sm_pattern_covers(g->pattern, pattern))
			continue;
		cmp = best ? specificity_cmp(g->pattern, best->pattern) : 1;
		if (cmp > 0)
		{
			best = g;
			held = g->caps;
			*limit = g->has_expiry ? g->expires_at : 0;
		}
		else if (cmp == 0)
		{
			held |= g->caps;
			if (g->has_expiry && (*limit == 0 || g->expires_at < *limit))
				*limit = g->expires_at;
		}
	}
	if (best == NULL)
		return 0;
	foreach(lc, sm_lookup_grants(c->tenant))
	{
		const SmGrant *g = lfirst(lc);

		if (!g->deny && grant_applies(g, c, now) &&
			specificity_cmp(g->pattern, best->pattern) > 0 &&
			sm_pattern_overlaps(g->pattern, pattern))
			held &= (g->caps & SM_CAP_ADMIN) ? SM_CAP_ALL : g->caps;
	}
	if (held & SM_CAP_ADMIN)
		held = SM_CAP_ALL;
	return held & ~denied;
}

/*
 * Require that the caller may grant, deny or revoke `caps` on `pattern`
 * until `expires` (0: for ever): a tenant administrator, or a holder of
 * `grant` and of each capability it passes on (see delegable_caps), whose
 * own rules last at least as long.
 */
static void
require_delegation(const SmCaller *c, const char *pattern, uint32 caps,
				   TimestampTz expires)
{
	uint32		need = caps | SM_CAP_GRANT;
	TimestampTz limit;

	if (c->is_admin || caps == 0)
		return;
	if ((delegable_caps(c, pattern, &limit) & need) != need)
	{
		sm_audit_refused(ERRCODE_SM_PERMISSION, pattern);
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied to grant on \"%s\"", pattern),
				 errdetail("Granting needs the grant capability and every capability granted, on a pattern covering \"%s\".",
						   pattern)));
	}
	if (limit != 0 && (expires == 0 || expires > limit))
	{
		sm_audit_refused(ERRCODE_SM_PERMISSION, pattern);
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("a grant on \"%s\" may not outlive the granter's own", pattern),
				 errdetail("The rules that allow this delegation expire at %s.",
						   timestamptz_to_str(limit)),
				 errhint("Give an expires_at no later than that.")));
	}
}

/* May the caller change rules on `pattern` at all (for listing them)? */
static bool
may_delegate(const SmCaller *c, const char *pattern)
{
	TimestampTz limit;

	return c->is_admin || (delegable_caps(c, pattern, &limit) & SM_CAP_GRANT) != 0;
}

/* The capabilities of the grantee's rules (allow and deny) on exactly `pattern`. */
static uint32
rule_caps(const SmCaller *c, const char *pattern, const SmGrantee *grantee)
{
	uint32		caps = 0;
	ListCell   *lc;

	foreach(lc, sm_lookup_grants(c->tenant))
	{
		const SmGrant *g = lfirst(lc);

		if (g->kind == grantee->kind && strcmp(g->pattern, pattern) == 0 &&
			(g->kind == SM_GRANTEE_ROLE ? g->role == grantee->role :
			 strcmp(g->name, grantee->name) == 0))
			caps |= g->caps;
	}
	return caps;
}

/* Shared body of secret_grant and secret_deny. */
static Datum
add_rule(FunctionCallInfo fcinfo, bool deny)
{
	static SmStmt lock_tenant = {
		"SELECT 1 FROM secret_mgmt.secret_tenant"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
		1, {TEXTOID}
	};
	static SmStmt merge = {
		"UPDATE secret_mgmt.secret_grant"
		"   SET capabilities = ARRAY(SELECT DISTINCT pg_catalog.unnest(capabilities"
		"                            OPERATOR(pg_catalog.||) $7) ORDER BY 1),"
		"       expires_at = $8"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND pattern OPERATOR(pg_catalog.=) $2"
		"   AND grantee_kind OPERATOR(pg_catalog.=) $3"
		"   AND grantee_role IS NOT DISTINCT FROM $4::pg_catalog.regrole"
		"   AND grantee_name IS NOT DISTINCT FROM $5 AND deny OPERATOR(pg_catalog.=) $6",
		8, {TEXTOID, TEXTOID, TEXTOID, OIDOID, TEXTOID, BOOLOID, TEXTARRAYOID, TIMESTAMPTZOID}
	};
	static SmStmt insert = {
		"INSERT INTO secret_mgmt.secret_grant"
		" (tenant_id, pattern, grantee_kind, grantee_role, grantee_name, deny,"
		"  capabilities, expires_at, created_by)"
		" VALUES ($1, $2, $3, $4::pg_catalog.regrole, $5, $6,"
		"         ARRAY(SELECT DISTINCT pg_catalog.unnest($7) ORDER BY 1), $8, $9)",
		9, {TEXTOID, TEXTOID, TEXTOID, OIDOID, TEXTOID, BOOLOID, TEXTARRAYOID,
		TIMESTAMPTZOID, TEXTOID}
	};
	SmSession	session;
	SmCaller	c;
	char	   *pattern;
	char	   *grantee_arg;
	uint32		caps;
	SmGrantee	grantee;
	Datum		args[9];
	char		nulls[9] = "         ";

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pattern, grantee and capabilities must not be null")));
	pattern = text_to_cstring(PG_GETARG_TEXT_PP(0));
	grantee_arg = text_to_cstring(PG_GETARG_TEXT_PP(1));
	sm_pattern_check(pattern);
	caps = sm_caps_from_array(PG_GETARG_ARRAYTYPE_P(2));

	sm_audit_begin(deny ? "deny" : "grant", pattern);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, NULL);
	grantee = parse_grantee(grantee_arg, &c);
	require_delegation(&c, pattern, caps,
					   (deny || PG_NARGS() < 4 || PG_ARGISNULL(3)) ? 0 :
					   PG_GETARG_TIMESTAMPTZ(3));

	args[0] = CStringGetTextDatum(c.tenant);
	sm_exec(&lock_tenant, args, NULL, 1);
	args[1] = CStringGetTextDatum(pattern);
	args[2] = CStringGetTextDatum(grantee_kind_name(grantee.kind));
	if (grantee.kind == SM_GRANTEE_ROLE)
	{
		args[3] = ObjectIdGetDatum(grantee.role);
		nulls[4] = 'n';
	}
	else
	{
		nulls[3] = 'n';
		args[4] = CStringGetTextDatum(grantee.name);
	}
	args[5] = BoolGetDatum(deny);
	args[6] = PG_GETARG_DATUM(2);
	if (deny || PG_NARGS() < 4 || PG_ARGISNULL(3))
		nulls[7] = 'n';
	else
		args[7] = PG_GETARG_DATUM(3);
	args[8] = CStringGetTextDatum(c.rolename);
	if (sm_exec(&merge, args, nulls, 0) == 0)
		sm_exec(&insert, args, nulls, 0);
	sm_lookup_acl_changed();
	sm_audit_write(&c, deny ? "deny" : "grant", pattern, NULL, 0, NULL, 0);
	sm_leave(&session);
	PG_RETURN_VOID();
}

/* SQL: secret_grant(pattern, grantee, capabilities, expires_at) */
Datum
secret_grant(PG_FUNCTION_ARGS)
{
	return add_rule(fcinfo, false);
}

/* SQL: secret_deny(pattern, grantee, capabilities) */
Datum
secret_deny(PG_FUNCTION_ARGS)
{
	return add_rule(fcinfo, true);
}

/*
 * SQL: secret_revoke(pattern, grantee, capabilities): removes the
 * capabilities (all of them when null) from the grantee's allow and deny
 * rules on exactly this pattern; rules left without capabilities go.
 */
Datum
secret_revoke(PG_FUNCTION_ARGS)
{
	static SmStmt strip = {
		"UPDATE secret_mgmt.secret_grant"
		"   SET capabilities = ARRAY(SELECT c FROM pg_catalog.unnest(capabilities) c"
		"                            WHERE $6::pg_catalog.text[] IS NOT NULL"
		"                              AND c OPERATOR(pg_catalog.<>) ALL ($6) ORDER BY 1)"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND pattern OPERATOR(pg_catalog.=) $2"
		"   AND grantee_kind OPERATOR(pg_catalog.=) $3"
		"   AND grantee_role IS NOT DISTINCT FROM $4::pg_catalog.regrole"
		"   AND grantee_name IS NOT DISTINCT FROM $5",
		6, {TEXTOID, TEXTOID, TEXTOID, OIDOID, TEXTOID, TEXTARRAYOID}
	};
	static SmStmt drop_empty = {
		"DELETE FROM secret_mgmt.secret_grant"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1"
		"   AND capabilities OPERATOR(pg_catalog.=) '{}'::pg_catalog.text[]",
		1, {TEXTOID}
	};
	SmSession	session;
	SmCaller	c;
	char	   *pattern;
	uint32		caps = SM_CAP_ALL;
	SmGrantee	grantee;
	Datum		args[6];
	char		nulls[6] = "      ";

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pattern and grantee must not be null")));
	pattern = text_to_cstring(PG_GETARG_TEXT_PP(0));
	sm_pattern_check(pattern);
	if (!PG_ARGISNULL(2))
		caps = sm_caps_from_array(PG_GETARG_ARRAYTYPE_P(2));

	sm_audit_begin("revoke", pattern);
	sm_enter(&session);
	sm_caller_resolve(&session, &c, NULL);
	grantee = parse_grantee(text_to_cstring(PG_GETARG_TEXT_PP(1)), &c);
	/* Revoking needs delegation of what is actually taken away. */
	require_delegation(&c, pattern, caps & rule_caps(&c, pattern, &grantee), 0);

	args[0] = CStringGetTextDatum(c.tenant);
	args[1] = CStringGetTextDatum(pattern);
	args[2] = CStringGetTextDatum(grantee_kind_name(grantee.kind));
	if (grantee.kind == SM_GRANTEE_ROLE)
	{
		args[3] = ObjectIdGetDatum(grantee.role);
		nulls[4] = 'n';
	}
	else
	{
		nulls[3] = 'n';
		args[4] = CStringGetTextDatum(grantee.name);
	}
	if (PG_ARGISNULL(2))
		nulls[5] = 'n';
	else
		args[5] = PG_GETARG_DATUM(2);
	sm_exec(&strip, args, nulls, 0);
	sm_exec(&drop_empty, args, NULL, 0);
	sm_lookup_acl_changed();
	sm_audit_write(&c, "revoke", pattern, NULL, 0, NULL, 0);
	sm_leave(&session);
	PG_RETURN_VOID();
}

/*
 * The principal to evaluate for secret_check/secret_explain_access: the
 * caller, or -- for tenant administrators and holders of `grant` on the
 * path -- someone else, written like a grantee.
 */
static void
principal_for(FunctionCallInfo fcinfo, int argno, const SmCaller *caller,
			  const char *path, SmCaller *who)
{
	SmGrantee	g;

	*who = *caller;
	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return;
	if (!caller->is_admin && !sm_acl_allows(caller, path, SM_CAP_GRANT))
		ereport(ERROR,
				(errcode(ERRCODE_SM_PERMISSION),
				 errmsg("permission denied to examine the access of other principals"),
				 errdetail("This needs tenant administration or the grant capability on the path.")));
	g = parse_grantee(text_to_cstring(PG_GETARG_TEXT_PP(argno)), caller);
	who->assumed = g.kind != SM_GRANTEE_ROLE;
	who->groups = NIL;
	who->subject = NULL;
	who->is_admin = false;		/* a token principal is never an administrator */
	who->is_superuser = false;
	if (g.kind == SM_GRANTEE_TOKEN)
		who->subject = g.name;
	else if (g.kind == SM_GRANTEE_GROUP)
	{
		who->subject = "";
		who->groups = list_make1(g.name);
	}
	else if (g.kind == SM_GRANTEE_TENANT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a tenant is not a principal")));
	else
	{
		bool		is_admin = false;
		bool		member = false;

		who->roleid = g.role;
		who->is_superuser = superuser_arg(g.role);
		who->is_admin = who->is_superuser;
		if (!who->is_admin && !sm_is_broker(g.role, caller->tenant))
		{
			ListCell   *lc;

			foreach(lc, sm_lookup_members(caller->tenant))
			{
				SmMembership *m = lfirst(lc);

				if (has_privs_of_role(g.role, m->member))
				{
					member = true;
					is_admin |= m->is_admin;
				}
			}
			who->is_admin = is_admin;
		}
		/* A role outside the tenant holds nothing there, whatever its grants. */
		who->outsider = !who->is_admin && !member;
	}
}

/* SQL: secret_check(path, capability, principal) returns boolean */
Datum
secret_check(PG_FUNCTION_ARGS)
{
	SmSession	session;
	SmCaller	c;
	SmCaller	who;
	char	   *path;
	uint32		cap;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("path and capability must not be null")));
	path = text_to_cstring(PG_GETARG_TEXT_PP(0));
	sm_store_check_path(path);
	cap = sm_cap_parse(text_to_cstring(PG_GETARG_TEXT_PP(1)));
	sm_audit_begin("check", path);
	sm_session_init(&session);
	sm_caller_resolve(&session, &c, NULL);
	principal_for(fcinfo, 2, &c, path, &who);
	PG_RETURN_BOOL(sm_acl_allows(&who, path, cap));
}

/*
 * SQL: secret_explain_access(path, principal): for each capability,
 * whether it is allowed and which rule decided, with the scope that
 * resolution of the path would answer from.
 */
Datum
secret_explain_access(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SmSession	session;
	SmCaller	c;
	SmCaller	who;
	char	   *path;
	char	   *scope = NULL;
	char	   *scope_id = NULL;

	path = sm_store_arg_path(fcinfo, 0);
	InitMaterializedSRF(fcinfo, 0);
	sm_audit_begin("explain_access", path);
	sm_session_init(&session);
	sm_caller_resolve(&session, &c, NULL);
	principal_for(fcinfo, 1, &c, path, &who);
	if (sm_acl_allows(&who, path, SM_CAP_LIST))
	{
		SmContext	context = {who.team, who.project, who.user};

		sm_lookup_scope(who.tenant, path, &context, &scope, &scope_id);
		if (scope == NULL && sm_acl_tenant_may_read_global(who.tenant, path))
			sm_lookup_scope("global", path, &context, &scope, &scope_id);
	}
	for (int i = 0; i < lengthof(cap_names); i++)
	{
		SmDecision	d = sm_acl_decide(&who, path, 1U << i);
		Datum		values[8];
		bool		nulls[8] = {false};

		values[0] = CStringGetTextDatum(cap_names[i]);
		values[1] = BoolGetDatum(d.allowed);
		values[2] = CStringGetTextDatum(d.rule);
		if (d.grant)
		{
			values[3] = CStringGetTextDatum(d.grant->pattern);
			values[4] = CStringGetTextDatum(grantee_text(d.grant));
			nulls[5] = !d.grant->has_expiry;
			values[5] = TimestampTzGetDatum(d.grant->expires_at);
		}
		else
			nulls[3] = nulls[4] = nulls[5] = true;
		nulls[6] = scope == NULL;
		values[6] = scope ? CStringGetTextDatum(scope) : (Datum) 0;
		nulls[7] = scope_id == NULL || scope_id[0] == '\0';
		values[7] = nulls[7] ? (Datum) 0 : CStringGetTextDatum(scope_id);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* SQL: secret_grants(): the tenant's rules, for administrators and grant holders */
Datum
secret_grants(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SmSession	session;
	SmCaller	c;
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, 0);
	sm_audit_begin("grants", NULL);
	sm_session_init(&session);
	sm_caller_resolve(&session, &c, NULL);
	foreach(lc, sm_lookup_grants(c.tenant))
	{
		const SmGrant *g = lfirst(lc);
		Datum		values[5];
		bool		nulls[5] = {false};

		/* Each rule is shown to those who could change it. */
		if (!may_delegate(&c, g->pattern))
			continue;
		values[0] = CStringGetTextDatum(g->pattern);
		values[1] = CStringGetTextDatum(grantee_text(g));
		values[2] = caps_to_array(g->caps);
		values[3] = BoolGetDatum(g->deny);
		nulls[4] = !g->has_expiry;
		values[4] = TimestampTzGetDatum(g->expires_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
