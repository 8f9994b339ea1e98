/*-------------------------------------------------------------------------
 *
 * acl.h
 *		Grants on path patterns: matching, evaluation, delegation.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_ACL_H
#define SECRET_MGMT_ACL_H

#include "tenant.h"

#include "utils/timestamp.h"

/* Capabilities, as bits. */
typedef enum SmCap
{
	SM_CAP_READ = 1 << 0,
	SM_CAP_LIST = 1 << 1,
	SM_CAP_CREATE = 1 << 2,
	SM_CAP_UPDATE = 1 << 3,
	SM_CAP_ROTATE = 1 << 4,
	SM_CAP_DELETE = 1 << 5,
	SM_CAP_GRANT = 1 << 6,
	SM_CAP_AUDIT = 1 << 7,
	SM_CAP_ADMIN = 1 << 8
} SmCap;

#define SM_CAP_ALL	0x1ff

/* Who a grant is for. */
typedef enum SmGranteeKind
{
	SM_GRANTEE_ROLE,			/* a PostgreSQL role (with inheritance) */
	SM_GRANTEE_TOKEN,			/* token:<subject> */
	SM_GRANTEE_GROUP,			/* group:<name> from a token */
	SM_GRANTEE_TENANT			/* tenant:<name>, in the platform tenant */
} SmGranteeKind;

/* One grant or deny, as cached (lookup.c). */
typedef struct SmGrant
{
	char	   *tenant;
	char	   *pattern;
	SmGranteeKind kind;
	Oid			role;			/* SM_GRANTEE_ROLE */
	char	   *name;			/* the other kinds */
	uint32		caps;
	bool		deny;
	bool		has_expiry;
	TimestampTz expires_at;
} SmGrant;

/* How a capability was decided, for secret_explain_access. */
typedef struct SmDecision
{
	bool		allowed;
	const char *rule;			/* "admin", "allow", "deny", "none" */
	const SmGrant *grant;		/* the deciding grant, or NULL */
} SmDecision;

extern uint32 sm_cap_parse(const char *name);
extern const char *sm_cap_name(uint32 cap);
extern uint32 sm_caps_from_array(ArrayType *caps);
extern void sm_pattern_check(const char *pattern);
extern bool sm_pattern_match(const char *pattern, const char *path);
extern bool sm_pattern_covers(const char *outer, const char *inner);
extern bool sm_pattern_overlaps(const char *a, const char *b);

extern SmDecision sm_acl_decide(const SmCaller *caller, const char *path, uint32 cap);
extern bool sm_acl_allows(const SmCaller *caller, const char *path, uint32 cap);
extern bool sm_acl_allows_everywhere(const SmCaller *c, uint32 cap);
extern void sm_acl_require(const SmCaller *caller, const char *path, uint32 cap);
extern bool sm_acl_tenant_may_read_global(const char *tenant, const char *path);

#endif							/* SECRET_MGMT_ACL_H */
