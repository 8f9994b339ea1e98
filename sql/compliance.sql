--
-- compliance: the reports -- rotation overdue, expiring soon, never read,
-- access by principal -- show the caller's tenant only, only what the
-- caller may list, and read the audit trail only for its auditors.
--
\set VERBOSITY terse
\set SHOW_CONTEXT never

CREATE ROLE regress_comp_owner;
CREATE ROLE regress_comp_auditor;
CREATE ROLE regress_comp_reader;
CREATE ROLE regress_comp_outsider;
SELECT secret_mgmt.secret_tenant_create('comp_a');
SELECT secret_mgmt.secret_tenant_create('comp_b');
SELECT secret_mgmt.secret_tenant_add_member('comp_a', 'regress_comp_owner');
SELECT secret_mgmt.secret_tenant_add_member('comp_a', 'regress_comp_auditor');
SELECT secret_mgmt.secret_tenant_add_member('comp_a', 'regress_comp_reader');
SELECT secret_mgmt.secret_tenant_add_member('comp_b', 'regress_comp_outsider', admin => true);
SELECT secret_mgmt.secret_use_tenant('comp_a');
SELECT secret_mgmt.secret_grant('**', 'regress_comp_owner',
                                ARRAY['read', 'list', 'create', 'update', 'rotate']);
SELECT secret_mgmt.secret_grant('**', 'regress_comp_auditor', ARRAY['audit', 'list']);
SELECT secret_mgmt.secret_grant('c/a', 'regress_comp_reader', ARRAY['read', 'list']);
SELECT secret_mgmt.secret_use_tenant(NULL);

SET secret_mgmt.audit_reads = sync;
SET ROLE regress_comp_owner;
SELECT secret_mgmt.secret_create('c/a', 'comp-value-a', expires_at => now() + interval '2 days') IS NOT NULL AS created;
SELECT secret_mgmt.secret_create('c/b', 'comp-value-b', expires_at => now() + interval '60 days') IS NOT NULL AS created;
SELECT secret_mgmt.secret_create('c/c', 'comp-value-c') IS NOT NULL AS created;
SELECT secret_mgmt.secret_create('c/rot', 'comp-value-rot') IS NOT NULL AS created;
SELECT secret_mgmt.secret_create('c/later', 'comp-value-later') IS NOT NULL AS created;
SELECT secret_mgmt.secret_set_rotation('c/rot', '1 second', 'hex(8)');
SELECT secret_mgmt.secret_set_rotation('c/later', '1 day', 'hex(8)');
SELECT secret_mgmt.secret_resolve('c/a') = 'comp-value-a' AS read_ok;
SELECT secret_mgmt.secret_resolve('c/a') = 'comp-value-a' AS read_ok;
SELECT public.try($$SELECT secret_mgmt.secret_resolve('c/missing')$$);
RESET ROLE;
SET ROLE regress_comp_reader;
SELECT secret_mgmt.secret_resolve('c/a') = 'comp-value-a' AS read_ok;
SELECT public.try($$SELECT secret_mgmt.secret_resolve('c/b')$$);
RESET ROLE;
RESET secret_mgmt.audit_reads;
-- nobody runs the worker in this database: the one-second rotation falls due
SELECT pg_sleep(1.2);

SET ROLE regress_comp_owner;
-- expiring within a week, then within 90 days
SELECT path, expires_in > interval '1 day' AND expires_in <= interval '2 days' AS about_2_days
  FROM secret_mgmt.secret_expiring('7 days');
SELECT path FROM secret_mgmt.secret_expiring('90 days');
SELECT path FROM secret_mgmt.secret_expiring('90 days', 'c/b');
-- overdue for rotation: c/rot only (c/later is due tomorrow)
SELECT path, period, overdue_by > interval '0' AS overdue, state
  FROM secret_mgmt.secret_rotation_overdue();
-- the audit reports are for auditors
SELECT public.try($$SELECT count(*) FROM secret_mgmt.secret_never_read()$$);
SELECT public.try($$SELECT count(*) FROM secret_mgmt.secret_access_by_principal()$$);
RESET ROLE;

-- the reader sees only what it may list
SET ROLE regress_comp_reader;
SELECT path FROM secret_mgmt.secret_expiring('90 days');
SELECT count(*) FROM secret_mgmt.secret_rotation_overdue();
RESET ROLE;

SET ROLE regress_comp_auditor;
SELECT path FROM secret_mgmt.secret_never_read();
SELECT path FROM secret_mgmt.secret_never_read(prefix => 'c/r');
SELECT principal, action, outcome, attempts, paths
  FROM secret_mgmt.secret_access_by_principal()
 WHERE action IN ('read', 'create');
SELECT count(*) FROM secret_mgmt.secret_access_by_principal(now() + interval '1 hour');
SELECT count(*) FROM secret_mgmt.secret_access_by_principal(NULL, now() - interval '1 hour');
RESET ROLE;

-- another tenant's administrator sees none of it
SET ROLE regress_comp_outsider;
SELECT count(*) FROM secret_mgmt.secret_expiring('1000 days');
SELECT count(*) FROM secret_mgmt.secret_rotation_overdue();
SELECT count(*) FROM secret_mgmt.secret_never_read();
SELECT count(*) FROM secret_mgmt.secret_access_by_principal()
 WHERE principal LIKE 'regress_comp_owner' OR principal LIKE 'regress_comp_reader';
RESET ROLE;

-- a planted operator on the caller's search_path is not used
CREATE SCHEMA regress_comp_evil;
CREATE FUNCTION regress_comp_evil.lt(timestamptz, timestamptz) RETURNS boolean
LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR regress_comp_evil.< (LEFTARG = timestamptz, RIGHTARG = timestamptz,
                                     FUNCTION = regress_comp_evil.lt);
SET search_path = regress_comp_evil, public;
SET ROLE regress_comp_owner;
SELECT path FROM secret_mgmt.secret_rotation_overdue();
RESET ROLE;
RESET search_path;
DROP SCHEMA regress_comp_evil CASCADE;
