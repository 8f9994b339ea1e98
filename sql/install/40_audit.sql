
---------------------------------------------------------------------------
-- Audit trail (audit.c, flusher.c)
---------------------------------------------------------------------------

-- One row per attempt, hash-chained per tenant: hash = SHA-256 over the
-- row's canonical fields and prev_hash (see audit.c).  fingerprint is
-- HMAC-SHA256 of the value served or written, under a per-tenant key
-- derived from the root key; the value itself is never stored.
CREATE TABLE secret_mgmt.secret_audit (
    tenant_id         text COLLATE "C" NOT NULL,
    seq               bigint NOT NULL CHECK (seq OPERATOR(pg_catalog.>) 0),
    logged_at         timestamptz NOT NULL,
    principal         text NOT NULL,
    session_user_name text NOT NULL,
    client_addr       text,
    application_name  text,
    backend_pid       integer NOT NULL,
    action            text NOT NULL,
    path              text COLLATE "C",
    secret_id         uuid,
    version           integer,
    outcome           text NOT NULL
                      CHECK (outcome OPERATOR(pg_catalog.=) ANY
                             (ARRAY['ok', 'denied', 'not_found', 'error'])),
    sqlstate          text,
    fingerprint       bytea,
    prev_hash         bytea NOT NULL,
    hash              bytea NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX secret_audit_fingerprint ON secret_mgmt.secret_audit (tenant_id, fingerprint)
    WHERE fingerprint IS NOT NULL;
CREATE INDEX secret_audit_logged_at ON secret_mgmt.secret_audit (tenant_id, logged_at);

-- The head of each tenant's chain: the last sequence number and hash.
-- Writers lock this row, so one tenant's chain never forks.
CREATE TABLE secret_mgmt.secret_audit_head (
    tenant_id text COLLATE "C" PRIMARY KEY,
    seq       bigint NOT NULL,
    hash      bytea
);

DO $rls$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['secret_audit', 'secret_audit_head']
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE secret_mgmt.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format('ALTER TABLE secret_mgmt.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format(
            'CREATE POLICY tenant_isolation ON secret_mgmt.%I'
            ' USING (tenant_id OPERATOR(pg_catalog.=) secret_mgmt.current_tenant())'
            ' WITH CHECK (tenant_id OPERATOR(pg_catalog.=) secret_mgmt.current_tenant())', t);
        EXECUTE pg_catalog.format('REVOKE ALL ON TABLE secret_mgmt.%I FROM PUBLIC', t);
        PERFORM pg_catalog.pg_extension_config_dump(
            pg_catalog.format('secret_mgmt.%I', t)::pg_catalog.regclass, '');
    END LOOP;
END
$rls$;

-- Verify the chains: one row per tenant checked; broken_at is the sequence
-- number of the first broken link (null where the chain verifies).
CREATE FUNCTION secret_mgmt.secret_audit_verify(tenant text DEFAULT NULL)
RETURNS TABLE (tenant text, rows_checked bigint, broken_at bigint, reason text)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_audit_verify';

-- Leak response: who was served or wrote this value, in the caller's tenant.
CREATE FUNCTION secret_mgmt.secret_audit_find_value(value text)
RETURNS TABLE (principal text, action text, path text, version integer,
               times bigint, first_at timestamptz, last_at timestamptz)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_audit_find_value';

-- The caller's tenant's audit rows, oldest first.
CREATE FUNCTION secret_mgmt.secret_audit_log(
    since timestamptz DEFAULT NULL, max_rows integer DEFAULT 1000)
RETURNS TABLE (seq bigint, logged_at timestamptz, principal text,
               session_user_name text, client_addr text, application_name text,
               backend_pid integer, action text, path text, secret_id uuid,
               version integer, outcome text, sqlstate text, fingerprint bytea)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_audit_log';

-- Write this database's queued audit records now (platform administrator).
CREATE FUNCTION secret_mgmt.secret_audit_flush()
RETURNS integer
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_audit_flush';

-- The audit queue: pending records, capacity, and counters (platform
-- administrator).  rejected counts requests refused because the queue
-- stayed full.
CREATE FUNCTION secret_mgmt.secret_audit_queue(
    OUT pending integer, OUT capacity integer, OUT enqueued bigint,
    OUT flushed bigint, OUT rejected bigint)
RETURNS record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_audit_queue';
