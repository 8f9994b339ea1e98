# HashiCorp Vault Transit as a tenant's KMS, end to end, over HTTPS with a
# test CA, against the loopback fixture.
#
#   - tenant acme authenticates with AppRole under the minimal policy of
#     docs/backends.md; tenant globex with a token, a derived Transit key
#     (context per data key) and a namespace;
#   - a data key is wrapped by Transit once, before its row exists, and
#     stored as Transit's "vault:v1:" ciphertext; each backend unwraps it
#     once and then serves from its cache;
#   - a wrapped key moved to another key id or tenant is refused (SM005);
#   - Transit key rotation followed by secret_rekey() moves every data key
#     to the new version (the old one can then be disabled for decryption);
#   - an AppRole token is renewed with renew-self when two thirds of its
#     lease have passed; a revoked token is replaced from the credential
#     secret after Vault's 403;
#   - a sealed Vault fails closed with SM006 and changes nothing;
#   - no token or credential ever reaches the server log.

use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SecretMgmtTest;
use SecretMgmtVault;

my $dir = PostgreSQL::Test::Utils::tempdir('vault_kms');
make_certs($dir);
my $vault = start_vault($dir);
my $url = $vault->{url};
my $fixtures = fixtures_dir();

my $node = new_node(
	'vault_kms',
	conf => "secret_mgmt.ca_file = '$vault->{ca}'\n"
	  . "secret_mgmt.http_timeout_ms = 5000\n"
	  . "log_min_messages = debug1\n");

# --- the Vault side ---------------------------------------------------
my $policy_acme = <<'HCL';
path "transit/encrypt/acme" { capabilities = ["update"] }
path "transit/decrypt/acme" { capabilities = ["update"] }
path "transit/rewrap/acme"  { capabilities = ["update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self"  { capabilities = ["update"] }
HCL
(my $policy_globex = $policy_acme) =~ s/acme/globex/g;
vault_ok($vault, 'POST', '/v1/sys/policy/pg-acme', { policy => $policy_acme });
vault_ok($vault, 'POST', '/v1/sys/policy/pg-globex', { policy => $policy_globex });
vault_ok($vault, 'POST', '/v1/transit/keys/acme', {});
vault_ok($vault, 'POST', '/v1/transit/keys/globex', { derived => JSON::PP::true });
vault_ok($vault, 'POST', '/v1/auth/approle/role/pg',
	{ token_policies => ['pg-acme'], token_ttl => '9s', token_max_ttl => '1h' });
my $role_id = vault_ok($vault, 'GET', '/v1/auth/approle/role/pg/role-id')->{data}{role_id};
my $secret_id =
  vault_ok($vault, 'POST', '/v1/auth/approle/role/pg/secret-id', {})->{data}{secret_id};
my $token1 = vault_ok($vault, 'POST', '/v1/auth/token/create',
	{ policies => ['pg-globex'], ttl => '1h' })->{auth}{client_token};
my @secrets = ($vault->{root}, $secret_id, $role_id, $token1);

# Credentials reach the database only through files read server-side, so
# they appear in no SQL text.
sub secret_file
{
	my ($name, $content) = @_;
	my $path = "$dir/$name";
	open my $fh, '>', $path or die;
	print $fh $content;
	close $fh;
	chmod 0600, $path;
	return $path;
}
my $approle_file = secret_file('approle.json', encode_json({ role_id => $role_id, secret_id => $secret_id }));
my $token1_file = secret_file('token1', $token1);

sql_ok(
	$node, 'postgres', qq{
	SELECT secret_mgmt.secret_use_tenant('global');
	SELECT secret_mgmt.secret_create('vault/approle', pg_read_file('$approle_file')::jsonb);
	SELECT secret_mgmt.secret_create('vault/globex-token', pg_read_file('$token1_file'));
	SELECT secret_mgmt.secret_use_tenant(NULL);
	CREATE ROLE acme_app LOGIN;
	CREATE ROLE globex_app LOGIN;
	SELECT secret_mgmt.secret_tenant_create('acme', 'vault', jsonb_build_object(
	    'address', '$url', 'key', 'acme', 'auth', 'approle',
	    'credentials_path', 'vault/approle'));
	SELECT secret_mgmt.secret_tenant_create('globex', 'vault', jsonb_build_object(
	    'address', '$url', 'key', 'globex', 'auth', 'token', 'derived', true,
	    'namespace', 'ns1', 'credentials_path', 'vault/globex-token'));
	SELECT secret_mgmt.secret_tenant_add_member('acme', 'acme_app');
	SELECT secret_mgmt.secret_tenant_add_member('globex', 'globex_app');
	SELECT secret_mgmt.secret_use_tenant('acme');
	SELECT secret_mgmt.secret_grant('**', 'acme_app', ARRAY['read', 'list', 'create', 'update']);
	SELECT secret_mgmt.secret_use_tenant('globex');
	SELECT secret_mgmt.secret_grant('**', 'globex_app', ARRAY['read', 'list', 'create', 'update']);
	SELECT secret_mgmt.secret_use_tenant(NULL);
	CREATE TABLE sink (line text);
},
	'credentials stored in the global tenant, vault tenants created');

# Requests the fixture saw, filtered.
sub requests
{
	my ($re, $status) = @_;
	return scalar grep { $_->{path} =~ $re && (!defined $status || $_->{status} == $status) }
	  @{ fixture_requests($vault) };
}

# --- wrap on first write, unwrap once per backend -----------------------
is(requests(qr{/transit/(?:en|de)crypt/}), 0, 'no Transit call before the first write');
sql_ok(
	$node, 'postgres', q{
	SELECT secret_mgmt.secret_create('db/password', 'acme-one');
	SELECT secret_mgmt.secret_update('db/password', 'acme-two');
	SELECT secret_mgmt.secret_resolve('db/password');
},
	'acme writes and reads through Vault Transit',
	role => 'acme_app');
is(requests(qr{/auth/approle/login$}, 200), 1, 'one AppRole login');
is(requests(qr{/transit/encrypt/acme$}, 200), 1, 'the data key was wrapped once');
is(requests(qr{/transit/decrypt/acme$}), 0,
	'the writing backend kept the key it minted: no unwrap');
is( $node->safe_psql(
		'postgres', q{
	SELECT key_id || ' ' || kek_id || ' ' || (convert_from(wrapped, 'UTF8') ~ '^vault:v1:[A-Za-z0-9+/=]+$')
	  FROM secret_mgmt.secret_data_key WHERE tenant_id = 'acme'}),
	'1 vault:acme true',
	'the stored wrapped key is the Transit ciphertext, kek_id names the Transit key');

is( $node->safe_psql(
		'postgres',
		"SELECT secret_mgmt.secret_resolve('db/password'), secret_mgmt.secret_resolve('db/password', 1),"
		  . " secret_mgmt.secret_resolve('db/password')",
		extra_params => [ '-U', 'acme_app' ]),
	'acme-two|acme-one|acme-two',
	'a new backend resolves every version');
is(requests(qr{/transit/decrypt/acme$}, 200), 1,
	'the new backend unwrapped the data key once for three reads');

# globex: token auth, derived key (the context is required), namespace.
is( $node->safe_psql(
		'postgres',
		"SELECT secret_mgmt.secret_create('api/key', 'globex-one') IS NOT NULL",
		extra_params => [ '-U', 'globex_app' ]),
	't', 'globex writes with a derived Transit key');
is( $node->safe_psql(
		'postgres', "SELECT secret_mgmt.secret_resolve('api/key')",
		extra_params => [ '-U', 'globex_app' ]),
	'globex-one', 'globex resolves in a new backend');
ok( (grep { $_->{path} =~ m{/transit/(en|de)crypt/globex$} && ($_->{namespace} // '') ne 'ns1' }
		@{ fixture_requests($vault) }) == 0
	  && requests(qr{/transit/decrypt/globex$}, 200) == 1,
	'every globex Transit call carried the namespace header');
is(requests(qr{/auth/token/lookup-self$}, 200), 2,
	'the configured token was looked up once per backend');

# --- a moved wrapped key is refused ------------------------------------
sql_ok(
	$node, 'postgres', q{
	SELECT secret_mgmt.secret_use_tenant('acme');
	SET secret_mgmt.data_key_rotate_after = 1;
	SELECT secret_mgmt.secret_update('db/password', 'acme-three');
},
	'acme rotates to a second data key');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM secret_mgmt.secret_data_key WHERE tenant_id = 'acme'"),
	'2', 'acme has two data keys');

my $swap = q{
	UPDATE secret_mgmt.secret_data_key d SET wrapped = o.wrapped
	  FROM secret_mgmt.secret_data_key o
	 WHERE d.tenant_id = 'acme' AND o.tenant_id = 'acme' AND d.key_id <> o.key_id;
};
$node->safe_psql('postgres', $swap);
my $err = expect_error(
	$node, 'postgres', q{SELECT secret_mgmt.secret_resolve('db/password', 1)},
	'SM005', qr/data key 1 of tenant "acme" failed its integrity check/,
	'key 1 wrapped as key 2', role => 'acme_app');
like($err, qr/wrapped for another tenant or key id/, 'the binding record caught the move');
$node->safe_psql('postgres', $swap);

my $saved = $node->safe_psql('postgres',
	"SELECT encode(wrapped, 'hex') FROM secret_mgmt.secret_data_key WHERE tenant_id = 'acme' AND key_id = 1");
$node->safe_psql(
	'postgres', q{
	UPDATE secret_mgmt.secret_data_key SET wrapped =
	    (SELECT wrapped FROM secret_mgmt.secret_data_key WHERE tenant_id = 'globex' AND key_id = 1)
	 WHERE tenant_id = 'acme' AND key_id = 1});
expect_error(
	$node, 'postgres', q{SELECT secret_mgmt.secret_resolve('db/password', 1)},
	'SM005', qr/could not decrypt with Transit key "acme": the ciphertext does not authenticate/,
	"globex's wrapped key in acme's row", role => 'acme_app');
$node->safe_psql('postgres',
	"UPDATE secret_mgmt.secret_data_key SET wrapped = decode('$saved', 'hex') WHERE tenant_id = 'acme' AND key_id = 1");
is( $node->safe_psql(
		'postgres', "SELECT secret_mgmt.secret_resolve('db/password', 1)",
		extra_params => [ '-U', 'acme_app' ]),
	'acme-one', 'restored, version 1 resolves again');

# --- Transit key rotation, then secret_rekey ---------------------------
vault_ok($vault, 'POST', '/v1/transit/keys/acme/rotate', {});
my $before = requests(qr{/transit/rewrap/acme$}, 200);
is( $node->safe_psql('postgres', "SELECT secret_mgmt.secret_rekey('acme')"),
	'2', 'secret_rekey rewrapped both data keys of acme');
is(requests(qr{/transit/rewrap/acme$}, 200) - $before, 2, 'through the Transit rewrap endpoint');
is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(substr(convert_from(wrapped, 'UTF8'), 1, 9), ',' ORDER BY key_id)
	  FROM secret_mgmt.secret_data_key WHERE tenant_id = 'acme'}),
	'vault:v2:,vault:v2:',
	'every data key is now wrapped by Transit key version 2');
vault_ok($vault, 'POST', '/v1/transit/keys/acme/config', { min_decryption_version => 2 });
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(secret_mgmt.secret_resolve('db/password', v), ',' ORDER BY v)"
		  . " FROM generate_series(1, 3) v",
		extra_params => [ '-U', 'acme_app' ]),
	'acme-one,acme-two,acme-three',
	'with version 1 disabled in Vault, every version still resolves');

# --- AppRole token renewal (renew-self at two thirds of the lease) ------
my $logins = requests(qr{/auth/approle/login$}, 200);
my $renewals = requests(qr{/auth/token/renew-self$}, 200);
my $out = $node->safe_psql(
	'postgres', q{
	SELECT secret_mgmt.secret_use_tenant('acme');
	SET secret_mgmt.cache_ttl = 1;
	SELECT secret_mgmt.secret_resolve('db/password');
	SELECT pg_sleep(6.5);
	SELECT secret_mgmt.secret_resolve('db/password');
});
like($out, qr/acme-three\s+acme-three/, 'both reads succeed');
is(requests(qr{/auth/approle/login$}, 200) - $logins, 1, 'one login for the session');
is(requests(qr{/auth/token/renew-self$}, 200) - $renewals, 1,
	'the AppRole token was renewed with renew-self before it expired');

# --- a revoked token is replaced after Vault's 403 ----------------------
my $token2 = vault_ok($vault, 'POST', '/v1/auth/token/create',
	{ policies => ['pg-globex'], ttl => '1h' })->{auth}{client_token};
push @secrets, $token2;
my $token2_file = secret_file('token2', $token2);
my $revoke_file = secret_file('revoke.json', encode_json({ token => $token1 }));
my $forbidden = requests(qr{/transit/decrypt/globex$}, 403);
$out = $node->safe_psql(
	'postgres', qq{
	SELECT secret_mgmt.secret_use_tenant('globex');
	SET secret_mgmt.cache_ttl = 1;
	SELECT secret_mgmt.secret_resolve('api/key');
	SELECT secret_mgmt.secret_use_tenant('global');
	SELECT secret_mgmt.secret_update('vault/globex-token', pg_read_file('$token2_file'));
	COPY sink FROM PROGRAM '/usr/bin/python3 $fixtures/vault_admin.py $url $vault->{ca} \@$dir/root_token POST /v1/auth/token/revoke \@$revoke_file';
	SELECT secret_mgmt.secret_use_tenant('globex');
	SELECT pg_sleep(1.2);
	SELECT secret_mgmt.secret_resolve('api/key');
});
like($out, qr/globex-one.*globex-one/s, 'reads before and after the revocation succeed');
is(requests(qr{/transit/decrypt/globex$}, 403) - $forbidden, 1,
	'the revoked token got 403 once, then the new token from the credential secret was used');

# --- sealed: fail closed ------------------------------------------------
my $state_sql = q{
	SELECT (SELECT count(*) FROM secret_mgmt.secret_data_key) || '/' ||
	       (SELECT count(*) FROM secret_mgmt.secret_version) || '/' ||
	       (SELECT md5(string_agg(wrapped::text, ',' ORDER BY tenant_id, key_id))
	          FROM secret_mgmt.secret_data_key)};
my $state = $node->safe_psql('postgres', $state_sql);
vault_ok($vault, 'POST', '/v1/sys/seal', {});
$err = expect_error(
	$node, 'postgres', q{SELECT secret_mgmt.secret_resolve('db/password')},
	'SM006', qr/vault at \Q$url\E is sealed or unavailable/,
	'sealed: resolve in a new backend', role => 'acme_app');
like($err, qr/HINT:\s+Nothing was changed/, 'sealed: the hint says nothing changed');
expect_error(
	$node, 'postgres', q{
	SELECT secret_mgmt.secret_use_tenant('acme');
	SET secret_mgmt.data_key_rotate_after = 1;
	SELECT secret_mgmt.secret_update('db/password', 'never-stored');
},
	'SM006', qr/is sealed or unavailable/, 'sealed: a write that needs a new data key');
expect_error(
	$node, 'postgres', q{SELECT secret_mgmt.secret_rekey('acme')},
	'SM006', qr/is sealed or unavailable/, 'sealed: secret_rekey');
is($node->safe_psql('postgres', $state_sql), $state, 'sealed: nothing stored changed');
vault_api($vault, 'POST', '/v1/sys/unseal', { key => 'fixture' });
is( $node->safe_psql(
		'postgres', "SELECT secret_mgmt.secret_resolve('db/password')",
		extra_params => [ '-U', 'acme_app' ]),
	'acme-three', 'unsealed: reads work again');

# --- nothing secret in the server log -----------------------------------
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
like($log, qr/DEBUG/, 'the server log was written at DEBUG1');
for my $s (@secrets)
{
	ok(index($log, $s) < 0, 'a Vault token or credential is not in the server log');
}
unlike($log, qr/X-Vault-Token/i, 'no request header in the server log');

done_testing();
