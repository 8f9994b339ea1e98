
---------------------------------------------------------------------------
-- External backends and KMS (backend.c, backend_vault.c, kms.c)
---------------------------------------------------------------------------

-- Registered secret backends.  Rows belong to the platform tenant; the
-- configuration holds no credential, only the path of the global-tenant
-- secret that does.
CREATE TABLE secret_mgmt.secret_backend (
    tenant_id        text COLLATE "C" NOT NULL DEFAULT 'global'
                     REFERENCES secret_mgmt.secret_tenant
                     CHECK (tenant_id OPERATOR(pg_catalog.=) 'global'),
    name             text COLLATE "C" NOT NULL
                     CHECK (name OPERATOR(pg_catalog.~) '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    kind             text NOT NULL
                     CHECK (kind OPERATOR(pg_catalog.=) ANY (ARRAY['vault', 'aws', 'azure', 'gcp'])),
    config           jsonb NOT NULL,
    credentials_path text COLLATE "C" NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by       text NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
SELECT secret_mgmt._protect('secret_mgmt.secret_backend');

-- Register a backend (platform administrator only; checked in C).
CREATE FUNCTION secret_mgmt.secret_backend_create(
    name text, kind text, config jsonb, credentials_path text DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_backend_create';

-- Rewrap a tenant's data keys (every tenant's when null: platform
-- administrator only; a tenant's administrators for their own; checked in
-- C).  Returns how many data keys were rewrapped.
CREATE FUNCTION secret_mgmt.secret_rekey(tenant text DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_rekey';
