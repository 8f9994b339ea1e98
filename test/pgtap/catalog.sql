-- Catalog lint: the properties every object of the extension must have.
-- A failure here means an object was added without them.
\set QUIET on
BEGIN;
SELECT plan(14);

SELECT is(
    (SELECT count(*) FROM pg_class
      WHERE relnamespace = 'secret_mgmt'::regnamespace AND relkind IN ('r', 'p')),
    18::bigint, 'the extension has its eighteen tables');

SELECT is(
    (SELECT array_agg(relname::text ORDER BY relname) FROM pg_class
      WHERE relnamespace = 'secret_mgmt'::regnamespace AND relkind IN ('r', 'p')
        AND NOT (relrowsecurity AND relforcerowsecurity)),
    NULL, 'row-level security is enabled and forced on every table');

SELECT is(
    (SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_class c
      WHERE c.relnamespace = 'secret_mgmt'::regnamespace AND c.relkind IN ('r', 'p')
        AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)),
    NULL, 'every table has a policy');

SELECT is(
    (SELECT array_agg(DISTINCT c.relname::text) FROM pg_class c, aclexplode(c.relacl) a
      WHERE c.relnamespace = 'secret_mgmt'::regnamespace
        AND a.grantee <> c.relowner),
    NULL, 'no table, index or sequence privilege is granted to anyone but the owner');

SELECT is(
    (SELECT array_agg(relname::text) FROM pg_class
      WHERE relnamespace = 'secret_mgmt'::regnamespace AND relkind = 'v'
        AND NOT coalesce(reloptions @> ARRAY['security_invoker=true'], false)),
    NULL, 'every view is security_invoker');

SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text) FROM pg_proc p
      WHERE p.pronamespace = 'secret_mgmt'::regnamespace AND p.prosecdef
        AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)),
    NULL, 'every SECURITY DEFINER function pins search_path = pg_catalog, pg_temp');

SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text) FROM pg_proc p
      WHERE p.pronamespace = 'secret_mgmt'::regnamespace AND p.proleakproof),
    NULL, 'no function is LEAKPROOF');

SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text) FROM pg_proc p
      WHERE p.pronamespace = 'secret_mgmt'::regnamespace AND p.proname LIKE 'secret\_%'
        AND (p.provolatile <> 'v' OR p.proparallel <> 'u')),
    NULL, 'every secret_ function is VOLATILE and PARALLEL UNSAFE');

-- PUBLIC may execute only functions that identify and check their caller
-- themselves: the C entry points listed here, and the compliance reports,
-- SQL functions that run with the caller's rights over those.
SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text ORDER BY 1) FROM pg_proc p, aclexplode(p.proacl) a
      WHERE p.pronamespace = 'secret_mgmt'::regnamespace AND a.grantee = 0
        AND a.privilege_type = 'EXECUTE'
        AND NOT (p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'sql')
                 AND NOT p.prosecdef
                 AND p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp']
                 AND p.proname IN ('secret_rotation_overdue', 'secret_expiring',
                    'secret_never_read', 'secret_access_by_principal'))
        AND NOT (p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'c')
                 AND p.prosrc IN ('secret_mgmt_current_tenant', 'secret_tenant_create',
                    'secret_tenant_add_member', 'secret_tenant_remove_member',
                    'secret_tenant_set_purge_protection', 'secret_use_tenant',
                    'secret_set_context', 'secret_create_text', 'secret_create_bytea',
                    'secret_create_jsonb', 'secret_resolve_text', 'secret_resolve_fresh',
                    'secret_resolve_jsonb',
                    'secret_resolve_bytea', 'secret_update_text', 'secret_update_bytea',
                    'secret_update_jsonb', 'secret_rollback', 'secret_versions',
                    'secret_list', 'secret_label', 'secret_version_disable',
                    'secret_version_enable', 'secret_version_destroy', 'secret_set_expiry',
                    'secret_delete', 'secret_restore', 'secret_purge',
                    'secret_grant', 'secret_deny', 'secret_revoke', 'secret_check',
                    'secret_explain_access', 'secret_grants', 'secret_token_key_add',
                    'secret_token_key_remove', 'secret_broker_add', 'secret_broker_remove',
                    'secret_assume', 'secret_render',
                    'secret_backend_create', 'secret_rekey', 'secret_migrate',
                    'secret_outbox_status', 'secret_outbox_retry',
                    'secret_set_rotation', 'secret_rotate', 'secret_rotations',
                    'secret_set_max_versions', 'secret_target_pg_role',
                    'secret_test_pg_role', 'secret_events', 'secret_sink_create',
                    'secret_sink_drop', 'secret_sinks', 'secret_deliveries',
                    'secret_audit_verify', 'secret_audit_find_value', 'secret_audit_log',
                    'secret_audit_flush', 'secret_audit_queue', 'secret_health',
                    'secret_metrics', 'secret_metrics_prometheus'))),
    NULL, 'PUBLIC executes only functions that check their caller');

SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text) FROM pg_proc p
      WHERE p.pronamespace = 'secret_mgmt'::regnamespace AND p.proacl IS NULL),
    NULL, 'every function has explicit privileges (PUBLIC default revoked)');

SELECT is(
    (SELECT count(*) FROM pg_depend d
       JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'secret_mgmt'
       LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
       LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
       LEFT JOIN pg_type t ON d.classid = 'pg_type'::regclass AND t.oid = d.objid
      WHERE d.deptype = 'e'
        AND coalesce(c.relowner, p.proowner, t.typowner, e.extowner) <> e.extowner),
    0::bigint, 'every extension member is owned by the extension owner');

SELECT is(
    (SELECT array_agg(relname::text ORDER BY relname) FROM pg_class c
      WHERE c.relnamespace = 'secret_mgmt'::regnamespace AND c.relkind = 'r'
        AND NOT c.oid = ANY ((SELECT extconfig FROM pg_extension WHERE extname = 'secret_mgmt')::oid[])),
    NULL, 'every table is dumped by pg_dump (marked as extension configuration)');

SELECT ok(
    (SELECT extrelocatable = false FROM pg_extension WHERE extname = 'secret_mgmt'),
    'the extension is not relocatable');

SELECT is(
    (SELECT array_agg(rolname::text) FROM pg_roles
      WHERE rolbypassrls AND NOT rolsuper AND rolcanlogin),
    NULL, 'no login role but superusers bypasses row-level security');

SELECT * FROM finish();
ROLLBACK;
