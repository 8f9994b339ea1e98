/*-------------------------------------------------------------------------
 *
 * crypto.c
 *		AES-256-GCM primitives, the value envelope, and wiped memory.
 *
 * Everything that touches a plaintext or a key goes through here.  Buffers
 * that hold either are allocated with sm_secure_alloc(), which ties a wipe
 * to the owning memory context: when the context is reset or deleted --
 * including on the error path -- the bytes are cleansed before the memory
 * is reused.  No function here raises an error while an OpenSSL context is
 * live, so nothing leaks on the error path.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "audit.h"
#include "crypto.h"
#include "lib/stringinfo.h"
#include "utils/memutils.h"

/* Header in front of every secure allocation. */
typedef struct SmSecureChunk
{
	MemoryContextCallback cb;
	Size		size;
	/* data follows, MAXALIGNed */
} SmSecureChunk;

#define SM_SECURE_HDR	MAXALIGN(sizeof(SmSecureChunk))

static void
secure_chunk_wipe(void *arg)
{
	SmSecureChunk *chunk = (SmSecureChunk *) arg;

	OPENSSL_cleanse((char *) chunk + SM_SECURE_HDR, chunk->size);
}

/*
 * Allocate zeroed memory in CurrentMemoryContext that is cleansed when the
 * context goes away, whether by normal cleanup or by error recovery.
 */
void *
sm_secure_alloc(Size size)
{
	SmSecureChunk *chunk;

	chunk = MemoryContextAllocZero(CurrentMemoryContext,
								   SM_SECURE_HDR + Max(size, 1));
	chunk->size = Max(size, 1);
	chunk->cb.func = secure_chunk_wipe;
	chunk->cb.arg = chunk;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, &chunk->cb);
	return (char *) chunk + SM_SECURE_HDR;
}

/* Wipe a buffer now. */
void
sm_wipe(void *ptr, size_t len)
{
	if (ptr != NULL && len > 0)
		OPENSSL_cleanse(ptr, len);
}

/* Cryptographically strong random bytes, or an error. */
void
sm_random_bytes(uint8 *buf, size_t len)
{
	if (RAND_bytes(buf, (int) len) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes")));
}

/*
 * One-shot AES-256-GCM.  Returns false on any library failure; the caller
 * decides what error to raise once the OpenSSL context is gone.
 */
bool
sm_gcm_encrypt(const uint8 *key, const uint8 *nonce,
			   const uint8 *aad, size_t aad_len,
			   const uint8 *plain, size_t plain_len,
			   uint8 *cipher, uint8 *tag)
{
	EVP_CIPHER_CTX *ctx;
	int			len;
	bool		ok = false;

	if (plain_len > INT_MAX || aad_len > INT_MAX)
		return false;
	if ((ctx = EVP_CIPHER_CTX_new()) == NULL)
		return false;
	if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, SM_NONCE_LEN, NULL) == 1 &&
		EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) == 1 &&
		EVP_EncryptUpdate(ctx, NULL, &len, aad, (int) aad_len) == 1 &&
		(plain_len == 0 ||
		 EVP_EncryptUpdate(ctx, cipher, &len, plain, (int) plain_len) == 1) &&
		EVP_EncryptFinal_ex(ctx, cipher + (plain_len == 0 ? 0 : len), &len) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SM_TAG_LEN, tag) == 1)
		ok = true;
	EVP_CIPHER_CTX_free(ctx);
	return ok;
}

/*
 * One-shot AES-256-GCM decryption.  Returns false when the tag does not
 * authenticate; on failure the output buffer is wiped.
 */
bool
sm_gcm_decrypt(const uint8 *key, const uint8 *nonce,
			   const uint8 *aad, size_t aad_len,
			   const uint8 *cipher, size_t cipher_len,
			   const uint8 *tag, uint8 *plain)
{
	EVP_CIPHER_CTX *ctx;
	int			len = 0;
	bool		ok = false;

	if (cipher_len > INT_MAX || aad_len > INT_MAX)
		return false;
	if ((ctx = EVP_CIPHER_CTX_new()) == NULL)
		return false;
	if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, SM_NONCE_LEN, NULL) == 1 &&
		EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) == 1 &&
		EVP_DecryptUpdate(ctx, NULL, &len, aad, (int) aad_len) == 1 &&
		(cipher_len == 0 ||
		 EVP_DecryptUpdate(ctx, plain, &len, cipher, (int) cipher_len) == 1) &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SM_TAG_LEN,
							(void *) tag) == 1 &&
		EVP_DecryptFinal_ex(ctx, plain + (cipher_len == 0 ? 0 : len), &len) == 1)
		ok = true;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok && cipher_len > 0)
		OPENSSL_cleanse(plain, cipher_len);
	return ok;
}

static void
put_uint32(uint8 *p, uint32 v)
{
	p[0] = (uint8) (v >> 24);
	p[1] = (uint8) (v >> 16);
	p[2] = (uint8) (v >> 8);
	p[3] = (uint8) v;
}

static uint32
get_uint32(const uint8 *p)
{
	return ((uint32) p[0] << 24) | ((uint32) p[1] << 16) |
		((uint32) p[2] << 8) | (uint32) p[3];
}

/* Serialise the associated data of a value. */
static void
build_value_aad(StringInfo buf, const SmValueAad *aad)
{
	uint8		word[4];
	size_t		tlen = strlen(aad->tenant);

	appendStringInfoString(buf, "secret_mgmt/value");
	appendStringInfoCharMacro(buf, (char) SM_ENVELOPE_FORMAT);
	appendStringInfoCharMacro(buf, (char) SM_ALG_AES256GCM);
	put_uint32(word, (uint32) tlen);
	appendBinaryStringInfo(buf, (char *) word, 4);
	appendBinaryStringInfo(buf, aad->tenant, (int) tlen);
	appendBinaryStringInfo(buf, (const char *) aad->secret_id, SM_UUID_LEN);
	put_uint32(word, (uint32) aad->version);
	appendBinaryStringInfo(buf, (char *) word, 4);
	put_uint32(word, (uint32) aad->key_id);
	appendBinaryStringInfo(buf, (char *) word, 4);
}

/*
 * Encrypt a value under a data key into a new envelope.  The caller has
 * already counted this encryption against the data key.
 */
bytea *
sm_envelope_seal(const uint8 *dek, const SmValueAad *aad,
				 const uint8 *plain, size_t plain_len)
{
	StringInfoData aadbuf;
	bytea	   *env;
	uint8	   *p;

	if (plain_len > SM_MAX_VALUE_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_SM_INVALID_VALUE),
				 errmsg("secret value is too large"),
				 errdetail("A value may be at most %d bytes; this one has %zu bytes.",
						   SM_MAX_VALUE_BYTES, plain_len)));

	env = (bytea *) palloc(VARHDRSZ + SM_ENVELOPE_OVERHEAD + plain_len);
	SET_VARSIZE(env, VARHDRSZ + SM_ENVELOPE_OVERHEAD + plain_len);
	p = (uint8 *) VARDATA(env);
	p[0] = SM_ENVELOPE_FORMAT;
	p[1] = SM_ALG_AES256GCM;
	put_uint32(p + 2, (uint32) aad->key_id);
	sm_random_bytes(p + SM_ENVELOPE_NONCE_OFF, SM_NONCE_LEN);
	put_uint32(p + 18, (uint32) plain_len);

	initStringInfo(&aadbuf);
	build_value_aad(&aadbuf, aad);
	if (!sm_gcm_encrypt(dek, p + SM_ENVELOPE_NONCE_OFF,
						(uint8 *) aadbuf.data, aadbuf.len,
						plain, plain_len,
						p + SM_ENVELOPE_HEADER,
						p + SM_ENVELOPE_HEADER + plain_len))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not encrypt secret value")));
	pfree(aadbuf.data);
	return env;
}

/* Reject an envelope whose framing is wrong, before any length is used. */
static void
check_envelope_framing(const bytea *envelope)
{
	const uint8 *p = (const uint8 *) VARDATA_ANY(envelope);
	size_t		len = VARSIZE_ANY_EXHDR(envelope);
	const char *problem = NULL;

	if (len < SM_ENVELOPE_OVERHEAD)
		problem = "The stored envelope is shorter than its fixed framing.";
	else if (p[0] != SM_ENVELOPE_FORMAT)
		problem = "The stored envelope has an unknown format.";
	else if (p[1] != SM_ALG_AES256GCM)
		problem = "The stored envelope names an unknown algorithm.";
	else if ((size_t) get_uint32(p + 18) != len - SM_ENVELOPE_OVERHEAD)
		problem = "The stored envelope's length field does not match its size.";

	if (problem)
	{
		sm_audit_refused(ERRCODE_SM_INTEGRITY, NULL);
		ereport(ERROR,
				(errcode(ERRCODE_SM_INTEGRITY),
				 errmsg("secret value failed its integrity check"),
				 errdetail_internal("%s", problem)));
	}
}

/* The data key id recorded in an envelope. */
int32
sm_envelope_key_id(const bytea *envelope)
{
	check_envelope_framing(envelope);
	return (int32) get_uint32((const uint8 *) VARDATA_ANY(envelope) + 2);
}

/*
 * Authenticate and decrypt an envelope, or return NULL when it does not
 * authenticate under `dek`.  Malformed framing is an error either way.  The
 * plaintext comes back in a secure allocation in CurrentMemoryContext.
 */
uint8 *
sm_envelope_try_open(const uint8 *dek, const SmValueAad *aad,
					 const bytea *envelope, size_t *plain_len)
{
	const uint8 *p = (const uint8 *) VARDATA_ANY(envelope);
	StringInfoData aadbuf;
	size_t		n;
	uint8	   *plain;
	bool		ok;

	check_envelope_framing(envelope);
	n = VARSIZE_ANY_EXHDR(envelope) - SM_ENVELOPE_OVERHEAD;
	if ((int32) get_uint32(p + 2) != aad->key_id)
	{
		sm_audit_refused(ERRCODE_SM_INTEGRITY, NULL);
		ereport(ERROR,
				(errcode(ERRCODE_SM_INTEGRITY),
				 errmsg("secret value failed its integrity check"),
				 errdetail("The stored envelope names another data key than its row.")));
	}

	initStringInfo(&aadbuf);
	build_value_aad(&aadbuf, aad);
	plain = sm_secure_alloc(n);
	ok = sm_gcm_decrypt(dek, p + SM_ENVELOPE_NONCE_OFF,
						(uint8 *) aadbuf.data, aadbuf.len,
						p + SM_ENVELOPE_HEADER, n,
						p + SM_ENVELOPE_HEADER + n, plain);
	pfree(aadbuf.data);
	if (!ok)
		return NULL;
	*plain_len = n;
	return plain;
}

/*
 * Authenticate and decrypt an envelope.  Any mismatch -- framing, key id,
 * associated data or tag -- raises SM005 and yields nothing.
 */
uint8 *
sm_envelope_open(const uint8 *dek, const SmValueAad *aad,
				 const bytea *envelope, size_t *plain_len)
{
	uint8	   *plain = sm_envelope_try_open(dek, aad, envelope, plain_len);

	if (plain == NULL)
	{
		sm_audit_refused(ERRCODE_SM_INTEGRITY, NULL);
		ereport(ERROR,
				(errcode(ERRCODE_SM_INTEGRITY),
				 errmsg("secret value failed its integrity check"),
				 errdetail("The ciphertext does not authenticate for this tenant, secret and version; it was altered or moved.")));
	}
	return plain;
}
