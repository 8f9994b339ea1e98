# Metrics: secret_metrics() and secret_metrics_prometheus().
#
#  - known operations by a non-superuser application role (successes,
#    a denial, a not-found, a write rolled back) move the operation
#    counters by exactly those amounts, with secret_mgmt.audit_reads off;
#  - the resolve histogram counts exactly the resolves that returned a
#    value, and secret_render's references count as reads but not as
#    resolves;
#  - a fresh session's first resolve misses the data-key cache and the
#    next ones hit it;
#  - refusals pass through the audit queue: queued and flushed move
#    together and nothing is refused for a full queue;
#  - a rotation by the background worker is counted;
#  - the exposition text passes `promtool check metrics` with no
#    complaint, and neither output holds a path, a value, a tenant or a
#    role name;
#  - only superusers and members of pg_monitor read the metrics; others
#    are refused with SM002;
#  - a restart sets the counters back to zero.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/lib";
use IPC::Run;
use PostgreSQL::Test::Utils;
use SecretMgmtTest;
use Test::More;

my $node = new_node('metrics', conf => "secret_mgmt.worker_naptime = 100\n");
setup_tenant($node, 'postgres', 'acme', 'app_acme');
$node->safe_psql('postgres', q{
	CREATE ROLE nosy LOGIN;
	SELECT secret_mgmt.secret_tenant_add_member('acme', 'nosy');
	SELECT secret_mgmt.secret_use_tenant('acme');
	SELECT secret_mgmt.secret_grant('svc/**', 'nosy', ARRAY['list']);
	CREATE ROLE scraper LOGIN;
	GRANT pg_monitor TO scraper;
});

# The value of one sample (0 when absent), read as the pg_monitor member.
sub metric
{
	my ($name, $labels) = @_;
	$labels //= '{}';
	return $node->safe_psql('postgres', qq{
		SELECT coalesce(sum(value), 0)::bigint FROM secret_mgmt.secret_metrics()
		 WHERE name = '$name' AND labels @> '$labels'::jsonb},
		extra_params => [ '-U', 'scraper' ]);
}

sub ops
{
	my ($action, $outcome) = @_;
	return metric('secret_mgmt_operations_total',
		qq({"action": "$action", "outcome": "$outcome"}));
}

# --- privileges --------------------------------------------------------------
for my $f ('secret_metrics()', 'secret_metrics_prometheus()')
{
	my ($rc, $out, $err) = sql_result($node, 'postgres',
		"SELECT count(*) FROM secret_mgmt.$f", role => 'app_acme');
	like($err, qr/SM002.*permission denied to read secret_mgmt metrics/s,
		"$f refuses a role outside pg_monitor with SM002");
	($rc, $out, $err) = sql_result($node, 'postgres',
		"SELECT count(*) > 0 FROM secret_mgmt.$f", role => 'scraper');
	is($out, 't', "$f answers a member of pg_monitor");
}

# --- operations --------------------------------------------------------------
my $canary = 'canary-' . random_hex(16);
my %before = map { $_->[0] . '/' . $_->[1] => ops(@$_) }
  (['create', 'ok'], ['update', 'ok'], ['delete', 'ok'], ['read', 'ok'],
	['read', 'denied'], ['read', 'not_found']);
my $resolves0 = metric('secret_mgmt_resolve_duration_seconds_count');
my $queued0 = metric('secret_mgmt_audit_queued_total');

sql_ok($node, 'postgres', qq{
	SELECT secret_mgmt.secret_create('svc/db', '$canary');
	SELECT secret_mgmt.secret_update('svc/db', '$canary-2');
	SELECT secret_mgmt.secret_create('svc/gone', 'short-lived');
	SELECT secret_mgmt.secret_delete('svc/gone');
}, 'two creates, an update and a delete', role => 'app_acme');
sql_result($node, 'postgres', q{
	BEGIN;
	SELECT secret_mgmt.secret_create('svc/never', 'rolled back');
	ROLLBACK;
}, role => 'app_acme');

# Three resolves in one session: one data-key miss, then two hits.
my $hits0 = metric('secret_mgmt_data_key_cache_hits_total');
my $misses0 = metric('secret_mgmt_data_key_cache_misses_total');
sql_ok($node, 'postgres', q{
	SELECT secret_mgmt.secret_resolve('svc/db');
	SELECT secret_mgmt.secret_resolve('svc/db', 1);
	SELECT secret_mgmt.secret_resolve_bytea('svc/db');
}, 'three resolves', role => 'app_acme');
is(metric('secret_mgmt_data_key_cache_misses_total') - $misses0, 1,
	'the first resolve of a session unwraps the data key');
is(metric('secret_mgmt_data_key_cache_hits_total') - $hits0, 2,
	'the next two find it in the cache');

sql_ok($node, 'postgres', q{SELECT secret_mgmt.secret_render('${svc/db} and ${svc/db}')},
	'a render with two references', role => 'app_acme');
my ($rc, $out, $err) = sql_result($node, 'postgres',
	q{SELECT secret_mgmt.secret_resolve('svc/missing')}, role => 'app_acme');
like($err, qr/SM001/, 'a missing secret is not found');
($rc, $out, $err) = sql_result($node, 'postgres',
	q{SELECT secret_mgmt.secret_resolve('svc/db')}, role => 'nosy');
like($err, qr/SM002/, 'a member without read is denied');

my %want = ('create/ok' => 2, 'update/ok' => 1, 'delete/ok' => 1,
	'read/ok' => 5, 'read/denied' => 1, 'read/not_found' => 1);
for my $k (sort keys %want)
{
	is(ops(split m{/}, $k) - $before{$k}, $want{$k},
		"operations_total{$k} moved by $want{$k}");
}
is(metric('secret_mgmt_resolve_duration_seconds_count') - $resolves0, 3,
	'the histogram counts the three resolves that returned a value');
is(metric('secret_mgmt_resolve_duration_seconds_bucket', '{"le": "+Inf"}'),
	metric('secret_mgmt_resolve_duration_seconds_count'),
	'the +Inf bucket equals the count');
is($node->safe_psql('postgres', q{
	SELECT count(*) = 18 AND bool_and(d IS NULL OR d >= 0)
	  FROM (SELECT value - lag(value) OVER (ORDER BY ord) AS d
	          FROM secret_mgmt.secret_metrics() WITH ORDINALITY AS m(name, labels, value, ord)
	         WHERE name = 'secret_mgmt_resolve_duration_seconds_bucket') s}),
	't', 'eighteen cumulative buckets, never decreasing');
ok($node->safe_psql('postgres', q{
	SELECT value FROM secret_mgmt.secret_metrics()
	 WHERE name = 'secret_mgmt_resolve_duration_seconds_sum'}) > 0,
	'the histogram sums the resolves\' time');

# Refusals go through the audit queue, and it drains.
is(metric('secret_mgmt_audit_queued_total') - $queued0, 2,
	'the two refusals were queued for the audit trail');
ok($node->poll_query_until('postgres', q{
	SELECT (SELECT value FROM secret_mgmt.secret_metrics()
	         WHERE name = 'secret_mgmt_audit_queue_depth') = 0
	   AND (SELECT value FROM secret_mgmt.secret_metrics()
	         WHERE name = 'secret_mgmt_audit_flushed_total')
	     = (SELECT value FROM secret_mgmt.secret_metrics()
	         WHERE name = 'secret_mgmt_audit_queued_total')}),
	'the flusher writes every queued record');
is(metric('secret_mgmt_audit_queue_full_total'), 0,
	'no request was refused for a full queue');

# --- a rotation by the worker -------------------------------------------------
sql_ok($node, 'postgres', qq{
	SELECT secret_mgmt.secret_create('svc/rotated', 'rotated-$canary');
	SELECT secret_mgmt.secret_set_rotation('svc/rotated', '1 second', 'hex(16)');
}, 'a rotation every second', role => 'app_acme');
ok(poll_until($node, 'postgres',
		q{SELECT current_version >= 2 FROM secret_mgmt.secret_list('svc/rotated')},
		't', role => 'app_acme'),
	'the worker rotates the secret');
sql_ok($node, 'postgres', q{SELECT secret_mgmt.secret_set_rotation('svc/rotated', NULL)},
	'rotation stopped', role => 'app_acme');
# Each rotation adds a version; wait for the last one's count to land.
my ($versions, $rotations) = (-1, -2);
for (my $deadline = time() + 60; time() < $deadline; select(undef, undef, undef, 0.1))
{
	$versions = scalar_sql($node, 'postgres',
		q{SELECT current_version FROM secret_mgmt.secret_list('svc/rotated')},
		role => 'app_acme');
	$rotations = metric('secret_mgmt_rotations_total');
	last if $rotations == $versions - 1;
}
is($rotations, $versions - 1, 'rotations_total counts each of the worker\'s rotations');
is(metric('secret_mgmt_rotation_failures_total'), 0, 'and no failure');

# --- the exposition format ----------------------------------------------------
my $text = $node->safe_psql('postgres', 'SELECT secret_mgmt.secret_metrics_prometheus()',
	extra_params => [ '-U', 'scraper' ]);
$text .= "\n";
my ($promout, $prometrr) = ('', '');
my $ok = IPC::Run::run([ 'promtool', 'check', 'metrics' ],
	'<', \$text, '>', \$promout, '2>', \$prometrr);
ok($ok, 'promtool check metrics accepts the exposition text')
  or diag("promtool: $promout$prometrr");
is($promout . $prometrr, '', 'promtool has no complaint');
like($text, qr/^# TYPE secret_mgmt_operations_total counter$/m, 'operations are a counter');
like($text, qr/^# TYPE secret_mgmt_resolve_duration_seconds histogram$/m,
	'resolve latency is a histogram');
like($text, qr/^secret_mgmt_resolve_duration_seconds_bucket\{le="\+Inf"\} \d+$/m,
	'with a +Inf bucket');
like($text, qr/^secret_mgmt_operations_total\{action="read",outcome="ok"\} \d+$/m,
	'operations carry action and outcome labels');
unlike($text, qr/^(?!#)(?!secret_mgmt_)\S/m, 'every sample is named secret_mgmt_*');

my $rows = $node->safe_psql('postgres',
	q{SELECT string_agg(name || ' ' || labels::text || ' ' || value, E'\n')
	    FROM secret_mgmt.secret_metrics()});
for my $leak ($canary, 'svc/', 'acme', 'app_acme', 'nosy', 'short-lived', 'rolled back')
{
	unlike($text, qr/\Q$leak\E/, "the exposition text does not hold \"$leak\"");
	unlike($rows, qr/\Q$leak\E/, "secret_metrics() does not hold \"$leak\"");
}
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM secret_mgmt.secret_metrics(), jsonb_object_keys(labels) k
	 WHERE k NOT IN ('action', 'outcome', 'le')}),
	'0', 'labels are only action, outcome and le');

# --- reset on restart ---------------------------------------------------------
$node->restart;
is(ops('read', 'ok'), 0, 'a restart sets the counters back to zero');
is(metric('secret_mgmt_resolve_duration_seconds_count'), 0, 'the histogram too');

$node->stop;
done_testing();
