/*-------------------------------------------------------------------------
 *
 * lookup.c
 *		Direct index lookups on the extension's tables, for the read path.
 *
 * Resolving a secret is the hot path: an application may do it on every
 * request.  Planning-free SPI still pays executor start-up for every
 * statement, so reads use the tables' unique indexes directly, the way
 * PostgreSQL reads its own catalogs: index scans with equality keys and a
 * fresh snapshot taken exactly as SPI would take one for a
 * volatile function's statement (command counter advanced, transaction
 * snapshot), so a read sees what the transaction wrote before it and, in
 * READ COMMITTED, everything committed before it started.  Membership
 * checks of every API function go through here too.
 *
 * Nothing here checks privileges or row-level security: like the rest of
 * the API it runs on the caller's behalf after the caller was identified,
 * and every lookup names the tenant.  Text key columns are COLLATE "C", so
 * scan keys built with ScanKeyInit() (C collation) match the indexes.
 *
 * Relation, index and attribute numbers are looked up by name once per
 * backend and forgotten on any relation cache invalidation.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/tableam.h"
#include "executor/tuptable.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "acl.h"
#include "lookup.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

/* The tables read here, with the unique index each is probed through. */
typedef enum SmRelId
{
	REL_TENANT,
	REL_MEMBER,
	REL_DATA_KEY,
	REL_ITEM,
	REL_VERSION,
	REL_LABEL,
	REL_GRANT,
	REL_BROKER,
	REL_TOKEN_KEY,
	NUM_RELS
} SmRelId;

static const char *const rel_names[NUM_RELS][2] = {
	{"secret_tenant", "secret_tenant_pkey"},
	{"secret_member", "secret_member_pkey"},
	{"secret_data_key", "secret_data_key_pkey"},
	{"secret_item", "secret_item_path_key"},
	{"secret_version", "secret_version_pkey"},
	{"secret_label", "secret_label_pkey"},
	{"secret_grant", "secret_grant_rule"},
	{"secret_broker", "secret_broker_pkey"},
	{"secret_token_key", "secret_token_key_pkey"},
};

/* Columns used here, by table. */
typedef enum SmColId
{
	T_TENANT, T_KMS, T_KMS_CONFIG,
	M_TENANT, M_MEMBER, M_ADMIN,
	D_TENANT, D_KEY_ID, D_KEK_ID, D_WRAPPED,
	I_TENANT, I_PATH, I_ID, I_SCOPE, I_SCOPE_ID, I_EXPIRES, I_DELETED, I_CURRENT,
	I_BACKEND,
	V_TENANT, V_ID, V_VERSION, V_STATE, V_KEY_ID, V_ENVELOPE, V_EXPIRES,
	V_BACKEND_VERSION, V_BACKEND_CONFIRMED,
	L_TENANT, L_ID, L_LABEL, L_VERSION,
	G_TENANT, G_PATTERN, G_KIND, G_ROLE, G_NAME, G_CAPS, G_DENY, G_EXPIRES,
	B_TENANT, B_ROLE,
	K_TENANT, K_KID, K_ALG, K_UUID, K_KEY_ID, K_ENVELOPE, K_AUDIENCE, K_ISSUER,
	NUM_COLS
} SmColId;

static const struct
{
	SmRelId		rel;
	const char *name;
}			col_names[NUM_COLS] = {
	{REL_TENANT, "tenant_id"}, {REL_TENANT, "kms"}, {REL_TENANT, "kms_config"},
	{REL_MEMBER, "tenant_id"}, {REL_MEMBER, "member"}, {REL_MEMBER, "is_admin"},
	{REL_DATA_KEY, "tenant_id"}, {REL_DATA_KEY, "key_id"},
	{REL_DATA_KEY, "kek_id"}, {REL_DATA_KEY, "wrapped"},
	{REL_ITEM, "tenant_id"}, {REL_ITEM, "path"}, {REL_ITEM, "secret_id"},
	{REL_ITEM, "scope"}, {REL_ITEM, "scope_id"}, {REL_ITEM, "expires_at"},
	{REL_ITEM, "deleted_at"}, {REL_ITEM, "current_version"},
	{REL_ITEM, "backend"},
	{REL_VERSION, "tenant_id"}, {REL_VERSION, "secret_id"}, {REL_VERSION, "version"},
	{REL_VERSION, "state"}, {REL_VERSION, "key_id"}, {REL_VERSION, "envelope"},
	{REL_VERSION, "expires_at"}, {REL_VERSION, "backend_version"},
	{REL_VERSION, "backend_confirmed_at"},
	{REL_LABEL, "tenant_id"}, {REL_LABEL, "secret_id"}, {REL_LABEL, "label"},
	{REL_LABEL, "version"},
	{REL_GRANT, "tenant_id"}, {REL_GRANT, "pattern"}, {REL_GRANT, "grantee_kind"},
	{REL_GRANT, "grantee_role"}, {REL_GRANT, "grantee_name"}, {REL_GRANT, "capabilities"},
	{REL_GRANT, "deny"}, {REL_GRANT, "expires_at"},
	{REL_BROKER, "tenant_id"}, {REL_BROKER, "role"},
	{REL_TOKEN_KEY, "tenant_id"}, {REL_TOKEN_KEY, "kid"}, {REL_TOKEN_KEY, "alg"},
	{REL_TOKEN_KEY, "key_uuid"}, {REL_TOKEN_KEY, "key_id"}, {REL_TOKEN_KEY, "key_envelope"},
	{REL_TOKEN_KEY, "audience"}, {REL_TOKEN_KEY, "issuer"},
};

static bool cache_valid = false;
static bool callback_registered = false;
static Oid	rel_oid[NUM_RELS];
static Oid	index_oid[NUM_RELS];
static AttrNumber attno[NUM_COLS];

/*
 * Small tables consulted by every call -- members, grants, brokers -- are
 * cached per backend (see sm_lookup_members) and forgotten on invalidation.
 */
typedef enum SmCacheId
{
	CACHE_MEMBERS,
	CACHE_GRANTS,
	CACHE_BROKERS,
	NUM_CACHES
} SmCacheId;

static const SmRelId cache_rel[NUM_CACHES] = {REL_MEMBER, REL_GRANT, REL_BROKER};
static MemoryContext cache_cxt[NUM_CACHES];
static List *cache_rows[NUM_CACHES];
static bool cache_ok[NUM_CACHES];

/* Forget the caches when one of our relations changes (or all do). */
static void
invalidate_cache(Datum arg, Oid relid)
{
	for (int i = 0; i < NUM_CACHES; i++)
		if (!OidIsValid(relid) || relid == rel_oid[cache_rel[i]])
			cache_ok[i] = false;
	for (int i = 0; i < NUM_RELS && cache_valid; i++)
		if (!OidIsValid(relid) || relid == rel_oid[i] || relid == index_oid[i])
		{
			cache_valid = false;
			for (int j = 0; j < NUM_CACHES; j++)
				cache_ok[j] = false;
		}
}

/* Look up (once) the relations, indexes and columns used here. */
static void
load_cache(void)
{
	Oid			nsp;

	if (cache_valid)
		return;
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(invalidate_cache, (Datum) 0);
		callback_registered = true;
	}
	nsp = get_namespace_oid("secret_mgmt", true);
	for (int i = 0; i < NUM_RELS; i++)
	{
		rel_oid[i] = OidIsValid(nsp) ? get_relname_relid(rel_names[i][0], nsp) : InvalidOid;
		index_oid[i] = OidIsValid(nsp) ? get_relname_relid(rel_names[i][1], nsp) : InvalidOid;
		if (!OidIsValid(rel_oid[i]) || !OidIsValid(index_oid[i]))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("extension \"secret_mgmt\" is not installed in this database"),
					 errhint("Run CREATE EXTENSION secret_mgmt as a superuser.")));
	}
	for (int i = 0; i < NUM_COLS; i++)
	{
		attno[i] = get_attnum(rel_oid[col_names[i].rel], col_names[i].name);
		if (attno[i] == InvalidAttrNumber)
			elog(ERROR, "column \"%s\" of \"%s\" not found",
				 col_names[i].name, rel_names[col_names[i].rel][0]);
	}
	cache_valid = true;
}

/* A snapshot as SPI would take for a volatile function's statement. */
static Snapshot
read_snapshot(void)
{
	CommandCounterIncrement();
	return RegisterSnapshot(GetTransactionSnapshot());
}

/*
 * The snapshot the access caches are loaded with: the latest, whatever the
 * isolation level.  A cache outlives the transaction that loads it, so it
 * must never be filled from an older REPEATABLE READ snapshot that misses
 * a committed revoke.
 */
static Snapshot
cache_snapshot(void)
{
	CommandCounterIncrement();
	return RegisterSnapshot(GetLatestSnapshot());
}

/*
 * An open scan of one table through its unique index.  Like the executor
 * (and unlike systable_endscan), the locks stay until transaction end, so
 * repeated calls in a transaction take them once; each row is deformed
 * once into the slot.
 */
typedef struct SmScan
{
	Relation	heap;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
} SmScan;

/* Keys are built with table attribute numbers; they become index columns. */
static void
scan_begin(SmScan *s, SmRelId rel, Snapshot snap, int nkeys, ScanKey keys)
{
	s->heap = table_open(rel_oid[rel], AccessShareLock);
	s->index = index_open(index_oid[rel], AccessShareLock);
	for (int i = 0; i < nkeys; i++)
	{
		int			j;

		for (j = 0; j < IndexRelationGetNumberOfKeyAttributes(s->index); j++)
			if (s->index->rd_index->indkey.values[j] == keys[i].sk_attno)
				break;
		if (j == IndexRelationGetNumberOfKeyAttributes(s->index))
			elog(ERROR, "column %d is not a key of index \"%s\"",
				 keys[i].sk_attno, RelationGetRelationName(s->index));
		keys[i].sk_attno = j + 1;
	}
	s->slot = table_slot_create(s->heap, NULL);
	s->scan = index_beginscan(s->heap, s->index, snap, nkeys, 0);
	index_rescan(s->scan, keys, nkeys, NULL, 0);
}

/* The next row, deformed into the slot; false at the end. */
static bool
scan_next(SmScan *s)
{
	if (!index_getnext_slot(s->scan, ForwardScanDirection, s->slot))
		return false;
	slot_getallattrs(s->slot);
	return true;
}

static void
scan_end(SmScan *s)
{
	index_endscan(s->scan);
	ExecDropSingleTupleTableSlot(s->slot);
	index_close(s->index, NoLock);
	table_close(s->heap, NoLock);
}

/* A column of the current row (valid until the next scan_next). */
static Datum
get(SmScan *s, SmColId col, bool *isnull)
{
	*isnull = s->slot->tts_isnull[attno[col] - 1];
	return s->slot->tts_values[attno[col] - 1];
}

static char *
get_text(SmScan *s, SmColId col)
{
	bool		isnull;
	Datum		d = get(s, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

static void
key_text(ScanKey key, SmColId col, const char *value)
{
	ScanKeyInit(key, attno[col], BTEqualStrategyNumber, F_TEXTEQ,
				CStringGetTextDatum(value));
}

/* Build one cached row from the current row of its table's scan. */
static void *
cache_row(SmCacheId id, SmScan *s)
{
	bool		isnull;

	switch (id)
	{
		case CACHE_MEMBERS:
			{
				SmMembership *m = palloc(sizeof(SmMembership));

				m->tenant = get_text(s, M_TENANT);
				m->member = DatumGetObjectId(get(s, M_MEMBER, &isnull));
				m->is_admin = DatumGetBool(get(s, M_ADMIN, &isnull));
				return m;
			}
		case CACHE_GRANTS:
			{
				SmGrant    *g = palloc0(sizeof(SmGrant));
				char	   *kind = get_text(s, G_KIND);
				Datum		d;

				g->tenant = get_text(s, G_TENANT);
				g->pattern = get_text(s, G_PATTERN);
				g->kind = strcmp(kind, "role") == 0 ? SM_GRANTEE_ROLE :
					strcmp(kind, "token") == 0 ? SM_GRANTEE_TOKEN :
					strcmp(kind, "group") == 0 ? SM_GRANTEE_GROUP : SM_GRANTEE_TENANT;
				d = get(s, G_ROLE, &isnull);
				g->role = isnull ? InvalidOid : DatumGetObjectId(d);
				g->name = get_text(s, G_NAME);
				g->caps = sm_caps_from_array(DatumGetArrayTypeP(get(s, G_CAPS, &isnull)));
				g->deny = DatumGetBool(get(s, G_DENY, &isnull));
				d = get(s, G_EXPIRES, &isnull);
				g->has_expiry = !isnull;
				g->expires_at = isnull ? 0 : DatumGetTimestampTz(d);
				return g;
			}
		case CACHE_BROKERS:
			{
				SmMembership *b = palloc0(sizeof(SmMembership));

				b->tenant = get_text(s, B_TENANT);
				b->member = DatumGetObjectId(get(s, B_ROLE, &isnull));
				return b;
			}
		case NUM_CACHES:
			break;
	}
	return NULL;
}

/*
 * The rows of a cached table, for one tenant (or all when `tenant` is
 * NULL), as a List valid until the next call.
 *
 * These tables change only through the API, which announces each change
 * with a relation cache invalidation (sm_lookup_changed).  PostgreSQL
 * delivers it to every backend when the change commits -- and locally at
 * once, or on rollback -- and every call first accepts pending
 * invalidations, so a committed change is in force at the very next call.
 */
static List *
cached_rows(SmCacheId id, const char *tenant)
{
	List	   *result = NIL;
	ListCell   *lc;

	load_cache();
	AcceptInvalidationMessages();
	if (!cache_ok[id])
	{
		Snapshot	snap;
		SmScan		s;
		MemoryContext old;

		if (cache_cxt[id] == NULL)
			cache_cxt[id] = AllocSetContextCreate(TopMemoryContext,
												  "secret_mgmt access cache",
												  ALLOCSET_SMALL_SIZES);
		MemoryContextReset(cache_cxt[id]);
		cache_rows[id] = NIL;
		/* Valid from here on, unless an invalidation arrives meanwhile. */
		cache_ok[id] = true;
		snap = cache_snapshot();
		scan_begin(&s, cache_rel[id], snap, 0, NULL);
		old = MemoryContextSwitchTo(cache_cxt[id]);
		while (scan_next(&s))
			cache_rows[id] = lappend(cache_rows[id], cache_row(id, &s));
		MemoryContextSwitchTo(old);
		scan_end(&s);
		UnregisterSnapshot(snap);
	}
	foreach(lc, cache_rows[id])
	{
		/* Every cached row type begins with its tenant. */
		char	  **row_tenant = lfirst(lc);

		if (tenant == NULL || strcmp(*row_tenant, tenant) == 0)
			result = lappend(result, lfirst(lc));
	}
	return result;
}

/* Membership rows (SmMembership) of one tenant, or of all when NULL. */
List *
sm_lookup_members(const char *tenant)
{
	return cached_rows(CACHE_MEMBERS, tenant);
}

/* Grants and denies (SmGrant) of one tenant. */
List *
sm_lookup_grants(const char *tenant)
{
	return cached_rows(CACHE_GRANTS, tenant);
}

/* Broker roles (SmMembership, is_admin unused) of one tenant, or all. */
List *
sm_lookup_brokers(const char *tenant)
{
	return cached_rows(CACHE_BROKERS, tenant);
}

/* Announce a change of a cached table to every backend. */
static void
announce(SmRelId rel)
{
	load_cache();
	CacheInvalidateRelcacheByRelid(rel_oid[rel]);
}

void
sm_lookup_members_changed(void)
{
	announce(REL_MEMBER);
}

void
sm_lookup_acl_changed(void)
{
	announce(REL_GRANT);
}

void
sm_lookup_brokers_changed(void)
{
	announce(REL_BROKER);
}

bool
sm_lookup_tenant_exists(const char *tenant)
{
	Snapshot	snap;
	SmScan		s;
	ScanKeyData key;
	bool		found;

	load_cache();
	snap = read_snapshot();
	key_text(&key, T_TENANT, tenant);
	scan_begin(&s, REL_TENANT, snap, 1, &key);
	found = scan_next(&s);
	scan_end(&s);
	UnregisterSnapshot(snap);
	return found;
}

/* Rank of a scope in the resolution order (lower wins), or 0: not in context. */
static int
scope_rank(const char *scope, const char *scope_id, const SmContext *context)
{
	if (strcmp(scope, "user") == 0)
		return (context->user && strcmp(scope_id, context->user) == 0) ? 1 : 0;
	if (strcmp(scope, "project") == 0)
		return (context->project && strcmp(scope_id, context->project) == 0) ? 2 : 0;
	if (strcmp(scope, "team") == 0)
		return (context->team && strcmp(scope_id, context->team) == 0) ? 3 : 0;
	if (strcmp(scope, "organization") == 0)
		return 4;
	return 5;					/* global */
}

/*
 * Find the live secret at `path` that the context selects, then the
 * version named by `label` (or `version` when by_version) and its
 * envelope.  "current" is read from the secret's own row, other labels
 * from secret_label.  Expiry of the secret or the version is judged by the
 * clock, not the transaction start.
 */
void
sm_lookup_resolve(const char *tenant, const char *path, const SmContext *context,
				  const char *label, bool by_version, int32 version,
				  SmResolved *out)
{
	TimestampTz now = GetCurrentTimestamp();
	Snapshot	snap;
	SmScan		s;
	ScanKeyData keys[3];
	int			best_rank = INT_MAX;
	int32		current = 0;
	bool		isnull;
	Datum		d;

	memset(out, 0, sizeof(*out));
	load_cache();
	snap = read_snapshot();

	/* The secret: the most specific live match of the context. */
	key_text(&keys[0], I_TENANT, tenant);
	key_text(&keys[1], I_PATH, path);
	scan_begin(&s, REL_ITEM, snap, 2, keys);
	while (scan_next(&s))
	{
		int			rank;
		char	   *scope;
		char	   *scope_id;

		(void) get(&s, I_DELETED, &isnull);
		if (!isnull)
			continue;
		scope = get_text(&s, I_SCOPE);
		scope_id = get_text(&s, I_SCOPE_ID);
		rank = scope_rank(scope, scope_id, context);
		if (rank == 0 || rank >= best_rank)
			continue;
		best_rank = rank;
		out->found_secret = true;
		memcpy(&out->secret_id, DatumGetUUIDP(get(&s, I_ID, &isnull)),
			   sizeof(pg_uuid_t));
		d = get(&s, I_EXPIRES, &isnull);
		out->expired = !isnull && DatumGetTimestampTz(d) <= now;
		current = DatumGetInt32(get(&s, I_CURRENT, &isnull));
		/* Backend "local" (the hot path) is recognised without a copy. */
		{
			text	   *b = DatumGetTextPP(get(&s, I_BACKEND, &isnull));

			out->backend = (VARSIZE_ANY_EXHDR(b) == 5 &&
							memcmp(VARDATA_ANY(b), "local", 5) == 0) ? NULL :
				text_to_cstring(b);
		}
	}
	scan_end(&s);
	if (!by_version && strcmp(label, "current") == 0)
	{
		version = current;
		by_version = true;
	}

	/* The version number, through the label unless given. */
	if (out->found_secret && !by_version)
	{
		key_text(&keys[0], L_TENANT, tenant);
		ScanKeyInit(&keys[1], attno[L_ID], BTEqualStrategyNumber, F_UUID_EQ,
					UUIDPGetDatum(&out->secret_id));
		key_text(&keys[2], L_LABEL, label);
		scan_begin(&s, REL_LABEL, snap, 3, keys);
		if (scan_next(&s))
		{
			version = DatumGetInt32(get(&s, L_VERSION, &isnull));
			by_version = true;
		}
		scan_end(&s);
	}

	/* The version row. */
	if (out->found_secret && by_version)
	{
		key_text(&keys[0], V_TENANT, tenant);
		ScanKeyInit(&keys[1], attno[V_ID], BTEqualStrategyNumber, F_UUID_EQ,
					UUIDPGetDatum(&out->secret_id));
		ScanKeyInit(&keys[2], attno[V_VERSION], BTEqualStrategyNumber, F_INT4EQ,
					Int32GetDatum(version));
		scan_begin(&s, REL_VERSION, snap, 3, keys);
		if (scan_next(&s))
		{
			out->found_version = true;
			out->version = version;
			out->state = get_text(&s, V_STATE);
			d = get(&s, V_EXPIRES, &isnull);
			out->expired |= !isnull && DatumGetTimestampTz(d) <= now;
			d = get(&s, V_KEY_ID, &isnull);
			out->key_id = isnull ? 0 : DatumGetInt32(d);
			d = get(&s, V_ENVELOPE, &isnull);
			/* A copy, fetched from TOAST while the snapshot is held. */
			out->envelope = isnull ? NULL : DatumGetByteaPCopy(d);
			if (out->backend)
			{
				d = get(&s, V_BACKEND_VERSION, &isnull);
				out->backend_version = isnull ? 0 : DatumGetInt32(d);
				d = get(&s, V_BACKEND_CONFIRMED, &isnull);
				out->backend_confirmed_at = isnull ? 0 : DatumGetTimestampTz(d);
			}
		}
		scan_end(&s);
	}

	UnregisterSnapshot(snap);
}

/* The wrapped form of data key (tenant, key_id) and its root key id. */
bool
sm_lookup_data_key(const char *tenant, int32 key_id, bytea **wrapped, char **kek_id)
{
	Snapshot	snap;
	SmScan		s;
	ScanKeyData keys[2];
	bool		found;

	load_cache();
	snap = read_snapshot();
	key_text(&keys[0], D_TENANT, tenant);
	ScanKeyInit(&keys[1], attno[D_KEY_ID], BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(key_id));
	scan_begin(&s, REL_DATA_KEY, snap, 2, keys);
	found = scan_next(&s);
	if (found)
	{
		bool		isnull;

		*wrapped = DatumGetByteaPCopy(get(&s, D_WRAPPED, &isnull));
		*kek_id = get_text(&s, D_KEK_ID);
	}
	scan_end(&s);
	UnregisterSnapshot(snap);
	return found;
}

/*
 * The scope (and scope id) of the live secret at `path` that the context
 * selects in `tenant`; both NULL when there is none.
 */
void
sm_lookup_scope(const char *tenant, const char *path, const SmContext *context,
				char **scope, char **scope_id)
{
	Snapshot	snap;
	SmScan		s;
	ScanKeyData keys[2];
	int			best_rank = INT_MAX;

	*scope = *scope_id = NULL;
	load_cache();
	snap = read_snapshot();
	key_text(&keys[0], I_TENANT, tenant);
	key_text(&keys[1], I_PATH, path);
	scan_begin(&s, REL_ITEM, snap, 2, keys);
	while (scan_next(&s))
	{
		bool		isnull;
		char	   *sc = get_text(&s, I_SCOPE);
		char	   *id = get_text(&s, I_SCOPE_ID);
		int			rank = scope_rank(sc, id, context);

		(void) get(&s, I_DELETED, &isnull);
		if (!isnull || rank == 0 || rank >= best_rank)
			continue;
		best_rank = rank;
		*scope = sc;
		*scope_id = id;
	}
	scan_end(&s);
	UnregisterSnapshot(snap);
}

/* A token verification key of a tenant, or false. */
bool
sm_lookup_token_key(const char *tenant, const char *kid, SmTokenKey *out)
{
	Snapshot	snap;
	SmScan		s;
	ScanKeyData keys[2];
	bool		found;

	load_cache();
	snap = read_snapshot();
	key_text(&keys[0], K_TENANT, tenant);
	key_text(&keys[1], K_KID, kid);
	scan_begin(&s, REL_TOKEN_KEY, snap, 2, keys);
	found = scan_next(&s);
	if (found)
	{
		bool		isnull;

		out->alg = get_text(&s, K_ALG);
		memcpy(&out->key_uuid, DatumGetUUIDP(get(&s, K_UUID, &isnull)), sizeof(pg_uuid_t));
		out->key_id = DatumGetInt32(get(&s, K_KEY_ID, &isnull));
		out->envelope = DatumGetByteaPCopy(get(&s, K_ENVELOPE, &isnull));
		out->audience = get_text(&s, K_AUDIENCE);
		out->issuer = get_text(&s, K_ISSUER);
	}
	scan_end(&s);
	UnregisterSnapshot(snap);
	return found;
}

/* The KMS of a tenant and its configuration; false if no such tenant. */
bool
sm_lookup_tenant_kms(const char *tenant, char **kms, Jsonb **config)
{
	Snapshot	snap;
	SmScan		s;
	ScanKeyData key;
	bool		found;

	load_cache();
	snap = read_snapshot();
	key_text(&key, T_TENANT, tenant);
	scan_begin(&s, REL_TENANT, snap, 1, &key);
	found = scan_next(&s);
	if (found)
	{
		bool		isnull;

		*kms = get_text(&s, T_KMS);
		*config = DatumGetJsonbPCopy(get(&s, T_KMS_CONFIG, &isnull));
	}
	scan_end(&s);
	UnregisterSnapshot(snap);
	return found;
}
