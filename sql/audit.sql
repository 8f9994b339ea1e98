--
-- audit: one hash-chained row per attempt -- writes and sync reads in the
-- caller's transaction, refusals through the queue -- the chain verifies
-- and tampering is found, leak response by fingerprint, auditors see only
-- their own tenant, writes fail closed, and no value is ever stored.
--
\set VERBOSITY terse
\set SHOW_CONTEXT never

CREATE ROLE regress_audit_alice;
CREATE ROLE regress_audit_bob;
CREATE ROLE regress_audit_auditor;
CREATE ROLE regress_audit_carol;
CREATE ROLE regress_audit_eve;
SELECT secret_mgmt.secret_tenant_create('audit_a');
SELECT secret_mgmt.secret_tenant_create('audit_b');
SELECT secret_mgmt.secret_tenant_add_member('audit_a', 'regress_audit_alice');
SELECT secret_mgmt.secret_tenant_add_member('audit_a', 'regress_audit_bob');
SELECT secret_mgmt.secret_tenant_add_member('audit_a', 'regress_audit_auditor');
SELECT secret_mgmt.secret_tenant_add_member('audit_b', 'regress_audit_carol', admin => true);
SELECT secret_mgmt.secret_use_tenant('audit_a');
SELECT secret_mgmt.secret_grant('**', 'regress_audit_alice',
                                ARRAY['read', 'list', 'create', 'update', 'delete']);
SELECT secret_mgmt.secret_grant('app/**', 'regress_audit_bob', ARRAY['list']);
SELECT secret_mgmt.secret_grant('**', 'regress_audit_auditor', ARRAY['audit']);
SELECT secret_mgmt.secret_deny('app/forbidden', 'regress_audit_bob', ARRAY['read']);
SELECT secret_mgmt.secret_revoke('app/forbidden', 'regress_audit_bob');
SELECT secret_mgmt.secret_use_tenant(NULL);

-- reads are written in the reader's transaction for this test
SET secret_mgmt.audit_reads = sync;

SET ROLE regress_audit_alice;
SELECT secret_mgmt.secret_create('app/db', 'canary-value-1f2e3d') IS NOT NULL AS created;
SELECT secret_mgmt.secret_resolve('app/db') = 'canary-value-1f2e3d' AS read_ok;
SELECT secret_mgmt.secret_update('app/db', 'canary-value-2a3b4c');
SELECT secret_mgmt.secret_rollback('app/db', 1);
SELECT secret_mgmt.secret_label('app/db', 'prod', 2);
SELECT secret_mgmt.secret_version_disable('app/db', 2);
SELECT secret_mgmt.secret_version_enable('app/db', 2);
SELECT secret_mgmt.secret_set_expiry('app/db', NULL);
SELECT secret_mgmt.secret_create('app/tmp', 'canary-value-temp99') IS NOT NULL AS created;
SELECT secret_mgmt.secret_delete('app/tmp');
SELECT secret_mgmt.secret_restore('app/tmp');
SELECT secret_mgmt.secret_create('app/old', 'canary-value-old777',
                                 expires_at => now() - interval '1 day') IS NOT NULL AS created;
-- refusals: invalid value, not found, expired
SELECT public.try($$SELECT secret_mgmt.secret_create('app/j', 'canary-value-notjson'::text, type => 'json')$$);
SELECT public.try($$SELECT secret_mgmt.secret_resolve('app/missing')$$);
SELECT public.try($$SELECT secret_mgmt.secret_resolve('app/old')$$);
RESET ROLE;

SET ROLE regress_audit_bob;
-- may list app/db but not read it: SM002; may not even list other/x: SM001
SELECT public.try($$SELECT secret_mgmt.secret_resolve('app/db')$$);
SELECT public.try($$SELECT secret_mgmt.secret_resolve('other/x')$$);
SELECT public.try($$SELECT secret_mgmt.secret_audit_log()$$);
RESET ROLE;

SET ROLE regress_audit_eve;
SELECT public.try($$SELECT secret_mgmt.secret_resolve('app/db')$$);
RESET ROLE;

-- a refusal rolled back with its transaction is still recorded
BEGIN;
SET LOCAL ROLE regress_audit_bob;
SELECT public.try($$SELECT secret_mgmt.secret_resolve_bytea('app/db')$$);
ROLLBACK;

-- refusals reach the table through the queue
SELECT secret_mgmt.secret_audit_flush() >= 0 AS flushed;
DO $$
BEGIN
    FOR i IN 1..400 LOOP
        EXIT WHEN (SELECT pending FROM secret_mgmt.secret_audit_queue()) = 0;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT pending, rejected FROM secret_mgmt.secret_audit_queue();

-- the tenant's auditor reads its trail
SET ROLE regress_audit_auditor;
SELECT CASE WHEN principal = session_user THEN '(platform admin)' ELSE principal END AS principal,
       action, path, version, outcome, sqlstate,
       fingerprint IS NOT NULL AS fingerprinted, secret_id IS NOT NULL AS has_id
  FROM secret_mgmt.secret_audit_log()
 ORDER BY outcome, action, path, version, principal;
-- every row carries the session fields
SELECT count(*) AS rows,
       bool_and(session_user_name IS NOT NULL AND backend_pid > 0 AND logged_at IS NOT NULL) AS complete
  FROM secret_mgmt.secret_audit_log();
-- sequence numbers are gap-free
SELECT max(seq) = count(*) AS gap_free FROM secret_mgmt.secret_audit_log();

-- leak response: who was served or wrote this value
SELECT principal, action, path, version, times
  FROM secret_mgmt.secret_audit_find_value('canary-value-1f2e3d')
 ORDER BY action, version;
SELECT count(*) AS never_seen FROM secret_mgmt.secret_audit_find_value('not-a-stored-value');
-- the tables themselves stay closed
SELECT public.try($$SELECT * FROM secret_mgmt.secret_audit$$);
SELECT public.try($$SELECT secret_mgmt.secret_audit_verify('audit_b')$$);
SELECT tenant, rows_checked > 0 AS checked, broken_at, reason
  FROM secret_mgmt.secret_audit_verify();
RESET ROLE;

-- another tenant's administrator sees only its own tenant's rows
SET ROLE regress_audit_carol;
SELECT CASE WHEN principal = session_user THEN '(platform admin)' ELSE principal END AS principal,
       action, path, outcome
  FROM secret_mgmt.secret_audit_log() ORDER BY seq;
SELECT count(*) AS none FROM secret_mgmt.secret_audit_find_value('canary-value-1f2e3d');
RESET ROLE;

-- a role that belongs to no tenant is recorded in the platform tenant's trail
SELECT principal, action, path, outcome, sqlstate
  FROM secret_mgmt.secret_audit
 WHERE tenant_id = 'global' AND principal = 'regress_audit_eve';

-- no value appears anywhere in a row, in text or hex
SELECT count(*) AS rows_with_values
  FROM secret_mgmt.secret_audit a
 WHERE position('canary-value' IN a::text) > 0
    OR position(encode(convert_to('canary-value', 'UTF8'), 'hex') IN a::text) > 0;

-- the refusals above reach the table before the chains are examined
SELECT secret_mgmt.secret_audit_flush() >= 0 AS flushed;
DO $$
BEGIN
    FOR i IN 1..400 LOOP
        EXIT WHEN (SELECT pending FROM secret_mgmt.secret_audit_queue()) = 0;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;

-- the chains verify
SELECT tenant, broken_at, reason FROM secret_mgmt.secret_audit_verify()
 WHERE tenant IN ('audit_a', 'audit_b', 'global') ORDER BY tenant;

-- tampering is found: an altered row, then the same row put back
CREATE TEMP TABLE saved AS
    SELECT * FROM secret_mgmt.secret_audit WHERE tenant_id = 'audit_a' AND seq = 5;
UPDATE secret_mgmt.secret_audit SET principal = 'mallory'
 WHERE tenant_id = 'audit_a' AND seq = 5;
SELECT tenant, broken_at, reason FROM secret_mgmt.secret_audit_verify('audit_a');
UPDATE secret_mgmt.secret_audit a SET principal = s.principal
  FROM saved s WHERE a.tenant_id = 'audit_a' AND a.seq = 5;
SELECT tenant, broken_at, reason FROM secret_mgmt.secret_audit_verify('audit_a');
-- a forged hash is found too
UPDATE secret_mgmt.secret_audit SET hash = sha256(hash)
 WHERE tenant_id = 'audit_a' AND seq = 5;
SELECT tenant, broken_at, reason FROM secret_mgmt.secret_audit_verify('audit_a');
UPDATE secret_mgmt.secret_audit a SET hash = s.hash
  FROM saved s WHERE a.tenant_id = 'audit_a' AND a.seq = 5;
-- a deleted row in the middle, and the newest row deleted
DELETE FROM secret_mgmt.secret_audit WHERE tenant_id = 'audit_a' AND seq = 5;
SELECT tenant, broken_at, reason FROM secret_mgmt.secret_audit_verify('audit_a');
INSERT INTO secret_mgmt.secret_audit SELECT * FROM saved;
SELECT tenant, broken_at, reason FROM secret_mgmt.secret_audit_verify('audit_a');
CREATE TEMP TABLE last_row AS
    SELECT * FROM secret_mgmt.secret_audit WHERE tenant_id = 'audit_a'
     ORDER BY seq DESC LIMIT 1;
DELETE FROM secret_mgmt.secret_audit a USING last_row l
 WHERE a.tenant_id = l.tenant_id AND a.seq = l.seq;
SELECT tenant, broken_at IS NOT NULL AS broken, reason LIKE 'rows % to % are missing' AS truncated
  FROM secret_mgmt.secret_audit_verify('audit_a');
INSERT INTO secret_mgmt.secret_audit SELECT * FROM last_row;
SELECT tenant, broken_at, reason FROM secret_mgmt.secret_audit_verify('audit_a');

-- fail closed: when the audit row cannot be written, neither is the change
CREATE FUNCTION public.audit_unavailable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit storage unavailable';
END $$;
CREATE TRIGGER audit_unavailable BEFORE INSERT ON secret_mgmt.secret_audit
    FOR EACH ROW EXECUTE FUNCTION public.audit_unavailable();
-- (audit rows are chained and inserted when the transaction commits, so
-- that is where the failure shows)
SET ROLE regress_audit_alice;
SELECT secret_mgmt.secret_update('app/db', 'canary-value-blocked');
SELECT secret_mgmt.secret_delete('app/tmp');
BEGIN;
SELECT secret_mgmt.secret_rollback('app/db', 2);
COMMIT;
-- with audit_reads = sync a read is refused too
SELECT secret_mgmt.secret_resolve('app/db') IS NOT NULL AS read_ok;
RESET ROLE;
SET ROLE regress_audit_carol;
SELECT secret_mgmt.secret_grant('**', 'regress_audit_carol', ARRAY['read']);
RESET ROLE;
DROP TRIGGER audit_unavailable ON secret_mgmt.secret_audit;
DROP FUNCTION public.audit_unavailable();
SET ROLE regress_audit_alice;
SELECT version, state FROM secret_mgmt.secret_versions('app/db') ORDER BY version;
SELECT path, deleted_at IS NULL AS live FROM secret_mgmt.secret_list('app/') ORDER BY path;
RESET ROLE;

-- a write undone by ROLLBACK TO SAVEPOINT leaves no audit row; one kept does
SET ROLE regress_audit_alice;
BEGIN;
SAVEPOINT s1;
SELECT secret_mgmt.secret_label('app/db', 'undone', 1);
ROLLBACK TO SAVEPOINT s1;
SAVEPOINT s2;
SELECT secret_mgmt.secret_label('app/db', 'kept', 1);
RELEASE SAVEPOINT s2;
COMMIT;
RESET ROLE;
SELECT count(*) FILTER (WHERE action = 'label') AS labels
  FROM secret_mgmt.secret_audit WHERE tenant_id = 'audit_a';

-- audit_reads = off records no successful read; async queues it
SET secret_mgmt.audit_reads = off;
SET ROLE regress_audit_alice;
SELECT secret_mgmt.secret_resolve('app/db') IS NOT NULL AS read_ok;
RESET ROLE;
SET secret_mgmt.audit_reads = async;
SET ROLE regress_audit_alice;
SELECT secret_mgmt.secret_resolve('app/db', 2) IS NOT NULL AS read_ok;
RESET ROLE;
SELECT secret_mgmt.secret_audit_flush() >= 0 AS flushed;
DO $$
BEGIN
    FOR i IN 1..400 LOOP
        EXIT WHEN (SELECT pending FROM secret_mgmt.secret_audit_queue()) = 0;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT version, count(*) FROM secret_mgmt.secret_audit
 WHERE tenant_id = 'audit_a' AND action = 'read' AND outcome = 'ok'
 GROUP BY version ORDER BY version;
-- only the platform administrator flushes or inspects the queue
SET ROLE regress_audit_alice;
SELECT public.try($$SELECT secret_mgmt.secret_audit_flush()$$);
SELECT public.try($$SELECT secret_mgmt.secret_audit_queue()$$);
RESET ROLE;
RESET secret_mgmt.audit_reads;
SELECT tenant, broken_at, reason FROM secret_mgmt.secret_audit_verify()
 WHERE broken_at IS NOT NULL;
