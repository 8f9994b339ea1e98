/*-------------------------------------------------------------------------
 *
 * backend.h
 *		External backends: the registry, and the HashiCorp Vault client.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_BACKEND_H
#define SECRET_MGMT_BACKEND_H

#include "secret_mgmt.h"

#include "utils/jsonb.h"

/* What a Vault configuration (a backend's or a tenant's KMS) is for. */
typedef enum SmVaultUse
{
	SM_VAULT_KV,				/* secret store: KV v2 */
	SM_VAULT_TRANSIT			/* KMS: Transit */
} SmVaultUse;

/* A validated Vault configuration. */
typedef struct SmVaultConfig
{
	char	   *address;		/* https://host:port */
	char	   *mount;			/* KV or Transit mount */
	char	   *namespace;		/* NULL: none */
	char	   *ca_file;		/* NULL: secret_mgmt.ca_file or the system's */
	char	   *auth;			/* "token" or "approle" */
	char	   *auth_mount;		/* AppRole mount, default "approle" */
	char	   *credentials_path;	/* a secret of the global tenant */
	char	   *key;			/* Transit key name (KMS only) */
	bool		derived;		/* Transit key is derived: send a context */
} SmVaultConfig;

extern void sm_vault_config_parse(Jsonb *config, SmVaultUse use,
								  const char *credentials_path,
								  SmVaultConfig *out);

/* Transit, for the KMS (kms.c).  Ciphertexts are "vault:vN:..." text. */
extern char *sm_vault_transit_encrypt(const SmVaultConfig *cfg,
									  const uint8 *plain, size_t len,
									  const uint8 *context, size_t context_len);
extern uint8 *sm_vault_transit_decrypt(const SmVaultConfig *cfg,
									   const char *ciphertext,
									   const uint8 *context, size_t context_len,
									   size_t *len);
extern char *sm_vault_transit_rewrap(const SmVaultConfig *cfg,
									 const char *ciphertext,
									 const uint8 *context, size_t context_len);
extern bool sm_vault_ciphertext_valid(const char *ciphertext, size_t len);


#endif							/* SECRET_MGMT_BACKEND_H */
