/*-------------------------------------------------------------------------
 *
 * store.h
 *		Secrets and their versions: what other subsystems call.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_STORE_H
#define SECRET_MGMT_STORE_H

#include "tenant.h"

extern void sm_check_path(const char *path);
/* Backend credentials: secrets of the platform tenant, read internally. */
extern uint8 *sm_platform_secret(const char *path, size_t *len);
extern bool sm_platform_secret_exists(const char *path);
extern uint8 *sm_store_resolve(const SmCaller *c, const char *path, const char *label,
							   bool by_version, int32 version, size_t *len);

#endif							/* SECRET_MGMT_STORE_H */
