# Crashes mid-rotation: nothing done twice, nothing lost.
#
# Three faults, each followed by the same checks:
#   1. kill -9 of the worker while it waits inside a rotation hook (on an
#      advisory lock the test holds) for a batch of secrets;
#   2. kill -9 of a backend inside secret_rotate(), waiting in its hook;
#   3. pg_ctl stop -m immediate while the worker rotates a hundred secrets
#      every second (no hooks).
# After the server is back and the worker has run:
#   - every secret resolves to exactly one committed version, the one
#     secret_item says is current, and it is enabled;
#   - version numbers are gap-free (1..last_version, each exactly once);
#   - "pending" exists exactly when a rotation is in progress, and names
#     the newest version;
#   - each tenant's event feed is numbered 1..N without gaps or repeats,
#     and agrees with its counter;
#   - no version was rotated in twice (one "rotated" event per version),
#     and every rotation that finished before the fault stays finished.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SecretMgmtTest;

my $node = new_node(
	'crash',
	conf => join("\n",
		'secret_mgmt.worker_naptime = 50',
		'secret_mgmt.retry_backoff_max = 1',
		'restart_after_crash = on'));
setup_tenant($node, 'postgres', 'acme', 'acme_app');
$node->safe_psql('postgres', q{
	CREATE TABLE public.hook_calls (path text, version int);
	GRANT INSERT, SELECT ON public.hook_calls TO acme_app_group;
	CREATE FUNCTION public.blocking_hook(p text, v integer) RETURNS void
	LANGUAGE plpgsql AS $$
	BEGIN
	    PERFORM pg_catalog.pg_advisory_xact_lock_shared(4242);
	    INSERT INTO public.hook_calls VALUES (p, v);
	END $$;
});

# The invariants, as one query that returns 'ok' or what is wrong.
my $invariants = q{
WITH versions AS (
    SELECT i.tenant_id, i.secret_id, i.path, i.last_version, i.current_version,
           count(v.version) AS n, min(v.version) AS lo, max(v.version) AS hi,
           bool_or(v.version = i.current_version AND v.state = 'enabled') AS current_ok
      FROM secret_mgmt.secret_item i
      JOIN secret_mgmt.secret_version v USING (tenant_id, secret_id)
     GROUP BY 1, 2, 3, 4, 5),
pending AS (
    SELECT i.tenant_id, i.secret_id, i.path, i.last_version,
           coalesce(l.rotation_state, 'idle') AS state, l.pending_version,
           (SELECT b.version FROM secret_mgmt.secret_label b
             WHERE b.tenant_id = i.tenant_id AND b.secret_id = i.secret_id
               AND b.label = 'pending') AS label
      FROM secret_mgmt.secret_item i
      LEFT JOIN secret_mgmt.secret_lifecycle l USING (tenant_id, secret_id)),
feed AS (
    SELECT e.tenant_id, count(*) AS n, count(DISTINCT e.event_id) AS d,
           min(e.event_id) AS lo, max(e.event_id) AS hi,
           (SELECT c.last_event_id FROM secret_mgmt.secret_event_counter c
             WHERE c.tenant_id = e.tenant_id) AS counter
      FROM secret_mgmt.secret_event e GROUP BY 1),
problems AS (
    SELECT 'gap in ' || path FROM versions
     WHERE n <> last_version OR lo <> 1 OR hi <> last_version
    UNION ALL
    SELECT 'bad current of ' || path FROM versions WHERE NOT current_ok
    UNION ALL
    SELECT 'pending label of ' || path FROM pending
     WHERE (state = 'idle') <> (label IS NULL)
        OR (state <> 'idle' AND (label <> pending_version OR pending_version <> last_version))
    UNION ALL
    SELECT 'feed of ' || tenant_id FROM feed
     WHERE n <> d OR lo <> 1 OR hi <> n OR counter <> n
    UNION ALL
    SELECT 'rotated twice: ' || path || ' v' || version FROM secret_mgmt.secret_event
     WHERE kind = 'rotated' GROUP BY path, version HAVING count(*) > 1
    UNION ALL
    SELECT 'started twice: ' || path || ' v' || version FROM secret_mgmt.secret_event
     WHERE kind = 'rotation_started' GROUP BY path, version HAVING count(*) > 1)
SELECT coalesce(string_agg(p, '; '), 'ok') FROM problems AS t(p)};

# Every secret resolves, as the tenant member.
my $resolve_all = q{
SELECT count(*) FILTER (WHERE secret_mgmt.secret_resolve(path) IS NOT NULL)
       || '/' || count(*)
  FROM secret_mgmt.secret_list()};

my $check = sub {
	my ($when, $count) = @_;
	is($node->safe_psql('postgres', $invariants), 'ok', "$when: invariants hold");
	is(scalar_sql($node, 'postgres', $resolve_all, role => 'acme_app'),
		"$count/$count", "$when: every secret resolves");
};

my $worker_pid = sub {
	return $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'secret_mgmt worker'});
};

# --- 1. kill -9 of the worker inside a hook ---------------------------------
my $holder = $node->background_psql('postgres');
$holder->query_safe('SELECT pg_advisory_lock(4242)');
sql_ok($node, 'postgres', q{
	SELECT secret_mgmt.secret_create('hooked/' || i, 'value-' || i) FROM generate_series(1, 10) AS i;
	SELECT secret_mgmt.secret_set_rotation('hooked/' || i, '1 hour', 'hex(8)',
	       'public.blocking_hook(text,integer)') FROM generate_series(1, 10) AS i;
}, 'ten secrets with a hook that blocks', role => 'acme_app');
# All ten fall due at the same instant, so the worker takes them in one batch.
$node->safe_psql('postgres', q{
	UPDATE secret_mgmt.secret_lifecycle l SET due_at = pg_catalog.now()
	  FROM secret_mgmt.secret_item i
	 WHERE i.tenant_id = l.tenant_id AND i.secret_id = l.secret_id
	   AND i.path LIKE 'hooked/%'});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) FROM pg_stat_activity
	 WHERE backend_type = 'secret_mgmt worker' AND wait_event_type = 'Lock'}, '1'),
	'the worker waits inside the hook');
my $before = $node->safe_psql('postgres',
	q{SELECT count(*) FROM secret_mgmt.secret_label WHERE label = 'pending'});
is($before, '10', 'all ten pending versions were committed before the hook ran');
my $pid = $worker_pid->();
kill 'KILL', $pid;
$holder->{run}->kill_kill;
ok(poll_until($node, 'postgres', 'SELECT 1', '1'), 'the server is back after the crash');
ok(poll_until($node, 'postgres', q{
	SELECT count(*) FROM secret_mgmt.secret_item
	 WHERE path LIKE 'hooked/%' AND current_version >= 2}, '10'),
	'the worker resumes and finishes every rotation');
sql_ok($node, 'postgres', q{
	SELECT secret_mgmt.secret_set_rotation('hooked/' || i, NULL, 'hex(8)',
	       'public.blocking_hook(text,integer)') FROM generate_series(1, 10) AS i;
}, 'rotations stopped (the hook stays for secret_rotate)', role => 'acme_app');
ok(poll_until($node, 'postgres', q{
	SELECT count(*) FROM secret_mgmt.secret_lifecycle WHERE rotation_state <> 'idle'}, '0'),
	'no rotation left in progress');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT path FROM secret_mgmt.secret_event
	  WHERE kind = 'rotated' AND version = 2 AND path LIKE 'hooked/%' GROUP BY path) s}),
	'10', 'version 2 of each secret was rotated in exactly once');
$check->('after kill -9 of the worker', 10);

# --- 2. kill -9 of a backend inside secret_rotate() --------------------------
$holder = $node->background_psql('postgres');
$holder->query_safe('SELECT pg_advisory_lock(4242)');
my $last_before = $node->safe_psql('postgres',
	q{SELECT last_version FROM secret_mgmt.secret_item WHERE path = 'hooked/1'});
my $rotator = $node->background_psql('postgres', extra_params => ['-U', 'acme_app']);
$rotator->query_until(qr/started/, "\\echo started\nSELECT secret_mgmt.secret_rotate('hooked/1');\n");
ok($node->poll_query_until('postgres', q{
	SELECT count(*) FROM pg_stat_activity
	 WHERE usename = 'acme_app' AND wait_event_type = 'Lock'}, '1'),
	'the backend waits inside the hook');
my $backend = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE usename = 'acme_app' AND wait_event_type = 'Lock'});
kill 'KILL', $backend;
$rotator->{run}->kill_kill;
$holder->{run}->kill_kill;
ok(poll_until($node, 'postgres', 'SELECT 1', '1'), 'the server is back after the crash');
is($node->safe_psql('postgres',
		q{SELECT last_version FROM secret_mgmt.secret_item WHERE path = 'hooked/1'}),
	$last_before, 'the interrupted rotation left no version behind');
$check->('after kill -9 of a backend', 10);

# --- 3. immediate shutdown while the worker rotates -------------------------
sql_ok($node, 'postgres', q{
	SELECT secret_mgmt.secret_create('bulk/' || i, 'value-' || i, rotation_period => '1 second',
	       generator => 'password(16, false)') FROM generate_series(1, 100) AS i;
}, 'a hundred secrets rotating every second', role => 'acme_app');
ok(poll_until($node, 'postgres', q{
	SELECT count(*) >= 150 FROM secret_mgmt.secret_event WHERE kind = 'rotated' AND path LIKE 'bulk/%'}, 't'),
	'the worker is rotating them');
my $rotated_before = $node->safe_psql('postgres',
	q{SELECT count(*) FROM secret_mgmt.secret_event WHERE kind = 'rotated'});
$node->stop('immediate');
$node->start;
ok($node->safe_psql('postgres',
		q{SELECT count(*) FROM secret_mgmt.secret_event WHERE kind = 'rotated'}) >= $rotated_before,
	'no finished rotation was lost');
ok(poll_until($node, 'postgres', q{
	SELECT count(*) >= 1 FROM secret_mgmt.secret_event WHERE kind = 'rotated'
	   AND occurred_at > pg_postmaster_start_time()}, 't'),
	'the worker resumes after the restart');
sql_ok($node, 'postgres', q{
	SELECT secret_mgmt.secret_set_rotation('bulk/' || i, NULL) FROM generate_series(1, 100) AS i;
}, 'rotations stopped', role => 'acme_app');
$check->('after an immediate shutdown', 110);

$node->stop;
done_testing();
