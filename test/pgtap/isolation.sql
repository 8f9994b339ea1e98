-- Tenant isolation as seen by tenant roles: non-owner, non-superuser,
-- NOBYPASSRLS login roles.  Nothing of another tenant is reachable, neither
-- through the tables nor through any function, and row-level security
-- holds even for a role that was (wrongly) granted table access.
\set QUIET on
BEGIN;
SELECT plan(37);
\i test/pgtap/setup.psql

CREATE ROLE tap_app_a LOGIN NOINHERIT NOBYPASSRLS;
CREATE ROLE tap_app_b LOGIN NOINHERIT NOBYPASSRLS;
SELECT secret_mgmt.secret_tenant_create('tap_a');
SELECT secret_mgmt.secret_tenant_create('tap_b');
SELECT secret_mgmt.secret_tenant_add_member('tap_a', 'tap_app_a');
SELECT secret_mgmt.secret_tenant_add_member('tap_b', 'tap_app_b');
SELECT secret_mgmt.secret_use_tenant('tap_a');
SELECT secret_mgmt.secret_grant('**', 'tap_app_a', ARRAY['read', 'list', 'create', 'update', 'delete']);
SELECT secret_mgmt.secret_use_tenant('tap_b');
SELECT secret_mgmt.secret_grant('**', 'tap_app_b', ARRAY['read', 'list', 'create', 'update', 'delete']);
SELECT secret_mgmt.secret_use_tenant(NULL);

SET ROLE tap_app_a;
SELECT isnt(secret_mgmt.secret_create('shared/path', 'value-of-a'), NULL, 'A creates a secret');
SELECT is(secret_mgmt.secret_resolve('shared/path'), 'value-of-a', 'A resolves it');
SELECT isnt(secret_mgmt.secret_create('only/a', 'a-only'), NULL, 'A creates a second secret');
RESET ROLE;

SET ROLE tap_app_b;
SELECT isnt(secret_mgmt.secret_create('shared/path', 'value-of-b'), NULL, 'B may use the same path');
SELECT is(secret_mgmt.secret_resolve('shared/path'), 'value-of-b', 'B resolves its own value');
SELECT is((SELECT array_agg(path ORDER BY path) FROM secret_mgmt.secret_list()),
          ARRAY['shared/path'], 'B lists only its own secrets');

-- direct access to every table is refused
SELECT throws_ok(format('SELECT * FROM secret_mgmt.%I', t), '42501',
                 NULL, 'B cannot read ' || t)
  FROM unnest(ARRAY['secret_tenant', 'secret_member', 'secret_data_key',
                    'secret_item', 'secret_version', 'secret_label',
                    'secret_lifecycle', 'secret_event', 'secret_event_counter',
                    'secret_sink', 'secret_delivery']) AS t;
SELECT throws_ok('UPDATE secret_mgmt.secret_item SET description = NULL', '42501',
                 NULL, 'B cannot update secret_item');
SELECT throws_ok('DELETE FROM secret_mgmt.secret_version', '42501',
                 NULL, 'B cannot delete from secret_version');
SELECT throws_ok('TRUNCATE secret_mgmt.secret_label', '42501',
                 NULL, 'B cannot truncate secret_label');
SELECT throws_ok($$INSERT INTO secret_mgmt.secret_member VALUES ('tap_a', 'tap_app_b', true, now(), 'x')$$,
                 '42501', NULL, 'B cannot make itself a member of A');

-- A's secret through every function: the answer for a path that exists nowhere
SELECT throws_ok($$SELECT secret_mgmt.secret_resolve('only/a')$$, 'SM001',
                 'secret "only/a" not found', 'resolve of A''s path: not found');
SELECT throws_ok($$SELECT secret_mgmt.secret_resolve_bytea('only/a')$$, 'SM001',
                 'secret "only/a" not found', 'resolve_bytea of A''s path: not found');
SELECT throws_ok($$SELECT secret_mgmt.secret_update('only/a', 'x')$$, 'SM001',
                 'secret "only/a" not found', 'update of A''s path: not found');
SELECT throws_ok($$SELECT secret_mgmt.secret_rollback('only/a', 1)$$, 'SM001',
                 'secret "only/a" not found', 'rollback of A''s path: not found');
SELECT throws_ok($$SELECT * FROM secret_mgmt.secret_versions('only/a')$$, 'SM001',
                 'secret "only/a" not found', 'versions of A''s path: not found');
SELECT throws_ok($$SELECT secret_mgmt.secret_delete('only/a')$$, 'SM001',
                 'secret "only/a" not found', 'delete of A''s path: not found');
SELECT throws_ok($$SELECT secret_mgmt.secret_label('only/a', 'x', 1)$$, 'SM001',
                 'secret "only/a" not found', 'label of A''s path: not found');
SELECT throws_ok($$SELECT secret_mgmt.secret_use_tenant('tap_a')$$, 'SM002',
                 'permission denied for tenant "tap_a"', 'B cannot select tenant A');
SELECT throws_ok($$SELECT secret_mgmt.secret_tenant_add_member('tap_a', 'tap_app_b')$$, 'SM002',
                 'permission denied for tenant "tap_a"', 'B cannot join tenant A');
RESET ROLE;

-- statistics of the tables stay out of reach
ANALYZE secret_mgmt.secret_item;
SET ROLE tap_app_b;
SELECT is((SELECT count(*) FROM pg_stats WHERE schemaname = 'secret_mgmt'), 0::bigint,
          'B sees no statistics of the extension''s tables');
RESET ROLE;

-- Even a role wrongly granted SELECT sees only the tenant it selected,
-- and nothing when it selected none: the policies hold on their own.
GRANT USAGE ON SCHEMA secret_mgmt TO tap_app_b;
GRANT SELECT ON secret_mgmt.secret_item, secret_mgmt.secret_version TO tap_app_b;
SET ROLE tap_app_b;
SELECT is((SELECT count(*) FROM secret_mgmt.secret_item), 0::bigint,
          'with no tenant selected, RLS shows no rows');
SELECT secret_mgmt.secret_use_tenant('tap_b');
SELECT is((SELECT array_agg(DISTINCT tenant_id) FROM secret_mgmt.secret_item), ARRAY['tap_b'],
          'with its tenant selected, RLS shows only its own rows');
SELECT is((SELECT count(*) FROM secret_mgmt.secret_version WHERE tenant_id = 'tap_a'), 0::bigint,
          'RLS hides the other tenant''s versions');
SELECT throws_ok($$UPDATE secret_mgmt.secret_item SET description = 'x'$$, '42501',
                 NULL, 'a SELECT grant does not allow writes');
SELECT secret_mgmt.secret_use_tenant(NULL);
RESET ROLE;
REVOKE SELECT ON secret_mgmt.secret_item, secret_mgmt.secret_version FROM tap_app_b;

-- A's values are untouched by all of the above
SET ROLE tap_app_a;
SELECT is(secret_mgmt.secret_resolve('shared/path'), 'value-of-a', 'A''s value is unchanged');
SELECT is((SELECT max(version) FROM secret_mgmt.secret_versions('only/a')), 1,
          'A''s secret has no new version');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
