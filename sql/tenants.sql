--
-- tenants: isolation between tenants, tenant selection, membership changes,
-- scopes within a tenant, and the tables being out of reach.
--
\set VERBOSITY terse
\set SHOW_CONTEXT never

-- Like try(), with detail and hint, to compare whole errors.
CREATE FUNCTION public.try_full(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; det text; hin text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                            det = PG_EXCEPTION_DETAIL, hin = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || ' | ' || coalesce(det, '') || ' | ' || coalesce(hin, '');
END $$;

CREATE ROLE regress_multi;
CREATE ROLE regress_group_a;
SELECT secret_mgmt.secret_tenant_add_member('acme', 'regress_multi');
SELECT secret_mgmt.secret_tenant_add_member('globex', 'regress_multi');
SELECT secret_mgmt.secret_use_tenant('acme');
SELECT secret_mgmt.secret_grant('**', 'regress_multi', ARRAY['read', 'list']);
SELECT secret_mgmt.secret_grant('**', 'regress_group_a', ARRAY['read', 'list']);
SELECT secret_mgmt.secret_use_tenant('globex');
SELECT secret_mgmt.secret_grant('**', 'regress_multi', ARRAY['read', 'list']);
SELECT secret_mgmt.secret_use_tenant(NULL);

-- acme owns iso/shared; globex has nothing there
SET ROLE regress_app_a;
SELECT secret_mgmt.secret_create('iso/shared', 'acme-value') IS NOT NULL AS created;
RESET ROLE;

-- Every function, for a path that exists in another tenant, answers exactly
-- as for a path that exists nowhere.
SET ROLE regress_app_b;
CREATE TEMP TABLE probes (q text);
INSERT INTO probes VALUES
  ($$SELECT secret_mgmt.secret_resolve('%s')$$),
  ($$SELECT secret_mgmt.secret_resolve('%s', 1)$$),
  ($$SELECT secret_mgmt.secret_resolve('%s', 'current')$$),
  ($$SELECT secret_mgmt.secret_resolve_bytea('%s')$$),
  ($$SELECT secret_mgmt.secret_resolve_jsonb('%s')$$),
  ($$SELECT secret_mgmt.secret_update('%s', 'x')$$),
  ($$SELECT secret_mgmt.secret_update('%s', 'x', 1)$$),
  ($$SELECT secret_mgmt.secret_rollback('%s', 1)$$),
  ($$SELECT * FROM secret_mgmt.secret_versions('%s')$$),
  ($$SELECT secret_mgmt.secret_label('%s', 'prod', 1)$$),
  ($$SELECT secret_mgmt.secret_version_disable('%s', 1)$$),
  ($$SELECT secret_mgmt.secret_version_enable('%s', 1)$$),
  ($$SELECT secret_mgmt.secret_version_destroy('%s', 1)$$),
  ($$SELECT secret_mgmt.secret_set_expiry('%s', NULL)$$),
  ($$SELECT secret_mgmt.secret_delete('%s')$$),
  ($$SELECT secret_mgmt.secret_restore('%s')$$);
SELECT q AS probe,
       try_full(format(q, 'iso/shared')) AS exists_elsewhere
  FROM probes
 WHERE replace(try_full(format(q, 'iso/shared')), 'iso/shared', '?')
       IS DISTINCT FROM replace(try_full(format(q, 'iso/nowhere')), 'iso/nowhere', '?');
SELECT DISTINCT replace(try_full(format(q, 'iso/shared')), 'iso/shared', '?') AS answer FROM probes;
DROP TABLE probes;

-- uniqueness is per tenant: globex may use the same path, values stay apart
SELECT secret_mgmt.secret_create('iso/shared', 'globex-value') IS NOT NULL AS created;
SELECT secret_mgmt.secret_resolve('iso/shared');
SELECT path FROM secret_mgmt.secret_list();
RESET ROLE;
SET ROLE regress_app_a;
SELECT secret_mgmt.secret_resolve('iso/shared');
SELECT count(*) AS acme_secrets FROM secret_mgmt.secret_list();
RESET ROLE;

-- a role in no tenant: SM001 on paths (same as nowhere), SM002 otherwise
SET ROLE regress_nobody;
SELECT try_full($$SELECT secret_mgmt.secret_resolve('iso/shared')$$);
SELECT try_full($$SELECT secret_mgmt.secret_resolve('iso/nowhere')$$);
SELECT try_full($$SELECT * FROM secret_mgmt.secret_list()$$);
SELECT try_full($$SELECT secret_mgmt.secret_use_tenant('acme')$$);
SELECT try_full($$SELECT secret_mgmt.secret_use_tenant('no-such-tenant')$$);
RESET ROLE;

-- a role in two tenants must choose
SET ROLE regress_multi;
SELECT try($$SELECT secret_mgmt.secret_resolve('iso/shared')$$);
SELECT secret_mgmt.secret_use_tenant('globex');
SELECT secret_mgmt.current_tenant();
SELECT secret_mgmt.secret_resolve('iso/shared');
BEGIN;
SELECT secret_mgmt.secret_use_tenant('acme', local => true);
SELECT secret_mgmt.secret_resolve('iso/shared');
COMMIT;
SELECT secret_mgmt.secret_resolve('iso/shared');
BEGIN;
SELECT secret_mgmt.secret_use_tenant('acme', local => true);
ROLLBACK;
SELECT secret_mgmt.current_tenant();
RESET ROLE;

-- removing a member takes effect at the next statement, also for a session
-- that selected the tenant before
SELECT secret_mgmt.secret_tenant_remove_member('globex', 'regress_multi');
SET ROLE regress_multi;
SELECT try($$SELECT secret_mgmt.secret_resolve('iso/shared')$$);
SELECT secret_mgmt.secret_use_tenant('acme');
SELECT secret_mgmt.secret_resolve('iso/shared');
-- a null tenant clears the choice
SELECT secret_mgmt.secret_use_tenant(NULL);
SELECT secret_mgmt.current_tenant() IS NULL AS cleared;
RESET ROLE;
SELECT try($$SELECT secret_mgmt.secret_tenant_remove_member('globex', 'regress_multi')$$);

-- role inheritance: a login role granted a member group is a member;
-- NOINHERIT roles must SET ROLE to the group first
SELECT secret_mgmt.secret_tenant_add_member('acme', 'regress_group_a');
CREATE ROLE regress_inherits IN ROLE regress_group_a;
CREATE ROLE regress_noinherit NOINHERIT IN ROLE regress_group_a;
SET ROLE regress_inherits;
SELECT secret_mgmt.secret_resolve('iso/shared');
RESET ROLE;
SET ROLE regress_noinherit;
SELECT try($$SELECT secret_mgmt.secret_resolve('iso/shared')$$);
SET ROLE regress_group_a;
SELECT secret_mgmt.secret_resolve('iso/shared');
RESET ROLE;

-- the platform administrator acts for one tenant at a time
SELECT try($$SELECT secret_mgmt.secret_resolve('iso/shared')$$);
SELECT secret_mgmt.secret_use_tenant('globex');
SELECT secret_mgmt.secret_resolve('iso/shared');
SELECT try($$SELECT secret_mgmt.secret_use_tenant('no-such-tenant')$$);

-- scopes: the most specific match of the context wins
SELECT secret_mgmt.secret_use_tenant('acme');
SELECT secret_mgmt.secret_create('svc/key', 'org') IS NOT NULL AS org;
SELECT secret_mgmt.secret_create('svc/key', 'team-pay', scope => 'team', scope_id => 'payments') IS NOT NULL AS team;
SELECT secret_mgmt.secret_create('svc/key', 'proj-x', scope => 'project', scope_id => 'x') IS NOT NULL AS project;
SELECT secret_mgmt.secret_create('svc/key', 'user-ann', scope => 'user', scope_id => 'ann') IS NOT NULL AS usr;
SELECT secret_mgmt.secret_resolve('svc/key');
SELECT secret_mgmt.secret_set_context(team => 'payments');
SELECT secret_mgmt.secret_resolve('svc/key');
SELECT secret_mgmt.secret_set_context(team => 'payments', project => 'x');
SELECT secret_mgmt.secret_resolve('svc/key');
SELECT secret_mgmt.secret_set_context(team => 'payments', project => 'x', "user" => 'ann');
SELECT secret_mgmt.secret_resolve('svc/key');
SELECT secret_mgmt.secret_set_context(team => 'other', "user" => 'bob');
SELECT secret_mgmt.secret_resolve('svc/key');
SELECT path, scope, scope_id, current_version FROM secret_mgmt.secret_list('svc/');
-- writes go to the secret resolution would read
SELECT secret_mgmt.secret_set_context(team => 'payments');
SELECT secret_mgmt.secret_update('svc/key', 'team-pay-2');
SELECT secret_mgmt.secret_set_context();
SELECT secret_mgmt.secret_resolve('svc/key');
SELECT secret_mgmt.secret_set_context(team => 'payments');
SELECT secret_mgmt.secret_resolve('svc/key');
SELECT secret_mgmt.secret_set_context();
-- a global secret lives in the platform tenant only
SELECT secret_mgmt.secret_use_tenant('global');
SELECT secret_mgmt.secret_create('platform/llm', 'sk-platform', scope => 'global') IS NOT NULL AS created;
SELECT secret_mgmt.secret_resolve('platform/llm');
SELECT secret_mgmt.secret_use_tenant('acme');
SELECT try($$SELECT secret_mgmt.secret_resolve('platform/llm')$$);

-- the tables are reachable only through the API
SET ROLE regress_app_a;
SELECT try($$SELECT * FROM secret_mgmt.secret_tenant$$);
SELECT try($$SELECT * FROM secret_mgmt.secret_member$$);
SELECT try($$SELECT * FROM secret_mgmt.secret_data_key$$);
SELECT try($$SELECT * FROM secret_mgmt.secret_item$$);
SELECT try($$SELECT * FROM secret_mgmt.secret_version$$);
SELECT try($$SELECT * FROM secret_mgmt.secret_label$$);
SELECT try($$UPDATE secret_mgmt.secret_item SET path = 'x'$$);
SELECT try($$DELETE FROM secret_mgmt.secret_version$$);
SELECT try($$TRUNCATE secret_mgmt.secret_label$$);
SELECT try($$INSERT INTO secret_mgmt.secret_tenant (tenant_id, created_by) VALUES ('evil', 'x')$$);
COPY secret_mgmt.secret_version TO STDOUT;
RESET ROLE;
SELECT secret_mgmt.secret_use_tenant('acme');
