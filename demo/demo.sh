#!/bin/sh
# make demo: a narrated tour of secret_mgmt on a throwaway cluster.
#
# 1. Installs the Debian packages the project needs (test/deps.sh), then
#    builds and installs the extension.
# 2. Starts a private PostgreSQL 15 cluster in .demo/ under the work tree:
#    data in .demo/data, the Unix socket in .demo/ (no TCP at all), local
#    connections trusted (the directory is mode 0700), secret_mgmt preloaded,
#    and a freshly generated root key in .demo/root.key (mode 0600, outside
#    the data directory).  A demo cluster left running by an earlier run is
#    stopped and replaced.  The server refuses to run as root, so when run as
#    root the script runs the server and psql as the unprivileged system user
#    secret_mgmt_demo (created if missing); otherwise as the current user.
#    If that user cannot reach the work tree (for example a checkout under
#    /root), the cluster lives in /tmp/secret_mgmt-demo instead.
# 3. Walks through the store with psql, narrating each step: tenants and an
#    application role, create, resolve, check-and-set update (a success and
#    a 40001 conflict), versions, labels, rollback, delete and restore,
#    listing, and the SM001 that a role of another tenant gets.
# 4. Prints how to connect to the cluster and how to stop it; the cluster
#    keeps running.  Exits non-zero if any step does not go as shown.
#
# Environment: DEMO_PORT (default 54329), PG_CONFIG, SM_DEMO_USER (the
# system user used when run as root, default secret_mgmt_demo).
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
DEMO_USER=${SM_DEMO_USER:-secret_mgmt_demo}
port=${DEMO_PORT:-54329}
db=secret_demo

say() { printf '%s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# --- packages, build, install ---------------------------------------------
say "==> Checking Debian packages (test/deps.sh)"
sh "$here/test/deps.sh"
say "==> Building and installing secret_mgmt"
make -C "$here" -s PG_CONFIG="$PG_CONFIG"
make -C "$here" -s install PG_CONFIG="$PG_CONFIG" >/dev/null || \
    die "make install failed; run make demo as root or make the PostgreSQL directories writable"
bindir=$("$PG_CONFIG" --bindir)

# --- who runs the server --------------------------------------------------
if [ "$(id -u)" = 0 ]; then
    if ! id "$DEMO_USER" >/dev/null 2>&1; then
        say "==> Creating the unprivileged system user $DEMO_USER (the server refuses to run as root)"
        useradd --system --create-home --shell /bin/sh "$DEMO_USER"
    fi
    run_user=$DEMO_USER
    runas="runuser -u $DEMO_USER --"
else
    run_user=$(id -un)
    runas=""
fi
as_user() { if [ -n "$runas" ]; then runuser -u "$run_user" -- "$@"; else "$@"; fi; }

# --- where the cluster lives ----------------------------------------------
base=$here/.demo
reason=""
if ! as_user test -x "$here"; then
    reason="user $run_user cannot reach $here"
elif [ ! -e "$base" ] && ! [ -w "$here" ]; then
    reason="$here is not writable"
elif [ ${#base} -gt 80 ]; then
    reason="$base is too long for a Unix socket path"
fi
if [ -n "$reason" ]; then
    base=/tmp/secret_mgmt-demo
    say "==> Note: $reason; using $base instead of the work tree"
fi
[ -L "$base" ] && die "$base is a symbolic link; remove it first"
if [ ! -d "$base" ]; then
    mkdir -p "$base"
    [ -z "$runas" ] || chown "$run_user" "$base"
fi
owner=$(stat -c %U "$base")
[ "$owner" = "$run_user" ] || die "$base belongs to $owner, not $run_user; remove it first"
as_user chmod 700 "$base"
as_user test -w "$base" || die "user $run_user cannot write to $base"
cd "$base"

data=$base/data
key=$base/root.key
log=$base/server.log
psql_cmd="$bindir/psql -h $base -p $port"
stop_cmd="$bindir/pg_ctl -D $data stop"
[ -z "$runas" ] || { psql_cmd="$runas $psql_cmd"; stop_cmd="$runas $stop_cmd"; }

out=$(mktemp)
started=""
cleanup() {
    status=$?
    rm -f "$out"
    if [ "$status" != 0 ] && [ -n "$started" ]; then
        printf 'demo: failed; server log: %s\n' "$log" >&2
        as_user "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- a fresh cluster ------------------------------------------------------
if [ -f "$data/postmaster.pid" ] && as_user "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    say "==> Stopping the demo cluster left running in $data"
    as_user "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null
fi
as_user rm -rf "$data" "$key" "$log"

say "==> Generating a root key in $key (mode 0600, outside the data directory)"
as_user sh -c 'umask 077 && openssl rand -hex 32 > "$1"' sh "$key"

say "==> Creating a cluster in $data"
as_user "$bindir/initdb" -D "$data" -U postgres -E UTF8 --no-locale \
    --auth-local=trust --auth-host=scram-sha-256 >"$out" 2>&1 \
    || { cat "$out" >&2; die "initdb failed"; }
as_user sh -c 'cat >> "$1"' sh "$data/postgresql.conf" <<CONF

# secret_mgmt demo: Unix socket only, in a directory only $run_user can enter.
listen_addresses = ''
port = $port
unix_socket_directories = '$base'
unix_socket_permissions = 0700
shared_preload_libraries = 'secret_mgmt'
secret_mgmt.key_file = '$key'
CONF

say "==> Starting the server on socket $base, port $port"
started=yes
as_user "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null \
    || { tail -n 20 "$log" >&2; die "the server did not start"; }

# --- the tour -------------------------------------------------------------
step=0

# run ROLE DB SQL: run SQL as ROLE, echoing each statement; errors show
# their SQLSTATE.  Output goes to $out; returns psql's status.
run() {
    printf '%s\n' "$3" | as_user "$bindir/psql" -X -h "$base" -p "$port" -U "$1" -d "$2" \
        -v ON_ERROR_STOP=1 -v VERBOSITY=verbose --echo-queries -f - >"$out" 2>&1
}

# show TITLE ROLE: a narrated step, SQL on stdin, that must succeed.
show() {
    step=$((step + 1))
    printf '\n--- %d. %s\n    (psql as role %s)\n\n' "$step" "$1" "$2"
    sql=$(cat)
    if run "$2" "$db" "$sql"; then rc=0; else rc=$?; fi
    sed -e '/^LOCATION:/d' -e 's/^psql:<stdin>:[0-9]*: //' "$out"
    [ "$rc" = 0 ] || die "step $step failed (psql exit status $rc)"
}

# show_error TITLE ROLE SQLSTATE: a narrated step, SQL on stdin, whose last
# statement must fail with SQLSTATE (and no statement before it).
show_error() {
    step=$((step + 1))
    printf '\n--- %d. %s\n    (psql as role %s; expected error %s)\n\n' "$step" "$1" "$2" "$3"
    sql=$(cat)
    last=$(printf '%s\n' "$sql" | wc -l)
    if run "$2" "$db" "$sql"; then rc=0; else rc=$?; fi
    sed -e '/^LOCATION:/d' -e 's/^psql:<stdin>:[0-9]*: //' "$out"
    [ "$rc" != 0 ] || die "step $step: expected error $3, but the statements succeeded"
    grep -q "^psql:<stdin>:$last: ERROR:  $3:" "$out" \
        || die "step $step: expected error $3 from the last statement"
}

say "==> Creating database $db"
run postgres postgres "CREATE DATABASE $db;" || { cat "$out" >&2; die "could not create database $db"; }

cat <<'TEXT'

============================================================================
 A tour of secret_mgmt
============================================================================
Each step says what it does, then shows the SQL that psql sends and what
the server answers.  Errors are shown with their SQLSTATE (SM001 = secret
not found, 40001 = version conflict).  The values are demo values.
TEXT

show "The platform administrator (the superuser postgres) installs the extension" postgres <<'SQL'
CREATE EXTENSION secret_mgmt;
SQL

show "Create two tenants, acme and globex, an application login role for each, and make each role a member of its tenant" postgres <<'SQL'
SELECT secret_mgmt.secret_tenant_create('acme');
SELECT secret_mgmt.secret_tenant_create('globex');
CREATE ROLE acme_app LOGIN;
CREATE ROLE globex_app LOGIN;
SELECT secret_mgmt.secret_tenant_add_member('acme', 'acme_app');
SELECT secret_mgmt.secret_tenant_add_member('globex', 'globex_app');
SQL

show "A member holds only what it is granted: give each application its capabilities on a path pattern of its tenant" postgres <<'SQL'
SELECT secret_mgmt.secret_use_tenant('acme');
SELECT secret_mgmt.secret_grant('db/**', 'acme_app', ARRAY['read', 'list', 'create', 'update', 'delete', 'rotate', 'grant']);
SELECT secret_mgmt.secret_grant('api/*', 'acme_app', ARRAY['read', 'list', 'create', 'grant']);
SELECT secret_mgmt.secret_use_tenant('globex');
SELECT secret_mgmt.secret_grant('db/**', 'globex_app', ARRAY['read', 'list', 'create', 'update', 'delete']);
SQL

say ""
say "From here on psql connects as acme_app: an ordinary role whose only"
say "standing is its membership of tenant acme and its grants on db/** and api/*."

show "Create a secret: the value is encrypted before it is stored; version 1 is labelled 'current'" acme_app <<'SQL'
SELECT secret_mgmt.secret_create('db/password', 'correct-horse-1', type => 'password',
                                 description => 'primary database password');
SQL

show "Resolve it: the current version, decrypted" acme_app <<'SQL'
SELECT secret_mgmt.secret_resolve('db/password');
SQL

show "Update with check-and-set: we last read version 1, so expected_version => 1; the new version number comes back" acme_app <<'SQL'
SELECT secret_mgmt.secret_update('db/password', 'correct-horse-2', expected_version => 1);
SQL

show_error "A writer that still believes version 1 is newest is refused with 40001 instead of overwriting version 2" acme_app 40001 <<'SQL'
SELECT secret_mgmt.secret_update('db/password', 'stale-write', expected_version => 1);
SQL

show "List the versions: immutable, each with its labels" acme_app <<'SQL'
SELECT version, state, labels, created_by
  FROM secret_mgmt.secret_versions('db/password');
SQL

show "Resolve an older version by number, and by the label 'previous'" acme_app <<'SQL'
SELECT secret_mgmt.secret_resolve('db/password', 1) AS version_1;
SELECT secret_mgmt.secret_resolve('db/password', 'previous') AS label_previous;
SQL

show "Roll back to version 1: its value becomes a new version 3, which is current" acme_app <<'SQL'
SELECT secret_mgmt.secret_rollback('db/password', 1);
SELECT secret_mgmt.secret_resolve('db/password');
SELECT version, state, labels
  FROM secret_mgmt.secret_versions('db/password');
SQL

show_error "Delete it (a soft delete, recoverable): it no longer resolves" acme_app SM001 <<'SQL'
SELECT secret_mgmt.secret_delete('db/password');
SELECT secret_mgmt.secret_resolve('db/password');
SQL

show "Restore it: the secret and all its versions are back" acme_app <<'SQL'
SELECT secret_mgmt.secret_restore('db/password');
SELECT secret_mgmt.secret_resolve('db/password');
SQL

show "List the tenant's secrets: metadata only, never values" acme_app <<'SQL'
SELECT secret_mgmt.secret_create('api/token', 'tok-demo-123', type => 'api_key');
SELECT path, type, description, current_version, latest_version, deleted_at
  FROM secret_mgmt.secret_list();
SQL

show "Rotate: a new version made by the password generator becomes current (a hook could apply it to the target system first)" acme_app <<'SQL'
SELECT secret_mgmt.secret_set_rotation('db/password', '30 days', 'password(24, true)');
SELECT secret_mgmt.secret_rotate('db/password') AS new_version;
SELECT pg_catalog.length(secret_mgmt.secret_resolve('db/password')) AS new_length;
SELECT path, period, state, current_version, due_at > now() AS next_rotation_scheduled
  FROM secret_mgmt.secret_rotations();
SQL

show "Grant: acme_app delegates read on api/* (it holds grant there) to a new reader role of tenant acme" postgres <<'SQL'
CREATE ROLE acme_reader LOGIN;
SELECT secret_mgmt.secret_tenant_add_member('acme', 'acme_reader');
SET ROLE acme_app;
SELECT secret_mgmt.secret_grant('api/*', 'acme_reader', ARRAY['read']);
RESET ROLE;
SQL

show "The reader resolves api/token" acme_reader <<'SQL'
SELECT secret_mgmt.secret_resolve('api/token');
SQL

show_error "But db/password is not granted to it: refused, and the refusal is audited even though the transaction fails" acme_reader SM001 <<'SQL'
SELECT secret_mgmt.secret_resolve('db/password');
SQL

show "Audit: an auditor of tenant acme reads its trail (values never appear, only HMAC fingerprints), and the hash chain verifies" postgres <<'SQL'
CREATE ROLE acme_auditor LOGIN;
SELECT secret_mgmt.secret_tenant_add_member('acme', 'acme_auditor');
SELECT secret_mgmt.secret_use_tenant('acme');
SELECT secret_mgmt.secret_grant('**', 'acme_auditor', ARRAY['audit', 'list']);
SELECT secret_mgmt.secret_audit_flush() >= 0 AS queued_records_written;
SET ROLE acme_auditor;
SELECT seq, principal, action, path, version, outcome, sqlstate,
       pg_catalog.left(pg_catalog.encode(fingerprint, 'hex'), 12) AS fingerprint
  FROM secret_mgmt.secret_audit_log()
 WHERE action NOT IN ('grant', 'member_add', 'tenant_create')
 ORDER BY seq;
SELECT principal, action, outcome, attempts FROM secret_mgmt.secret_access_by_principal();
RESET ROLE;
SELECT tenant, rows_checked, broken_at FROM secret_mgmt.secret_audit_verify();
SQL

show "Operations: health, and the metrics Prometheus scrapes (superusers and pg_monitor members)" postgres <<'SQL'
SELECT pg_catalog.jsonb_pretty(secret_mgmt.secret_health() - 'logging') AS health;
SELECT name, labels, value FROM secret_mgmt.secret_metrics()
 WHERE name IN ('secret_mgmt_operations_total', 'secret_mgmt_resolve_duration_seconds_count')
 ORDER BY name, labels::text;
SQL

show_error "The tables themselves are closed to every role: only the API functions reach them" acme_app 42501 <<'SQL'
SELECT * FROM secret_mgmt.secret_version;
SQL

show_error "globex_app, a member of another tenant, asks for the same path: SM001, exactly as for a path that exists nowhere" globex_app SM001 <<'SQL'
SELECT secret_mgmt.secret_resolve('db/password');
SQL

show "At rest, as the platform administrator sees the tables: each version is an AES-256-GCM envelope under its tenant's data key" postgres <<'SQL'
SELECT i.tenant_id, i.path, v.version, v.key_id,
       pg_catalog.length(v.envelope) AS bytes,
       pg_catalog.encode(pg_catalog.substr(v.envelope, 23, 12), 'hex') || '...' AS ciphertext
  FROM secret_mgmt.secret_version v
  JOIN secret_mgmt.secret_item i USING (tenant_id, secret_id)
 ORDER BY i.tenant_id, i.path, v.version;
SQL

cat <<TEXT

============================================================================
 The tour is over; the demo cluster keeps running.
============================================================================
Connect as the platform administrator (a superuser):
    $psql_cmd -U postgres -d $db
or as the application role of tenant acme:
    $psql_cmd -U acme_app -d $db
Stop the cluster:
    $stop_cmd
Server log: $log.  Running make demo again replaces the cluster.
TEXT
