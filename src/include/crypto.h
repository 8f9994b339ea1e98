/*-------------------------------------------------------------------------
 *
 * crypto.h
 *		AES-256-GCM primitives, the value envelope, and wiped memory.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_CRYPTO_H
#define SECRET_MGMT_CRYPTO_H

#include "secret_mgmt.h"

#define SM_KEY_LEN				32
#define SM_NONCE_LEN			12
#define SM_TAG_LEN				16
#define SM_UUID_LEN				16

/*
 * Value envelope, format 1 (all integers big-endian):
 *
 *	 0	format (1)
 *	 1	algorithm (1 = AES-256-GCM)
 *	 2	data key id, uint32
 *	 6	nonce, 12 bytes
 *	18	ciphertext length n, uint32
 *	22	ciphertext, n bytes
 *	22+n tag, 16 bytes
 *
 * The associated data binds the ciphertext to where it belongs: format,
 * algorithm, tenant, secret id, version number and data key id.
 */
#define SM_ENVELOPE_FORMAT		1
#define SM_ALG_AES256GCM		1
#define SM_ENVELOPE_NONCE_OFF	6
#define SM_ENVELOPE_HEADER		22
#define SM_ENVELOPE_OVERHEAD	(SM_ENVELOPE_HEADER + SM_TAG_LEN)

/* Where a value belongs; becomes the envelope's associated data. */
typedef struct SmValueAad
{
	const char *tenant;
	const uint8 *secret_id;		/* SM_UUID_LEN bytes */
	int32		version;
	int32		key_id;
} SmValueAad;

extern void sm_random_bytes(uint8 *buf, size_t len);
extern void sm_wipe(void *ptr, size_t len);
extern void *sm_secure_alloc(Size size);

extern bool sm_gcm_encrypt(const uint8 *key, const uint8 *nonce,
						   const uint8 *aad, size_t aad_len,
						   const uint8 *plain, size_t plain_len,
						   uint8 *cipher, uint8 *tag);
extern bool sm_gcm_decrypt(const uint8 *key, const uint8 *nonce,
						   const uint8 *aad, size_t aad_len,
						   const uint8 *cipher, size_t cipher_len,
						   const uint8 *tag, uint8 *plain);

extern bytea *sm_envelope_seal(const uint8 *dek, const SmValueAad *aad,
							   const uint8 *plain, size_t plain_len);
extern uint8 *sm_envelope_try_open(const uint8 *dek, const SmValueAad *aad,
								   const bytea *envelope, size_t *plain_len);
extern uint8 *sm_envelope_open(const uint8 *dek, const SmValueAad *aad,
							   const bytea *envelope, size_t *plain_len);
extern int32 sm_envelope_key_id(const bytea *envelope);

#endif							/* SECRET_MGMT_CRYPTO_H */
