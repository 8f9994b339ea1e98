/*-------------------------------------------------------------------------
 *
 * keyring.h
 *		The root key and the per-tenant data keys.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_KEYRING_H
#define SECRET_MGMT_KEYRING_H

#include "secret_mgmt.h"

/* Length of a wrapped data key: format, nonce, key, tag. */
#define SM_WRAPPED_DEK_LEN	(1 + 12 + 32 + 16)

extern void sm_keyring_load_root(void);
extern bool sm_keyring_root_loaded(void);
extern const char *sm_keyring_root_error(void);
extern void sm_keyring_require_root(void);
extern const char *sm_keyring_kek_id(void);
extern void sm_keyring_forget(void);
extern bool sm_keyring_derive(const char *label, const char *context, uint8 *out);

/* These run inside sm_enter() (query.h): they read and write key rows. */
extern const uint8 *sm_dek_cached(const char *tenant, int32 key_id);
extern void sm_dek_evict(const char *tenant, int32 key_id);
extern const uint8 *sm_dek_for_encrypt(const char *tenant, int32 *key_id);
extern const uint8 *sm_dek_for_decrypt(const char *tenant, int32 key_id,
									   const bytea *wrapped, const char *kek_id);
extern int	sm_keyring_rekey(const char *tenant);

#endif							/* SECRET_MGMT_KEYRING_H */
