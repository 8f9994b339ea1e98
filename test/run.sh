#!/bin/sh
# make test: install what the suite needs, build with warnings as errors and
# assertions, install, and run every suite as an unprivileged user (the
# server refuses to run as root).  Exits non-zero if anything fails.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
TEST_USER=${SM_TEST_USER:-secret_mgmt_test}

sh "$here/test/deps.sh"

# One run at a time per machine: the extension is installed into the one
# PostgreSQL installation, so concurrent runs from different trees would
# test each other's builds.
exec 9>/tmp/secret_mgmt-test.lock
flock 9

# Build from clean so the assertion flag takes effect, then install.
# (SM_SKIP_BUILD=1 reuses what is installed, for quick reruns of one suite.)
if [ -z "${SM_SKIP_BUILD:-}" ]; then
    make -C "$here" -s clean PG_CONFIG="$PG_CONFIG"
    make -C "$here" -s SM_ASSERTS=1 PG_CONFIG="$PG_CONFIG"
    make -C "$here" -s install PG_CONFIG="$PG_CONFIG" >/dev/null || {
        echo "secret_mgmt: make install failed; run make test as root or make the PostgreSQL directories writable" >&2
        exit 1
    }
fi
if [ "$(id -u)" = 0 ]; then
    id "$TEST_USER" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/sh "$TEST_USER"
    runas="runuser -u $TEST_USER --"
else
    runas=""
fi

# The suites run from a private copy that the test user owns, so that the
# checkout itself may live where that user cannot write (or even read).
work=$(mktemp -d /tmp/secret_mgmt-test.XXXXXX)
cp -R "$here/sql" "$here/expected" "$here/test" "$work/"
[ -z "$runas" ] || chown -R "$TEST_USER" "$work"
chmod 700 "$work"

status=0
# The suites do not inherit the lock (9>&-): a server or fixture a test
# leaves behind must not keep every later run waiting.
$runas env PG_CONFIG="$PG_CONFIG" SM_SUITES="${SM_SUITES:-regress isolation tap pgtap}" \
    SM_TAP_TESTS="${SM_TAP_TESTS:-}" sh "$work/test/suites.sh" "$work" 9>&- || status=$?
if [ "$status" = 0 ] && [ -z "${SM_KEEP_TEST_DIR:-}" ]; then
    rm -rf "$work"
else
    echo "secret_mgmt: test output kept in $work"
fi
exit "$status"
