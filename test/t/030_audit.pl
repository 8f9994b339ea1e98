# The audit flusher: a refusal whose transaction rolled back still reaches
# the audit trail, the flusher comes back after a restart, queued reads
# survive a clean shutdown, and a write whose audit row cannot be written
# fails; a full queue refuses the request (53000) and loses nothing.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Utils;
use SecretMgmtTest;
use SecretMgmtToken;
use Test::More;

# Reads are audited asynchronously here (the default is off).
my $node = new_node('audit', conf => "secret_mgmt.audit_reads = async\n");
setup_tenant($node, 'postgres', 'acme', 'app_acme');
$node->safe_psql('postgres', q{
	CREATE ROLE nosy LOGIN;
	SELECT secret_mgmt.secret_tenant_add_member('acme', 'nosy');
	SELECT secret_mgmt.secret_use_tenant('acme');
	SELECT secret_mgmt.secret_grant('svc/**', 'nosy', ARRAY['list']);
});
my $canary = 'canary-' . random_hex(16);
sql_ok($node, 'postgres',
	"SELECT secret_mgmt.secret_create('svc/key', '$canary')",
	'a member creates a secret', role => 'app_acme');

my $flusher_running = q{SELECT count(*) = 1 FROM pg_stat_activity
	WHERE backend_type = 'secret_mgmt audit flusher'};
ok($node->poll_query_until('postgres', $flusher_running),
	'the audit flusher runs');

# A denied read in a transaction that rolls back.
my ($rc, $out, $err) = sql_result($node, 'postgres', q{
	BEGIN;
	SELECT secret_mgmt.secret_resolve('svc/key');
	ROLLBACK;
}, role => 'nosy');
like($err, qr/SM002/, 'the read is denied');
ok( $node->poll_query_until(
		'postgres', q{SELECT count(*) = 1 FROM secret_mgmt.secret_audit
		WHERE tenant_id = 'acme' AND principal = 'nosy' AND action = 'read'
		  AND path = 'svc/key' AND outcome = 'denied' AND sqlstate = 'SM002'}),
	'the rolled-back denial reaches the audit trail');

# The flusher is back after a restart, and keeps recording.
$node->restart;
ok($node->poll_query_until('postgres', $flusher_running),
	'the audit flusher runs again after a restart');
sql_result($node, 'postgres', "SELECT secret_mgmt.secret_resolve('svc/nothing')",
	role => 'nosy');
ok( $node->poll_query_until(
		'postgres', q{SELECT count(*) = 1 FROM secret_mgmt.secret_audit
		WHERE principal = 'nosy' AND path = 'svc/nothing' AND outcome = 'denied'}),
	'refusals after the restart are recorded');

# An asynchronously audited read is written even if the server stops at once.
sql_ok($node, 'postgres', "SELECT secret_mgmt.secret_resolve('svc/key')",
	'a member reads', role => 'app_acme');
$node->restart;
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM secret_mgmt.secret_audit
		WHERE principal = 'app_acme' AND action = 'read' AND outcome = 'ok'}),
	'1', 'the queued read was written before shutdown');

# The fingerprint finds the read and the write; the value is nowhere.
is( $node->safe_psql(
		'postgres', use_tenant_sql('acme') . qq{
		SELECT string_agg(action, ',' ORDER BY action)
		  FROM secret_mgmt.secret_audit_find_value('$canary')}),
	'create,read', 'find_value names the write and the read');
is( $node->safe_psql(
		'postgres', qq{SELECT count(*) FROM secret_mgmt.secret_audit a
		WHERE position('$canary' IN a::text) > 0}),
	'0', 'the value is in no audit row');

# Fail closed: a write whose audit row cannot be written is refused.
$node->safe_psql('postgres', q{
	CREATE FUNCTION public.no_audit() RETURNS trigger LANGUAGE plpgsql
	AS $$BEGIN RAISE EXCEPTION 'audit storage unavailable'; END$$;
	CREATE TRIGGER no_audit BEFORE INSERT ON secret_mgmt.secret_audit
	FOR EACH ROW EXECUTE FUNCTION public.no_audit();
});
($rc, $out, $err) = sql_result($node, 'postgres',
	"SELECT secret_mgmt.secret_update('svc/key', 'canary-blocked')",
	role => 'app_acme');
isnt($rc, 0, 'the update fails when its audit row cannot be written');
$node->safe_psql('postgres', q{
	DROP TRIGGER no_audit ON secret_mgmt.secret_audit;
	DROP FUNCTION public.no_audit();
});
is( $node->safe_psql(
		'postgres', use_tenant_sql('acme')
		  . q{SELECT max(version) FROM secret_mgmt.secret_versions('svc/key')}),
	'1', 'and no version was written');

# Token principals: a rejected token is recorded for the broker, a served
# read for the token's subject.
my $hs_secret = random_hex(32);
$node->safe_psql('postgres', qq{
	CREATE ROLE audit_broker LOGIN;
	SELECT secret_mgmt.secret_broker_add('acme', 'audit_broker');
	SELECT secret_mgmt.secret_token_key_add('acme', 'hs1', 'HS256', '$hs_secret');
	SELECT secret_mgmt.secret_use_tenant('acme');
	SELECT secret_mgmt.secret_grant('svc/**', 'token:alice', ARRAY['read']);
});
my $now = time();
my %claims = (tenant => 'acme', sub => 'alice', exp => $now + 600, iat => $now);
my $good = mint_token(alg => 'HS256', secret => $hs_secret,
	header => { alg => 'HS256', typ => 'JWT', kid => 'hs1' }, claims => \%claims);
my $forged = mint_token(alg => 'HS256', secret => random_hex(32),
	header => { alg => 'HS256', typ => 'JWT', kid => 'hs1' }, claims => \%claims);
($rc, $out, $err) = sql_result($node, 'postgres',
	"BEGIN; SELECT secret_mgmt.secret_assume('$forged'); COMMIT;",
	role => 'audit_broker');
like($err, qr/token rejected: bad_signature/, 'a forged token is rejected');
ok( $node->poll_query_until(
		'postgres', q{SELECT count(*) = 1 FROM secret_mgmt.secret_audit
		WHERE tenant_id = 'acme' AND principal = 'audit_broker'
		  AND action = 'assume:bad_signature' AND outcome = 'denied'}),
	'the token rejection reaches the audit trail');
sql_ok($node, 'postgres',
	"SET secret_mgmt.audit_reads = sync; BEGIN; SET LOCAL ROLE audit_broker;"
	  . " SELECT secret_mgmt.secret_assume('$good');"
	  . " SELECT secret_mgmt.secret_resolve('svc/key'); COMMIT;",
	'a token principal reads with synchronous read audit');
is( $node->safe_psql(
		'postgres', q{SELECT principal || ' via ' || session_user_name
		  FROM secret_mgmt.secret_audit
		 WHERE tenant_id = 'acme' AND action = 'read' AND outcome = 'ok'
		   AND principal LIKE 'token:%'}),
	'token:alice via ' . $node->safe_psql('postgres', 'SELECT session_user'),
	'the read is recorded for the token subject and the session user');

# Every chain still verifies.
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM secret_mgmt.secret_audit_verify()
		WHERE broken_at IS NOT NULL}),
	'0', 'every audit chain verifies');
is( $node->safe_psql('postgres', q{SELECT rejected FROM secret_mgmt.secret_audit_queue()}),
	'0', 'no request was refused for a full queue');

# A full queue: while the flusher cannot write (the audit table is locked),
# 1,024 refusals fill the queue; the next request waits, then fails with
# 53000 rather than lose its record; once the flusher can write, every
# queued record reaches the trail.
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE secret_mgmt.secret_audit IN ACCESS EXCLUSIVE MODE');
my $capacity = $node->safe_psql('postgres', q{SELECT capacity FROM secret_mgmt.secret_audit_queue()});
my $pending = $node->safe_psql('postgres', q{SELECT pending FROM secret_mgmt.secret_audit_queue()});
my $fill = $capacity - $pending;
$err = '';
$node->psql('postgres',
	join('', map { "SELECT secret_mgmt.secret_resolve('svc/missing-$_');\n" } 1 .. $fill + 1),
	stderr => \$err, on_error_stop => 0,
	extra_params => ['-U', 'nosy', '-v', 'VERBOSITY=verbose']);
my @refused = ($err =~ /ERROR:  SM002: permission denied/g);
my @full = ($err =~ /ERROR:  53000: audit queue is full/g);
is(scalar(@refused), $fill, "the first $fill refusals are queued (SM002 to the caller)");
is(scalar(@full), 1, 'the next request fails with 53000: audit queue is full');
is($node->safe_psql('postgres', q{SELECT pending || '/' || capacity || ' rejected ' || rejected
	  FROM secret_mgmt.secret_audit_queue()}),
	"$capacity/$capacity rejected 1", 'the queue is full and counts the refused request');
$locker->query_safe('COMMIT');
$locker->quit;
ok( $node->poll_query_until(
		'postgres', q{SELECT pending = 0 FROM secret_mgmt.secret_audit_queue()}),
	'the flusher drains the queue once it can write');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) || ' ' || count(DISTINCT path) FROM secret_mgmt.secret_audit
		WHERE tenant_id = 'acme' AND principal = 'nosy' AND outcome = 'denied'
		  AND path LIKE 'svc/missing-%'}),
	"$fill $fill", 'every queued refusal reached the trail, none twice');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM secret_mgmt.secret_audit_verify()
		WHERE broken_at IS NOT NULL}),
	'0', 'the chains still verify');

$node->stop;
done_testing();
