# The root key: where it comes from, and failing closed without it.
#
# One node is restarted with each kind of key source:
#   (a) a different root key: resolving fails with SM005 naming the root
#       key mismatch; writes (a new path, an update, the first write of a
#       tenant created after the restart) fail too, and no data key, item,
#       version or envelope changes;
#   (b) a missing key file, (c) malformed keys (63 hex digits, non-hex),
#   (d) a key file readable by others, (e) a failing key_command, (f) both
#       key_file and key_command set: the server starts, logs a WARNING,
#       and every value operation fails with SM004 whose detail says why;
#   (e) key_command printing the right key works;
#   (g) back to the right key file: everything resolves again and writes
#       work, including the first data key of the tenant created in (a).
# The key's hex digits never appear in the server log or in any error.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SecretMgmtTest;

my ($node, $key_path, $key_a) = new_node('root_key');
my $keydir = PostgreSQL::Test::Utils::tempdir('sm_keys');
chmod 0700, $keydir;
my @errors;    # every error text seen, checked for key material at the end

setup_tenant($node, 'postgres', 'acme', 'acme_app');
sql_ok(
	$node, 'postgres', q{
	SELECT secret_mgmt.secret_create('db/password', 'pw-one'::text);
	SELECT secret_mgmt.secret_update('db/password', 'pw-two'::text);
	SELECT secret_mgmt.secret_create('api/blob', '\x00ff00'::bytea);
	SELECT secret_mgmt.secret_create('api/config', '{"k": [1, 2]}'::jsonb);
},
	'secrets written under the original key',
	role => 'acme_app');

my $fingerprint_sql = q{
	SELECT secret_mgmt.secret_resolve('db/password')
	UNION ALL SELECT secret_mgmt.secret_resolve('db/password', 1)
	UNION ALL SELECT encode(secret_mgmt.secret_resolve_bytea('api/blob'), 'hex')
	UNION ALL SELECT secret_mgmt.secret_resolve_jsonb('api/config')::text
};
my $expected_fingerprint = join("\n", 'pw-two', 'pw-one', '00ff00', '{"k": [1, 2]}');

# Everything stored, as the superuser (no row-level security applies).
my $stored_sql = q{
	SELECT (SELECT count(*) FROM secret_mgmt.secret_data_key) || '|' ||
	       (SELECT md5(string_agg(tenant_id || ':' || key_id || ':' || kek_id || ':' ||
	                              encode(wrapped, 'hex') || ':' || encryptions || ':' || state,
	                              ',' ORDER BY tenant_id, key_id))
	          FROM secret_mgmt.secret_data_key) || '|' ||
	       (SELECT count(*) FROM secret_mgmt.secret_item) || '|' ||
	       (SELECT count(*) FROM secret_mgmt.secret_version) || '|' ||
	       (SELECT md5(string_agg(encode(envelope, 'hex'), ','
	                              ORDER BY tenant_id, secret_id, version))
	          FROM secret_mgmt.secret_version)
};

is(scalar_sql($node, 'postgres', $fingerprint_sql, role => 'acme_app'),
	$expected_fingerprint, 'values resolve under the original key');
my $stored = scalar_sql($node, 'postgres', $stored_sql);
like($stored, qr/^1\|[0-9a-f]{32}\|3\|4\|[0-9a-f]{32}$/,
	'one data key, three secrets, four versions stored');

# Restart with the given key source; the server must come up regardless.
sub restart_with
{
	my ($label, %src) = @_;
	set_key_source($node, %src);
	my $offset = log_offset($node);
	$node->restart;
	is($node->safe_psql('postgres', 'SELECT 1'), '1', "$label: server started");
	return log_since($node, $offset);
}

my $sealed_warning =
  qr/WARNING:\s+secret_mgmt: secret store is sealed: the root key is not loaded/;

# The node must be sealed for the stated reason: startup WARNING with that
# detail, and SM004 with that detail on resolve and on write.
sub check_sealed
{
	my ($label, $log, $detail_re) = @_;
	like($log, $sealed_warning, "$label: startup WARNING");
	like($log, qr/DETAIL:\s+$detail_re/, "$label: WARNING says why");

	my $err = expect_error(
		$node, 'postgres',
		q{SELECT secret_mgmt.secret_resolve('db/password')},
		'SM004', qr/secret store is sealed: the root key is not loaded/,
		"$label: resolve", role => 'acme_app');
	# The reason names files and commands: only a superuser is told it.
	like($err, qr/DETAIL:\s+The server log says why\./,
		"$label: resolve error detail points a role at the log");
	unlike($err, qr/DETAIL:\s+$detail_re/, "$label: resolve error detail withholds the reason");
	push @errors, $err;

	$err = expect_error(
		$node, 'postgres',
		q{SELECT secret_mgmt.secret_create('db/sealed', 'x'::text)},
		'SM004', qr/secret store is sealed/,
		"$label: create", role => 'acme_app');
	push @errors, $err;
	$err = expect_error($node, 'postgres',
		use_tenant_sql('acme') . q{SELECT secret_mgmt.secret_resolve_bytea('api/blob')},
		'SM004', qr/secret store is sealed/, "$label: superuser resolve");
	like($err, qr/DETAIL:\s+$detail_re/, "$label: superuser resolve error detail says why");
	push @errors, $err;
	is(scalar_sql($node, 'postgres', $stored_sql), $stored, "$label: nothing stored changed");
}

# (a) A different root key.
my $key_b = random_hex(32);
my $key_b_path = write_key_file("$keydir/other.key", "$key_b\n");
my $log = restart_with('other key', key_file => $key_b_path);
unlike($log, $sealed_warning, 'other key: a well-formed key loads without warning');

my $err = expect_error(
	$node, 'postgres',
	q{SELECT secret_mgmt.secret_resolve('db/password')},
	'SM005', qr/data key 1 of tenant "acme" was wrapped by a different root key/,
	'other key: resolve', role => 'acme_app');
like($err, qr/DETAIL:\s+The loaded root key has id [0-9a-f]{16}; the data key needs root key [0-9a-f]{16}\./,
	'other key: detail names both root key ids');
push @errors, $err;
push @errors,
  expect_error($node, 'postgres',
	use_tenant_sql('acme') . q{SELECT secret_mgmt.secret_resolve('db/password', 1)},
	'SM005', qr/was wrapped by a different root key/, 'other key: superuser resolve');
push @errors,
  expect_error($node, 'postgres',
	q{SELECT secret_mgmt.secret_create('db/new', 'new-value'::text)},
	'SM005', qr/was wrapped by a different root key/,
	'other key: create a new path', role => 'acme_app');
push @errors,
  expect_error($node, 'postgres',
	q{SELECT secret_mgmt.secret_update('db/password', 'pw-three'::text)},
	'SM005', qr/was wrapped by a different root key/,
	'other key: update', role => 'acme_app');

# A tenant created after the restart: its first write would mint a data key.
setup_tenant($node, 'postgres', 'fresh', 'fresh_app');
$err = expect_error(
	$node, 'postgres',
	q{SELECT secret_mgmt.secret_create('first/secret', 'first-value'::text)},
	'SM005', qr/refusing to create a data key: this database was encrypted with a different root key/,
	'other key: first write of a new tenant', role => 'fresh_app');
push @errors, $err;
is(scalar_sql($node, 'postgres', $stored_sql), $stored,
	'other key: no data key minted, no secret, version or envelope changed');
is( scalar_sql(
		$node, 'postgres',
		q{SELECT count(*) FROM secret_mgmt.secret_data_key WHERE tenant_id = 'fresh'}),
	'0',
	'other key: new tenant has no data key');

# (b) The key file is missing.
$log = restart_with('missing file', key_file => "$keydir/missing.key");
check_sealed('missing file', $log,
	qr/Could not open key file "\Q$keydir\E\/missing\.key": No such file or directory/);

# (c) Malformed keys.
my $short = substr($key_a, 0, 63);
write_key_file("$keydir/short.key", "$short\n");
$log = restart_with('63 hex digits', key_file => "$keydir/short.key");
check_sealed('63 hex digits', $log, qr/The root key must be exactly 64 hexadecimal digits/);

my $nonhex = substr($key_a, 0, 31) . 'g' . substr($key_a, 32);
write_key_file("$keydir/nonhex.key", "$nonhex\n");
$log = restart_with('non-hex key', key_file => "$keydir/nonhex.key");
check_sealed('non-hex key', $log, qr/The root key must be exactly 64 hexadecimal digits/);

# (d) The right key, in a file others may read.
write_key_file("$keydir/open.key", "$key_a\n", 0644);
$log = restart_with('mode 0644', key_file => "$keydir/open.key");
check_sealed('mode 0644', $log, qr/Key file "\Q$keydir\E\/open\.key" is accessible to other users; its mode must be 0600/);

# (e) key_command.
$log = restart_with('key_command', key_command => "cat $key_path");
unlike($log, $sealed_warning, 'key_command: no warning');
is(scalar_sql($node, 'postgres', $fingerprint_sql, role => 'acme_app'),
	$expected_fingerprint, 'key_command: everything resolves');

$log = restart_with('failing key_command', key_command => 'false');
check_sealed('failing key_command', $log, qr/secret_mgmt\.key_command exited with status 1/);

# (f) Both set, even to the right key.
$log = restart_with('both set', key_file => $key_path, key_command => "cat $key_path");
check_sealed('both set', $log,
	qr/secret_mgmt\.key_file and secret_mgmt\.key_command are both set/);

# (g) Back to the right key.
$log = restart_with('right key', key_file => $key_path);
unlike($log, $sealed_warning, 'right key: no warning');
is(scalar_sql($node, 'postgres', $fingerprint_sql, role => 'acme_app'),
	$expected_fingerprint, 'right key: everything resolves again');
is(scalar_sql($node, 'postgres', $stored_sql), $stored, 'right key: storage untouched');
is( scalar_sql(
		$node, 'postgres', q{
	SELECT secret_mgmt.secret_create('first/secret', 'first-value'::text) IS NOT NULL;
	SELECT secret_mgmt.secret_resolve('first/secret')},
		role => 'fresh_app'),
	"t\nfirst-value",
	'right key: the new tenant writes and resolves');
is( scalar_sql(
		$node, 'postgres', q{
	SELECT secret_mgmt.secret_update('db/password', 'pw-three'::text);
	SELECT secret_mgmt.secret_resolve('db/password')},
		role => 'acme_app'),
	"3\npw-three",
	'right key: updates work');
is( scalar_sql(
		$node, 'postgres',
		q{SELECT string_agg(tenant_id || ':' || key_id, ',' ORDER BY tenant_id, key_id)
		    FROM secret_mgmt.secret_data_key}),
	'acme:1,fresh:1',
	'right key: exactly one data key minted, for the new tenant');

# No key material anywhere.
$node->stop;
my $full_log = slurp_file($node->logfile);
like($full_log, $sealed_warning, 'the log holds the startup warnings');
my $all_errors = join("\n", @errors);
for my $secret ([ 'root key', $key_a ], [ 'other key', $key_b ])
{
	my ($name, $hex) = @{$secret};
	for my $part (substr($hex, 0, 32), substr($hex, 32, 32))
	{
		unlike($full_log, qr/\Q$part\E/i, "$name: no half of it in the server log");
		unlike($all_errors, qr/\Q$part\E/i, "$name: no half of it in any error");
	}
}

done_testing();
