/*-------------------------------------------------------------------------
 *
 * kms.h
 *		What wraps a tenant's data keys: the local root key or an external
 *		KMS (HashiCorp Vault Transit).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_KMS_H
#define SECRET_MGMT_KMS_H

#include "secret_mgmt.h"

#include "utils/jsonb.h"

/* kek_id of data keys wrapped by Vault Transit: "vault:" + key name. */
#define SM_KEK_VAULT_PREFIX		"vault:"

extern void sm_kms_check_config(const char *kms, Jsonb *config);
extern bool sm_kms_external_kek(const char *kek_id);
extern bytea *sm_kms_wrap(const char *tenant, Jsonb *config, int32 key_id,
						  const uint8 *dek, char **kek_id);
extern void sm_kms_unwrap(const char *tenant, int32 key_id, const bytea *wrapped,
						  const char *kek_id, uint8 *dek);
extern bytea *sm_kms_rewrap(const char *tenant, int32 key_id, const bytea *wrapped,
							const char *kek_id);

#endif							/* SECRET_MGMT_KMS_H */
