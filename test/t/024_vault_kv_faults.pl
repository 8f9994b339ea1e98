# Vault KV faults (threat model case 23) for a secret stored in Vault,
# through the loopback fault proxy: the same faults as 022 -- refused,
# blackhole, slow (10x the timeout), HTTP 500, 429, 503 sealed, invalid
# JSON, truncated body, a certificate from another CA, an expired one, a
# 302 to another port -- met by
#
#   create    the worker's delivery of a new secret's first version
#   rotate    the worker's delivery of a rotation (secret_rotate)
#   fresh     secret_resolve(path, fresh => true) in the caller's session
#
# Deliveries end with the fault's SM006 error recorded on the outbox row
# (no value in it), stay pending and are retried; nothing changes in Vault
# and nothing locally beyond the committed versions and their queued rows.
# The fresh read fails with SM006 naming the fault within the time budget.
# No request follows the redirect; no token reaches the server log.  With
# the endpoint restored, the queued writes arrive.

use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SecretMgmtTest;
use SecretMgmtVault;

my $timeout_ms = 500;
my $dir = PostgreSQL::Test::Utils::tempdir('vault_kv_faults');
make_certs($dir);
my $vault = start_vault($dir);
my $proxy = start_proxy($dir, $vault, slow => 10 * $timeout_ms / 1000);
my $url = $proxy->{url};

my $node = new_node(
	'vault_kv_faults',
	conf => "secret_mgmt.ca_file = '$vault->{ca}'\n"
	  . "secret_mgmt.http_timeout_ms = $timeout_ms\n"
	  . "secret_mgmt.http_retries = 2\n"
	  . "secret_mgmt.http_breaker_failures = 0\n"
	  . "secret_mgmt.worker_naptime = 100\n"
	  . "secret_mgmt.retry_backoff_max = 1\n"
	  . "log_min_messages = debug1\n");

my $token = vault_ok($vault, 'POST', '/v1/auth/token/create',
	{ policies => ['root'], ttl => '1h' })->{auth}{client_token};
my $token_file = "$dir/token";
open my $fh, '>', $token_file or die;
print $fh $token;
close $fh;

my @modes = qw(refuse blackhole slow 500 429 sealed badjson truncated wrongca expired redirect);
my %expect = (
	refuse => qr/could not be reached/,
	blackhole => qr/did not answer in time/,
	slow => qr/did not answer in time/,
	500 => qr/failed to /,
	429 => qr/is rate limiting requests/,
	sealed => qr/is sealed or unavailable/,
	badjson => qr/sent an invalid response/,
	truncated => qr/sent an incomplete response/,
	wrongca => qr/failed TLS verification/,
	expired => qr/failed TLS verification/,
	redirect => qr/answered with a redirect/);

setup_tenant($node, 'postgres', 'acme', 'acme_app');
sql_ok(
	$node, 'postgres', qq{
	SELECT secret_mgmt.secret_use_tenant('global');
	SELECT secret_mgmt.secret_create('vault/token', pg_read_file('$token_file'));
	SELECT secret_mgmt.secret_use_tenant(NULL);
	SELECT secret_mgmt.secret_backend_create('kvf', 'vault',
	    jsonb_build_object('address', '$url'), 'vault/token');
	CREATE FUNCTION try(q text) RETURNS text LANGUAGE plpgsql AS \$\$
	DECLARE t0 timestamptz := clock_timestamp();
	BEGIN
	    EXECUTE q;
	    RETURN 'ok ' || round(extract(epoch FROM clock_timestamp() - t0) * 1000);
	EXCEPTION WHEN OTHERS THEN
	    RETURN SQLSTATE || ' ' || round(extract(epoch FROM clock_timestamp() - t0) * 1000)
	        || ' ' || SQLERRM;
	END \$\$;
},
	'a vault backend through the fault proxy');

my $app = use_tenant_sql('acme');
my %as_app = (role => 'acme_app');

sub kv_state
{
	my ($key) = @_;
	my ($ok, $json) = vault_api($vault, 'GET', "/v1/secret/metadata/acme/$key");
	return 'none' unless $ok;
	my $n = $json->{data}{current_version};
	my (undef, $data) = vault_api($vault, 'GET', "/v1/secret/data/acme/$key?version=$n");
	return "$n:" . ($data->{data}{data}{value} // '?');
}

sub pending
{
	return $node->safe_psql('postgres',
		q{SELECT count(*) FROM secret_mgmt.secret_outbox WHERE state = 'pending'});
}

sql_ok($node, 'postgres', $app . q{SELECT secret_mgmt.secret_create('base', 'kvf-base-0', backend => 'kvf')},
	'a vault-backed secret', %as_app);
ok(poll_until($node, 'postgres', q{SELECT count(*) FROM secret_mgmt.secret_outbox WHERE state = 'pending'}, '0'),
	'delivered');
is(kv_state('base'), '1:kvf-base-0', 'Vault holds it');

my $budget_ms = $timeout_ms + 1500;
my $expected_base = 1;
for my $mode (@modes)
{
	proxy_reset($proxy);
	proxy_mode($proxy, $mode);
	my $before = kv_state('base');
	my $out = scalar_sql(
		$node, 'postgres', $app . qq{
		SELECT secret_mgmt.secret_create('c_$mode', 'kvf-create-$mode', backend => 'kvf');
		SELECT secret_mgmt.secret_rotate('base', 'kvf-rotate-$mode');
		SELECT 'fresh|' || try(\$\$SELECT secret_mgmt.secret_resolve('base', fresh => true)\$\$);
	}, %as_app) // '';
	my ($fresh) = $out =~ /^fresh\|(.*)$/m;
	my ($code, $ms, $msg) = split / /, $fresh // 'none 0 none', 3;
	ok($code eq 'SM006' && $msg =~ /^vault at \Q$url\E / && $msg =~ $expect{$mode},
		"$mode: a fresh read fails with SM006 naming the fault")
	  or diag("fresh: " . ($fresh // $out));
	cmp_ok($ms, '<', $budget_ms, "$mode: the fresh read fails within the time budget");

	# Both deliveries meet the fault and record it.
	my $rows = qq{SELECT string_agg(path || ' ' || state || ' ' || (attempts > 0) || ' '
	                                || coalesce(last_error, ''), E'\\n' ORDER BY path)
	                FROM secret_mgmt.secret_outbox_status()
	               WHERE path IN ('base', 'c_$mode')};
	ok( poll_until(
			$node, 'postgres',
			$app . "SELECT bool_and(attempts > 0) AND count(*) = 2 FROM secret_mgmt.secret_outbox_status() WHERE path IN ('base', 'c_$mode')",
			't', %as_app),
		"$mode: both deliveries attempted");
	my @rows = split /\n/, scalar_sql($node, 'postgres', $app . $rows, %as_app) // '';
	is(scalar(@rows), 2, "$mode: two rows queued");
	for my $r (@rows)
	{
		my ($path) = split / /, $r;
		my $what = $path eq 'base' ? 'rotate' : 'create';
		ok($r =~ /^\S+ pending true SM006: vault at \Q$url\E (.*)$/ && $1 =~ $expect{$mode},
			"$mode: $what delivery: SM006 naming the fault, recorded on the row, pending")
		  or diag($r);
		unlike($r, qr/kvf-/, "$mode: $what delivery: no value in the recorded error");
	}
	is(kv_state('base'), $before, "$mode: nothing changed in Vault (rotate)");
	is(kv_state("c_$mode"), 'none', "$mode: nothing in Vault (create)");
	is($node->safe_psql('postgres',
			qq{SELECT count(*) FROM secret_mgmt.secret_version v JOIN secret_mgmt.secret_item i USING (tenant_id, secret_id)
			    WHERE i.path IN ('base', 'c_$mode') AND v.backend_version IS NULL}),
		'2', "$mode: locally, only the committed versions, unmapped");
	is(proxy_stats($proxy)->{canary}, 0, "$mode: nothing reached the redirect target");

	# The endpoint is back: the queued writes arrive.
	proxy_mode($proxy, 'pass');
	ok(poll_until($node, 'postgres', q{SELECT count(*) FROM secret_mgmt.secret_outbox WHERE state = 'pending'}, '0'),
		"$mode: restored, the queue drains");
	$expected_base++;
	is(kv_state('base'), "$expected_base:kvf-rotate-$mode", "$mode: the rotation arrived");
	is(kv_state("c_$mode"), "1:kvf-create-$mode", "$mode: the new secret arrived");
}

# --- nothing secret in the server log ------------------------------------
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
ok(index($log, $token) < 0, 'the Vault token is not in the server log');
ok(index($log, $vault->{root}) < 0, 'the root token is not in the server log');
unlike($log, qr/X-Vault-Token/i, 'no request header in the server log');
like($log, qr/delivery to backend "kvf" of secret "base" of tenant "acme" failed, attempt \d+/,
	'failed deliveries are logged');

done_testing();
