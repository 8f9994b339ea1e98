---------------------------------------------------------------------------
-- Secrets stored in an external backend (HashiCorp Vault KV version 2):
-- the outbox of writes waiting for the worker (src/outbox.c), and what the
-- store records of the backend's copy.  See docs/backends.md.
---------------------------------------------------------------------------

-- Which version of the backend's copy holds this version of ours (Vault's
-- KV version number), and when the worker last confirmed that the backend
-- held it as its newest.  NULL for local secrets and until delivered.
ALTER TABLE secret_mgmt.secret_version
    ADD COLUMN backend_version integer,
    ADD COLUMN backend_confirmed_at timestamptz;

-- One row per change of a backend-stored secret, written in the changing
-- transaction and delivered by the worker after commit, in seq order per
-- secret.  Rows name versions, never hold values: the worker decrypts the
-- local copy when it delivers.  No foreign key to secret_item: a purge
-- must still reach the backend after the secret's rows are gone.
CREATE TABLE secret_mgmt.secret_outbox (
    tenant_id        text COLLATE "C" NOT NULL
                     REFERENCES secret_mgmt.secret_tenant ON DELETE CASCADE,
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    secret_id        uuid NOT NULL,
    path             text COLLATE "C" NOT NULL,
    backend          text COLLATE "C" NOT NULL,
    op               text NOT NULL
                     CHECK (op OPERATOR(pg_catalog.=) ANY (ARRAY['write', 'disable', 'enable',
                            'destroy', 'delete', 'restore', 'purge'])),
    version          integer,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state OPERATOR(pg_catalog.=) ANY (ARRAY['pending', 'delivered', 'conflict'])),
    rebase           boolean NOT NULL DEFAULT false,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_error       text,
    last_error_at    timestamptz,
    backend_version  integer,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by       text NOT NULL,
    delivered_at     timestamptz,
    PRIMARY KEY (tenant_id, seq),
    CHECK ((op OPERATOR(pg_catalog.=) ANY (ARRAY['delete', 'restore', 'purge'])) OPERATOR(pg_catalog.=)
           (version IS NULL))
);
CREATE INDEX secret_outbox_open
    ON secret_mgmt.secret_outbox (tenant_id, path, seq)
    WHERE state OPERATOR(pg_catalog.<>) 'delivered';
SELECT secret_mgmt._protect('secret_mgmt.secret_outbox');

-- Move the secrets matching a pattern to another backend ('local' or a
-- registered backend); returns how many moved.  Needs admin on each path.
CREATE FUNCTION secret_mgmt.secret_migrate(pattern text, to_backend text)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_migrate';

-- The outbox rows of the caller's tenant under a prefix (list capability).
CREATE FUNCTION secret_mgmt.secret_outbox_status(prefix text DEFAULT '', include_delivered boolean DEFAULT false)
RETURNS TABLE (seq bigint, path text, backend text, op text, version integer,
               state text, attempts integer, next_attempt_at timestamptz,
               last_error text, backend_version integer, created_at timestamptz,
               delivered_at timestamptz)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_outbox_status';

-- Deliver a secret's conflicting outbox rows after all, over the backend's
-- current version (admin on the path); returns how many rows were re-queued.
CREATE FUNCTION secret_mgmt.secret_outbox_retry(path text)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_outbox_retry';
