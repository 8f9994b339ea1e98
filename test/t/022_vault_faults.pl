# Vault faults (threat model case 23), through a loopback fault proxy.
#
# For every fault -- connection refused, blackhole, slow (10x the timeout),
# HTTP 500, 429, 503 sealed, invalid JSON, truncated body, a certificate
# from another CA, an expired certificate, a 302 to another port -- and
# every operation that calls Vault:
#
#   auth      the first call of a backend (token lookup)
#   create    the first write of a new tenant (data key creation: encrypt)
#   rotate    a write that retires the data key and mints the next (encrypt)
#   rekey     secret_rekey() (decrypt, rewrap)
#   resolve   a read whose data key is not cached (unwrap: decrypt)
#
# the operation fails with SM006 and a message naming the fault, within
# the configured time budget, and nothing stored changes; a read whose key
# is cached keeps working.  No request follows the redirect, no token
# reaches the server log, retries are bounded.  Then: the circuit breaker
# fails fast without sending anything, and recovers after its cooldown;
# pg_cancel_backend() and statement_timeout stop a blackholed call at once
# although the time budget is a minute.

use strict;
use warnings;
use JSON::PP;
use IPC::Run;
use Time::HiRes qw(time usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SecretMgmtTest;
use SecretMgmtVault;

my $timeout_ms = 500;
my $dir = PostgreSQL::Test::Utils::tempdir('vault_faults');
make_certs($dir);
my $vault = start_vault($dir);
my $proxy = start_proxy($dir, $vault, slow => 10 * $timeout_ms / 1000);
my $url = $proxy->{url};

my $node = new_node(
	'vault_faults',
	conf => "secret_mgmt.ca_file = '$vault->{ca}'\n"
	  . "secret_mgmt.http_timeout_ms = $timeout_ms\n"
	  . "secret_mgmt.http_retries = 2\n"
	  . "secret_mgmt.http_breaker_failures = 0\n"
	  . "log_min_messages = debug1\n");

vault_ok($vault, 'POST', '/v1/transit/keys/faulty', {});
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

my $config = qq{jsonb_build_object('address', '$url', 'key', 'faulty',
	'credentials_path', 'vault/token')};
my $tenants = join("\n",
	map { "SELECT secret_mgmt.secret_tenant_create('f_$_', 'vault', $config);" } @modes);
sql_ok(
	$node, 'postgres', qq{
	SELECT secret_mgmt.secret_use_tenant('global');
	SELECT secret_mgmt.secret_create('vault/token', pg_read_file('$token_file'));
	SELECT secret_mgmt.secret_use_tenant(NULL);
	SELECT secret_mgmt.secret_tenant_create('faulty', 'vault', $config);
	$tenants
	CREATE FUNCTION try(q text) RETURNS text LANGUAGE plpgsql AS \$\$
	DECLARE t0 timestamptz := clock_timestamp();
	BEGIN
	    EXECUTE q;
	    RETURN 'ok ' || round(extract(epoch FROM clock_timestamp() - t0) * 1000);
	EXCEPTION WHEN OTHERS THEN
	    RETURN SQLSTATE || ' ' || round(extract(epoch FROM clock_timestamp() - t0) * 1000)
	        || ' ' || SQLERRM;
	END \$\$;
	CREATE TABLE sink (line text);
	CREATE FUNCTION fault(mode text) RETURNS void LANGUAGE plpgsql AS \$\$
	BEGIN
	    EXECUTE format('COPY sink FROM PROGRAM %L',
	        '/usr/bin/python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1]).read()" '
	        || '$proxy->{control}/mode/' || mode);
	END \$\$;
	SELECT secret_mgmt.secret_use_tenant('faulty');
	SET secret_mgmt.data_key_rotate_after = 1;
	SELECT secret_mgmt.secret_create('old', 'under-key-1');
	SELECT secret_mgmt.secret_create('new', 'under-key-2');
},
	'tenants through the fault proxy; faulty has data keys 1 and 2');

my $state_sql = q{
	SELECT (SELECT count(*) FROM secret_mgmt.secret_data_key) || '/' ||
	       (SELECT count(*) FROM secret_mgmt.secret_item) || '/' ||
	       (SELECT count(*) FROM secret_mgmt.secret_version) || '/' ||
	       (SELECT md5(string_agg(tenant_id || key_id || state || encryptions || wrapped::text, ','
	                              ORDER BY tenant_id, key_id))
	          FROM secret_mgmt.secret_data_key)};
my $state = $node->safe_psql('postgres', $state_sql);
like($state, qr{^3/3/3/}, 'faulty: two data keys, two secrets; global: the token');

# One session per fault: the first call meets the fault (auth); then, with
# the token held and key 2 cached, every other operation meets it too.
my $budget_ms = $timeout_ms + 1500;
for my $mode (@modes)
{
	proxy_reset($proxy);
	my $out = $node->safe_psql(
		'postgres', qq{
		SELECT secret_mgmt.secret_use_tenant('faulty');
		SELECT fault('$mode');
		SELECT 'auth|' || try(\$\$SELECT secret_mgmt.secret_resolve('new')\$\$);
		SELECT fault('pass');
		SELECT 'warm|' || try(\$\$SELECT secret_mgmt.secret_resolve('new')\$\$);
		SELECT fault('$mode');
		SELECT 'cached|' || try(\$\$SELECT secret_mgmt.secret_resolve('new')\$\$);
		SELECT secret_mgmt.secret_use_tenant('f_$mode');
		SELECT 'create|' || try(\$\$SELECT secret_mgmt.secret_create('x', 'never-stored')\$\$);
		SELECT secret_mgmt.secret_use_tenant('faulty');
		SET secret_mgmt.data_key_rotate_after = 1;
		SELECT 'rotate|' || try(\$\$SELECT secret_mgmt.secret_update('new', 'never-stored')\$\$);
		RESET secret_mgmt.data_key_rotate_after;
		SELECT 'rekey|' || try(\$\$SELECT secret_mgmt.secret_rekey('faulty')\$\$);
		SELECT 'resolve|' || try(\$\$SELECT secret_mgmt.secret_resolve('old')\$\$);
		SELECT fault('pass');
	});
	my %r = map { split /\|/, $_, 2 } grep { /\|/ } split /\n/, $out;
	like($r{warm} // '', qr/^ok /, "$mode: with the fault gone the backend logs in");
	like($r{cached} // '', qr/^ok /, "$mode: a read with a cached key does not call Vault");
	for my $op (qw(auth create rotate rekey resolve))
	{
		my ($code, $ms, $msg) = split / /, $r{$op} // 'none 0 none', 3;
		ok( $code eq 'SM006'
			  && $msg =~ /^vault at \Q$url\E / && $msg =~ $expect{$mode},
			"$mode: $op fails with SM006 naming the fault")
		  or diag("$op: $r{$op}");
		cmp_ok($ms, '<', $budget_ms, "$mode: $op fails within the time budget");
	}
	is($node->safe_psql('postgres', $state_sql), $state, "$mode: nothing stored changed");

	my $stats = proxy_stats($proxy);
	my $seen = $stats->{requests}{$mode} // 0;
	if ($mode eq 'refuse')
	{
		is($seen, 0, 'refuse: no connection got through');
	}
	else
	{
		# 5 operations met the fault, each with at most 1 + 2 attempts.
		ok($seen >= 5 && $seen <= 5 * 3, "$mode: attempts bounded ($seen for 5 calls)");
	}
	is($stats->{canary}, 0, "$mode: nothing reached the redirect target");
}

# Retries: a transient 500 is retried twice, a 4xx is not.
proxy_reset($proxy);
my $out = $node->safe_psql(
	'postgres', q{
	SELECT secret_mgmt.secret_use_tenant('faulty');
	SELECT secret_mgmt.secret_resolve('new');
	SELECT fault('500');
	SELECT try($$SELECT secret_mgmt.secret_resolve('old')$$);
	SELECT fault('pass');
});
is(proxy_stats($proxy)->{requests}{500}, 3, '500: one call, three attempts (two retries)');

# --- circuit breaker ---------------------------------------------------
# Requests to backends by outcome, from the metrics.
sub backend_requests
{
	return map { split /\|/ } split /\n/, $node->safe_psql('postgres', q{
		SELECT labels->>'outcome' || '|' || value FROM secret_mgmt.secret_metrics()
		 WHERE name = 'secret_mgmt_backend_requests_total'});
}
my %req0 = backend_requests();
proxy_reset($proxy);
$out = $node->safe_psql(
	'postgres', q{
	SET secret_mgmt.http_breaker_failures = 3;
	SET secret_mgmt.http_breaker_cooldown = 2;
	SET secret_mgmt.http_retries = 0;
	SELECT secret_mgmt.secret_use_tenant('faulty');
	SELECT fault('500');
	SELECT 'a|' || try($$SELECT secret_mgmt.secret_rekey('faulty')$$);
	SELECT 'b|' || try($$SELECT secret_mgmt.secret_rekey('faulty')$$);
	SELECT 'c|' || try($$SELECT secret_mgmt.secret_rekey('faulty')$$);
	SELECT 'open|' || try($$SELECT secret_mgmt.secret_rekey('faulty')$$);
	SELECT 'gauge|' || value FROM secret_mgmt.secret_metrics()
	 WHERE name = 'secret_mgmt_backend_breakers_open';
	SELECT fault('pass');
	SELECT 'still|' || try($$SELECT secret_mgmt.secret_rekey('faulty')$$);
	SELECT pg_sleep(2.3);
	SELECT 'probe|' || try($$SELECT secret_mgmt.secret_rekey('faulty')$$);
});
my %b = map { split /\|/, $_, 2 } grep { /\|/ } split /\n/, $out;
like($b{a}, qr/^SM006 \d+ .*failed to /, 'breaker: the first failures reach Vault');
like($b{open}, qr/^SM006 \d+ vault at \Q$url\E is unavailable/,
	'breaker: after three failures calls fail fast');
like($b{still}, qr/^SM006 \d+ vault at \Q$url\E is unavailable/,
	'breaker: it stays open during the cooldown, though Vault is back');
is(proxy_stats($proxy)->{requests}{500}, 3, 'breaker: only the three failing calls reached Vault');
like($b{probe}, qr/^ok /, 'breaker: after the cooldown a probe succeeds');
my %req1 = backend_requests();
is($b{gauge}, '1', 'metrics: one breaker open while it refuses');
is($req1{retryable} - $req0{retryable}, 3, 'metrics: the three 500 answers are counted');
is($req1{breaker_open} - $req0{breaker_open}, 2, 'metrics: the two fast failures are counted');
ok($req1{success} > $req0{success}, 'metrics: the probe\'s successful requests are counted');
is($node->safe_psql('postgres', q{SELECT value FROM secret_mgmt.secret_metrics()
	WHERE name = 'secret_mgmt_backend_breakers_open'}), '0', 'metrics: no breaker open after the probe');
is($node->safe_psql('postgres',
		"SELECT string_agg(substr(convert_from(wrapped, 'UTF8'), 1, 6), ',') FROM secret_mgmt.secret_data_key WHERE tenant_id = 'faulty'"),
	'vault:,vault:', 'breaker: rekey after recovery kept the keys usable');

# --- cancellation of a blackholed call ---------------------------------
proxy_mode($proxy, 'blackhole');
my $t = time();
my ($rc, $o, $e) = sql_result(
	$node, 'postgres', q{
	SET secret_mgmt.http_timeout_ms = 60000;
	SELECT secret_mgmt.secret_use_tenant('faulty');
	SET statement_timeout = '500ms';
	SELECT secret_mgmt.secret_resolve('old');
});
$t = time() - $t;
like($e, qr/57014:\s+canceling statement due to statement timeout/,
	'statement_timeout interrupts a blackholed call');
cmp_ok($t, '<', 3, sprintf('statement_timeout: done %.2f s after the start (timeout 0.5 s)', $t));

my ($stdout, $stderr) = ('', '');
my $h = IPC::Run::start(
	[
		'psql', '-X', '-q', '-v', 'VERBOSITY=verbose', '-d', $node->connstr('postgres'),
		'-c', q{SET secret_mgmt.http_timeout_ms = 60000},
		'-c', q{SET application_name = 'blackholed'},
		'-c', q{SELECT secret_mgmt.secret_use_tenant('faulty')},
		'-c', q{SELECT secret_mgmt.secret_resolve('old')}
	],
	'>', \$stdout, '2>', \$stderr);
my $pid = '';
for (1 .. 200)
{
	$pid = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE application_name = 'blackholed' AND query LIKE '%secret_resolve%' AND state = 'active'");
	last if $pid;
	usleep(50_000);
}
ok($pid, 'the blackholed call is running');
usleep(300_000);
my $t0 = time();
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
my $deadline = time() + 10;
while ($h->pumpable && time() < $deadline)
{
	$h->pump_nb;
	usleep(20_000);
}
my $elapsed = time() - $t0;
$h->kill_kill if $h->pumpable;
$h->finish;
like($stderr, qr/57014.*canceling statement due to user request/s, 'pg_cancel_backend interrupts it');
cmp_ok($elapsed, '<', 3, sprintf('pg_cancel_backend: the call ended %.2f s after the cancel', $elapsed));
proxy_mode($proxy, 'pass');

# --- nothing secret in the server log ------------------------------------
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
ok(index($log, $token) < 0, 'the Vault token is not in the server log');
ok(index($log, $vault->{root}) < 0, 'the root token is not in the server log');
unlike($log, qr/X-Vault-Token/i, 'no request header in the server log');
like($log, qr/attempt \d+ failed, retrying/, 'retries were logged (at DEBUG1, without headers)');

done_testing();
