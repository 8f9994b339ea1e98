# Secrets survive a server restart.
#
# A tenant member writes text (multi-byte), bytea with NUL bytes, jsonb,
# empty and 1 MiB values, with several versions, labels, a rollback and a
# disabled version; a second tenant holds the same path.  After a restart
# with the same root key every value resolves to the same bytes (compared
# by md5 against values computed here), version metadata is unchanged, the
# type checks still apply, and a new write reuses the tenant's data key
# instead of minting another.

use strict;
use warnings;
use Digest::MD5 qw(md5_hex);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SecretMgmtTest;

my $node = new_node('restart');
setup_tenant($node, 'postgres', 'acme',   'acme_app');
setup_tenant($node, 'postgres', 'globex', 'globex_app');

# Values, as bytes.
my $greeting = "h\xc3\xa9llo, w\xc3\xb6rld \xe2\x98\x83";    # UTF-8
my $blob     = "\x00\x01\x02secret\x00\xff\x00";
my $big1     = md5_hex('secret_mgmt big v1') x 32768;      # 1 MiB
my $big2     = md5_hex('secret_mgmt big v2') x 32768;      # 1 MiB
my $json     = '{"tls": {"verify": true}, "user": "svc", "ports": [5432, 6432]}';
my $blob_hex = unpack('H*', $blob);

is(length($big1), 1024 * 1024, '1 MiB value is 1 MiB');

sql_ok(
	$node, 'postgres', qq{
	SELECT secret_mgmt.secret_create('app/greeting', '$greeting');
	SELECT secret_mgmt.secret_create('app/blob', '\\x$blob_hex'::bytea);
	SELECT secret_mgmt.secret_create('app/config', '$json'::jsonb);
	SELECT secret_mgmt.secret_create('app/empty', ''::text);
	SELECT secret_mgmt.secret_create('app/big', repeat(md5('secret_mgmt big v1'), 32768));
	SELECT secret_mgmt.secret_update('app/big', repeat(md5('secret_mgmt big v2'), 32768));
	SELECT secret_mgmt.secret_create('db/password', 'pw-one'::text);
	SELECT secret_mgmt.secret_update('db/password', 'pw-two'::text);
	SELECT secret_mgmt.secret_update('db/password', 'pw-three'::text);
	SELECT secret_mgmt.secret_label('db/password', 'prod', 2);
	SELECT secret_mgmt.secret_rollback('db/password', 1);
	SELECT secret_mgmt.secret_create('db/old', 'old-one'::text);
	SELECT secret_mgmt.secret_update('db/old', 'old-two'::text);
	SELECT secret_mgmt.secret_version_disable('db/old', 1);
},
	'member writes secrets without selecting a tenant',
	role => 'acme_app');

sql_ok(
	$node, 'postgres',
	q{SELECT secret_mgmt.secret_create('db/password', 'globex-pw'::text)},
	'second tenant writes the same path',
	role => 'globex_app');

# One line per resolution: name|md5 (or <null>).
my $fingerprint_sql = qq{
	SELECT 'greeting', coalesce(md5(secret_mgmt.secret_resolve('app/greeting')), '<null>')
	UNION ALL SELECT 'blob', coalesce(md5(secret_mgmt.secret_resolve_bytea('app/blob')), '<null>')
	UNION ALL SELECT 'blob-length', length(secret_mgmt.secret_resolve_bytea('app/blob'))::text
	UNION ALL SELECT 'config', (secret_mgmt.secret_resolve_jsonb('app/config') = '$json'::jsonb)::text
	UNION ALL SELECT 'empty', coalesce(md5(secret_mgmt.secret_resolve('app/empty')), '<null>')
	UNION ALL SELECT 'big', coalesce(md5(secret_mgmt.secret_resolve('app/big')), '<null>')
	UNION ALL SELECT 'big-v1', coalesce(md5(secret_mgmt.secret_resolve('app/big', 1)), '<null>')
	UNION ALL SELECT 'big-previous', coalesce(md5(secret_mgmt.secret_resolve('app/big', 'previous')), '<null>')
	UNION ALL SELECT 'pw', secret_mgmt.secret_resolve('db/password')
	UNION ALL SELECT 'pw-v2', secret_mgmt.secret_resolve('db/password', 2)
	UNION ALL SELECT 'pw-v3', secret_mgmt.secret_resolve('db/password', 3)
	UNION ALL SELECT 'pw-previous', secret_mgmt.secret_resolve('db/password', 'previous')
	UNION ALL SELECT 'pw-prod', secret_mgmt.secret_resolve('db/password', 'prod')
	UNION ALL SELECT 'old', secret_mgmt.secret_resolve('db/old')
};
my $expected_fingerprint = join(
	"\n",
	'greeting|' . md5_hex($greeting),
	'blob|' . md5_hex($blob),
	'blob-length|' . length($blob),
	'config|true',
	'empty|' . md5_hex(''),
	'big|' . md5_hex($big2),
	'big-v1|' . md5_hex($big1),
	'big-previous|' . md5_hex($big1),
	'pw|pw-one',
	'pw-v2|pw-two',
	'pw-v3|pw-three',
	'pw-previous|pw-three',
	'pw-prod|pw-two',
	'old|old-two');

my $versions_sql = q{
	SELECT version, state, labels FROM secret_mgmt.secret_versions('db/password')
	UNION ALL
	SELECT version, state, labels FROM secret_mgmt.secret_versions('db/old')
};
my $expected_versions = join("\n",
	'1|enabled|{}', '2|enabled|{prod}', '3|enabled|{previous}',
	'4|enabled|{current}', '1|disabled|{previous}', '2|enabled|{current}');

my $key_rows_sql =
  q{SELECT tenant_id, key_id, kek_id, md5(wrapped), state FROM secret_mgmt.secret_data_key ORDER BY 1, 2};

my $check_after = sub {
	my ($when) = @_;
	is(scalar_sql($node, 'postgres', $fingerprint_sql, role => 'acme_app'),
		$expected_fingerprint, "$when: every value resolves to its bytes");
	is(scalar_sql($node, 'postgres', $versions_sql, role => 'acme_app'),
		$expected_versions, "$when: versions, states and labels");
	is( scalar_sql(
			$node, 'postgres',
			q{SELECT secret_mgmt.secret_resolve('db/password')},
			role => 'globex_app'),
		'globex-pw',
		"$when: second tenant resolves its own value");
	is( scalar_sql(
			$node, 'postgres',
			use_tenant_sql('acme')
			  . q{SELECT md5(secret_mgmt.secret_resolve('app/big'))}),
		md5_hex($big2),
		"$when: superuser resolves after secret_use_tenant");
	expect_error($node, 'postgres',
		q{SELECT secret_mgmt.secret_resolve('db/old', 1)},
		'SM001', qr/version 1 of secret "db\/old" is disabled/,
		"$when: disabled version stays disabled", role => 'acme_app');
	expect_error($node, 'postgres',
		q{SELECT secret_mgmt.secret_resolve('app/blob')},
		'SM007', qr/secret value is not valid text/,
		"$when: NUL bytes are not served as text", role => 'acme_app');
	expect_error($node, 'postgres',
		q{SELECT secret_mgmt.secret_resolve('app/missing')},
		'SM001', qr/secret "app\/missing" not found/,
		"$when: unknown path", role => 'acme_app');
};

$check_after->('before restart');
my $keys_before = scalar_sql($node, 'postgres', $key_rows_sql);
my @key_rows = split /\n/, $keys_before;
is(scalar(@key_rows), 2, 'one data key per tenant');

$node->restart;

$check_after->('after restart');
is(scalar_sql($node, 'postgres', $key_rows_sql),
	$keys_before, 'data keys unchanged by the restart');

# A write after the restart uses the existing data key.
sql_ok(
	$node, 'postgres', q{
	SELECT secret_mgmt.secret_update('db/password', 'pw-five'::text);
	SELECT secret_mgmt.secret_create('app/after', '\x00'::bytea || convert_to('after', 'SQL_ASCII'));
},
	'writes after restart',
	role => 'acme_app');
is( scalar_sql(
		$node, 'postgres', q{
	SELECT secret_mgmt.secret_resolve('db/password')
	UNION ALL SELECT secret_mgmt.secret_resolve('db/password', 'previous')
	UNION ALL SELECT encode(secret_mgmt.secret_resolve_bytea('app/after'), 'hex')},
		role => 'acme_app'),
	"pw-five\npw-one\n006166746572",
	'values written after restart resolve');
is( scalar_sql(
		$node, 'postgres',
		q{SELECT count(*) FROM secret_mgmt.secret_data_key WHERE tenant_id = 'acme'}),
	'1',
	'no new data key minted after restart');

$node->stop;
done_testing();
