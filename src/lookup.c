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
#include "lookup.h"
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
	NUM_RELS
} SmRelId;

static const char *const rel_names[NUM_RELS][2] = {
	{"secret_tenant", "secret_tenant_pkey"},
	{"secret_member", "secret_member_pkey"},
	{"secret_data_key", "secret_data_key_pkey"},
	{"secret_item", "secret_item_path_key"},
	{"secret_version", "secret_version_pkey"},
	{"secret_label", "secret_label_pkey"},
};

/* Columns used here, by table. */
typedef enum SmColId
{
	T_TENANT, T_KMS, T_KMS_CONFIG,
	M_TENANT, M_MEMBER, M_ADMIN,
	D_TENANT, D_KEY_ID, D_KEK_ID, D_WRAPPED,
	I_TENANT, I_PATH, I_ID, I_SCOPE, I_SCOPE_ID, I_EXPIRES, I_DELETED, I_CURRENT,
	V_TENANT, V_ID, V_VERSION, V_STATE, V_KEY_ID, V_ENVELOPE, V_EXPIRES,
	L_TENANT, L_ID, L_LABEL, L_VERSION,
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
	{REL_VERSION, "tenant_id"}, {REL_VERSION, "secret_id"}, {REL_VERSION, "version"},
	{REL_VERSION, "state"}, {REL_VERSION, "key_id"}, {REL_VERSION, "envelope"},
	{REL_VERSION, "expires_at"},
	{REL_LABEL, "tenant_id"}, {REL_LABEL, "secret_id"}, {REL_LABEL, "label"},
	{REL_LABEL, "version"},
};

static bool cache_valid = false;
static bool callback_registered = false;
static Oid	rel_oid[NUM_RELS];
static Oid	index_oid[NUM_RELS];
static AttrNumber attno[NUM_COLS];

/* Membership rows, cached per backend (see sm_lookup_members). */
static MemoryContext members_cxt = NULL;
static List *members_cache = NIL;
static bool members_valid = false;

/* Forget the caches when one of our relations changes (or all do). */
static void
invalidate_cache(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == rel_oid[REL_MEMBER])
		members_valid = false;
	for (int i = 0; i < NUM_RELS && cache_valid; i++)
		if (!OidIsValid(relid) || relid == rel_oid[i] || relid == index_oid[i])
		{
			cache_valid = false;
			members_valid = false;
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

/*
 * Membership rows of one tenant, or of every tenant when `tenant` is NULL,
 * as a List of SmMembership valid until the next call.
 *
 * Every call of the API checks membership, so the rows are cached for the
 * backend.  They change only through secret_tenant_add_member() and
 * secret_tenant_remove_member(), which announce the change with a
 * relation cache invalidation of secret_member (sm_lookup_members_changed).
 * PostgreSQL delivers it to every backend when the change commits -- and
 * locally at once, or on rollback -- and each call first accepts pending
 * invalidations, so a committed change is in force at the very next call.
 */
List *
sm_lookup_members(const char *tenant)
{
	List	   *result = NIL;
	ListCell   *lc;

	load_cache();
	AcceptInvalidationMessages();
	if (!members_valid)
	{
		Snapshot	snap;
		SmScan		s;
			MemoryContext old;

		if (members_cxt == NULL)
			members_cxt = AllocSetContextCreate(TopMemoryContext,
												"secret_mgmt members",
												ALLOCSET_SMALL_SIZES);
		MemoryContextReset(members_cxt);
		members_cache = NIL;
		/* Valid from here on, unless an invalidation arrives meanwhile. */
		members_valid = true;
		snap = read_snapshot();
		scan_begin(&s, REL_MEMBER, snap, 0, NULL);
		old = MemoryContextSwitchTo(members_cxt);
		while (scan_next(&s))
		{
			SmMembership *m = palloc(sizeof(SmMembership));
			bool		isnull;

			m->tenant = get_text(&s, M_TENANT);
			m->member = DatumGetObjectId(get(&s, M_MEMBER, &isnull));
			m->is_admin = DatumGetBool(get(&s, M_ADMIN, &isnull));
			members_cache = lappend(members_cache, m);
		}
		MemoryContextSwitchTo(old);
		scan_end(&s);
		UnregisterSnapshot(snap);
	}
	foreach(lc, members_cache)
	{
		SmMembership *m = lfirst(lc);

		if (tenant == NULL || strcmp(m->tenant, tenant) == 0)
			result = lappend(result, m);
	}
	return result;
}

/* Announce a change of secret_member to every backend's cache. */
void
sm_lookup_members_changed(void)
{
	load_cache();
	CacheInvalidateRelcacheByRelid(rel_oid[REL_MEMBER]);
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
