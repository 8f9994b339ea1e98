--
-- access: grants on path patterns -- matching, deny, specificity, expiry,
-- revoke, delegation -- the SM001/SM002 rule, listing, explanation,
-- platform secrets shared with a tenant, and secret_render.
--
\set VERBOSITY terse
\set SHOW_CONTEXT never

CREATE ROLE regress_acl_admin;
CREATE ROLE regress_acl_app;
CREATE ROLE regress_acl_ops;
CREATE ROLE regress_acl_other;
SELECT secret_mgmt.secret_tenant_create('acl');
SELECT secret_mgmt.secret_tenant_add_member('acl', 'regress_acl_admin', admin => true);
SELECT secret_mgmt.secret_tenant_add_member('acl', 'regress_acl_app');
SELECT secret_mgmt.secret_tenant_add_member('acl', 'regress_acl_ops');

-- the administrator holds everything and writes the fixtures
SET ROLE regress_acl_admin;
SELECT count(secret_mgmt.secret_create(p, 'value of ' || p)) AS created
  FROM unnest(ARRAY['app/db/password', 'app/db/replica', 'app/api/key', 'app/deep/a/b/c',
                    'billing/token', 'db-main/pw', 'db-test/pw', 'other/x']) AS p;

-- a member with no grant has nothing, and learns nothing
RESET ROLE;
SET ROLE regress_acl_app;
SELECT try($$SELECT secret_mgmt.secret_resolve('app/db/password')$$);
SELECT try($$SELECT secret_mgmt.secret_resolve('app/db/nowhere')$$);
SELECT count(*) AS listed FROM secret_mgmt.secret_list();
RESET ROLE;

-- pattern forms: + (one segment), * (rest of a segment), ** (any depth)
SET ROLE regress_acl_admin;
SELECT secret_mgmt.secret_grant('app/+/password', 'regress_acl_app', ARRAY['read']);
SELECT secret_mgmt.secret_grant('db-*/pw', 'regress_acl_app', ARRAY['read']);
SELECT secret_mgmt.secret_grant('app/deep/**', 'regress_acl_app', ARRAY['read', 'list']);
RESET ROLE;
SET ROLE regress_acl_app;
SELECT p AS path, secret_mgmt.secret_check(p, 'read') AS may_read
  FROM unnest(ARRAY['app/db/password', 'app/db/replica', 'app/x/y/password', 'db-main/pw',
                    'db-test/pw', 'dbx/pw', 'app/deep/a/b/c', 'app/deep', 'billing/token']) AS p;
SELECT secret_mgmt.secret_resolve('app/db/password');
SELECT secret_mgmt.secret_resolve('db-test/pw');
SELECT secret_mgmt.secret_resolve('app/deep/a/b/c');
-- no list on app/db/replica: the same answer as for a path that exists nowhere
SELECT try($$SELECT secret_mgmt.secret_resolve('app/db/replica')$$);
-- list but no update on app/deep/**: permission denied, not "not found"
SELECT try($$SELECT secret_mgmt.secret_update('app/deep/a/b/c', 'x')$$);
SELECT try($$SELECT secret_mgmt.secret_update('app/deep/new', 'x')$$);
SELECT path FROM secret_mgmt.secret_list();
RESET ROLE;

-- deny always wins
SET ROLE regress_acl_admin;
SELECT secret_mgmt.secret_grant('app/**', 'regress_acl_ops', ARRAY['read', 'list', 'update']);
SELECT secret_mgmt.secret_deny('app/api/**', 'regress_acl_ops', ARRAY['read']);
RESET ROLE;
SET ROLE regress_acl_ops;
SELECT secret_mgmt.secret_resolve('app/db/password');
SELECT try($$SELECT secret_mgmt.secret_resolve('app/api/key')$$);
SELECT secret_mgmt.secret_update('app/api/key', 'ops may still write');
RESET ROLE;

-- the most specific allow decides: a narrower rule overrides a broad one
SET ROLE regress_acl_admin;
SELECT secret_mgmt.secret_grant('app/db/*', 'regress_acl_ops', ARRAY['list']);
RESET ROLE;
SET ROLE regress_acl_ops;
SELECT try($$SELECT secret_mgmt.secret_resolve('app/db/password')$$);
SELECT capability, allowed, rule, pattern, grantee
  FROM secret_mgmt.secret_explain_access('app/db/password')
 WHERE capability IN ('read', 'list', 'update');
SELECT capability, allowed, rule, pattern
  FROM secret_mgmt.secret_explain_access('app/api/key')
 WHERE capability IN ('read', 'update');
RESET ROLE;

-- revoke removes capabilities, from allows and denies alike
SET ROLE regress_acl_admin;
SELECT secret_mgmt.secret_revoke('app/db/*', 'regress_acl_ops');
SELECT secret_mgmt.secret_revoke('app/api/**', 'regress_acl_ops', ARRAY['read']);
SELECT pattern, grantee, capabilities, deny FROM secret_mgmt.secret_grants() ORDER BY 1, 2, 4;
RESET ROLE;
SET ROLE regress_acl_ops;
SELECT secret_mgmt.secret_resolve('app/db/password') IS NOT NULL AS reads_again;
SELECT secret_mgmt.secret_resolve('app/api/key');
RESET ROLE;

-- grants expire
SET ROLE regress_acl_admin;
SELECT secret_mgmt.secret_grant('billing/*', 'regress_acl_app', ARRAY['read'],
                                expires_at => now() - interval '1 second');
RESET ROLE;
SET ROLE regress_acl_app;
SELECT try($$SELECT secret_mgmt.secret_resolve('billing/token')$$);
RESET ROLE;
SET ROLE regress_acl_admin;
SELECT secret_mgmt.secret_grant('billing/*', 'regress_acl_app', ARRAY['read'],
                                expires_at => now() + interval '1 hour');
RESET ROLE;
SET ROLE regress_acl_app;
SELECT secret_mgmt.secret_resolve('billing/token');
RESET ROLE;

-- delegation: only what one holds, on patterns one's grants cover
SET ROLE regress_acl_admin;
SELECT secret_mgmt.secret_grant('app/**', 'regress_acl_app', ARRAY['read', 'list', 'grant']);
RESET ROLE;
SET ROLE regress_acl_app;
-- app/+/password (read only) is more specific than app/** for some paths
-- of app/db/*, so there the application does not hold grant
SELECT try($$SELECT secret_mgmt.secret_grant('app/db/*', 'regress_acl_other', ARRAY['read'])$$);
RESET ROLE;
SET ROLE regress_acl_admin;
SELECT secret_mgmt.secret_revoke('app/+/password', 'regress_acl_app');
RESET ROLE;
SET ROLE regress_acl_app;
SELECT secret_mgmt.secret_grant('app/db/*', 'regress_acl_other', ARRAY['read']);
SELECT try($$SELECT secret_mgmt.secret_grant('app/db/*', 'regress_acl_other', ARRAY['update'])$$);
SELECT try($$SELECT secret_mgmt.secret_grant('**', 'regress_acl_other', ARRAY['read'])$$);
SELECT try($$SELECT secret_mgmt.secret_grant('other/*', 'regress_acl_other', ARRAY['read'])$$);
SELECT try($$SELECT secret_mgmt.secret_deny('billing/**', 'regress_acl_other', ARRAY['read'])$$);
SELECT secret_mgmt.secret_revoke('app/db/*', 'regress_acl_other');
RESET ROLE;
-- a deny overlapping the pattern stops delegation of that capability
SET ROLE regress_acl_admin;
SELECT secret_mgmt.secret_deny('app/db/replica', 'regress_acl_app', ARRAY['read']);
RESET ROLE;
SET ROLE regress_acl_app;
SELECT try($$SELECT secret_mgmt.secret_grant('app/db/*', 'regress_acl_other', ARRAY['read'])$$);
SELECT secret_mgmt.secret_grant('app/api/*', 'regress_acl_other', ARRAY['read']);
RESET ROLE;
-- a delegated grant may not outlive the granter's own
SET ROLE regress_acl_admin;
SELECT secret_mgmt.secret_grant('cfg/**', 'regress_acl_app', ARRAY['read', 'grant'],
                                expires_at => now() + interval '1 day');
RESET ROLE;
SET ROLE regress_acl_app;
SELECT try($$SELECT secret_mgmt.secret_grant('cfg/x', 'regress_acl_app', ARRAY['read'])$$);
SELECT try($$SELECT secret_mgmt.secret_grant('cfg/x', 'regress_acl_other', ARRAY['read'],
                                              expires_at => now() + interval '2 days')$$);
SELECT secret_mgmt.secret_grant('cfg/x', 'regress_acl_other', ARRAY['read'],
                                expires_at => now() + interval '1 hour');
-- grant holders see the rules they could change
SELECT pattern, grantee, capabilities FROM secret_mgmt.secret_grants() ORDER BY 1, 2;
RESET ROLE;

-- checking another principal is for administrators and grant holders
SET ROLE regress_acl_ops;
SELECT try($$SELECT secret_mgmt.secret_check('app/db/password', 'read', 'regress_acl_app')$$);
RESET ROLE;
SET ROLE regress_acl_admin;
SELECT secret_mgmt.secret_check('app/db/password', 'read', 'regress_acl_app') AS app_reads,
       secret_mgmt.secret_check('app/db/replica', 'read', 'regress_acl_app') AS app_reads_replica,
       secret_mgmt.secret_check('app/db/password', 'read', 'token:alice') AS alice_reads,
       secret_mgmt.secret_check('anything', 'admin', 'regress_acl_admin') AS admin_is_admin,
       secret_mgmt.secret_check('app/db/password', 'read', 'regress_acl_other') AS outsider_reads;
SELECT try($$SELECT secret_mgmt.secret_check('a//b', 'read')$$);
RESET ROLE;

-- argument errors
SET ROLE regress_acl_admin;
SELECT try($$SELECT secret_mgmt.secret_grant('app//x', 'regress_acl_app', ARRAY['read'])$$);
SELECT try($$SELECT secret_mgmt.secret_grant('a/**/b/**/c/**/d/**/e/**', 'regress_acl_app', ARRAY['read'])$$);
SELECT try($$SELECT secret_mgmt.secret_grant('app/*x', 'regress_acl_app', ARRAY['read'])$$);
SELECT try($$SELECT secret_mgmt.secret_grant('app/**', 'regress_acl_app', ARRAY['fly'])$$);
SELECT try($$SELECT secret_mgmt.secret_grant('app/**', 'regress_acl_app', ARRAY[]::text[])$$);
SELECT try($$SELECT secret_mgmt.secret_grant('app/**', 'regress_nobody_here', ARRAY['read'])$$);
SELECT try($$SELECT secret_mgmt.secret_grant('app/**', 'tenant:globex', ARRAY['read'])$$);
SELECT try($$SELECT secret_mgmt.secret_grant('app/**', 'token:', ARRAY['read'])$$);
-- members are added only by those who administer the role
SELECT try($$SELECT secret_mgmt.secret_tenant_add_member('acl', 'regress_acl_other')$$);
RESET ROLE;

-- a platform secret is readable by a tenant only where granted to it
SELECT secret_mgmt.secret_use_tenant('global');
SELECT secret_mgmt.secret_create('shared/llm-key', 'sk-platform', scope => 'global') IS NOT NULL AS created;
SELECT secret_mgmt.secret_create('shared/internal', 'platform-only', scope => 'global') IS NOT NULL AS created;
SELECT secret_mgmt.secret_grant('shared/llm-key', 'tenant:acl', ARRAY['read']);
SELECT secret_mgmt.secret_use_tenant(NULL);
SET ROLE regress_acl_admin;
SELECT secret_mgmt.secret_resolve('shared/llm-key');
SELECT try($$SELECT secret_mgmt.secret_resolve('shared/internal')$$);
SELECT scope, scope_id FROM secret_mgmt.secret_explain_access('shared/llm-key') WHERE capability = 'read';
-- the tenant's own secret at the same path comes first
SELECT secret_mgmt.secret_create('shared/llm-key', 'acl-own-key') IS NOT NULL AS created;
SELECT secret_mgmt.secret_resolve('shared/llm-key');
RESET ROLE;
SET ROLE regress_app_a;
SELECT try($$SELECT secret_mgmt.secret_resolve('shared/llm-key')$$);
RESET ROLE;

-- render: references, JSON keys, literal ${, and every reference checked
SET ROLE regress_acl_admin;
SELECT secret_mgmt.secret_create('cfg/db', '{"user": "svc", "port": 5432}'::jsonb) IS NOT NULL AS created;
SELECT secret_mgmt.secret_create('cfg/dsn', 'postgresql://${cfg/db#user}:${app/db/password}@db:${cfg/db#port}/app') IS NOT NULL AS created;
SELECT secret_mgmt.secret_render('dsn=${cfg/dsn}; literal=$${not/a/ref}');
SELECT secret_mgmt.secret_create('loop/a', 'a->${loop/b}') IS NOT NULL AS created;
SELECT secret_mgmt.secret_create('loop/b', 'b->${loop/a}') IS NOT NULL AS created;
SELECT try($$SELECT secret_mgmt.secret_render('${loop/a}')$$);
SELECT count(secret_mgmt.secret_create('nest/' || i, CASE WHEN i < 12 THEN '${nest/' || (i + 1) || '}' ELSE 'bottom' END))
  FROM generate_series(1, 12) AS i;
SELECT secret_mgmt.secret_render('${nest/3}');
SELECT try($$SELECT secret_mgmt.secret_render('${nest/1}')$$);
SELECT try($$SELECT secret_mgmt.secret_render('${cfg/db#missing}')$$);
SELECT try($$SELECT secret_mgmt.secret_render('${cfg/nowhere}')$$);
SELECT try($$SELECT secret_mgmt.secret_render('${unterminated')$$);
RESET ROLE;
SET ROLE regress_acl_app;
SELECT secret_mgmt.secret_render('password=${app/db/password}');
SELECT try($$SELECT secret_mgmt.secret_render('token=${billing/token} other=${other/x}')$$);
RESET ROLE;
