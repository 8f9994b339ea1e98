#!/bin/sh
# Install what building, testing, the demo and the benchmark need, from
# Debian's packages.  Idempotent: does nothing when everything is present.
set -eu

PKGS="postgresql-15 postgresql-server-dev-15 \
postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl \
libcurl4-openssl-dev libssl-dev libipc-run-perl make gcc openssl pgbouncer \
librabbitmq-dev rabbitmq-server python3 python3-hvac python3-cryptography python3-pika \
prometheus libdbd-pg-perl"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "secret_mgmt: missing Debian packages:$missing" >&2
    echo "secret_mgmt: run as root, or: sudo apt-get install$missing" >&2
    exit 1
fi
echo "secret_mgmt: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    $missing >/dev/null
