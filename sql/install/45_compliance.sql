
---------------------------------------------------------------------------
-- Compliance reports
---------------------------------------------------------------------------

-- Each report is an SQL function that runs with the caller's rights (not
-- SECURITY DEFINER) over the C functions above, which identify and check
-- the caller: a report shows only the secrets the caller may list and,
-- where it reads the audit trail, only to the tenant's auditors.  They
-- return metadata, never a value.

-- Secrets whose rotation is overdue: due and not yet done (the worker is
-- behind, or the rotation keeps failing).
CREATE FUNCTION secret_mgmt.secret_rotation_overdue(prefix text DEFAULT '')
RETURNS TABLE (path text, period interval, due_at timestamptz,
               overdue_by interval, state text, attempts integer,
               last_rotated_at timestamptz, last_error text)
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.path, r.period, r.due_at,
           pg_catalog.now() OPERATOR(pg_catalog.-) r.due_at,
           r.state, r.attempts, r.last_rotated_at, r.last_error
      FROM secret_mgmt.secret_rotations(prefix) AS r
     WHERE r.due_at OPERATOR(pg_catalog.<) pg_catalog.now()
     ORDER BY r.due_at, r.path
$$;

-- Secrets that expire within the given interval (or have expired).
CREATE FUNCTION secret_mgmt.secret_expiring(
    within interval DEFAULT '30 days', prefix text DEFAULT '')
RETURNS TABLE (path text, scope text, scope_id text, type text,
               expires_at timestamptz, expires_in interval)
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.path, l.scope, l.scope_id, l.type, l.expires_at,
           l.expires_at OPERATOR(pg_catalog.-) pg_catalog.now()
      FROM secret_mgmt.secret_list(prefix) AS l
     WHERE l.expires_at OPERATOR(pg_catalog.<=)
           (pg_catalog.now() OPERATOR(pg_catalog.+) within)
     ORDER BY l.expires_at, l.path
$$;

-- Secrets with no successful read recorded since `since` (all time when
-- null).  Reads are recorded only while secret_mgmt.audit_reads is sync
-- or async; auditors of the tenant only.
CREATE FUNCTION secret_mgmt.secret_never_read(
    since timestamptz DEFAULT NULL, prefix text DEFAULT '')
RETURNS TABLE (path text, scope text, scope_id text, created_at timestamptz,
               current_version integer)
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH read_paths AS MATERIALIZED (
        SELECT DISTINCT a.path
          FROM secret_mgmt.secret_audit_log(since, 2147483647) AS a
         WHERE a.action OPERATOR(pg_catalog.=) 'read'
           AND a.outcome OPERATOR(pg_catalog.=) 'ok')
    SELECT l.path, l.scope, l.scope_id, l.created_at, l.current_version
      FROM secret_mgmt.secret_list(prefix) AS l
     WHERE NOT EXISTS (SELECT 1 FROM read_paths AS r
                        WHERE r.path OPERATOR(pg_catalog.=) l.path)
     ORDER BY l.path
$$;

-- Attempts by principal over a period: how many, on how many paths, with
-- which outcome.  Auditors of the tenant only.
CREATE FUNCTION secret_mgmt.secret_access_by_principal(
    since timestamptz DEFAULT (pg_catalog.now() OPERATOR(pg_catalog.-) interval '30 days'),
    until timestamptz DEFAULT NULL)
RETURNS TABLE (principal text, action text, outcome text, attempts bigint,
               paths bigint, first_at timestamptz, last_at timestamptz)
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.principal, a.action, a.outcome, pg_catalog.count(*),
           pg_catalog.count(DISTINCT a.path), pg_catalog.min(a.logged_at),
           pg_catalog.max(a.logged_at)
      FROM secret_mgmt.secret_audit_log(since, 2147483647) AS a
     WHERE (until IS NULL OR a.logged_at OPERATOR(pg_catalog.<) until)
     GROUP BY a.principal, a.action, a.outcome
     ORDER BY a.principal, a.action, a.outcome
$$;
