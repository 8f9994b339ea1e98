#!/bin/sh
# Runs every suite from the private copy made by test/run.sh, as the
# unprivileged test user: pg_regress, isolation, TAP and pgTAP.  Prints one
# line per suite and a closing "total: N passed, N failed" line.
set -u

work=$1
cd "$work"
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
bindir=$("$PG_CONFIG" --bindir)
pgxs=$(dirname "$(dirname "$(dirname "$("$PG_CONFIG" --pgxs)")")")
export PATH="$bindir:$PATH"

# A root key for the suites, outside every data directory.
mkdir -p keys && chmod 700 keys
umask 077
openssl rand -hex 32 > keys/root.key
umask 022
cat > keys/preload.conf <<CONF
shared_preload_libraries = 'secret_mgmt'
secret_mgmt.key_file = '$work/keys/root.key'
max_prepared_transactions = 4
CONF

SM_SUITES=${SM_SUITES:-regress isolation tap pgtap}
want() { case " $SM_SUITES " in *" $1 "*) return 0 ;; esac; return 1; }

passed=0
failed=0
report() {  # suite passed failed
    echo "secret_mgmt: suite $1: $2 passed, $3 failed"
    passed=$((passed + $2))
    failed=$((failed + $3))
}

# pg_regress and pg_isolation_regress both end with "All N tests passed."
# or "M of N tests failed."
regress_counts() {  # suite logfile exitcode
    total=$(sed -n 's/.*All \([0-9]*\) tests passed.*/\1/p' "$2" | tail -n 1)
    if [ -n "$total" ] && [ "$3" = 0 ]; then
        report "$1" "$total" 0
        return
    fi
    bad=$(sed -n 's/.* \([0-9]*\) of \([0-9]*\) tests failed.*/\1 \2/p' "$2" | tail -n 1)
    if [ -n "$bad" ]; then
        set -- "$1" $bad
        report "$1" $(($3 - $2)) "$2"
    else
        report "$1" 0 1
    fi
}

# prove and pg_prove end with "Files=F, Tests=N" and list failed subtests.
prove_counts() {  # suite logfile exitcode
    total=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\).*/\1/p' "$2" | tail -n 1)
    bad=$(sed -n 's/.*Failed \([0-9]*\)\/[0-9]* subtests.*/\1/p' "$2" | awk '{s+=$1} END {print s+0}')
    total=${total:-0}
    if [ "$3" != 0 ] && [ "$bad" = 0 ]; then bad=1; fi
    report "$1" $((total - bad > 0 ? total - bad : 0)) "$bad"
}

# 1. pg_regress: sql/<name>.sql against expected/<name>.out, in the order
#    of test/schedule
if want regress; then
"$pgxs/src/test/regress/pg_regress" \
    --temp-instance="$work/regress_instance" --temp-config="$work/keys/preload.conf" \
    --bindir="$bindir" --inputdir=. --outputdir="$work/regress_out" \
    --dbname=contrib_regression --schedule=test/schedule > regress.log 2>&1
rc=$?
cat regress.log
[ $rc = 0 ] || cat "$work/regress_out/regression.diffs" 2>/dev/null
regress_counts regress regress.log $rc
fi

# 2. isolation: test/isolation/specs/<name>.spec
tests=$(ls test/isolation/specs/*.spec 2>/dev/null | sed 's|.*/\(.*\)\.spec$|\1|' | sort)
if [ -n "$tests" ] && want isolation; then
    "$pgxs/src/test/isolation/pg_isolation_regress" \
        --temp-instance="$work/isolation_instance" --temp-config="$work/keys/preload.conf" \
        --bindir="$bindir" --inputdir=test/isolation --outputdir="$work/isolation_out" \
        --dbname=isolation_regression $tests > isolation.log 2>&1
    rc=$?
    cat isolation.log
    [ $rc = 0 ] || cat "$work/isolation_out/regression.diffs" 2>/dev/null
    regress_counts isolation isolation.log $rc
fi

# 3. TAP: test/t/*.pl with PostgreSQL::Test::Cluster
# (SM_TAP_TESTS="test/t/006_*.pl ..." runs only those files.)
if ls test/t/*.pl >/dev/null 2>&1 && want tap; then
    mkdir -p "$work/tap"
    TESTDIR="$work/tap" PG_REGRESS="$pgxs/src/test/regress/pg_regress" \
        prove -I "$pgxs/src/test/perl" -I test/t/lib ${SM_TAP_TESTS:-test/t/*.pl} > tap.log 2>&1
    rc=$?
    cat tap.log
    [ $rc = 0 ] || { for f in "$work"/tap/tmp_check/log/regress_log_*; do [ -f "$f" ] && tail -n 40 "$f"; done; }
    prove_counts tap tap.log $rc
fi

# 4. pgTAP: test/pgtap/*.sql, as tenant roles, on a cluster of its own
if ls test/pgtap/*.sql >/dev/null 2>&1 && want pgtap; then
    data="$work/pgtap_data"
    port=$((20000 + $$ % 20000))
    initdb -D "$data" -A trust -U postgres > pgtap_initdb.log 2>&1
    cat "$work/keys/preload.conf" >> "$data/postgresql.conf"
    printf "port = %s\nlisten_addresses = ''\nunix_socket_directories = '%s'\n" "$port" "$work" >> "$data/postgresql.conf"
    pg_ctl -D "$data" -l "$work/pgtap_server.log" -w start > /dev/null
    psql -X -q -h "$work" -p "$port" -U postgres -d postgres \
        -c "CREATE EXTENSION pgtap" -c "CREATE EXTENSION secret_mgmt" > /dev/null
    pg_prove -h "$work" -p "$port" -U postgres -d postgres test/pgtap/*.sql > pgtap.log 2>&1
    rc=$?
    cat pgtap.log
    pg_ctl -D "$data" -m fast -w stop > /dev/null
    prove_counts pgtap pgtap.log $rc
fi

echo "total: $passed passed, $failed failed"
[ "$failed" = 0 ]
