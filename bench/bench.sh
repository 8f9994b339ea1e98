#!/bin/sh
# make bench: secret_mgmt's read path side by side with a plain table and
# with pgcrypto, printed as a table.
#
# 1. Installs the Debian packages the project needs (test/deps.sh), then
#    builds and installs the extension.
# 2. Starts a throwaway PostgreSQL 15 cluster in .bench/ under the work tree
#    (data in .bench/data, the Unix socket in .bench/, no TCP), with
#    secret_mgmt preloaded and a freshly generated root key in
#    .bench/root.key (mode 0600, outside the data directory).  The server
#    refuses to run as root, so when run as root the script runs the server,
#    psql and pgbench as the unprivileged system user secret_mgmt_bench
#    (created if missing); otherwise as the current user.  If that user
#    cannot reach the work tree, everything lives in /tmp/secret_mgmt-bench.
#    Settings: shared_buffers = 256MB so that every table stays in memory,
#    and synchronous_commit = off, which only shortens the load (the
#    measured workloads are read-only); fsync and everything else keep
#    their defaults.
# 3. Loads 10,000 random 32-byte values (64 hex digits) three ways:
#      - secrets bench/s1 .. bench/s10000 of tenant "bench", created by
#        the login role bench_app, a member of that tenant;
#      - bench_plain(path text primary key, value text): the values as is;
#      - bench_pgp(path text primary key, value bytea): the values under
#        pgp_sym_encrypt(value, 'bench-passphrase') (pgcrypto).
#    It then checks, on a random sample, that all three give the same value.
# 4. Runs pgbench -M prepared -c 2 -j 2 as bench_app (not a superuser; it
#    has SELECT on the two plain tables) on each of bench/resolve.sql,
#    bench/plain.sql and bench/pgcrypto.sql: a short warm-up each, then
#    BENCH_ROUNDS (default 2) rounds that run every workload for
#    BENCH_SECONDS (default 15) seconds, interleaved, reading random paths.
#    secret_resolve runs three times: as bench_app (secret_mgmt.audit_reads
#    = off, the default), and as bench_async and bench_sync, whose
#    audit_reads are async (the row goes through the shared-memory queue
#    to the audit flusher) and sync (the row is written in the reader's
#    transaction).  The report counts the audit rows written.
# 5. Prints the machine, the PostgreSQL version, and a table of mean TPS,
#    mean latency, and TPS as a ratio of the plain SELECT's and of
#    pgp_sym_decrypt's, with the targets (>= 0.70x plain, >= 3x pgcrypto)
#    marked met or not.  The raw pgbench output is kept in .bench/*.log.  The cluster is stopped at the end, and
#    on failure; its data directory stays until the next run replaces it.
#
# 6. Measures the background worker on the same cluster: the time it takes
#    to rotate BENCH_ROTATIONS (default 10,000) due secrets whose rotation
#    has a hook that does nothing (all made due at once), and to sweep
#    BENCH_EXPIRIES (default 100,000) secrets that expire at the same
#    moment (each marked expired, with its event).  Times are measured by
#    polling every 0.1 s, from the moment the work became due to the moment
#    the last item was done.
#
# Environment: BENCH_SECONDS (default 15), BENCH_ROUNDS (default 2),
# BENCH_ROTATIONS (default 10000), BENCH_EXPIRIES (default 100000),
# BENCH_WARMUP (seconds, default 3),
# BENCH_PORT (default 54330), PG_CONFIG, SM_BENCH_USER (the system user used
# when run as root, default secret_mgmt_bench).
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
BENCH_USER=${SM_BENCH_USER:-secret_mgmt_bench}
seconds=${BENCH_SECONDS:-15}
rounds=${BENCH_ROUNDS:-2}
warmup=${BENCH_WARMUP:-3}
port=${BENCH_PORT:-54330}
db=bench
nsecrets=10000
workloads="resolve resolve_async resolve_sync plain pgcrypto"
nrotations=${BENCH_ROTATIONS:-10000}
nexpiries=${BENCH_EXPIRIES:-100000}

say() { printf '%s\n' "$*"; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

case $seconds in '' | *[!0-9]* | 0) die "BENCH_SECONDS must be a positive whole number of seconds" ;; esac
case $warmup in '' | *[!0-9]* | 0) die "BENCH_WARMUP must be a positive whole number of seconds" ;; esac
case $rounds in '' | *[!0-9]* | 0) die "BENCH_ROUNDS must be a positive whole number" ;; esac
case $nrotations in '' | *[!0-9]* | 0) die "BENCH_ROTATIONS must be a positive whole number" ;; esac
case $nexpiries in '' | *[!0-9]* | 0) die "BENCH_EXPIRIES must be a positive whole number" ;; esac
# The audited variants run bench/resolve.sql as roles whose
# secret_mgmt.audit_reads is async or sync.
script_of() { case $1 in resolve_*) echo resolve ;; *) echo "$1" ;; esac; }
role_of() {
    case $1 in
        resolve_async) echo bench_async ;;
        resolve_sync) echo bench_sync ;;
        *) echo bench_app ;;
    esac
}
for w in $workloads; do
    [ -f "$here/bench/$(script_of "$w").sql" ] || die "missing pgbench script bench/$(script_of "$w").sql"
done

# --- packages, build, install ---------------------------------------------
say "==> Checking Debian packages (test/deps.sh)"
sh "$here/test/deps.sh"
say "==> Building and installing secret_mgmt"
make -C "$here" -s PG_CONFIG="$PG_CONFIG"
# The install location is shared with make test: take its lock until the
# cluster has loaded the library and created the extension.
exec 9>/tmp/secret_mgmt-test.lock
flock 9
make -C "$here" -s install PG_CONFIG="$PG_CONFIG" >/dev/null || \
    die "make install failed; run make bench as root or make the PostgreSQL directories writable"
bindir=$("$PG_CONFIG" --bindir)

# --- who runs the server --------------------------------------------------
if [ "$(id -u)" = 0 ]; then
    if ! id "$BENCH_USER" >/dev/null 2>&1; then
        say "==> Creating the unprivileged system user $BENCH_USER (the server refuses to run as root)"
        useradd --system --create-home --shell /bin/sh "$BENCH_USER"
    fi
    run_user=$BENCH_USER
    runas=yes
else
    run_user=$(id -un)
    runas=""
fi
as_user() { if [ -n "$runas" ]; then runuser -u "$run_user" -- "$@"; else "$@"; fi; }

# --- where the cluster lives ----------------------------------------------
base=$here/.bench
reason=""
if ! as_user test -x "$here"; then
    reason="user $run_user cannot reach $here"
elif [ ! -e "$base" ] && ! [ -w "$here" ]; then
    reason="$here is not writable"
elif [ ${#base} -gt 80 ]; then
    reason="$base is too long for a Unix socket path"
fi
if [ -n "$reason" ]; then
    base=/tmp/secret_mgmt-bench
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

out=$(mktemp)
started=""
cleanup() {
    status=$?
    rm -f "$out"
    if [ -n "$started" ]; then
        as_user "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
        say "==> Cluster stopped"
    fi
    [ "$status" = 0 ] || printf 'bench: failed; logs in %s\n' "$base" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# psql_as ROLE: run the SQL on stdin as ROLE, quietly; output in $out.
psql_as() {
    as_user "$bindir/psql" -X -q -A -t -h "$base" -p "$port" -U "$1" -d "${2:-$db}" \
        -v ON_ERROR_STOP=1 -f - >"$out" 2>&1 || { cat "$out" >&2; return 1; }
}

# --- a fresh cluster ------------------------------------------------------
if [ -f "$data/postmaster.pid" ] && as_user "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    say "==> Stopping the bench cluster left running in $data"
    as_user "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null
fi
as_user rm -rf "$data" "$key" "$log"
for w in $workloads; do as_user rm -f "$base/$w.log" "$base/$w.warmup.log" "$base/$w.sql" "$base/$w".round*.log; done

say "==> Generating a root key in $key (mode 0600, outside the data directory)"
as_user sh -c 'umask 077 && openssl rand -hex 32 > "$1"' sh "$key"

say "==> Creating a cluster in $data"
as_user "$bindir/initdb" -D "$data" -U postgres -E UTF8 --no-locale \
    --auth-local=trust --auth-host=scram-sha-256 >"$out" 2>&1 \
    || { cat "$out" >&2; die "initdb failed"; }
as_user sh -c 'cat >> "$1"' sh "$data/postgresql.conf" <<CONF

# secret_mgmt bench: Unix socket only, in a directory only $run_user can enter.
listen_addresses = ''
port = $port
unix_socket_directories = '$base'
unix_socket_permissions = 0700
shared_preload_libraries = 'secret_mgmt'
secret_mgmt.key_file = '$key'
shared_buffers = 256MB
synchronous_commit = off
secret_mgmt.database = '$db'
secret_mgmt.expiry_warning = 0
CONF

say "==> Starting the server on socket $base, port $port"
started=yes
as_user "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null \
    || { tail -n 20 "$log" >&2; die "the server did not start"; }

# --- load -----------------------------------------------------------------
say "==> Creating database $db, tenant bench and login role bench_app"
psql_as postgres postgres <<SQL || die "could not create database $db"
CREATE DATABASE $db;
SQL
psql_as postgres <<'SQL' || die "setup failed"
CREATE EXTENSION secret_mgmt;
CREATE EXTENSION pgcrypto;
SELECT secret_mgmt.secret_tenant_create('bench');
CREATE ROLE bench_app LOGIN;
SELECT secret_mgmt.secret_tenant_add_member('bench', 'bench_app');
SELECT secret_mgmt.secret_use_tenant('bench');
SELECT secret_mgmt.secret_grant('bench/**', 'bench_app', ARRAY['read', 'create']);
-- Readers whose successful reads are audited (as the superuser sets it).
CREATE ROLE bench_async LOGIN;
CREATE ROLE bench_sync LOGIN;
ALTER ROLE bench_async SET secret_mgmt.audit_reads = 'async';
ALTER ROLE bench_sync SET secret_mgmt.audit_reads = 'sync';
SELECT secret_mgmt.secret_tenant_add_member('bench', 'bench_async');
SELECT secret_mgmt.secret_tenant_add_member('bench', 'bench_sync');
SELECT secret_mgmt.secret_grant('bench/**', 'bench_async', ARRAY['read']);
SELECT secret_mgmt.secret_grant('bench/**', 'bench_sync', ARRAY['read']);
SQL

flock -u 9

say "==> Loading $nsecrets random values into bench_plain and, with pgp_sym_encrypt, into bench_pgp"
psql_as postgres <<SQL || die "loading the plain tables failed"
CREATE TABLE bench_plain (path text PRIMARY KEY, value text NOT NULL);
INSERT INTO bench_plain
SELECT 'bench/s' || i, encode(gen_random_bytes(32), 'hex')
  FROM generate_series(1, $nsecrets) AS i;
CREATE TABLE bench_pgp (path text PRIMARY KEY, value bytea NOT NULL);
INSERT INTO bench_pgp
SELECT path, pgp_sym_encrypt(value, 'bench-passphrase') FROM bench_plain;
GRANT SELECT ON bench_plain, bench_pgp TO bench_app, bench_async, bench_sync;
SQL

say "==> Creating the same $nsecrets values as secrets, as bench_app"
psql_as bench_app <<'SQL' || die "creating the secrets failed"
SELECT pg_catalog.count(secret_mgmt.secret_create(path, value)) FROM bench_plain;
SQL
created=$(tr -d '[:space:]' <"$out")
[ "$created" = "$nsecrets" ] || die "created $created secrets, expected $nsecrets"

say "==> VACUUM ANALYZE"
psql_as postgres <<'SQL' || die "VACUUM ANALYZE failed"
VACUUM ANALYZE;
SQL

say "==> Checking, as bench_app, that the three stores agree on 500 random paths"
psql_as bench_app <<'SQL' || die "the check failed"
SELECT pg_catalog.count(*)
  FROM (SELECT path, value FROM bench_plain ORDER BY random() LIMIT 500) AS p
  JOIN bench_pgp AS g USING (path)
 WHERE secret_mgmt.secret_resolve(p.path) = p.value
   AND pgp_sym_decrypt(g.value, 'bench-passphrase') = p.value;
SQL
agree=$(tr -d '[:space:]' <"$out")
[ "$agree" = 500 ] || die "only $agree of 500 values agree across the three stores"

# --- pgbench --------------------------------------------------------------
# pgbench runs as the server's user, which reads its scripts from $base.
for w in $workloads; do
    as_user sh -c 'cat > "$1"' sh "$base/$w.sql" <"$here/bench/$(script_of "$w").sql"
done

# pgbench_run WORKLOAD SECONDS LOGFILE
pgbench_run() {
    if as_user "$bindir/pgbench" -n -M prepared -c 2 -j 2 -T "$2" \
        -h "$base" -p "$port" -U "$(role_of "$1")" -f "$base/$1.sql" "$db" >"$out" 2>&1
    then rc=0; else rc=$?; fi
    as_user sh -c 'cat > "$1"' sh "$3" <"$out"
    [ "$rc" = 0 ] || { cat "$out" >&2; die "pgbench failed on workload $1 (log: $3)"; }
    grep -q '^number of failed transactions: 0 ' "$out" \
        || { cat "$out" >&2; die "workload $1 had failed transactions (log: $3)"; }
}

for w in $workloads; do
    say "==> $w: warm-up, $warmup s"
    pgbench_run "$w" "$warmup" "$base/$w.warmup.log"
done
# Rounds interleave the workloads (A B C A B C ...), so that drift of the
# machine during the run affects all of them alike; the report averages.
r=1
while [ "$r" -le "$rounds" ]; do
    for w in $workloads; do
        say "==> round $r/$rounds, $w: measuring, $seconds s"
        pgbench_run "$w" "$seconds" "$base/$w.round$r.log"
    done
    r=$((r + 1))
done

# --- report ---------------------------------------------------------------
# mean_of WORKLOAD FIELD: the mean over the rounds of pgbench's "tps" or
# "latency average".
mean_of() {
    for f in "$base/$1".round*.log; do
        case $2 in
            tps) sed -n -e 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' \
                        -e 's/^tps = \([0-9.]*\) (excluding connections establishing)$/\1/p' "$f" | head -n 1 ;;
            latency) sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p' "$f" | head -n 1 ;;
        esac
    done | awk '{ s += $1; n++ } END { if (n == '"$rounds"') printf "%.3f", s / n }'
}

for w in $workloads; do
    [ -n "$(mean_of "$w" tps)" ] && [ -n "$(mean_of "$w" latency)" ] \
        || die "could not read tps and latency of every round of $w from $base"
done
plain_tps=$(mean_of plain tps)
pgp_tps=$(mean_of pgcrypto tps)
resolve_tps=$(mean_of resolve tps)

psql_as postgres <<'SQL' || die "could not read the server version"
SELECT version();
SQL
pg_version=$(cat "$out")
cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)

label() {
    case $1 in
        resolve) echo "secret_resolve, audit_reads = off" ;;
        resolve_async) echo "secret_resolve, audit_reads = async" ;;
        resolve_sync) echo "secret_resolve, audit_reads = sync" ;;
        plain) echo "plain SELECT (bench_plain)" ;;
        pgcrypto) echo "pgp_sym_decrypt (bench_pgp)" ;;
    esac
}

say ""
say "secret_mgmt benchmark"
say "  machine:    $(nproc) CPUs, ${cpu:-unknown CPU}"
say "  server:     $pg_version"
say "  settings:   shared_buffers = 256MB, synchronous_commit = off, otherwise defaults"
say "  data:       $nsecrets values of 64 hex digits; random path per transaction"
say "  pgbench:    -M prepared -c 2 -j 2, $rounds interleaved rounds of $seconds s each (after a $warmup s warm-up), as role bench_app"
say "              (the audited rows as bench_async and bench_sync, whose audit_reads are async and sync)"
say ""
printf '%-34s | %10s | %15s | %14s | %14s\n' "workload" "TPS" "mean latency ms" "TPS vs plain" "TPS vs pgcrypto"
printf '%-34s-+-%10s-+-%15s-+-%14s-+-%14s\n' "----------------------------------" "----------" "---------------" "--------------" "--------------"
for w in $workloads; do
    awk -v name="$(label "$w")" -v tps="$(mean_of "$w" tps)" -v lat="$(mean_of "$w" latency)" \
        -v plain="$plain_tps" -v pgp="$pgp_tps" \
        'BEGIN { printf "%-34s | %10.0f | %15.3f | %13.2fx | %13.2fx\n", name, tps, lat, tps / plain, tps / pgp }'
done
say ""
awk -v r="$resolve_tps" -v p="$plain_tps" -v g="$pgp_tps" 'BEGIN {
    printf "targets:    secret_resolve >= 0.70x the plain SELECT: %.2fx, %s\n", r / p, (r / p >= 0.70 ? "met" : "NOT met")
    printf "            secret_resolve >= 3x pgp_sym_decrypt:     %.2fx, %s\n", r / g, (r / g >= 3 ? "met" : "NOT met")
}'
say ""
say "TPS excludes connection time; each figure is the mean of the rounds."
psql_as postgres <<'SQL' || die "could not count the audit rows"
SELECT secret_mgmt.secret_audit_flush();
SELECT pg_catalog.string_agg(principal || ' ' || n, ' ' ORDER BY principal)
  FROM (SELECT principal, pg_catalog.count(*) AS n FROM secret_mgmt.secret_audit
         WHERE action = 'read' GROUP BY principal) AS c;
SELECT rejected FROM secret_mgmt.secret_audit_queue();
SQL
say "Audited reads written: $(sed -n 2p "$out"); requests refused for a full audit queue: $(sed -n 3p "$out")"
say "Raw pgbench output: $base/*.log"

# --- worker throughput ------------------------------------------------------
# now_s: the time in seconds, with fractions.
now_s() { date +%s.%N; }
# wait_for SQL TARGET: poll (as postgres) every 0.1 s until SQL prints TARGET.
wait_for() {
    while :; do
        printf '%s\n' "$1" | psql_as postgres || die "polling failed"
        [ "$(tr -d '[:space:]' <"$out")" = "$2" ] && return 0
        sleep 0.1
    done
}

say ""
say "==> Worker: creating $nrotations secrets with a rotation whose hook does nothing"
psql_as postgres <<'SQL' || die "setup of the rotation benchmark failed"
CREATE FUNCTION public.noop_hook(path text, version integer) RETURNS void
LANGUAGE sql AS 'SELECT';
SELECT secret_mgmt.secret_use_tenant('bench');
SELECT secret_mgmt.secret_grant('rot/**', 'bench_app', ARRAY['read', 'create', 'rotate']);
SELECT secret_mgmt.secret_grant('exp/**', 'bench_app', ARRAY['create']);
SQL
# create_batches PREFIX COUNT EXTRA: secret_create as bench_app in
# transactions of 5,000 (EXTRA: more arguments of secret_create).
create_batches() {
    from=1
    while [ "$from" -le "$2" ]; do
        to=$((from + 4999)); [ "$to" -le "$2" ] || to=$2
        psql_as bench_app <<SQL || die "creating secrets $1$from..$to failed"
SELECT pg_catalog.count(secret_mgmt.secret_create('$1' || i, 'value-' || i$3))
  FROM generate_series($from, $to) AS i;
SQL
        from=$((to + 1))
    done
}
psql_as postgres <<'SQL' || die "could not shorten the worker's naptime"
ALTER SYSTEM SET secret_mgmt.worker_naptime = 100;
SELECT pg_catalog.pg_reload_conf();
SQL
create_batches rot/s "$nrotations" ""
psql_as bench_app <<SQL || die "configuring the rotations failed"
SELECT pg_catalog.count(secret_mgmt.secret_set_rotation('rot/s' || i, '1 day', 'hex(32)',
       'public.noop_hook(text,integer)'))
  FROM generate_series(1, $nrotations) AS i;
SQL
say "==> Worker: making all $nrotations rotations due at once"
t0=$(now_s)
psql_as postgres <<'SQL' || die "could not make the rotations due"
UPDATE secret_mgmt.secret_lifecycle SET due_at = pg_catalog.now()
 WHERE rotation_state = 'idle' AND due_at IS NOT NULL;
SQL
wait_for "SELECT count(*) FROM secret_mgmt.secret_item WHERE path LIKE 'rot/%' AND current_version = 2" "$nrotations"
t1=$(now_s)
rot_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
wait_for "SELECT count(*) FROM secret_mgmt.secret_lifecycle WHERE rotation_state <> 'idle'" 0
wait_for "SELECT count(*) FROM secret_mgmt.secret_event WHERE kind = 'rotated' AND path LIKE 'rot/%'" "$nrotations"

say "==> Worker: creating $nexpiries secrets that expire together"
create_batches exp/s "$nexpiries" ", expires_at => pg_catalog.now() + interval '1 day'"
say "==> Worker: moving all $nexpiries expiries to now"
t0=$(now_s)
psql_as postgres <<'SQL' || die "could not move the expiries"
UPDATE secret_mgmt.secret_item SET expires_at = pg_catalog.now() WHERE path LIKE 'exp/%';
SQL
wait_for "SELECT count(*) FROM secret_mgmt.secret_lifecycle l JOIN secret_mgmt.secret_item i USING (tenant_id, secret_id) WHERE i.path LIKE 'exp/%' AND l.expired_for IS NOT NULL" "$nexpiries"
t1=$(now_s)
exp_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
wait_for "SELECT count(*) FROM secret_mgmt.secret_event WHERE kind = 'expired' AND path LIKE 'exp/%'" "$nexpiries"

say ""
say "secret_mgmt worker throughput (same cluster; worker_naptime = 100ms; secrets created in transactions of 5,000)"
printf '%-52s | %10s | %14s\n' "work" "seconds" "items/second"
printf '%-52s-+-%10s-+-%14s\n' "----------------------------------------------------" "----------" "--------------"
awk -v n="$nrotations" -v s="$rot_secs" 'BEGIN { printf "%-52s | %10.2f | %14.0f\n", "rotate " n " due secrets (no-op hook, 4 steps each)", s, n / s }'
awk -v n="$nexpiries" -v s="$exp_secs" 'BEGIN { printf "%-52s | %10.2f | %14.0f\n", "expiry sweep of " n " secrets (mark + event each)", s, n / s }'
awk -v n="$nrotations" -v s="$rot_secs" 'BEGIN {
    printf "target:     >= 1,000 rotations per second: %.0f, %s\n", n / s, (n / s >= 1000 ? "met" : "NOT met")
}'
