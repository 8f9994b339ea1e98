--
-- hijack: objects planted where a careless definer would find them.
--
-- 1. At run time (search_path hijack): a tenant role puts tables,
--    functions and an = operator for text in a schema of its own and in
--    pg_temp, puts both first on its search_path, and calls the API.
--    Everything behaves as before and none of its code runs.
-- 2. At install time: a schema named secret_mgmt pre-created by another
--    role, or holding planted objects, makes CREATE EXTENSION refuse.
--
\set VERBOSITY terse
\set SHOW_CONTEXT never

CREATE SCHEMA regress_evil AUTHORIZATION regress_app_a;
SET ROLE regress_app_a;
CREATE TABLE regress_evil.calls (what text);
CREATE FUNCTION regress_evil.note(w text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO regress_evil.calls VALUES (w);
    RETURN true;
END $$;
CREATE FUNCTION regress_evil.text_eq(a text, b text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT regress_evil.note('=') $$;
CREATE OPERATOR regress_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = regress_evil.text_eq);
CREATE FUNCTION regress_evil.now() RETURNS timestamptz LANGUAGE sql
    AS $$ SELECT regress_evil.note('now') AND false; SELECT 'epoch'::timestamptz $$;
CREATE FUNCTION regress_evil.starts_with(a text, b text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT regress_evil.note('starts_with') $$;
CREATE FUNCTION regress_evil.unnest(a text[]) RETURNS SETOF text LANGUAGE sql
    AS $$ SELECT 'x' WHERE regress_evil.note('unnest') $$;
CREATE FUNCTION regress_evil.array_agg(text) RETURNS text[] LANGUAGE sql
    AS $$ SELECT ARRAY['x'] WHERE regress_evil.note('array_agg') $$;
CREATE TABLE regress_evil.secret_item (tenant_id text, path text);
CREATE TABLE regress_evil.secret_version (tenant_id text);
CREATE TABLE regress_evil.secret_member (tenant_id text, member regrole, is_admin boolean);
INSERT INTO regress_evil.secret_member VALUES ('globex', 'regress_app_a', true);
CREATE TEMP TABLE secret_item (tenant_id text, path text);
CREATE TEMP TABLE secret_label (tenant_id text);
CREATE TEMP TABLE secret_grant (tenant_id text);
SET search_path = pg_temp, regress_evil, public, pg_catalog;

-- control: the planted operator is live for anyone who writes a plain =
SELECT 'a'::text = 'b'::text AS planted_equal;
SELECT count(*) AS control_calls FROM regress_evil.calls;
TRUNCATE regress_evil.calls;

-- the whole surface, with the planted objects first on the path
SELECT secret_mgmt.secret_create('hj/one', 'hijack-free') IS NOT NULL AS created;
SELECT secret_mgmt.secret_resolve('hj/one');
SELECT secret_mgmt.secret_update('hj/one', 'second', expected_version => 1);
SELECT secret_mgmt.secret_resolve('hj/one', 1) AS v1, secret_mgmt.secret_resolve('hj/one', 'previous') AS prev;
SELECT secret_mgmt.secret_resolve_bytea('hj/one') = convert_to('second', 'UTF8') AS bytea_ok;
SELECT secret_mgmt.secret_rollback('hj/one', 1);
SELECT secret_mgmt.secret_label('hj/one', 'stable', 2);
SELECT version, state, labels FROM secret_mgmt.secret_versions('hj/one');
SELECT path, current_version FROM secret_mgmt.secret_list('hj/');
SELECT secret_mgmt.secret_render('v=${hj/one}');
SELECT secret_mgmt.secret_set_expiry('hj/one', NULL);
SELECT secret_mgmt.secret_version_disable('hj/one', 1);
SELECT secret_mgmt.secret_version_enable('hj/one', 1);
SELECT secret_mgmt.secret_delete('hj/one');
SELECT secret_mgmt.secret_restore('hj/one');
SELECT secret_mgmt.secret_check('hj/one', 'read');
-- (the test's own comparisons name pg_catalog's operator: the planted one is first)
SELECT capability, allowed FROM secret_mgmt.secret_explain_access('hj/one')
 WHERE capability OPERATOR(pg_catalog.=) 'read';
SELECT try($$SELECT secret_mgmt.secret_use_tenant('globex')$$);
SELECT try($$SELECT secret_mgmt.secret_grant('hj/**', 'regress_app_b', ARRAY['read'])$$);
SELECT try($$SELECT secret_mgmt.secret_resolve('iso/shared', 'nope')$$);

-- none of the planted code ran
RESET search_path;
SELECT what, count(*) AS planted_calls FROM regress_evil.calls GROUP BY what;
SELECT count(*) AS planted_calls FROM regress_evil.calls;
RESET ROLE;
DROP SCHEMA regress_evil CASCADE;

-- install time: a schema named secret_mgmt made by someone else
CREATE DATABASE regress_hijack;
\c regress_hijack
\set VERBOSITY terse
CREATE ROLE regress_installer_attacker;
GRANT CREATE ON DATABASE regress_hijack TO regress_installer_attacker;
SET ROLE regress_installer_attacker;
CREATE SCHEMA secret_mgmt;
CREATE FUNCTION secret_mgmt.secret_resolve(path text) RETURNS text LANGUAGE sql AS $$ SELECT 'planted' $$;
RESET ROLE;
CREATE EXTENSION secret_mgmt;
DROP SCHEMA secret_mgmt CASCADE;
-- a schema of the installer's own, but with something planted in it
CREATE SCHEMA secret_mgmt;
CREATE TABLE secret_mgmt.secret_item (x int);
CREATE EXTENSION secret_mgmt;
DROP SCHEMA secret_mgmt CASCADE;
-- clean: installs, and the attacker owns nothing in it
CREATE EXTENSION secret_mgmt;
SELECT count(*) AS members_owned_by_others
  FROM pg_depend d
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'secret_mgmt'
  LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
  LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
 WHERE d.deptype = 'e' AND coalesce(p.proowner, c.relowner, e.extowner) <> e.extowner;
\c contrib_regression
DROP DATABASE regress_hijack;
DROP ROLE regress_installer_attacker;
