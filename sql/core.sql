--
-- core: the store end to end as tenant members -- round trips of every
-- value kind, versions, labels, check-and-set, rollback, version states,
-- delete/restore/purge, listing, and the documented errors.
--
\set VERBOSITY terse
\set SHOW_CONTEXT never
CREATE EXTENSION secret_mgmt;

-- Reports "SQLSTATE: message" of a statement, or "ok".  Test scaffolding
-- only: the statements it runs carry test values, never real secrets.
CREATE FUNCTION public.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

CREATE ROLE regress_app_a;
CREATE ROLE regress_admin_a;
CREATE ROLE regress_app_b;
CREATE ROLE regress_nobody;
SELECT secret_mgmt.secret_tenant_create('acme');
SELECT secret_mgmt.secret_tenant_create('globex');
SELECT secret_mgmt.secret_tenant_add_member('acme', 'regress_app_a');
SELECT secret_mgmt.secret_tenant_add_member('acme', 'regress_admin_a', admin => true);
SELECT secret_mgmt.secret_tenant_add_member('globex', 'regress_app_b');
-- members hold what they are granted; these applications get the everyday
-- capabilities on everything of their tenant
SELECT secret_mgmt.secret_use_tenant('acme');
SELECT secret_mgmt.secret_grant('**', 'regress_app_a',
                                ARRAY['read', 'list', 'create', 'update', 'delete']);
SELECT secret_mgmt.secret_use_tenant('globex');
SELECT secret_mgmt.secret_grant('**', 'regress_app_b',
                                ARRAY['read', 'list', 'create', 'update', 'delete']);
SELECT secret_mgmt.secret_use_tenant(NULL);

SET ROLE regress_app_a;

-- text, bytea (with NUL bytes), jsonb, empty, 1 MiB
SELECT secret_mgmt.secret_create('db/password', 'hunter2', 'password') IS NOT NULL AS created;
SELECT secret_mgmt.secret_resolve('db/password');
SELECT secret_mgmt.secret_create('bin/blob', '\x00ff0010'::bytea) IS NOT NULL AS created;
SELECT secret_mgmt.secret_resolve_bytea('bin/blob');
SELECT try($$SELECT secret_mgmt.secret_resolve('bin/blob')$$);
SELECT secret_mgmt.secret_create('app/config', '{"user": "svc", "port": 5432}'::jsonb) IS NOT NULL AS created;
SELECT secret_mgmt.secret_resolve_jsonb('app/config');
SELECT secret_mgmt.secret_resolve('app/config');
SELECT secret_mgmt.secret_resolve_jsonb('app/config') ->> 'user' AS json_user;
SELECT try($$SELECT secret_mgmt.secret_resolve_jsonb('db/password')$$);
SELECT secret_mgmt.secret_create('empty/value', '') IS NOT NULL AS created;
SELECT secret_mgmt.secret_resolve('empty/value') = '' AS empty_round_trip,
       pg_catalog.length(secret_mgmt.secret_resolve_bytea('empty/value')) AS empty_len;
SELECT secret_mgmt.secret_create('big/mib', repeat('0123456789abcdef', 65536)) IS NOT NULL AS created;
SELECT pg_catalog.length(secret_mgmt.secret_resolve('big/mib')) AS big_len,
       secret_mgmt.secret_resolve('big/mib') = repeat('0123456789abcdef', 65536) AS big_equal;
SELECT secret_mgmt.secret_create('big/bytes', decode(repeat('00ff', 524288), 'hex')) IS NOT NULL AS created;
SELECT secret_mgmt.secret_resolve_bytea('big/bytes') = decode(repeat('00ff', 524288), 'hex') AS big_bytes_equal;

-- versions, labels, check-and-set
SELECT secret_mgmt.secret_update('db/password', 'v2');
SELECT secret_mgmt.secret_update('db/password', 'v3', expected_version => 2);
SELECT try($$SELECT secret_mgmt.secret_update('db/password', 'lost', expected_version => 2)$$);
SELECT secret_mgmt.secret_resolve('db/password');
SELECT secret_mgmt.secret_resolve('db/password', 1) AS v1,
       secret_mgmt.secret_resolve('db/password', 2) AS v2,
       secret_mgmt.secret_resolve('db/password', 'current') AS cur,
       secret_mgmt.secret_resolve('db/password', 'previous') AS prev;
SELECT version, state, labels, created_by FROM secret_mgmt.secret_versions('db/password');
SELECT secret_mgmt.secret_label('db/password', 'prod', 1);
SELECT secret_mgmt.secret_resolve('db/password', 'prod');
SELECT secret_mgmt.secret_label('db/password', 'prod', 2);
SELECT secret_mgmt.secret_resolve('db/password', 'prod');
SELECT secret_mgmt.secret_label('db/password', 'prod', NULL);
SELECT try($$SELECT secret_mgmt.secret_resolve('db/password', 'prod')$$);
SELECT try($$SELECT secret_mgmt.secret_label('db/password', 'current', NULL)$$);
SELECT try($$SELECT secret_mgmt.secret_label('db/password', '1bad', 1)$$);
SELECT try($$SELECT secret_mgmt.secret_label('db/password', 'x', 99)$$);
SELECT try($$SELECT secret_mgmt.secret_resolve('db/password', 99)$$);
SELECT try($$SELECT secret_mgmt.secret_resolve('db/password', 0)$$);
SELECT try($$SELECT secret_mgmt.secret_resolve('db/password', -1)$$);
-- moving current by label moves previous along
SELECT secret_mgmt.secret_label('db/password', 'current', 1);
SELECT version, labels FROM secret_mgmt.secret_versions('db/password');
SELECT secret_mgmt.secret_resolve('db/password');
-- check-and-set compares with the current version, not the newest
SELECT try($$SELECT secret_mgmt.secret_update('db/password', 'x', expected_version => 3)$$);
SELECT secret_mgmt.secret_label('db/password', 'current', 3);

-- rollback makes a new version; history is never rewritten
SELECT secret_mgmt.secret_rollback('db/password', 1);
SELECT secret_mgmt.secret_resolve('db/password');
SELECT version, labels FROM secret_mgmt.secret_versions('db/password');
SELECT secret_mgmt.secret_resolve('db/password', 1) = secret_mgmt.secret_resolve('db/password', 4) AS same_value;
SELECT try($$SELECT secret_mgmt.secret_rollback('db/password', 42)$$);
-- check-and-set against the rolled-back history
SELECT secret_mgmt.secret_update('db/password', 'v5', expected_version => 4);

-- version states
SELECT try($$SELECT secret_mgmt.secret_version_disable('db/password', 5)$$);
SELECT secret_mgmt.secret_version_disable('db/password', 2);
SELECT try($$SELECT secret_mgmt.secret_resolve('db/password', 2)$$);
SELECT try($$SELECT secret_mgmt.secret_rollback('db/password', 2)$$);
SELECT try($$SELECT secret_mgmt.secret_label('db/password', 'current', 2)$$);
SELECT secret_mgmt.secret_version_enable('db/password', 2);
SELECT secret_mgmt.secret_resolve('db/password', 2);
SELECT secret_mgmt.secret_version_destroy('db/password', 1);
SELECT try($$SELECT secret_mgmt.secret_resolve('db/password', 1)$$);
SELECT try($$SELECT secret_mgmt.secret_version_enable('db/password', 1)$$);
SELECT try($$SELECT secret_mgmt.secret_label('db/password', 'old', 1)$$);
SELECT version, state, labels FROM secret_mgmt.secret_versions('db/password');

-- listing shows metadata only
SELECT path, scope, scope_id, type, current_version, latest_version, deleted_at IS NULL AS live
  FROM secret_mgmt.secret_list();
SELECT path FROM secret_mgmt.secret_list('db/');

-- duplicate create, delete, restore, purge
SELECT try($$SELECT secret_mgmt.secret_create('db/password', 'again')$$);
SELECT secret_mgmt.secret_delete('db/password');
SELECT try($$SELECT secret_mgmt.secret_resolve('db/password')$$);
SELECT try($$SELECT secret_mgmt.secret_update('db/password', 'x')$$);
SELECT try($$SELECT secret_mgmt.secret_delete('db/password')$$);
SELECT try($$SELECT secret_mgmt.secret_create('db/password', 'again')$$);
SELECT path FROM secret_mgmt.secret_list('db/');
SELECT path, deleted_at IS NOT NULL AS deleted FROM secret_mgmt.secret_list('db/', include_deleted => true);
SELECT secret_mgmt.secret_restore('db/password');
SELECT secret_mgmt.secret_resolve('db/password');
SELECT try($$SELECT secret_mgmt.secret_restore('db/password')$$);
SELECT secret_mgmt.secret_delete('db/password');
-- purge needs the admin capability (tenant administrators hold it)
SELECT try($$SELECT secret_mgmt.secret_purge('db/password')$$);
RESET ROLE;
SET ROLE regress_admin_a;
SELECT secret_mgmt.secret_purge('db/password');
SELECT try($$SELECT secret_mgmt.secret_restore('db/password')$$);
SELECT secret_mgmt.secret_create('db/password', 'fresh') IS NOT NULL AS recreated;
SELECT version, labels FROM secret_mgmt.secret_versions('db/password');
-- purge protection: once on it stays on, and holds purges for the window
SELECT secret_mgmt.secret_tenant_set_purge_protection('acme', true);
SELECT try($$SELECT secret_mgmt.secret_tenant_set_purge_protection('acme', false)$$);
SELECT secret_mgmt.secret_delete('db/password');
SELECT try($$SELECT secret_mgmt.secret_purge('db/password')$$) ~ '^SM002: secret "db/password" is protected from purge until ' AS purge_refused;
SELECT secret_mgmt.secret_restore('db/password');
RESET ROLE;
-- once the recovery window has passed, even a protected tenant may purge
SET secret_mgmt.recovery_window = 0;
SET ROLE regress_admin_a;
SELECT secret_mgmt.secret_delete('db/password');
SELECT secret_mgmt.secret_purge('db/password');
RESET ROLE;
RESET secret_mgmt.recovery_window;

-- expiry is enforced at read time
SET ROLE regress_app_a;
SELECT secret_mgmt.secret_create('exp/past', 'old', expires_at => now() - interval '1 millisecond') IS NOT NULL AS created;
SELECT try($$SELECT secret_mgmt.secret_resolve('exp/past')$$);
SELECT try($$SELECT secret_mgmt.secret_resolve('exp/past', 1)$$);
SELECT secret_mgmt.secret_set_expiry('exp/past', NULL);
SELECT secret_mgmt.secret_resolve('exp/past');
SELECT secret_mgmt.secret_set_expiry('exp/past', now() - interval '1 second');
SELECT try($$SELECT secret_mgmt.secret_resolve('exp/past')$$);
SELECT secret_mgmt.secret_create('exp/future', 'new', expires_at => now() + interval '1 hour') IS NOT NULL AS created;
SELECT secret_mgmt.secret_resolve('exp/future');
RESET ROLE;

-- argument errors
SET ROLE regress_app_a;
SELECT try($$SELECT secret_mgmt.secret_create('/lead', 'x')$$);
SELECT try($$SELECT secret_mgmt.secret_create('a//b', 'x')$$);
SELECT try($$SELECT secret_mgmt.secret_create('a/../b', 'x')$$);
SELECT try($$SELECT secret_mgmt.secret_create('a/./b', 'x')$$);
SELECT try($$SELECT secret_mgmt.secret_create('a/b c', 'x')$$);
SELECT try($$SELECT secret_mgmt.secret_create('', 'x')$$);
SELECT left(try($$SELECT secret_mgmt.secret_create(repeat('a', 513), 'x')$$), 36);
SELECT try($$SELECT secret_mgmt.secret_create(repeat('a', 512), 'x')$$);
SELECT try($$SELECT secret_mgmt.secret_create('a/b', NULL::text)$$);
SELECT try($$SELECT secret_mgmt.secret_create('a/c', 'x', type => 'nonsense')$$);
SELECT try($$SELECT secret_mgmt.secret_create('a/c', 'x', scope => 'team')$$);
SELECT try($$SELECT secret_mgmt.secret_create('a/c', 'x', scope_id => 'x')$$);
SELECT try($$SELECT secret_mgmt.secret_create('a/c', 'x', scope => 'galaxy')$$);
SELECT try($$SELECT secret_mgmt.secret_create('a/c', 'x', scope => 'global')$$);
SELECT try($$SELECT secret_mgmt.secret_create('a/c', 'x', backend => 'vault')$$);
SELECT try($$SELECT secret_mgmt.secret_create('a/c', 'x', rotation_period => '0.5 seconds')$$);
SELECT try($$SELECT secret_mgmt.secret_create('a/c', 'x', generator => 'hex(0)')$$);
SELECT try($$SELECT secret_mgmt.secret_create('a/c', 'x', tags => '[1]')$$);
SELECT try($$SELECT secret_mgmt.secret_resolve('a/c', NULL::int)$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('rogue')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_add_member('acme', 'regress_nobody')$$);
RESET ROLE;
SELECT try($$SELECT secret_mgmt.secret_tenant_create('acme')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('bad name')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('x', kms => 'aws')$$);
