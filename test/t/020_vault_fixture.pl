# The Vault fixture speaks Vault's protocol, not just ours.
#
# The official client from Debian (python3-hvac), unmodified, drives the
# fixture over HTTPS with a CA made for this test: token lookup, creation
# and renew-self, policies, AppRole login and renewal, Transit encrypt /
# decrypt / rewrap / rotate with the real "vault:vN:" format, derived keys
# and min_decryption_version, KV v2 with check-and-set and max_versions
# and every call the store's deliveries make (create-only writes, soft
# delete, undelete, destroy, metadata delete, 404 with metadata),
# and the sealed switch answering 503.  Every check the client script makes
# must pass, and the fixture must refuse a client that does not trust its
# CA.

use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use SecretMgmtVault;

my $dir = PostgreSQL::Test::Utils::tempdir('vault_fixture');
make_certs($dir);
my $vault = start_vault($dir);
my $fixtures = fixtures_dir();

my ($out, $err) = ('', '');
my $ok = IPC::Run::run(
	[
		'/usr/bin/python3', "$fixtures/hvac_check.py",
		$vault->{url}, $vault->{ca}, "$dir/root_token"
	],
	'>', \$out, '2>', \$err);
ok($ok, 'hvac conformance script exits 0') or diag($err);

my @checks = $out =~ /^ok - (.*)$/mg;
note("hvac: $_") for @checks;
for my $want (
	'token auth: create, lookup-self and renew-self',
	'approle: role, role-id, secret-id and login',
	'approle: renew-self is clamped by token_max_ttl',
	'transit: encrypt gives vault:v1: + base64(nonce | ciphertext | tag)',
	'transit: decrypt round trip (AppRole token within its policy)',
	'transit: rotate, then rewrap moves a ciphertext to v2',
	'transit: min_decryption_version refuses v1',
	'transit: a derived key binds the context',
	'kv v2: max_versions prunes the oldest versions',
	'kv v2: check-and-set, and a metadata update with max_versions',
	'kv v2: cas=0 creates only',
	'kv v2: deleting the newest version makes it read as 404',
	'kv v2: the metadata keeps the deleted version and the older one reads',
	'kv v2: a destroyed version reads as 404',
	'kv v2: deleting the metadata removes the key',
	'sealed: requests get 503 Vault is sealed',
	'sealed: unseal restores service')
{
	ok((grep { $_ eq $want } @checks), "hvac: $want");
}
cmp_ok(scalar(@checks), '>=', 29, 'hvac ran every check');

# TLS is real: a client with another CA is refused.
($out, $err) = ('', '');
$ok = IPC::Run::run(
	[
		'/usr/bin/python3', "$fixtures/vault_admin.py", $vault->{url},
		"$dir/wrong_ca.crt", $vault->{root}, 'GET', '/v1/sys/seal-status'
	],
	'>', \$out, '2>', \$err);
ok(!$ok && $err =~ /CERTIFICATE_VERIFY_FAILED|certificate verify failed/,
	'a client that does not trust the test CA is refused');

# The fixture logged requests, never tokens.
my $log = PostgreSQL::Test::Utils::slurp_file($vault->{log});
unlike($log, qr/\Q$vault->{root}\E/, 'the fixture log holds no token');

done_testing();
