# Pooled principals: secret_assume() with HS256, RS256 and ES256 tokens
# verified in C, and every forgery refused with its reason.
#
# A broker login role with no access of its own assumes tokens of two
# tenants; valid tokens give exactly the token subject's and groups'
# grants, for the transaction only.  Refused: a wrong key, a tampered
# payload, an expired or not-yet-valid token, a wrong audience or issuer,
# alg "none", HS256 signed with an RS256 public key, an unknown kid, a
# key of another tenant, a missing exp, malformed tokens, and a caller
# that is not a broker.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SecretMgmtTest;
use SecretMgmtToken;

my $node = new_node('tokens');
my $keydir = PostgreSQL::Test::Utils::tempdir();

my $hs_secret = random_hex(32);
my $rsa = new_rsa_key($keydir, 'rsa');
my $ec = new_ec_key($keydir, 'ec');
my $other_rsa = new_rsa_key($keydir, 'other');
my ($rsa_pub, $ec_pub) = (public_pem($rsa), public_pem($ec));

# Two tenants, one broker for both, keys and grants for token principals.
$node->safe_psql(
	'postgres', qq{
	CREATE ROLE api_broker LOGIN;
	CREATE ROLE plain_app LOGIN;
	SELECT secret_mgmt.secret_tenant_create('acme');
	SELECT secret_mgmt.secret_tenant_create('globex');
	SELECT secret_mgmt.secret_broker_add('acme', 'api_broker');
	SELECT secret_mgmt.secret_broker_add('globex', 'api_broker');
	SELECT secret_mgmt.secret_tenant_add_member('acme', 'plain_app');
	SELECT secret_mgmt.secret_token_key_add('acme', 'hs1', 'HS256', '$hs_secret',
	       audience => 'secret-api', issuer => 'https://idp.example');
	SELECT secret_mgmt.secret_token_key_add('acme', 'rs1', 'RS256', '$rsa_pub');
	SELECT secret_mgmt.secret_token_key_add('globex', 'es1', 'ES256', '$ec_pub');
	SELECT secret_mgmt.secret_use_tenant('acme');
	SELECT secret_mgmt.secret_create('app/key', 'acme-value');
	SELECT secret_mgmt.secret_create('pay/card-key', 'acme-payments');
	SELECT secret_mgmt.secret_grant('app/*', 'token:alice', ARRAY['read', 'create', 'list']);
	SELECT secret_mgmt.secret_grant('pay/**', 'group:payments', ARRAY['read']);
	SELECT secret_mgmt.secret_grant('**', 'api_broker', ARRAY['read']);
	SELECT secret_mgmt.secret_grant('**', 'plain_app', ARRAY['read']);
	SELECT secret_mgmt.secret_use_tenant('globex');
	SELECT secret_mgmt.secret_create('app/key', 'globex-value');
	SELECT secret_mgmt.secret_grant('app/*', 'token:bob', ARRAY['read']);
});

my $now = time();
my %acme_claims = (
	tenant => 'acme', sub => 'alice', exp => $now + 600, iat => $now,
	aud => 'secret-api', iss => 'https://idp.example');

sub hs_token
{
	my (%over) = @_;
	my %claims = (%acme_claims, %over);
	delete $claims{$_} for grep { !defined $claims{$_} } keys %claims;
	return mint_token(
		alg => 'HS256', secret => $hs_secret,
		header => { alg => 'HS256', typ => 'JWT', kid => 'hs1' },
		claims => \%claims);
}

# Run, as the broker, BEGIN; secret_assume($token); $sql; COMMIT.
sub as_token
{
	my ($token, $sql, %opt) = @_;
	return sql_result($node, 'postgres',
		"BEGIN; SELECT secret_mgmt.secret_assume('$token'); $sql; COMMIT;",
		role => $opt{role} // 'api_broker');
}

sub token_reads
{
	my ($token, $path, $expect, $name) = @_;
	my ($rc, $out, $err) =
	  as_token($token, "SELECT secret_mgmt.secret_resolve('$path')");
	is($rc, 0, "$name: accepted") or diag($err);
	like($out, qr/^\Q$expect\E$/m, "$name: reads its tenant's value");
}

sub token_refused
{
	my ($token, $reason, $name, %opt) = @_;
	my ($rc, $out, $err) =
	  as_token($token, "SELECT secret_mgmt.secret_resolve('app/key')", %opt);
	isnt($rc, 0, "$name: refused");
	like($err, qr/ERROR:\s+SM002:\s+token rejected: \Q$reason\E\n/, "$name: SM002 $reason");
	unlike($err, qr/\Q$token\E/, "$name: the token is not echoed");
	unlike($out, qr/value/, "$name: no value served");
}

# Valid tokens of the three algorithms.
token_reads(hs_token(), 'app/key', 'acme-value', 'HS256');
token_reads(
	mint_token(
		alg => 'RS256', keyfile => $rsa,
		header => { alg => 'RS256', kid => 'rs1' },
		claims => { tenant => 'acme', sub => 'alice', exp => $now + 600 }),
	'app/key', 'acme-value', 'RS256');
token_reads(
	mint_token(
		alg => 'ES256', keyfile => $ec,
		header => { alg => 'ES256', kid => 'es1' },
		claims => { tenant => 'globex', sub => 'bob', exp => $now + 600 }),
	'app/key', 'globex-value', 'ES256 (other tenant)');
token_reads(hs_token(sub => 'carol', groups => ['payments', 'x']),
	'pay/card-key', 'acme-payments', 'group grant');
token_reads(hs_token(exp => $now - 10), 'app/key', 'acme-value', 'expired within the leeway');

# The token principal holds only its own grants.
my ($rc, $out, $err) = as_token(hs_token(sub => 'carol', groups => ['payments']),
	"SELECT secret_mgmt.secret_resolve('app/key')");
like($err, qr/SM001:\s+secret "app\/key" not found/, 'a token without a grant gets nothing');

# Writes under a token are recorded as the token subject.
($rc, $out, $err) = as_token(hs_token(),
	"SELECT secret_mgmt.secret_create('app/by-token', 'v');"
	  . "SELECT created_by FROM secret_mgmt.secret_versions('app/by-token')");
like($out, qr/^token:alice$/m, 'created_by names the token subject');

# Forgeries.
my $wrong_secret = mint_token(
	alg => 'HS256', secret => random_hex(32),
	header => { alg => 'HS256', kid => 'hs1' }, claims => \%acme_claims);
token_refused($wrong_secret, 'bad_signature', 'wrong HMAC key');

my $good = hs_token();
my ($h, $p, $s) = split /\./, $good;
my $evil = MIME::Base64::encode_base64url(
	SecretMgmtToken::to_json({ %acme_claims, sub => 'mallory' }));
token_refused("$h.$evil.$s", 'bad_signature', 'tampered payload');

token_refused(hs_token(exp => $now - 120), 'expired', 'expired');
token_refused(hs_token(nbf => $now + 300), 'not_yet_valid', 'not yet valid');
token_refused(hs_token(iat => $now + 300), 'issued_in_future', 'issued in the future');
token_refused(hs_token(aud => 'another-api'), 'wrong_audience', 'wrong audience');
token_refused(hs_token(aud => undef), 'wrong_audience', 'missing audience');
token_refused(hs_token(iss => 'https://evil.example'), 'wrong_issuer', 'wrong issuer');
token_refused(hs_token(exp => undef), 'missing_claim', 'no exp');

my $none = mint_token(
	alg => 'none', header => { alg => 'none', kid => 'hs1' }, claims => \%acme_claims);
token_refused($none, 'algorithm_not_allowed', 'alg none');

# Algorithm confusion: HS256 keyed with the RS256 key's public PEM.
my $confused = mint_token(
	alg => 'HS256', secret => $rsa_pub,
	header => { alg => 'HS256', kid => 'rs1' },
	claims => { tenant => 'acme', sub => 'alice', exp => $now + 600 });
token_refused($confused, 'algorithm_not_allowed', 'HS256 signed with the RS256 public key');

my $other_key = mint_token(
	alg => 'RS256', keyfile => $other_rsa,
	header => { alg => 'RS256', kid => 'rs1' },
	claims => { tenant => 'acme', sub => 'alice', exp => $now + 600 });
token_refused($other_key, 'bad_signature', 'RS256 signed by another key');

my $es_for_acme = mint_token(
	alg => 'ES256', keyfile => $ec,
	header => { alg => 'ES256', kid => 'es1' },
	claims => { tenant => 'acme', sub => 'alice', exp => $now + 600 });
token_refused($es_for_acme, 'unknown_key', "another tenant's key");

token_refused(
	mint_token(
		alg => 'HS256', secret => $hs_secret,
		header => { alg => 'HS256', kid => 'nope' }, claims => \%acme_claims),
	'unknown_key', 'unknown kid');
token_refused('abc.def', 'malformed', 'two parts');
token_refused('!!!.???.###', 'malformed', 'not base64url');
token_refused(hs_token(), 'not_a_broker', 'caller not a broker', role => 'plain_app');

# Nothing outlives the transaction; a broker has no access of its own,
# even with a grant of its own.
($rc, $out, $err) = sql_result($node, 'postgres',
	"BEGIN; SELECT secret_mgmt.secret_assume('$good'); COMMIT;"
	  . "SELECT secret_mgmt.secret_resolve('app/key');",
	role => 'api_broker');
like($err, qr/SM001:\s+secret "app\/key" not found/, 'after COMMIT the broker has nothing');
($rc, $out, $err) = sql_result($node, 'postgres',
	"BEGIN; SELECT secret_mgmt.secret_assume('$good'); ROLLBACK;"
	  . "SELECT secret_mgmt.secret_resolve('app/key');",
	role => 'api_broker');
like($err, qr/SM001:\s+secret "app\/key" not found/, 'after ROLLBACK the broker has nothing');
($rc, $out, $err) = sql_result($node, 'postgres',
	"SELECT secret_mgmt.secret_assume('$good')", role => 'api_broker');
like($err, qr/WARNING:\s+[0-9A-Z]+:\s+secret_assume\(\) outside a transaction block lasts only for this statement/,
	'outside a transaction block: a warning');
($rc, $out, $err) = sql_result($node, 'postgres',
	"BEGIN; SAVEPOINT s; SELECT secret_mgmt.secret_assume('$good'); ROLLBACK TO SAVEPOINT s;"
	  . "SELECT secret_mgmt.secret_resolve('app/key'); COMMIT;",
	role => 'api_broker');
like($err, qr/SM001:\s+secret "app\/key" not found/, 'ROLLBACK TO SAVEPOINT undoes secret_assume');
($rc, $out, $err) = sql_result($node, 'postgres',
	"BEGIN; SAVEPOINT s; SELECT secret_mgmt.secret_assume('$good'); RELEASE SAVEPOINT s;"
	  . "SELECT secret_mgmt.secret_resolve('app/key'); COMMIT;",
	role => 'api_broker');
like($out, qr/^acme-value$/m, 'a released savepoint keeps secret_assume');

# A token's tenant and context come from its claims alone.
($rc, $out, $err) = as_token($good, "SELECT secret_mgmt.secret_use_tenant('globex')");
like($err, qr/SM002:\s+secret_use_tenant\(\) is not allowed after secret_assume\(\)/,
	'no secret_use_tenant after secret_assume');
($rc, $out, $err) = as_token($good, "SELECT secret_mgmt.secret_set_context(team => 'x')");
like($err, qr/SM002:\s+secret_set_context\(\) is not allowed after secret_assume\(\)/,
	'no secret_set_context after secret_assume');

# Key registration checks its material; the key is stored sealed.
expect_error($node, 'postgres',
	q{SELECT secret_mgmt.secret_token_key_add('acme', 'short', 'HS256', 'too-short')},
	'SM007', qr/an HS256 key must be at least 32 bytes/, 'short HS256 key');
expect_error($node, 'postgres',
	qq{SELECT secret_mgmt.secret_token_key_add('acme', 'ecasrsa', 'RS256', '$ec_pub')},
	'SM007', qr/key is not a PEM public key for RS256/, 'EC key registered as RS256');
expect_error($node, 'postgres',
	q{SELECT secret_mgmt.secret_token_key_add('acme', 'n', 'none', 'x')},
	'22023', qr/unsupported token algorithm "none"/, 'alg none cannot be registered');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM secret_mgmt.secret_token_key"
		  . " WHERE position(convert_to('$hs_secret', 'UTF8') in key_envelope) > 0"),
	'0', 'the HS256 key is not stored in the clear');

done_testing();
