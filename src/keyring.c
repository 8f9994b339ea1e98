/*-------------------------------------------------------------------------
 *
 * keyring.c
 *		The root key and the per-tenant data keys.
 *
 * The root key (32 bytes) is read once, in the postmaster, from
 * secret_mgmt.key_file or the output of secret_mgmt.key_command.  It lives
 * in a private anonymous mapping that is mlock()ed and excluded from core
 * dumps; backends inherit it through fork() and lock it again for
 * themselves (locks are not inherited).  It is never written to shared
 * memory, a table, or a message.  When it is missing or malformed the
 * reason is remembered and every value operation fails closed with SM004;
 * a key is never generated in its place.
 *
 * Each tenant has data keys: 256 random bits, stored only wrapped (AES-256-
 * GCM under the root key, bound to tenant, key id and root key id).  Every
 * encryption is counted against its data key; past
 * secret_mgmt.data_key_rotate_after encryptions the key is retired and a
 * fresh one minted, far below the 2^32 invocations NIST SP 800-38D allows
 * for random nonces.  Unwrapped data keys are cached per backend, in the
 * same locked mapping, for secret_mgmt.cache_ttl seconds.
 *
 * A tenant created with kms => 'vault' has its data keys wrapped by
 * HashiCorp Vault Transit instead of the root key (kms.c): they are wrapped
 * before their row is inserted, and unwrapped through Vault on first use in
 * each backend, then cached here like any other.  Their kek_id starts with
 * "vault:", which is how a key row says which way to unwrap it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "crypto.h"
#include "keyring.h"
#include "kms.h"
#include "metrics.h"
#include "miscadmin.h"
#include "query.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#define DEK_CACHE_SLOTS		64
#define TENANT_NAME_MAX		64

typedef struct DekSlot
{
	bool		used;
	char		tenant[TENANT_NAME_MAX];
	int32		key_id;
	uint8		wrapped_digest[32];	/* SHA-256 of the wrapped form */
	TimestampTz loaded_at;
} DekSlot;

/* The locked mapping: root key first, then one key per cache slot. */
typedef struct KeyVault
{
	uint8		root[SM_KEY_LEN];
	uint8		dek[DEK_CACHE_SLOTS][SM_KEY_LEN];
} KeyVault;

static KeyVault *vault = NULL;
static int	vault_locked_pid = 0;
static bool root_loaded = false;
static char root_error[256] = "secret_mgmt.key_file and secret_mgmt.key_command are both unset.";
static char kek_id[17];

/* Bookkeeping of the cache (no key material). */
static DekSlot dek_slots[DEK_CACHE_SLOTS];
static int	dek_next_victim = 0;

/* Create the locked, non-dumpable mapping that holds key material. */
static bool
vault_map(void)
{
	void	   *p;

	if (vault != NULL)
		return true;
	p = mmap(NULL, sizeof(KeyVault), PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return false;
#ifdef MADV_DONTDUMP
	(void) madvise(p, sizeof(KeyVault), MADV_DONTDUMP);
#endif
	vault = (KeyVault *) p;
	return true;
}

/* mlock() the mapping in this process; locks do not survive fork(). */
static void
vault_lock(void)
{
	if (vault == NULL || vault_locked_pid == MyProcPid)
		return;
	if (mlock(vault, sizeof(KeyVault)) != 0)
		ereport(DEBUG1,
				(errmsg_internal("secret_mgmt: could not lock key memory: %m")));
	vault_locked_pid = MyProcPid;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Decode exactly 64 hex digits, optionally surrounded by white space, into
 * the root key slot.  Returns false (and leaves the slot wiped) otherwise.
 */
static bool
decode_root_key(const char *buf, size_t len)
{
	size_t		start = 0,
				end = len,
				i;

	while (start < end && isspace((unsigned char) buf[start]))
		start++;
	while (end > start && isspace((unsigned char) buf[end - 1]))
		end--;
	if (end - start != 2 * SM_KEY_LEN)
		return false;
	for (i = 0; i < SM_KEY_LEN; i++)
	{
		int			hi = hexval(buf[start + 2 * i]);
		int			lo = hexval(buf[start + 2 * i + 1]);

		if (hi < 0 || lo < 0)
		{
			OPENSSL_cleanse(vault->root, SM_KEY_LEN);
			return false;
		}
		vault->root[i] = (uint8) ((hi << 4) | lo);
	}
	return true;
}

/* Read the key file; on failure set root_error and return false. */
static bool
read_key_file(char *buf, size_t bufsize, size_t *len)
{
	int			fd;
	struct stat st;
	ssize_t		n;

	/* Non-blocking, so that a FIFO cannot stall server start. */
	fd = open(sm_key_file, O_RDONLY | O_NONBLOCK | PG_BINARY, 0);
	if (fd < 0)
	{
		snprintf(root_error, sizeof(root_error),
				 "Could not open key file \"%s\": %s.", sm_key_file, strerror(errno));
		return false;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
	{
		snprintf(root_error, sizeof(root_error),
				 "Key file \"%s\" is not a regular file.", sm_key_file);
		close(fd);
		return false;
	}
	if (st.st_mode & (S_IWGRP | S_IRWXO))
	{
		snprintf(root_error, sizeof(root_error),
				 "Key file \"%s\" is accessible to other users; its mode must be 0600 or 0640.",
				 sm_key_file);
		close(fd);
		return false;
	}
	n = read(fd, buf, bufsize);
	close(fd);
	if (n < 0)
	{
		snprintf(root_error, sizeof(root_error),
				 "Could not read key file \"%s\": %s.", sm_key_file, strerror(errno));
		return false;
	}
	*len = (size_t) n;
	return true;
}

/* Run the key command; on failure set root_error and return false. */
static bool
run_key_command(char *buf, size_t bufsize, size_t *len)
{
	FILE	   *fp;
	size_t		n = 0;
	int			status;

	fflush(NULL);
	fp = popen(sm_key_command, "r");
	if (fp == NULL)
	{
		snprintf(root_error, sizeof(root_error),
				 "Could not run secret_mgmt.key_command: %s.", strerror(errno));
		return false;
	}
	while (n < bufsize)
	{
		size_t		r = fread(buf + n, 1, bufsize - n, fp);

		if (r == 0)
			break;
		n += r;
	}
	status = pclose(fp);
	if (status != 0)
	{
		snprintf(root_error, sizeof(root_error),
				 "secret_mgmt.key_command exited with status %d.",
				 WIFEXITED(status) ? WEXITSTATUS(status) : status);
		return false;
	}
	*len = n;
	return true;
}

/*
 * Load the root key.  Called from _PG_init() in the postmaster.  Never
 * raises an error: the server starts, and value operations explain why
 * they refuse to run.
 */
void
sm_keyring_load_root(void)
{
	char		buf[256];
	size_t		len = 0;
	bool		ok;
	uint8		mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	static const char kek_label[] = "secret_mgmt root key id";

	root_loaded = false;
	if (!vault_map())
	{
		snprintf(root_error, sizeof(root_error),
				 "Could not allocate locked memory for the root key: %s.", strerror(errno));
		return;
	}
	vault_lock();

	if (sm_key_file && sm_key_file[0] && sm_key_command && sm_key_command[0])
	{
		snprintf(root_error, sizeof(root_error),
				 "secret_mgmt.key_file and secret_mgmt.key_command are both set; set only one.");
		return;
	}
	if (sm_key_file && sm_key_file[0])
		ok = read_key_file(buf, sizeof(buf), &len);
	else if (sm_key_command && sm_key_command[0])
		ok = run_key_command(buf, sizeof(buf), &len);
	else
		return;					/* root_error already says both are unset */

	if (ok && !decode_root_key(buf, len))
	{
		snprintf(root_error, sizeof(root_error),
				 "The root key must be exactly 64 hexadecimal digits.");
		ok = false;
	}
	OPENSSL_cleanse(buf, sizeof(buf));
	if (!ok)
		return;

	/* A public name for this root key: HMAC(root, label), first 8 bytes. */
	if (HMAC(EVP_sha256(), vault->root, SM_KEY_LEN,
			 (const unsigned char *) kek_label, sizeof(kek_label) - 1,
			 mac, &maclen) == NULL || maclen < 8)
	{
		OPENSSL_cleanse(vault->root, SM_KEY_LEN);
		snprintf(root_error, sizeof(root_error), "Could not derive the root key id.");
		return;
	}
	for (int i = 0; i < 8; i++)
		snprintf(kek_id + 2 * i, 3, "%02x", mac[i]);
	root_loaded = true;
	root_error[0] = '\0';
}

bool
sm_keyring_root_loaded(void)
{
	return root_loaded;
}

/* Why the root key is not loaded ("" when it is). */
const char *
sm_keyring_root_error(void)
{
	return root_error;
}

/* Fail closed, saying why, unless the root key is usable. */
void
sm_keyring_require_root(void)
{
	if (!root_loaded)
		ereport(ERROR,
				(errcode(ERRCODE_SM_SEALED),
				 errmsg("secret store is sealed: the root key is not loaded"),
				 superuser() ? errdetail_internal("%s", root_error) :
				 errdetail("The server log says why."),
				 errhint("Set secret_mgmt.key_file (a file holding 64 hex digits) or secret_mgmt.key_command and restart the server.")));
	vault_lock();
}

const char *
sm_keyring_kek_id(void)
{
	return root_loaded ? kek_id : NULL;
}

/*
 * A key derived from the root key for one purpose: HMAC-SHA256(root,
 * label || context).  False if the root key is not loaded.
 */
bool
sm_keyring_derive(const char *label, const char *context, uint8 *out)
{
	size_t		llen = strlen(label);
	size_t		clen = strlen(context);
	unsigned char *msg;
	unsigned int len = 0;
	bool		ok;

	if (!root_loaded)
		return false;
	msg = palloc(llen + clen + 1);
	memcpy(msg, label, llen);
	memcpy(msg + llen, context, clen);
	ok = HMAC(EVP_sha256(), vault->root, SM_KEY_LEN, msg, llen + clen,
			  out, &len) != NULL && len == SM_KEY_LEN;
	pfree(msg);
	if (!ok)
		OPENSSL_cleanse(out, SM_KEY_LEN);
	return ok;
}

/* Wipe every cached data key in this backend. */
void
sm_keyring_forget(void)
{
	if (vault != NULL)
		OPENSSL_cleanse(vault->dek, sizeof(vault->dek));
	memset(dek_slots, 0, sizeof(dek_slots));
}

/* Associated data of a wrapped data key. */
static size_t
dek_aad(uint8 *buf, size_t bufsize, const char *tenant, int32 key_id)
{
	int			n = snprintf((char *) buf, bufsize, "secret_mgmt/dek|%s|%d|%s",
							 tenant, key_id, kek_id);

	return (n < 0 || (size_t) n >= bufsize) ? 0 : (size_t) n;
}

/* Wrap a data key under the root key. */
static void
wrap_dek(const char *tenant, int32 key_id, const uint8 *dek, uint8 *out)
{
	uint8		aad[160];
	size_t		aadlen = dek_aad(aad, sizeof(aad), tenant, key_id);

	out[0] = 1;
	sm_random_bytes(out + 1, SM_NONCE_LEN);
	if (aadlen == 0 ||
		!sm_gcm_encrypt(vault->root, out + 1, aad, aadlen, dek, SM_KEY_LEN,
						out + 1 + SM_NONCE_LEN, out + 1 + SM_NONCE_LEN + SM_KEY_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not wrap data key")));
}

/* SHA-256 of a wrapped key, which names it in the cache. */
static void
wrapped_digest(const bytea *wrapped, uint8 *digest)
{
	unsigned int n = 32;

	if (EVP_Digest(VARDATA_ANY(wrapped), VARSIZE_ANY_EXHDR(wrapped), digest, &n,
				   EVP_sha256(), NULL) != 1)
		elog(ERROR, "could not compute a digest");
}

/* Find a cached key, or NULL.  Expired entries are wiped on sight. */
static const uint8 *
cache_lookup(const char *tenant, int32 key_id, const uint8 *digest)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < DEK_CACHE_SLOTS; i++)
	{
		DekSlot    *slot = &dek_slots[i];

		if (!slot->used || slot->key_id != key_id ||
			strcmp(slot->tenant, tenant) != 0 ||
			memcmp(slot->wrapped_digest, digest, 32) != 0)
			continue;
		if (sm_cache_ttl > 0 &&
			TimestampDifferenceExceeds(slot->loaded_at, now, sm_cache_ttl * 1000))
		{
			OPENSSL_cleanse(vault->dek[i], SM_KEY_LEN);
			slot->used = false;
			return NULL;
		}
		sm_metrics_data_key(true);
		return vault->dek[i];
	}
	return NULL;
}

/* Claim a cache slot for a key; returns where the key bytes go. */
static uint8 *
cache_claim(const char *tenant, int32 key_id, const uint8 *digest)
{
	int			i;
	DekSlot    *slot;

	sm_dek_evict(tenant, key_id);
	for (i = 0; i < DEK_CACHE_SLOTS; i++)
		if (!dek_slots[i].used)
			break;
	if (i == DEK_CACHE_SLOTS)
	{
		i = dek_next_victim;
		dek_next_victim = (dek_next_victim + 1) % DEK_CACHE_SLOTS;
	}
	slot = &dek_slots[i];
	OPENSSL_cleanse(vault->dek[i], SM_KEY_LEN);
	slot->used = true;
	strlcpy(slot->tenant, tenant, sizeof(slot->tenant));
	slot->key_id = key_id;
	memcpy(slot->wrapped_digest, digest, 32);
	slot->loaded_at = GetCurrentTimestamp();
	return vault->dek[i];
}

/*
 * The data key (tenant, key_id) if this backend holds it unexpired, without
 * reading its row; NULL otherwise.  Callers must let AES-GCM judge it (a
 * tenant's keys could have been replaced) and fall back to
 * sm_dek_for_decrypt() after sm_dek_evict() when it does not authenticate.
 */
const uint8 *
sm_dek_cached(const char *tenant, int32 key_id)
{
	TimestampTz now;

	if (!root_loaded)
		return NULL;
	now = GetCurrentTimestamp();
	for (int i = 0; i < DEK_CACHE_SLOTS; i++)
	{
		DekSlot    *slot = &dek_slots[i];

		if (slot->used && slot->key_id == key_id && strcmp(slot->tenant, tenant) == 0)
		{
			if (TimestampDifferenceExceeds(slot->loaded_at, now, sm_cache_ttl * 1000))
				break;
			vault_lock();
			sm_metrics_data_key(true);
			return vault->dek[i];
		}
	}
	return NULL;
}

/* Drop (tenant, key_id) from this backend's cache, wiping it. */
void
sm_dek_evict(const char *tenant, int32 key_id)
{
	for (int i = 0; i < DEK_CACHE_SLOTS; i++)
	{
		DekSlot    *slot = &dek_slots[i];

		if (slot->used && slot->key_id == key_id && strcmp(slot->tenant, tenant) == 0)
		{
			OPENSSL_cleanse(vault->dek[i], SM_KEY_LEN);
			slot->used = false;
		}
	}
}

/*
 * The unwrapped data key (tenant, key_id) given its wrapped form, from the
 * cache or by unwrapping.  A key wrapped by another root key, or one that
 * does not authenticate, fails closed with SM005.
 */
const uint8 *
sm_dek_for_decrypt(const char *tenant, int32 key_id, const bytea *wrapped,
				   const char *wrapped_kek_id)
{
	const uint8 *w = (const uint8 *) VARDATA_ANY(wrapped);
	const uint8 *cached;
	uint8	   *slot;
	uint8		aad[160];
	size_t		aadlen;
	uint8		digest[32];

	sm_keyring_require_root();
	if (strlen(tenant) >= TENANT_NAME_MAX)
		elog(ERROR, "tenant name too long");
	wrapped_digest(wrapped, digest);

	/* Wrapped by an external KMS: unwrap there, then cache as usual. */
	if (sm_kms_external_kek(wrapped_kek_id))
	{
		uint8	   *dek;

		if ((cached = cache_lookup(tenant, key_id, digest)) != NULL)
			return cached;
		sm_metrics_data_key(false);
		dek = sm_secure_alloc(SM_KEY_LEN);
		sm_kms_unwrap(tenant, key_id, wrapped, wrapped_kek_id, dek);
		slot = cache_claim(tenant, key_id, digest);
		memcpy(slot, dek, SM_KEY_LEN);
		sm_wipe(dek, SM_KEY_LEN);
		return slot;
	}

	if (strcmp(wrapped_kek_id, kek_id) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_SM_INTEGRITY),
				 errmsg("data key %d of tenant \"%s\" was wrapped by a different root key",
						key_id, tenant),
				 errdetail("The loaded root key has id %s; the data key needs root key %s.",
						   kek_id, wrapped_kek_id),
				 errhint("Start the server with the root key this database was encrypted with.")));
	if (VARSIZE_ANY_EXHDR(wrapped) != SM_WRAPPED_DEK_LEN || w[0] != 1)
		ereport(ERROR,
				(errcode(ERRCODE_SM_INTEGRITY),
				 errmsg("data key %d of tenant \"%s\" failed its integrity check", key_id, tenant),
				 errdetail("The wrapped key has the wrong length or format.")));

	if ((cached = cache_lookup(tenant, key_id, digest)) != NULL)
		return cached;
	sm_metrics_data_key(false);

	aadlen = dek_aad(aad, sizeof(aad), tenant, key_id);
	slot = cache_claim(tenant, key_id, digest);
	if (aadlen == 0 ||
		!sm_gcm_decrypt(vault->root, w + 1, aad, aadlen,
						w + 1 + SM_NONCE_LEN, SM_KEY_LEN,
						w + 1 + SM_NONCE_LEN + SM_KEY_LEN, slot))
	{
		sm_keyring_forget();
		ereport(ERROR,
				(errcode(ERRCODE_SM_INTEGRITY),
				 errmsg("data key %d of tenant \"%s\" failed its integrity check", key_id, tenant),
				 errdetail("The wrapped key does not authenticate under the loaded root key; it was altered or moved.")));
	}
	return slot;
}

/*
 * Mint a new active data key for a tenant.  The tenant row is locked first
 * so concurrent writers agree on one key.  Refuses when any data key in the
 * database was wrapped by another root key: a server started with the
 * wrong key must not quietly begin a second key hierarchy.  (Keys wrapped
 * by an external KMS have kek_ids of their own and do not count.)  For a
 * tenant whose KMS is Vault the key is wrapped by Transit, before its row
 * is inserted, and put in this backend's cache at once.
 */
static void
mint_dek(const char *tenant)
{
	static SmStmt lock_tenant = {
		"SELECT kms, kms_config FROM secret_mgmt.secret_tenant"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
		1, {TEXTOID}
	};
	static SmStmt foreign_kek = {
		"SELECT kek_id FROM secret_mgmt.secret_data_key"
		" WHERE kek_id OPERATOR(pg_catalog.<>) $1"
		"   AND NOT pg_catalog.starts_with(kek_id, '" SM_KEK_VAULT_PREFIX "') LIMIT 1",
		1, {TEXTOID}
	};
	static SmStmt has_active = {
		"SELECT 1 FROM secret_mgmt.secret_data_key"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1"
		"   AND state OPERATOR(pg_catalog.=) 'active'",
		1, {TEXTOID}
	};
	static SmStmt next_id = {
		"SELECT COALESCE(pg_catalog.max(key_id), 0) OPERATOR(pg_catalog.+) 1"
		"  FROM secret_mgmt.secret_data_key WHERE tenant_id OPERATOR(pg_catalog.=) $1",
		1, {TEXTOID}
	};
	static SmStmt insert_key = {
		"INSERT INTO secret_mgmt.secret_data_key"
		" (tenant_id, key_id, kek_id, wrapped, encryptions)"
		" VALUES ($1, $2, $3, $4, 0)",
		4, {TEXTOID, INT4OID, TEXTOID, BYTEAOID}
	};
	Datum		args[4];
	int32		new_id;
	uint8	   *dek;
	bytea	   *wrapped;
	char	   *kms;
	Jsonb	   *kms_config;
	bool		isnull;

	args[0] = CStringGetTextDatum(tenant);
	if (sm_exec(&lock_tenant, args, NULL, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("tenant \"%s\" does not exist", tenant)));
	kms = sm_col_text(0, 1);
	kms_config = DatumGetJsonbPCopy(sm_col(0, 2, &isnull));
	if (sm_exec(&has_active, args, NULL, 1) == 1)
		return;					/* another writer minted it meanwhile */

	if (strcmp(kms, "local") != 0)
	{
		char	   *wrapped_kek;
		uint8		digest[32];

		sm_exec(&next_id, args, NULL, 1);
		new_id = sm_col_int32(0, 1);
		dek = sm_secure_alloc(SM_KEY_LEN);
		sm_random_bytes(dek, SM_KEY_LEN);
		wrapped = sm_kms_wrap(tenant, kms_config, new_id, dek, &wrapped_kek);
		args[1] = Int32GetDatum(new_id);
		args[2] = CStringGetTextDatum(wrapped_kek);
		args[3] = PointerGetDatum(wrapped);
		if (sm_exec(&insert_key, args, NULL, 0) != 1)
			elog(ERROR, "could not insert data key");
		wrapped_digest(wrapped, digest);
		memcpy(cache_claim(tenant, new_id, digest), dek, SM_KEY_LEN);
		sm_wipe(dek, SM_KEY_LEN);
		return;
	}

	args[0] = CStringGetTextDatum(kek_id);
	if (sm_exec(&foreign_kek, args, NULL, 1) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_SM_INTEGRITY),
				 errmsg("refusing to create a data key: this database was encrypted with a different root key"),
				 errdetail("The loaded root key has id %s; existing data keys need root key %s.",
						   kek_id, sm_col_text(0, 1)),
				 errhint("Start the server with the root key this database was encrypted with.")));

	/* Under the tenant lock, max+1 is ours. */
	args[0] = CStringGetTextDatum(tenant);
	sm_exec(&next_id, args, NULL, 1);
	new_id = sm_col_int32(0, 1);

	dek = sm_secure_alloc(SM_KEY_LEN);
	sm_random_bytes(dek, SM_KEY_LEN);
	wrapped = palloc(VARHDRSZ + SM_WRAPPED_DEK_LEN);
	SET_VARSIZE(wrapped, VARHDRSZ + SM_WRAPPED_DEK_LEN);
	wrap_dek(tenant, new_id, dek, (uint8 *) VARDATA(wrapped));
	sm_wipe(dek, SM_KEY_LEN);

	args[1] = Int32GetDatum(new_id);
	args[2] = CStringGetTextDatum(kek_id);
	args[3] = PointerGetDatum(wrapped);
	if (sm_exec(&insert_key, args, NULL, 0) != 1)
		elog(ERROR, "could not insert data key");
}

/*
 * The active data key of a tenant for one more encryption, counting that
 * encryption.  Mints the first key, and retires a key that has reached
 * secret_mgmt.data_key_rotate_after encryptions.
 */
const uint8 *
sm_dek_for_encrypt(const char *tenant, int32 *key_id)
{
	static SmStmt take = {
		"UPDATE secret_mgmt.secret_data_key"
		"   SET encryptions = encryptions OPERATOR(pg_catalog.+) 1"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1"
		"   AND state OPERATOR(pg_catalog.=) 'active'"
		"   AND encryptions OPERATOR(pg_catalog.<) $2"
		" RETURNING key_id, wrapped, kek_id",
		2, {TEXTOID, INT8OID}
	};
	static SmStmt retire = {
		"UPDATE secret_mgmt.secret_data_key"
		"   SET state = 'retired', retired_at = pg_catalog.now()"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1"
		"   AND state OPERATOR(pg_catalog.=) 'active'"
		"   AND encryptions OPERATOR(pg_catalog.>=) $2",
		2, {TEXTOID, INT8OID}
	};
	Datum		args[2];

	sm_keyring_require_root();
	args[0] = CStringGetTextDatum(tenant);
	args[1] = Int64GetDatum((int64) sm_data_key_rotate_after);
	for (int attempt = 0; attempt < 3; attempt++)
	{
		bool		isnull;

		if (sm_exec(&take, args, NULL, 0) == 1)
		{
			*key_id = sm_col_int32(0, 1);
			return sm_dek_for_decrypt(tenant, *key_id,
									  DatumGetByteaPP(sm_col(0, 2, &isnull)),
									  sm_col_text(0, 3));
		}
		/* No active key, or it is used up: retire it and mint another. */
		sm_exec(&retire, args, NULL, 0);
		mint_dek(tenant);
	}
	elog(ERROR, "could not obtain an active data key for tenant \"%s\"", tenant);
	return NULL;				/* keep compiler quiet */
}

/*
 * Rewrap every data key of a tenant (secret_rekey).  Keys wrapped by Vault
 * Transit are rewrapped by Transit under the latest version of their key;
 * keys wrapped by the root key are wrapped again under the same root key
 * with a fresh nonce (the data keys themselves, and so every stored value,
 * stay as they are).  Each new wrapped form is unwrapped and compared with
 * the key before its row is updated.  The tenant row and the key rows are
 * locked, so no key is minted meanwhile.  Returns the number of keys
 * rewrapped.
 */
int
sm_keyring_rekey(const char *tenant)
{
	static SmStmt lock_tenant = {
		"SELECT 1 FROM secret_mgmt.secret_tenant"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
		1, {TEXTOID}
	};
	static SmStmt keys = {
		"SELECT key_id, wrapped, kek_id FROM secret_mgmt.secret_data_key"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 ORDER BY key_id FOR UPDATE",
		1, {TEXTOID}
	};
	static SmStmt update = {
		"UPDATE secret_mgmt.secret_data_key SET wrapped = $3"
		" WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND key_id OPERATOR(pg_catalog.=) $2",
		3, {TEXTOID, INT4OID, BYTEAOID}
	};
	Datum		args[3];
	int			n;
	int32	   *ids;
	bytea	  **wrapped;
	char	  **keks;

	sm_keyring_require_root();
	args[0] = CStringGetTextDatum(tenant);
	if (sm_exec(&lock_tenant, args, NULL, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("tenant \"%s\" does not exist", tenant)));
	n = sm_exec(&keys, args, NULL, 0);
	ids = palloc(sizeof(int32) * Max(n, 1));
	wrapped = palloc(sizeof(bytea *) * Max(n, 1));
	keks = palloc(sizeof(char *) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = sm_col_int32(i, 1);
		wrapped[i] = DatumGetByteaPCopy(sm_col(i, 2, &isnull));
		keks[i] = sm_col_text(i, 3);
	}

	for (int i = 0; i < n; i++)
	{
		uint8	   *dek = sm_secure_alloc(SM_KEY_LEN);
		bytea	   *fresh;
		uint8		digest[32];

		memcpy(dek, sm_dek_for_decrypt(tenant, ids[i], wrapped[i], keks[i]), SM_KEY_LEN);
		if (sm_kms_external_kek(keks[i]))
		{
			uint8	   *check = sm_secure_alloc(SM_KEY_LEN);

			fresh = sm_kms_rewrap(tenant, ids[i], wrapped[i], keks[i]);
			sm_kms_unwrap(tenant, ids[i], fresh, keks[i], check);
			if (CRYPTO_memcmp(check, dek, SM_KEY_LEN) != 0)
				ereport(ERROR,
						(errcode(ERRCODE_SM_INTEGRITY),
						 errmsg("data key %d of tenant \"%s\" changed when rewrapped", ids[i], tenant),
						 errdetail("The KMS returned a wrapped key that does not unwrap to the same key; nothing was changed.")));
			sm_wipe(check, SM_KEY_LEN);
		}
		else
		{
			fresh = palloc(VARHDRSZ + SM_WRAPPED_DEK_LEN);
			SET_VARSIZE(fresh, VARHDRSZ + SM_WRAPPED_DEK_LEN);
			wrap_dek(tenant, ids[i], dek, (uint8 *) VARDATA(fresh));
		}
		args[1] = Int32GetDatum(ids[i]);
		args[2] = PointerGetDatum(fresh);
		if (sm_exec(&update, args, NULL, 0) != 1)
			elog(ERROR, "data key vanished while locked");
		sm_dek_evict(tenant, ids[i]);
		wrapped_digest(fresh, digest);
		memcpy(cache_claim(tenant, ids[i], digest), dek, SM_KEY_LEN);
		sm_wipe(dek, SM_KEY_LEN);
	}
	return n;
}
