# A plain pg_dump is a complete backup, and holds no plaintext.
#
# Two tenants write secrets (text, bytea, jsonb, several versions and a
# label).  A plain-format pg_dump, taken by the superuser, carries the rows
# of the secret_mgmt tables -- ciphertext and wrapped keys -- and none of
# the values.  Restored with psql -f into a new database on the same node
# (CREATE EXTENSION comes from the dump itself), it restores without error,
# every stored byte is identical, every value resolves for the member
# roles and for the superuser, and writes continue under the existing data
# keys.  Restored into a second node started with a different root key, it
# fails closed: resolving and writing fail with SM005 and no data key is
# minted, not even for a tenant created there afterwards.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SecretMgmtTest;

my $node = new_node('source');
setup_tenant($node, 'postgres', 'acme',   'acme_app');
setup_tenant($node, 'postgres', 'globex', 'globex_app');

my %canary = map { $_ => random_hex(16) } qw(v1 v2 v3 json globex);
my $bytes = random_bytes(20);
my $bytes_hex = unpack('H*', $bytes);

sql_ok(
	$node, 'postgres', qq{
	SELECT secret_mgmt.secret_create('db/password', '$canary{v1}'::text);
	SELECT secret_mgmt.secret_update('db/password', '$canary{v2}'::text);
	SELECT secret_mgmt.secret_update('db/password', '$canary{v3}'::text);
	SELECT secret_mgmt.secret_label('db/password', 'stable', 1);
	SELECT secret_mgmt.secret_create('api/blob', '\\x$bytes_hex'::bytea);
	SELECT secret_mgmt.secret_create('api/config', '{"token": "$canary{json}"}'::jsonb);
},
	'acme secrets written',
	role => 'acme_app');
sql_ok($node, 'postgres',
	qq{SELECT secret_mgmt.secret_create('db/password', '$canary{globex}'::text)},
	'globex secret written', role => 'globex_app');

my $acme_sql = q{
	SELECT secret_mgmt.secret_resolve('db/password')
	UNION ALL SELECT secret_mgmt.secret_resolve('db/password', 2)
	UNION ALL SELECT secret_mgmt.secret_resolve('db/password', 'stable')
	UNION ALL SELECT encode(secret_mgmt.secret_resolve_bytea('api/blob'), 'hex')
	UNION ALL SELECT secret_mgmt.secret_resolve_jsonb('api/config') ->> 'token'
};
my $acme_expected =
  join("\n", $canary{v3}, $canary{v2}, $canary{v1}, $bytes_hex, $canary{json});
my $globex_sql = q{SELECT secret_mgmt.secret_resolve('db/password')};

# Everything stored, byte for byte (as the superuser).
my $stored_sql = q{
	SELECT (SELECT string_agg(tenant_id, ',' ORDER BY tenant_id) FROM secret_mgmt.secret_tenant)
	UNION ALL
	SELECT (SELECT string_agg(tenant_id || ':' || member::text, ',' ORDER BY tenant_id)
	          FROM secret_mgmt.secret_member)
	UNION ALL
	SELECT (SELECT count(*) || ':' || md5(string_agg(tenant_id || ':' || key_id || ':' || kek_id || ':' ||
	                               encode(wrapped, 'hex') || ':' || state,
	                               ',' ORDER BY tenant_id, key_id))
	          FROM secret_mgmt.secret_data_key)
	UNION ALL
	SELECT (SELECT count(*) || ':' || md5(string_agg(tenant_id || ':' || secret_id || ':' || path ||
	                               ':' || last_version, ',' ORDER BY tenant_id, secret_id))
	          FROM secret_mgmt.secret_item)
	UNION ALL
	SELECT (SELECT count(*) || ':' || md5(string_agg(tenant_id || ':' || secret_id || ':' || version ||
	                               ':' || key_id || ':' || encode(envelope, 'hex'),
	                               ',' ORDER BY tenant_id, secret_id, version))
	          FROM secret_mgmt.secret_version)
	UNION ALL
	SELECT (SELECT count(*) || ':' || md5(string_agg(tenant_id || ':' || secret_id || ':' || label ||
	                               ':' || version, ',' ORDER BY tenant_id, secret_id, label))
	          FROM secret_mgmt.secret_label)
};

is(scalar_sql($node, 'postgres', $acme_sql, role => 'acme_app'),
	$acme_expected, 'source: acme resolves');
my $stored = scalar_sql($node, 'postgres', $stored_sql);
like($stored, qr/^acme,global,globex\nacme:acme_app_group,globex:globex_app_group\n2:/,
	'source: two tenants, their members and one data key each');

# The dump.
my $dumpdir = PostgreSQL::Test::Utils::tempdir('sm_dump');
my $dumpfile = "$dumpdir/source.sql";
$node->command_ok([ 'pg_dump', '-d', 'postgres', '-f', $dumpfile ], 'pg_dump');
my $dump = slurp_file($dumpfile);
like($dump, qr/^CREATE EXTENSION IF NOT EXISTS secret_mgmt\b/m,
	'dump creates the extension');
like($dump, qr/^acme\t[0-9a-f-]{36}\tdb\/password\torganization\t/m,
	'dump holds the secret_item rows');
like($dump, qr/^COPY secret_mgmt\.secret_version .*\n(?:acme|globex)\t/m,
	'dump holds the secret_version rows');
like($dump, qr/^COPY secret_mgmt\.secret_data_key .*\n(?:acme|globex)\t/m,
	'dump holds the wrapped data keys');
for my $name (sort keys %canary)
{
	unlike($dump, qr/\Q$canary{$name}\E/, "dump: no canary $name");
}
unlike($dump, qr/\Q$bytes_hex\E/, 'dump: no bytea canary (hex)');
ok(index($dump, $bytes) < 0, 'dump: no bytea canary (raw)');

# Restore the dump into a new database; it must load without any error.
sub restore
{
	my ($target, $label) = @_;
	$target->command_ok([ 'createdb', 'restored' ], "$label: createdb");
	my ($rc, $out, $err) = sql_result($target, 'restored', $dump);
	is($rc, 0, "$label: restore succeeds");
	unlike($err, qr/ERROR/, "$label: restore reports no error")
	  or diag(join("\n", (split /\n/, $err)[ 0 .. 5 ]));
	return;
}

# Same node, same root key.
restore($node, 'same node');
is(scalar_sql($node, 'restored', $stored_sql),
	$stored, 'same node: every stored byte restored');
is(scalar_sql($node, 'restored', $acme_sql, role => 'acme_app'),
	$acme_expected, 'same node: acme member resolves everything');
is(scalar_sql($node, 'restored', $globex_sql, role => 'globex_app'),
	$canary{globex}, 'same node: globex member resolves its value');
is( scalar_sql(
		$node, 'restored', use_tenant_sql('acme') . $acme_sql),
	$acme_expected,
	'same node: superuser resolves after secret_use_tenant');
is( scalar_sql(
		$node, 'restored', q{
	SELECT secret_mgmt.secret_update('db/password', 'after-restore'::text);
	SELECT secret_mgmt.secret_resolve('db/password')},
		role => 'acme_app'),
	"4\nafter-restore",
	'same node: writes continue');
is( scalar_sql(
		$node, 'restored',
		q{SELECT string_agg(tenant_id || ':' || key_id, ',' ORDER BY tenant_id, key_id)
		    FROM secret_mgmt.secret_data_key}),
	'acme:1,globex:1',
	'same node: no data key minted');
is(scalar_sql($node, 'postgres', $stored_sql),
	$stored, 'same node: the source database is untouched');

# A second node with another root key.
my $other = new_node('other_key', extension => 0);
$other->safe_psql(
	'postgres', q{
	CREATE ROLE acme_app_group NOLOGIN;
	CREATE ROLE acme_app LOGIN IN ROLE acme_app_group;
	CREATE ROLE globex_app_group NOLOGIN;
	CREATE ROLE globex_app LOGIN IN ROLE globex_app_group;
});
restore($other, 'other key');
is(scalar_sql($other, 'restored', $stored_sql),
	$stored, 'other key: every stored byte restored');

expect_error($other, 'restored', $acme_sql, 'SM005',
	qr/data key 1 of tenant "acme" was wrapped by a different root key/,
	'other key: acme resolve', role => 'acme_app');
expect_error($other, 'restored', $globex_sql, 'SM005',
	qr/data key 1 of tenant "globex" was wrapped by a different root key/,
	'other key: globex resolve', role => 'globex_app');
expect_error($other, 'restored', use_tenant_sql('acme') . $acme_sql, 'SM005',
	qr/was wrapped by a different root key/, 'other key: superuser resolve');
expect_error($other, 'restored',
	q{SELECT secret_mgmt.secret_create('db/new', 'new-value'::text)},
	'SM005', qr/was wrapped by a different root key/,
	'other key: create', role => 'acme_app');
setup_tenant($other, 'restored', 'fresh', 'fresh_app');
expect_error($other, 'restored',
	q{SELECT secret_mgmt.secret_create('first/secret', 'first-value'::text)},
	'SM005', qr/refusing to create a data key/,
	'other key: first write of a new tenant', role => 'fresh_app');
is( scalar_sql(
		$other, 'restored',
		q{SELECT string_agg(tenant_id || ':' || key_id, ',' ORDER BY tenant_id, key_id)
		    FROM secret_mgmt.secret_data_key}),
	'acme:1,globex:1',
	'other key: no data key minted');
my @stored_lines = split /\n/, $stored;
my @other_lines = split /\n/, (scalar_sql($other, 'restored', $stored_sql) // '');
is(join("\n", @other_lines[ 2 .. 5 ]),
	join("\n", @stored_lines[ 2 .. 5 ]),
	'other key: keys, secrets, versions and labels unchanged');

$other->stop;
$node->stop;
done_testing();
