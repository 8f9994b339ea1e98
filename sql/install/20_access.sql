-- Access control: grants on path patterns, token brokers and their keys.

-- Grants and denies.  A grantee is a role (grantee_role) or a token
-- subject, token group, or -- in the platform tenant -- another tenant
-- (grantee_name).  One row per (pattern, grantee, allow/deny).
CREATE TABLE secret_mgmt.secret_grant (
    tenant_id     text COLLATE "C" NOT NULL
                  REFERENCES secret_mgmt.secret_tenant ON DELETE CASCADE,
    pattern       text COLLATE "C" NOT NULL,
    grantee_kind  text COLLATE "C" NOT NULL
                  CHECK (grantee_kind OPERATOR(pg_catalog.=) ANY
                         (ARRAY['role', 'token', 'group', 'tenant'])),
    grantee_role  regrole,
    grantee_name  text COLLATE "C",
    deny          boolean NOT NULL DEFAULT false,
    capabilities  text[] NOT NULL,
    expires_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by    text NOT NULL,
    CHECK ((grantee_kind OPERATOR(pg_catalog.=) 'role') OPERATOR(pg_catalog.=)
           (grantee_role IS NOT NULL AND grantee_name IS NULL)),
    CHECK (grantee_kind OPERATOR(pg_catalog.=) 'role' OR grantee_name IS NOT NULL)
);
CREATE UNIQUE INDEX secret_grant_rule ON secret_mgmt.secret_grant
    (tenant_id, pattern, grantee_kind, grantee_role, grantee_name, deny) NULLS NOT DISTINCT;

-- Roles that may call secret_assume() for a tenant.  A broker has no
-- access of its own.
CREATE TABLE secret_mgmt.secret_broker (
    tenant_id  text COLLATE "C" NOT NULL
               REFERENCES secret_mgmt.secret_tenant ON DELETE CASCADE,
    role       regrole NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    added_by   text NOT NULL,
    PRIMARY KEY (tenant_id, role)
);

-- Keys that may sign tokens for a tenant.  The key material -- an HS256
-- shared secret, or a PEM public key -- is sealed like a secret value,
-- bound to (tenant, key_uuid, version 1, data key).
CREATE TABLE secret_mgmt.secret_token_key (
    tenant_id    text COLLATE "C" NOT NULL
                 REFERENCES secret_mgmt.secret_tenant ON DELETE CASCADE,
    kid          text COLLATE "C" NOT NULL
                 CHECK (pg_catalog.length(kid) OPERATOR(pg_catalog.<=) 255),
    alg          text NOT NULL
                 CHECK (alg OPERATOR(pg_catalog.=) ANY (ARRAY['HS256', 'RS256', 'ES256'])),
    key_uuid     uuid NOT NULL,
    key_id       integer NOT NULL,
    key_envelope bytea NOT NULL
                 CHECK (pg_catalog.length(key_envelope) OPERATOR(pg_catalog.>=) 38 AND
                        pg_catalog.get_byte(key_envelope, 0) OPERATOR(pg_catalog.=) 1),
    audience     text,
    issuer       text,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by   text NOT NULL,
    PRIMARY KEY (tenant_id, kid),
    FOREIGN KEY (tenant_id, key_id) REFERENCES secret_mgmt.secret_data_key
);

SELECT secret_mgmt._protect(t::pg_catalog.regclass)
  FROM pg_catalog.unnest(ARRAY['secret_mgmt.secret_grant', 'secret_mgmt.secret_broker', 'secret_mgmt.secret_token_key']) AS t;

CREATE FUNCTION secret_mgmt.secret_grant(
    pattern text, grantee text, capabilities text[], expires_at timestamptz DEFAULT NULL)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_grant';

CREATE FUNCTION secret_mgmt.secret_deny(pattern text, grantee text, capabilities text[])
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_deny';

CREATE FUNCTION secret_mgmt.secret_revoke(
    pattern text, grantee text, capabilities text[] DEFAULT NULL)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_revoke';

CREATE FUNCTION secret_mgmt.secret_check(
    path text, capability text, principal text DEFAULT NULL)
RETURNS boolean LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_check';

CREATE FUNCTION secret_mgmt.secret_explain_access(path text, principal text DEFAULT NULL)
RETURNS TABLE (capability text, allowed boolean, rule text, pattern text,
               grantee text, expires_at timestamptz, scope text, scope_id text)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_explain_access';

CREATE FUNCTION secret_mgmt.secret_grants()
RETURNS TABLE (pattern text, grantee text, capabilities text[], deny boolean,
               expires_at timestamptz)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_grants';

CREATE FUNCTION secret_mgmt.secret_token_key_add(
    tenant text, kid text, alg text, key text,
    audience text DEFAULT NULL, issuer text DEFAULT NULL)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_token_key_add';

CREATE FUNCTION secret_mgmt.secret_token_key_remove(tenant text, kid text)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_token_key_remove';

CREATE FUNCTION secret_mgmt.secret_broker_add(tenant text, role regrole)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_broker_add';

CREATE FUNCTION secret_mgmt.secret_broker_remove(tenant text, role regrole)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_broker_remove';

CREATE FUNCTION secret_mgmt.secret_assume(token text)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_assume';

CREATE FUNCTION secret_mgmt.secret_render(template text)
RETURNS text LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_render';
