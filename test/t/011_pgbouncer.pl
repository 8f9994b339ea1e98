# Pooled applications behind a real PgBouncer in transaction pooling mode.
#
# PgBouncer keeps a single server connection (default_pool_size = 1), so
# every client transaction below runs on the same backend, as the pid
# check proves.  Two tenants' tokens are interleaved over it; each
# transaction sees exactly its token's secrets, and a transaction without a
# token -- after a committed or a rolled-back one with a token -- gets
# nothing, because the broker role has no access of its own and an
# assumed principal never outlives its transaction.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use SecretMgmtTest;
use SecretMgmtToken;

my $pgbouncer = '/usr/sbin/pgbouncer';
plan skip_all => "$pgbouncer is not installed" unless -x $pgbouncer;

my $node = new_node('pooled');
my $hs_acme = random_hex(32);
my $hs_globex = random_hex(32);
$node->safe_psql(
	'postgres', qq{
	CREATE ROLE api_broker LOGIN;
	SELECT secret_mgmt.secret_tenant_create('acme');
	SELECT secret_mgmt.secret_tenant_create('globex');
	SELECT secret_mgmt.secret_broker_add('acme', 'api_broker');
	SELECT secret_mgmt.secret_broker_add('globex', 'api_broker');
	SELECT secret_mgmt.secret_token_key_add('acme', 'k1', 'HS256', '$hs_acme');
	SELECT secret_mgmt.secret_token_key_add('globex', 'k1', 'HS256', '$hs_globex');
	SELECT secret_mgmt.secret_use_tenant('acme');
	SELECT secret_mgmt.secret_create('svc/key', 'acme-key');
	SELECT secret_mgmt.secret_grant('svc/*', 'token:svc-a', ARRAY['read']);
	SELECT secret_mgmt.secret_use_tenant('globex');
	SELECT secret_mgmt.secret_create('svc/key', 'globex-key');
	SELECT secret_mgmt.secret_grant('svc/*', 'group:readers', ARRAY['read']);
});

# PgBouncer on loopback, one server connection, transaction pooling.
my $dir = PostgreSQL::Test::Utils::tempdir();
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $host = $node->host;
my $pgport = $node->port;
open my $fh, '>', "$dir/userlist.txt" or die;
print $fh qq{"api_broker" ""\n};
close $fh;
open $fh, '>', "$dir/pgbouncer.ini" or die;
print $fh <<"INI";
[databases]
postgres = host=$host port=$pgport dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 1
max_client_conn = 20
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
close $fh;
my $bouncer = IPC::Run::start([ $pgbouncer, "$dir/pgbouncer.ini" ],
	'>', "$dir/stdout", '2>', "$dir/stderr");

# Wait for PgBouncer to accept connections.
my $connstr = "host=127.0.0.1 port=$port dbname=postgres user=api_broker";
my $ready = 0;
for (1 .. 100)
{
	my ($out, $err);
	IPC::Run::run([ 'psql', '-X', '-A', '-t', '-d', $connstr, '-c', 'SELECT 1' ],
		'>', \$out, '2>', \$err);
	if (($out // '') =~ /^1$/m) { $ready = 1; last; }
	select(undef, undef, undef, 0.1);
}
ok($ready, 'PgBouncer accepts connections') or BAIL_OUT('PgBouncer did not start');

# One client transaction through PgBouncer; returns (stdout, stderr).
sub through_pgbouncer
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[ 'psql', '-X', '-A', '-t', '-v', 'VERBOSITY=verbose', '-d', $connstr, '-c', $sql ],
		'>', \$out, '2>', \$err);
	return ($out, $err);
}

my $exp = time() + 600;
my $token_a = mint_token(
	alg => 'HS256', secret => $hs_acme, header => { alg => 'HS256', kid => 'k1' },
	claims => { tenant => 'acme', sub => 'svc-a', exp => $exp });
my $token_g = mint_token(
	alg => 'HS256', secret => $hs_globex, header => { alg => 'HS256', kid => 'k1' },
	claims => { tenant => 'globex', sub => 'svc-g', groups => ['readers'], exp => $exp });

my %pids;
sub with_token
{
	my ($token, $end) = @_;
	my ($out, $err) = through_pgbouncer(
		"BEGIN; SELECT secret_mgmt.secret_assume('$token');"
		  . " SELECT secret_mgmt.secret_resolve('svc/key') || ' ' || pg_backend_pid(); $end;");
	my ($value, $pid) = $out =~ /^(\S+) (\d+)$/m;
	$pids{$pid}++ if defined $pid;
	return ($value // '', $err);
}

sub without_token
{
	my ($out, $err) = through_pgbouncer(
		"SELECT pg_backend_pid(); SELECT secret_mgmt.secret_resolve('svc/key');");
	my ($pid) = $out =~ /^(\d+)$/m;
	$pids{$pid}++ if defined $pid;
	return ($out, $err);
}

# Interleave the tenants over the one server connection.
for my $round (1 .. 3)
{
	my ($v, $e) = with_token($token_a, 'COMMIT');
	is($v, 'acme-key', "round $round: acme's token reads acme's value") or diag($e);
	($v, $e) = with_token($token_g, 'COMMIT');
	is($v, 'globex-key', "round $round: globex's token reads globex's value") or diag($e);
	my ($out, $err) = without_token();
	like($err, qr/SM001:\s+secret "svc\/key" not found/,
		"round $round: no token after a committed one: nothing");
	unlike($out, qr/-key/, "round $round: no value without a token");
}
my ($v, $e) = with_token($token_a, 'ROLLBACK');
is($v, 'acme-key', 'a token in a transaction that rolls back reads its value');
my ($out, $err) = without_token();
like($err, qr/SM001:\s+secret "svc\/key" not found/, 'no token after a rolled-back one: nothing');

# A client cannot carry another tenant's context into its transaction.
($out, $err) = through_pgbouncer(
	"SELECT secret_mgmt.secret_use_tenant('acme');");
like($err, qr/SM002:\s+permission denied for tenant "acme"/,
	'the broker cannot select a tenant of its own');

is(scalar(keys %pids), 1, 'every transaction ran on the same server connection')
  or diag('backend pids: ' . join(', ', sort keys %pids));

$bouncer->kill_kill;
done_testing();
