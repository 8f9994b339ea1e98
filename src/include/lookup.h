/*-------------------------------------------------------------------------
 *
 * lookup.h
 *		Direct index lookups on the extension's tables, for the read path.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_LOOKUP_H
#define SECRET_MGMT_LOOKUP_H

#include "secret_mgmt.h"

#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/* One row of secret_member. */
typedef struct SmMembership
{
	char	   *tenant;
	Oid			member;
	bool		is_admin;
} SmMembership;

/* The resolution context: scope ids searched before the organization. */
typedef struct SmContext
{
	const char *team;
	const char *project;
	const char *user;
} SmContext;

/* What resolving a path found; fields are valid as far as the flags say. */
typedef struct SmResolved
{
	bool		found_secret;
	pg_uuid_t	secret_id;
	bool		found_version;
	int32		version;
	char	   *state;
	bool		expired;
	bytea	   *envelope;		/* NULL once destroyed */
	int32		key_id;
	char	   *backend;		/* NULL: local; else the backend's name */
	int32		backend_version;	/* the backend's version holding it; 0: none */
	TimestampTz backend_confirmed_at;	/* 0: never confirmed */
} SmResolved;

/* A token verification key (its key material sealed like a value). */
typedef struct SmTokenKey
{
	char	   *alg;
	pg_uuid_t	key_uuid;
	int32		key_id;
	bytea	   *envelope;
	char	   *audience;
	char	   *issuer;
} SmTokenKey;

extern List *sm_lookup_members(const char *tenant);
extern List *sm_lookup_grants(const char *tenant);
extern List *sm_lookup_brokers(const char *tenant);
extern void sm_lookup_members_changed(void);
extern void sm_lookup_acl_changed(void);
extern void sm_lookup_brokers_changed(void);
extern void sm_lookup_scope(const char *tenant, const char *path,
							const SmContext *context, char **scope, char **scope_id);
extern bool sm_lookup_token_key(const char *tenant, const char *kid, SmTokenKey *out);
extern bool sm_lookup_tenant_exists(const char *tenant);
extern void sm_lookup_resolve(const char *tenant, const char *path,
							  const SmContext *context, const char *label,
							  bool by_version, int32 version, SmResolved *out);
extern bool sm_lookup_data_key(const char *tenant, int32 key_id,
							   bytea **wrapped, char **kek_id);
extern bool sm_lookup_tenant_kms(const char *tenant, char **kms,
								 Jsonb **config);

#endif							/* SECRET_MGMT_LOOKUP_H */
