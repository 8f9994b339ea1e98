--
-- data_keys: each tenant's data keys are minted on first use, counted, and
-- retired after secret_mgmt.data_key_rotate_after encryptions; versions
-- sealed under retired keys stay readable; nonces never repeat.
--
\set VERBOSITY terse
\set SHOW_CONTEXT never

CREATE ROLE regress_dk;
SELECT secret_mgmt.secret_tenant_create('dk');
SELECT secret_mgmt.secret_tenant_add_member('dk', 'regress_dk');
SELECT secret_mgmt.secret_use_tenant('dk');
SELECT secret_mgmt.secret_grant('rot/**', 'regress_dk', ARRAY['read', 'create', 'update']);
SELECT secret_mgmt.secret_use_tenant(NULL);
-- no key until the first write
SELECT count(*) AS keys_before FROM secret_mgmt.secret_data_key WHERE tenant_id = 'dk';

SET secret_mgmt.data_key_rotate_after = 3;
SET ROLE regress_dk;
SELECT secret_mgmt.secret_create('rot/a', 'a1') IS NOT NULL AS created;
SELECT secret_mgmt.secret_update('rot/a', 'a' || i) FROM generate_series(2, 8) AS i;
RESET ROLE;
SELECT key_id, state, encryptions, length(wrapped) AS wrapped_len,
       kek_id ~ '^[0-9a-f]{16}$' AS kek_id_ok, retired_at IS NOT NULL AS retired
  FROM secret_mgmt.secret_data_key WHERE tenant_id = 'dk' ORDER BY key_id;
SELECT version, key_id FROM secret_mgmt.secret_version
 WHERE tenant_id = 'dk' ORDER BY version;
SET ROLE regress_dk;
SELECT string_agg(secret_mgmt.secret_resolve('rot/a', i), ',' ORDER BY i) AS all_versions
  FROM generate_series(1, 8) AS i;
RESET ROLE;
RESET secret_mgmt.data_key_rotate_after;

-- only superusers may change the limit
SET ROLE regress_dk;
SELECT try($$SET secret_mgmt.data_key_rotate_after = 1$$);
SELECT try($$SET secret_mgmt.recovery_window = 0$$);
SELECT try($$SET secret_mgmt.key_file = '/tmp/x'$$);
SELECT try($$SHOW secret_mgmt.key_file$$);
RESET ROLE;

-- one nonce per data key, across many writes (also enforced by an index)
SET ROLE regress_dk;
SELECT count(*) AS writes FROM (
  SELECT secret_mgmt.secret_update('rot/a', 'n' || i) FROM generate_series(1, 500) AS i) s;
RESET ROLE;
SELECT count(*) = count(DISTINCT (key_id, substr(envelope, 7, 12))) AS nonces_unique
  FROM secret_mgmt.secret_version WHERE tenant_id = 'dk';
SELECT indexdef LIKE '%UNIQUE%substr(envelope, 7, 12)%' AS nonce_index
  FROM pg_indexes WHERE indexname = 'secret_version_nonce_unique';

-- a tenant's keys are its own
SELECT count(DISTINCT wrapped) = count(*) AS wrapped_keys_distinct FROM secret_mgmt.secret_data_key;
