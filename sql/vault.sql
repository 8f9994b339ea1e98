--
-- vault: configuring external backends and KMS -- what is accepted and
-- refused before any network call, the registry, secret_rekey for local
-- tenants, and an unreachable Vault failing closed with SM006.  Vault
-- itself (the fixture, faults, cancellation) is covered by the TAP suite.
--
\set VERBOSITY terse
\set SHOW_CONTEXT never

CREATE ROLE regress_be_app;
CREATE ROLE regress_be_admin;

-- The credential secrets live in the global tenant.
SELECT secret_mgmt.secret_use_tenant('global');
SELECT secret_mgmt.secret_create('vault/token', 'hvs.regress-not-a-real-token') IS NOT NULL AS stored;
SELECT secret_mgmt.secret_create('vault/approle',
    '{"role_id": "r", "secret_id": "s"}'::jsonb) IS NOT NULL AS stored;
SELECT secret_mgmt.secret_use_tenant(NULL);

-- KMS configuration: validated before anything is stored
SELECT try($$SELECT secret_mgmt.secret_tenant_create('v1', kms => 'vault')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('v1', 'vault',
    '{"address": "http://127.0.0.1:8200", "key": "k", "credentials_path": "vault/token"}')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('v1', 'vault',
    '{"address": "https://user@127.0.0.1:8200", "key": "k", "credentials_path": "vault/token"}')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('v1', 'vault',
    '{"address": "https://127.0.0.1:8200/v1?x", "key": "k", "credentials_path": "vault/token"}')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('v1', 'vault',
    '{"address": "https://127.0.0.1:8200", "credentials_path": "vault/token"}')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('v1', 'vault',
    '{"address": "https://127.0.0.1:8200", "key": "k"}')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('v1', 'vault',
    '{"address": "https://127.0.0.1:8200", "key": "../k", "credentials_path": "vault/token"}')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('v1', 'vault',
    '{"address": "https://127.0.0.1:8200", "key": "k", "credentials_path": "vault/missing"}')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('v1', 'vault',
    '{"address": "https://127.0.0.1:8200", "key": "k", "token": "hvs.x", "credentials_path": "vault/token"}')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('v1', 'vault',
    '{"address": "https://127.0.0.1:8200", "key": "k", "credentials_path": "vault/token", "adress": "x"}')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('v1', 'vault',
    '{"address": "https://127.0.0.1:8200", "key": "k", "credentials_path": "vault/token", "auth": "ldap"}')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('v1', 'vault',
    '{"address": "https://127.0.0.1:8200", "key": "k", "credentials_path": "vault/token", "ca_file": "relative.pem"}')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('v1', 'vault', '[1]')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('v1', 'local', '{"key": "k"}')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('v1', 'gcp', '{}')$$);
SELECT try($$SELECT secret_mgmt.secret_tenant_create('v1', 'hsm', '{}')$$);
SELECT count(*) AS tenants_created FROM secret_mgmt.secret_tenant WHERE tenant_id = 'v1';

-- A valid configuration is accepted; keys are only made on the first write.
SELECT secret_mgmt.secret_tenant_create('vt', 'vault',
    '{"address": "https://127.0.0.1:1", "key": "vt", "credentials_path": "vault/token",
      "mount": "kms/transit", "auth": "token", "derived": true}');
SELECT secret_mgmt.secret_tenant_add_member('vt', 'regress_be_app');
SELECT secret_mgmt.secret_use_tenant('vt');
SELECT secret_mgmt.secret_grant('**', 'regress_be_app', ARRAY['read', 'list', 'create', 'update']);
SELECT secret_mgmt.secret_use_tenant(NULL);
SELECT kms, kms_config->>'key' AS key FROM secret_mgmt.secret_tenant WHERE tenant_id = 'vt';

-- Nothing listens there: the write fails closed, nothing is stored.
SET secret_mgmt.http_retries = 0;
SET ROLE regress_be_app;
SELECT try($$SELECT secret_mgmt.secret_create('db/pw', 'never-stored')$$);
RESET ROLE;
SELECT (SELECT count(*) FROM secret_mgmt.secret_data_key WHERE tenant_id = 'vt') AS keys,
       (SELECT count(*) FROM secret_mgmt.secret_item WHERE tenant_id = 'vt') AS items;
RESET secret_mgmt.http_retries;

-- The backend registry: platform administrator only, validated config,
-- credentials by path only.
SELECT try($$SELECT secret_mgmt.secret_backend_create('corp', 'vault',
    '{"address": "https://127.0.0.1:8200"}')$$);
SELECT try($$SELECT secret_mgmt.secret_backend_create('corp', 'vault',
    '{"address": "https://127.0.0.1:8200"}', 'vault/missing')$$);
SELECT try($$SELECT secret_mgmt.secret_backend_create('corp', 'vault',
    '{"address": "https://127.0.0.1:8200", "credentials_path": "vault/token"}', 'vault/token')$$);
SELECT try($$SELECT secret_mgmt.secret_backend_create('corp', 'vault',
    '{"address": "https://127.0.0.1:8200", "secret_id": "s"}', 'vault/approle')$$);
SELECT try($$SELECT secret_mgmt.secret_backend_create('corp', 'vault',
    '{"address": "https://127.0.0.1:8200", "key": "k"}', 'vault/token')$$);
SELECT try($$SELECT secret_mgmt.secret_backend_create('corp', 'aws', '{}', 'vault/token')$$);
SELECT try($$SELECT secret_mgmt.secret_backend_create('corp', 'ftp', '{}', 'vault/token')$$);
SELECT try($$SELECT secret_mgmt.secret_backend_create('local', 'vault',
    '{"address": "https://127.0.0.1:8200"}', 'vault/token')$$);
SELECT try($$SELECT secret_mgmt.secret_backend_create('bad name', 'vault',
    '{"address": "https://127.0.0.1:8200"}', 'vault/token')$$);
SELECT secret_mgmt.secret_backend_create('corp', 'vault',
    '{"address": "https://127.0.0.1:8200", "mount": "kv", "auth": "approle", "namespace": "team/a"}',
    'vault/approle');
SELECT try($$SELECT secret_mgmt.secret_backend_create('corp', 'vault',
    '{"address": "https://127.0.0.1:8200"}', 'vault/token')$$);
SELECT tenant_id, name, kind, config->>'mount' AS mount, credentials_path
  FROM secret_mgmt.secret_backend;
SET ROLE regress_be_app;
SELECT try($$SELECT secret_mgmt.secret_backend_create('mine', 'vault',
    '{"address": "https://127.0.0.1:8200"}', 'vault/token')$$);
SELECT try($$SELECT count(*) FROM secret_mgmt.secret_backend$$);
RESET ROLE;

-- secret_rekey on local tenants: fresh nonce, same key, values unchanged.
SELECT secret_mgmt.secret_tenant_create('lk');
SELECT secret_mgmt.secret_tenant_add_member('lk', 'regress_be_app');
SELECT secret_mgmt.secret_use_tenant('lk');
SELECT secret_mgmt.secret_grant('**', 'regress_be_app', ARRAY['read', 'list', 'create', 'update']);
SELECT secret_mgmt.secret_use_tenant(NULL);
SELECT secret_mgmt.secret_tenant_add_member('lk', 'regress_be_admin', admin => true);
SET secret_mgmt.data_key_rotate_after = 2;
SET ROLE regress_be_app;
SELECT secret_mgmt.secret_use_tenant('lk');
SELECT secret_mgmt.secret_create('a', 'one') IS NOT NULL AS created;
SELECT secret_mgmt.secret_update('a', 'two'), secret_mgmt.secret_update('a', 'three');
RESET ROLE;
RESET secret_mgmt.data_key_rotate_after;
CREATE TEMP TABLE before AS
    SELECT key_id, kek_id, wrapped FROM secret_mgmt.secret_data_key WHERE tenant_id = 'lk';
SET ROLE regress_be_app;
SELECT try($$SELECT secret_mgmt.secret_rekey('lk')$$);
SELECT try($$SELECT secret_mgmt.secret_rekey()$$);
RESET ROLE;
SET ROLE regress_be_admin;
SELECT secret_mgmt.secret_rekey('lk') AS rewrapped;
RESET ROLE;
SELECT b.key_id, b.kek_id = d.kek_id AS same_root_key, b.wrapped <> d.wrapped AS rewrapped,
       length(d.wrapped) AS wrapped_len
  FROM before b JOIN secret_mgmt.secret_data_key d USING (key_id)
 WHERE d.tenant_id = 'lk' ORDER BY 1;
SET ROLE regress_be_app;
SELECT secret_mgmt.secret_resolve('a', 1) AS v1, secret_mgmt.secret_resolve('a', 2) AS v2,
       secret_mgmt.secret_resolve('a') AS current;
RESET ROLE;
SELECT secret_mgmt.secret_rekey() >= 3 AS all_tenants;
SELECT try($$SELECT secret_mgmt.secret_rekey('nope')$$);

-- Settings of the HTTP layer are for superusers only.
SET ROLE regress_be_app;
SELECT try($$SET secret_mgmt.http_timeout_ms = 100000$$);
SELECT try($$SET secret_mgmt.ca_file = '/tmp/evil.pem'$$);
SELECT try($$SHOW secret_mgmt.ca_file$$);
SELECT try($$SET secret_mgmt.http_retries = 10$$);
SELECT try($$SET secret_mgmt.http_breaker_failures = 0$$);
RESET ROLE;
SHOW secret_mgmt.http_timeout_ms;
SHOW secret_mgmt.http_retries;
