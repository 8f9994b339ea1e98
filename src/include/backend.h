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

#include "nodes/pg_list.h"
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
	const uint8 *credential;	/* NULL: read credentials_path when needed */
	size_t		credential_len;
	List	   *tenants;		/* KV: the tenants that may store secrets in
								 * it (char *), or NIL for every tenant */
} SmVaultConfig;

/* What a KV version 2 read found. */
typedef struct SmKvRead
{
	bool		found;			/* the key (and version) exists */
	int32		version;		/* the version read (metadata.version) */
	bool		deleted;		/* soft-deleted (deletion_time set) */
	bool		destroyed;
} SmKvRead;

extern bool sm_backend_load(const char *name, MemoryContext cxt, char **kind,
							SmVaultConfig *cfg);
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

/* KV version 2, for a secret-store backend.  kvpath is "<tenant>/<path>". */
extern int32 sm_vault_kv_write(const SmVaultConfig *cfg, const char *kvpath,
							   const uint8 *value, size_t len, int32 cas,
							   bool *cas_mismatch);
extern int32 sm_vault_kv_current(const SmVaultConfig *cfg, const char *kvpath);
extern uint8 *sm_vault_kv_read(const SmVaultConfig *cfg, const char *kvpath,
							   int32 version, SmKvRead *out, size_t *len);
extern void sm_vault_kv_versions(const SmVaultConfig *cfg, const char *kvpath,
								 const char *op, const int32 *versions, int n);
extern void sm_vault_kv_purge(const SmVaultConfig *cfg, const char *kvpath);


#endif							/* SECRET_MGMT_BACKEND_H */
