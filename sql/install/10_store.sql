-- The store: tenants, members, data keys, secrets, versions, labels.
-- Refuse to install unless the library is preloaded and the target schema is
-- a fresh one belonging to the installing superuser (not pre-created by an
-- attacker with objects of its own in it).
CREATE FUNCTION secret_mgmt._install_check()
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_mgmt_install_check';
REVOKE ALL ON FUNCTION secret_mgmt._install_check() FROM PUBLIC;
SELECT secret_mgmt._install_check();
DROP FUNCTION secret_mgmt._install_check();

-- The tenant the current statement acts for, or NULL; used by the RLS
-- policies.  It only reports the selection, it grants nothing.
CREATE FUNCTION secret_mgmt.current_tenant()
RETURNS text
LANGUAGE C STABLE PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'secret_mgmt_current_tenant';

-- Install-time helper, dropped again by the last part: give a table of the
-- extension row-level security (enabled and forced, one policy admitting
-- only the rows of the tenant the statement acts for), no privileges for
-- anybody but its owner, and a place in pg_dump (rows matching `dump`).
CREATE FUNCTION secret_mgmt._protect(tbl pg_catalog.regclass, dump text DEFAULT '')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $protect$
BEGIN
    EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE pg_catalog.format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE pg_catalog.format(
        'CREATE POLICY tenant_isolation ON %s'
        ' USING (tenant_id OPERATOR(pg_catalog.=) secret_mgmt.current_tenant())'
        ' WITH CHECK (tenant_id OPERATOR(pg_catalog.=) secret_mgmt.current_tenant())', tbl);
    EXECUTE pg_catalog.format('REVOKE ALL ON TABLE %s FROM PUBLIC', tbl);
    PERFORM pg_catalog.pg_extension_config_dump(tbl, dump);
END
$protect$;

---------------------------------------------------------------------------
-- Tables
---------------------------------------------------------------------------

CREATE TABLE secret_mgmt.secret_tenant (
    tenant_id        text COLLATE "C" PRIMARY KEY
                     CHECK (tenant_id OPERATOR(pg_catalog.~) '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    kms              text NOT NULL DEFAULT 'local',
    kms_config       jsonb NOT NULL DEFAULT '{}',
    purge_protection boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by       text NOT NULL
);

CREATE TABLE secret_mgmt.secret_member (
    tenant_id   text COLLATE "C" NOT NULL REFERENCES secret_mgmt.secret_tenant ON DELETE CASCADE,
    member      regrole NOT NULL,
    is_admin    boolean NOT NULL DEFAULT false,
    added_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    added_by    text NOT NULL,
    PRIMARY KEY (tenant_id, member)
);

-- Per-tenant data keys, only ever stored wrapped by the root key.  kek_id
-- names the root key that wrapped them, so a server started with another
-- root key can say so instead of failing obscurely.
CREATE TABLE secret_mgmt.secret_data_key (
    tenant_id   text COLLATE "C" NOT NULL REFERENCES secret_mgmt.secret_tenant ON DELETE CASCADE,
    key_id      integer NOT NULL CHECK (key_id OPERATOR(pg_catalog.>) 0),
    kek_id      text NOT NULL,
    wrapped     bytea NOT NULL,
    encryptions bigint NOT NULL DEFAULT 0,
    state       text NOT NULL DEFAULT 'active'
                CHECK (state OPERATOR(pg_catalog.=) ANY (ARRAY['active', 'retired'])),
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    retired_at  timestamptz,
    PRIMARY KEY (tenant_id, key_id)
);
CREATE UNIQUE INDEX secret_data_key_one_active
    ON secret_mgmt.secret_data_key (tenant_id)
    WHERE state OPERATOR(pg_catalog.=) 'active';

-- Secret metadata.  scope_id is '' where the scope has none (organization,
-- global), so that the unique key holds without NULL loopholes.  Key text
-- columns compare bytes (COLLATE "C"): paths are case-sensitive and exact,
-- whatever the database's locale.
CREATE TABLE secret_mgmt.secret_item (
    tenant_id       text COLLATE "C" NOT NULL REFERENCES secret_mgmt.secret_tenant,
    secret_id       uuid NOT NULL,
    path            text COLLATE "C" NOT NULL,
    scope           text COLLATE "C" NOT NULL DEFAULT 'organization'
                    CHECK (scope OPERATOR(pg_catalog.=) ANY
                           (ARRAY['global', 'organization', 'team', 'project', 'user'])),
    scope_id        text COLLATE "C" NOT NULL DEFAULT '',
    type            text NOT NULL DEFAULT 'generic',
    description     text,
    tags            jsonb NOT NULL DEFAULT '{}',
    backend         text NOT NULL DEFAULT 'local',
    expires_at      timestamptz,
    rotation_period interval,
    generator       text,
    last_version    integer NOT NULL DEFAULT 0,
    current_version integer NOT NULL DEFAULT 1
                    CHECK (current_version OPERATOR(pg_catalog.>) 0),
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by      text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_by      text NOT NULL,
    deleted_at      timestamptz,
    deleted_by      text,
    PRIMARY KEY (tenant_id, secret_id),
    CONSTRAINT secret_item_path_key UNIQUE (tenant_id, path, scope, scope_id)
);

-- Immutable encrypted versions.  The envelope is the only place a value
-- lives; the CHECK refuses anything that is not an envelope of ours, so no
-- write path (COPY, restore, a careless INSERT) can store a plain value.
CREATE TABLE secret_mgmt.secret_version (
    tenant_id    text COLLATE "C" NOT NULL,
    secret_id    uuid NOT NULL,
    version      integer NOT NULL CHECK (version OPERATOR(pg_catalog.>) 0),
    state        text NOT NULL DEFAULT 'enabled'
                 CHECK (state OPERATOR(pg_catalog.=) ANY (ARRAY['enabled', 'disabled', 'destroyed'])),
    key_id       integer,
    envelope     bytea,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by   text NOT NULL,
    expires_at   timestamptz,
    destroyed_at timestamptz,
    PRIMARY KEY (tenant_id, secret_id, version),
    FOREIGN KEY (tenant_id, secret_id)
        REFERENCES secret_mgmt.secret_item ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, key_id)
        REFERENCES secret_mgmt.secret_data_key,
    CHECK ((state OPERATOR(pg_catalog.=) 'destroyed') OPERATOR(pg_catalog.=)
           (envelope IS NULL AND key_id IS NULL)),
    CHECK (envelope IS NULL OR
           (pg_catalog.length(envelope) OPERATOR(pg_catalog.>=) 38 AND
            pg_catalog.get_byte(envelope, 0) OPERATOR(pg_catalog.=) 1))
);
ALTER TABLE secret_mgmt.secret_version ALTER COLUMN envelope SET STORAGE EXTERNAL;
-- A nonce is never used twice under one data key (bytes 6..17 of the envelope).
CREATE UNIQUE INDEX secret_version_nonce_unique
    ON secret_mgmt.secret_version
       (tenant_id, key_id, pg_catalog.substr(envelope, 7, 12))
    WHERE envelope IS NOT NULL;

-- Labels (staging labels / aliases): each names exactly one version.  The
-- "current" label is secret_item.current_version and nowhere else.
CREATE TABLE secret_mgmt.secret_label (
    tenant_id  text COLLATE "C" NOT NULL,
    secret_id  uuid NOT NULL,
    label      text COLLATE "C" NOT NULL
               CHECK (label OPERATOR(pg_catalog.~) '^[A-Za-z][A-Za-z0-9._-]{0,63}$'
                      AND label OPERATOR(pg_catalog.<>) 'current'),
    version    integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (tenant_id, secret_id, label),
    FOREIGN KEY (tenant_id, secret_id, version)
        REFERENCES secret_mgmt.secret_version ON DELETE CASCADE
);

-- The platform tenant.
INSERT INTO secret_mgmt.secret_tenant (tenant_id, created_by)
    VALUES ('global', CURRENT_USER);

-- Row-level security: enabled and forced everywhere, no table privilege to
-- anybody but the owner.  A policy admits only the rows of the tenant the
-- current statement acts for.  pg_dump carries every row but the platform
-- tenant's own, which CREATE EXTENSION makes.
SELECT secret_mgmt._protect('secret_mgmt.secret_tenant',
                            'WHERE tenant_id OPERATOR(pg_catalog.<>) ''global''');
SELECT secret_mgmt._protect(t::pg_catalog.regclass)
  FROM pg_catalog.unnest(ARRAY['secret_mgmt.secret_member', 'secret_mgmt.secret_data_key',
                               'secret_mgmt.secret_item', 'secret_mgmt.secret_version',
                               'secret_mgmt.secret_label']) AS t;

---------------------------------------------------------------------------
-- Tenants and context
---------------------------------------------------------------------------

CREATE FUNCTION secret_mgmt.secret_tenant_create(
    tenant text, kms text DEFAULT 'local', kms_config jsonb DEFAULT '{}')
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_tenant_create';

CREATE FUNCTION secret_mgmt.secret_tenant_add_member(
    tenant text, member regrole, admin boolean DEFAULT false)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_tenant_add_member';

CREATE FUNCTION secret_mgmt.secret_tenant_remove_member(tenant text, member regrole)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_tenant_remove_member';

CREATE FUNCTION secret_mgmt.secret_tenant_set_purge_protection(tenant text, enabled boolean)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_tenant_set_purge_protection';

CREATE FUNCTION secret_mgmt.secret_use_tenant(tenant text, local boolean DEFAULT false)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_use_tenant';

CREATE FUNCTION secret_mgmt.secret_set_context(
    team text DEFAULT NULL, project text DEFAULT NULL, "user" text DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_set_context';

---------------------------------------------------------------------------
-- Secrets
---------------------------------------------------------------------------

CREATE FUNCTION secret_mgmt.secret_create(
    path text, value text, type text DEFAULT 'generic',
    description text DEFAULT NULL, scope text DEFAULT 'organization',
    scope_id text DEFAULT NULL, expires_at timestamptz DEFAULT NULL,
    rotation_period interval DEFAULT NULL, generator text DEFAULT NULL,
    backend text DEFAULT 'local', tags jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_create_text';

CREATE FUNCTION secret_mgmt.secret_create(
    path text, value bytea, type text DEFAULT 'generic',
    description text DEFAULT NULL, scope text DEFAULT 'organization',
    scope_id text DEFAULT NULL, expires_at timestamptz DEFAULT NULL,
    rotation_period interval DEFAULT NULL, generator text DEFAULT NULL,
    backend text DEFAULT 'local', tags jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_create_bytea';

CREATE FUNCTION secret_mgmt.secret_create(
    path text, value jsonb, type text DEFAULT 'json',
    description text DEFAULT NULL, scope text DEFAULT 'organization',
    scope_id text DEFAULT NULL, expires_at timestamptz DEFAULT NULL,
    rotation_period interval DEFAULT NULL, generator text DEFAULT NULL,
    backend text DEFAULT 'local', tags jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_create_jsonb';

-- Resolution: current version, a version number, or a label.  fresh asks
-- an external backend for its current version (see docs/backends.md).
CREATE FUNCTION secret_mgmt.secret_resolve(path text, fresh boolean DEFAULT false)
RETURNS text LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_resolve_fresh';
CREATE FUNCTION secret_mgmt.secret_resolve(path text, version integer)
RETURNS text LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_resolve_text';
CREATE FUNCTION secret_mgmt.secret_resolve(path text, label text)
RETURNS text LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_resolve_text';

CREATE FUNCTION secret_mgmt.secret_resolve_jsonb(path text)
RETURNS jsonb LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_resolve_jsonb';
CREATE FUNCTION secret_mgmt.secret_resolve_jsonb(path text, version integer)
RETURNS jsonb LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_resolve_jsonb';
CREATE FUNCTION secret_mgmt.secret_resolve_jsonb(path text, label text)
RETURNS jsonb LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_resolve_jsonb';

CREATE FUNCTION secret_mgmt.secret_resolve_bytea(path text)
RETURNS bytea LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_resolve_bytea';
CREATE FUNCTION secret_mgmt.secret_resolve_bytea(path text, version integer)
RETURNS bytea LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_resolve_bytea';
CREATE FUNCTION secret_mgmt.secret_resolve_bytea(path text, label text)
RETURNS bytea LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_resolve_bytea';

CREATE FUNCTION secret_mgmt.secret_update(
    path text, value text, expected_version integer DEFAULT NULL)
RETURNS integer LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_update_text';
CREATE FUNCTION secret_mgmt.secret_update(
    path text, value bytea, expected_version integer DEFAULT NULL)
RETURNS integer LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_update_bytea';
CREATE FUNCTION secret_mgmt.secret_update(
    path text, value jsonb, expected_version integer DEFAULT NULL)
RETURNS integer LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_update_jsonb';

CREATE FUNCTION secret_mgmt.secret_rollback(path text, to_version integer)
RETURNS integer LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_rollback';

CREATE FUNCTION secret_mgmt.secret_versions(path text)
RETURNS TABLE (version integer, state text, labels text[],
               created_at timestamptz, created_by text, expires_at timestamptz)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_versions';

CREATE FUNCTION secret_mgmt.secret_list(prefix text DEFAULT '', include_deleted boolean DEFAULT false)
RETURNS TABLE (path text, scope text, scope_id text, type text,
               description text, tags jsonb, backend text,
               current_version integer, latest_version integer,
               created_at timestamptz, updated_at timestamptz,
               expires_at timestamptz, deleted_at timestamptz)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_list';

CREATE FUNCTION secret_mgmt.secret_label(path text, label text, version integer)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_label';

CREATE FUNCTION secret_mgmt.secret_version_disable(path text, version integer)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_version_disable';
CREATE FUNCTION secret_mgmt.secret_version_enable(path text, version integer)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_version_enable';
CREATE FUNCTION secret_mgmt.secret_version_destroy(path text, version integer)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_version_destroy';

CREATE FUNCTION secret_mgmt.secret_set_expiry(path text, expires_at timestamptz)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_set_expiry';

CREATE FUNCTION secret_mgmt.secret_delete(path text)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_delete';
CREATE FUNCTION secret_mgmt.secret_restore(path text)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_restore';
CREATE FUNCTION secret_mgmt.secret_purge(path text)
RETURNS void LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_purge';

