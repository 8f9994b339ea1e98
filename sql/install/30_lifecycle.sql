
---------------------------------------------------------------------------
-- Lifecycle: rotation, expiry, retention, events and their delivery.
-- Worked by the background worker (src/worker.c); see docs/rotation.md,
-- docs/lifecycle.md and docs/events.md.
---------------------------------------------------------------------------

-- Per-secret lifecycle state: the rotation state machine (rotation_state
-- idle -> pending -> set -> tested -> idle), when the worker next acts on
-- the secret (due_at), the replaced version during its grace period,
-- retention (max_versions) and the expiry times already warned about and
-- marked.  A secret without a policy has no row.
CREATE TABLE secret_mgmt.secret_lifecycle (
    tenant_id        text COLLATE "C" NOT NULL,
    secret_id        uuid NOT NULL,
    hook             regprocedure,
    test_hook        regprocedure,
    hook_owner       regrole,
    grace            interval,
    rotation_state   text NOT NULL DEFAULT 'idle'
                     CHECK (rotation_state OPERATOR(pg_catalog.=) ANY
                            (ARRAY['idle', 'pending', 'set', 'tested'])),
    pending_version  integer,
    due_at           timestamptz,
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    last_error_at    timestamptz,
    last_rotated_at  timestamptz,
    grace_version    integer,
    grace_until      timestamptz,
    max_versions     integer CHECK (max_versions OPERATOR(pg_catalog.>) 0),
    warned_for       timestamptz,
    expired_for      timestamptz,
    PRIMARY KEY (tenant_id, secret_id),
    FOREIGN KEY (tenant_id, secret_id)
        REFERENCES secret_mgmt.secret_item ON DELETE CASCADE,
    CHECK ((rotation_state OPERATOR(pg_catalog.=) 'idle') OPERATOR(pg_catalog.=)
           (pending_version IS NULL))
);
CREATE INDEX secret_lifecycle_due
    ON secret_mgmt.secret_lifecycle (tenant_id, due_at)
    WHERE due_at IS NOT NULL;
CREATE INDEX secret_lifecycle_grace
    ON secret_mgmt.secret_lifecycle (tenant_id, grace_until)
    WHERE grace_until IS NOT NULL;

-- The expiry and purge sweeps look secrets up by time.
CREATE INDEX secret_item_expiry
    ON secret_mgmt.secret_item (tenant_id, expires_at)
    WHERE expires_at IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX secret_item_deleted
    ON secret_mgmt.secret_item (tenant_id, deleted_at)
    WHERE deleted_at IS NOT NULL;

-- The event feed: one row per change, numbered per tenant without gaps in
-- commit order (numbers come from secret_event_counter at commit).  Ids,
-- names, states and times only -- never a value.  Events outlive the
-- secrets they describe.
CREATE TABLE secret_mgmt.secret_event (
    tenant_id    text COLLATE "C" NOT NULL,
    event_id     bigint NOT NULL CHECK (event_id OPERATOR(pg_catalog.>) 0),
    notify_id    uuid NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    kind         text NOT NULL,
    secret_id    uuid,
    path         text COLLATE "C",
    version      integer,
    actor        text NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, event_id),
    UNIQUE (notify_id)
);

CREATE TABLE secret_mgmt.secret_event_counter (
    tenant_id      text COLLATE "C" PRIMARY KEY
                   REFERENCES secret_mgmt.secret_tenant ON DELETE CASCADE,
    last_event_id  bigint NOT NULL
);

-- Where a tenant's events are delivered.  Credentials are a secret of the
-- tenant, named by path; the configuration holds no secret.
CREATE TABLE secret_mgmt.secret_sink (
    tenant_id        text COLLATE "C" NOT NULL
                     REFERENCES secret_mgmt.secret_tenant ON DELETE CASCADE,
    name             text COLLATE "C" NOT NULL
                     CHECK (name OPERATOR(pg_catalog.~) '^[A-Za-z][A-Za-z0-9._-]{0,62}$'),
    kind             text NOT NULL
                     CHECK (kind OPERATOR(pg_catalog.=) ANY (ARRAY['webhook', 'rabbitmq'])),
    config           jsonb NOT NULL,
    credentials_path text COLLATE "C",
    enabled          boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by       text NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- One row per (sink, event): the delivery state.  Written with the event,
-- so nothing is lost between a commit and its delivery.
CREATE TABLE secret_mgmt.secret_delivery (
    tenant_id        text COLLATE "C" NOT NULL,
    sink             text COLLATE "C" NOT NULL,
    event_id         bigint NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state OPERATOR(pg_catalog.=) ANY (ARRAY['pending', 'delivered'])),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_error       text,
    delivered_at     timestamptz,
    PRIMARY KEY (tenant_id, sink, event_id),
    FOREIGN KEY (tenant_id, sink)
        REFERENCES secret_mgmt.secret_sink ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, event_id)
        REFERENCES secret_mgmt.secret_event ON DELETE CASCADE
);
CREATE INDEX secret_delivery_due
    ON secret_mgmt.secret_delivery (next_attempt_at)
    WHERE state OPERATOR(pg_catalog.=) 'pending';

-- Row-level security and dumping, as for the store's tables.
SELECT secret_mgmt._protect(t::pg_catalog.regclass)
  FROM pg_catalog.unnest(ARRAY['secret_mgmt.secret_lifecycle', 'secret_mgmt.secret_event', 'secret_mgmt.secret_event_counter', 'secret_mgmt.secret_sink', 'secret_mgmt.secret_delivery']) AS t;

---------------------------------------------------------------------------
-- Rotation and retention
---------------------------------------------------------------------------

CREATE FUNCTION secret_mgmt.secret_set_rotation(
    path text, period interval, generator text DEFAULT NULL,
    hook regprocedure DEFAULT NULL, test_hook regprocedure DEFAULT NULL,
    grace interval DEFAULT NULL)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_set_rotation';

CREATE FUNCTION secret_mgmt.secret_rotate(path text, value text DEFAULT NULL)
RETURNS integer LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_rotate';

CREATE FUNCTION secret_mgmt.secret_rotations(prefix text DEFAULT '')
RETURNS TABLE (path text, period interval, generator text, hook text,
               test_hook text, state text, pending_version integer,
               current_version integer, due_at timestamptz, attempts integer,
               last_error text, last_error_at timestamptz,
               last_rotated_at timestamptz, max_versions integer)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_rotations';

CREATE FUNCTION secret_mgmt.secret_set_max_versions(path text, max_versions integer)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_set_max_versions';

-- The built-in rotation target pg_role (hook and test hook).
CREATE FUNCTION secret_mgmt.secret_target_pg_role(path text, version integer)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_target_pg_role';

CREATE FUNCTION secret_mgmt.secret_test_pg_role(path text, version integer)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_test_pg_role';

---------------------------------------------------------------------------
-- Events and sinks
---------------------------------------------------------------------------

CREATE FUNCTION secret_mgmt.secret_events(since bigint DEFAULT 0, max_events integer DEFAULT 1000)
RETURNS TABLE (event_id bigint, occurred_at timestamptz, kind text, path text,
               version integer, actor text, detail jsonb, notify_id text)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_events';

CREATE FUNCTION secret_mgmt.secret_sink_create(
    name text, kind text, config jsonb, credentials_path text DEFAULT NULL)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_sink_create';

CREATE FUNCTION secret_mgmt.secret_sink_drop(name text)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_sink_drop';

CREATE FUNCTION secret_mgmt.secret_sinks()
RETURNS TABLE (name text, kind text, config jsonb, credentials_path text,
               enabled boolean, pending bigint, delivered bigint,
               last_delivered_at timestamptz, last_error text)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_sinks';

CREATE FUNCTION secret_mgmt.secret_deliveries(sink text, since bigint DEFAULT 0)
RETURNS TABLE (event_id bigint, state text, attempts integer,
               next_attempt_at timestamptz, last_error text,
               delivered_at timestamptz)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_deliveries';
