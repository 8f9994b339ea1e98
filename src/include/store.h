/*-------------------------------------------------------------------------
 *
 * store.h
 *		Secrets and versions: the helpers other subsystems build on.
 *
 * They run inside sm_enter() (query.h), on behalf of an identified caller,
 * and every statement names the caller's tenant.  Version numbers are only
 * ever allocated by sm_store_next_version(), under the secret's row lock.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_STORE_H
#define SECRET_MGMT_STORE_H

#include "tenant.h"

#include "utils/timestamp.h"
#include "utils/uuid.h"

/* Which secrets sm_store_find() may return. */
typedef enum SmFind
{
	SM_FIND_LIVE,
	SM_FIND_DELETED,
	SM_FIND_ANY
} SmFind;

/* A secret located in the caller's tenant. */
typedef struct SmSecret
{
	pg_uuid_t	id;
	char	   *type;
	int32		last_version;
	bool		deleted;
	TimestampTz deleted_at;
} SmSecret;

extern void sm_store_check_path(const char *path);
extern char *sm_store_arg_path(FunctionCallInfo fcinfo, int n);
extern bool sm_store_find(const SmCaller *c, const char *path, SmFind want,
						  SmSecret *out);
extern void sm_store_require(const SmCaller *c, const char *path, SmFind want,
							 SmSecret *out);
extern int32 sm_store_next_version(const SmCaller *c, const char *path,
								   const SmSecret *s);
extern void sm_store_insert_version(const SmCaller *c, const pg_uuid_t *id,
									const char *type, int32 version,
									const uint8 *plain, size_t len);
extern void sm_store_set_label(const SmCaller *c, const pg_uuid_t *id,
							   const char *label, int32 version);
extern int32 sm_store_current_version(const SmCaller *c, const pg_uuid_t *id);
extern void sm_store_promote(const SmCaller *c, const pg_uuid_t *id, int32 version);
/* Backend credentials: secrets of the platform tenant, read internally. */
extern uint8 *sm_platform_secret(const char *path, size_t *len);
extern bool sm_platform_secret_exists(const char *path);
extern uint8 *sm_store_resolve(const SmCaller *c, const char *path, const char *label,
							   bool by_version, int32 version, size_t *len);
extern uint8 *sm_store_resolve_ex(const SmCaller *c, const char *path, const char *label,
								  bool by_version, int32 version, bool fresh,
								  size_t *len);
extern uint8 *sm_store_version_value(const SmCaller *c, const pg_uuid_t *id,
									 int32 version, MemoryContext cxt, size_t *len);

#endif							/* SECRET_MGMT_STORE_H */
