# The background worker: presence, reload, rotation, expiry, retention.
#
#  - the worker shows in pg_stat_activity with its own backend_type,
#    connected as secret_mgmt.worker_role (a LOGIN role with no other
#    privilege), and survives a configuration reload (same process);
#  - a secret with a one-second period is rotated by the worker: the hook
#    and then the test hook are called with the pending version, in that
#    order, and read the pending value through secret_resolve(path,
#    'pending'); then pending becomes current and the old current stays
#    resolvable as "previous" until its grace period ends;
#  - a failing hook leaves "current" untouched, records its error, and is
#    retried (with the same pending version) until it succeeds;
#  - the built-in pg_role target changes a role's password through a SCRAM
#    verifier: a real connection logs in with the new password and fails
#    with the old one, and with log_statement = all the server log holds
#    neither password;
#  - max_versions destroys the oldest versions, deleted secrets are purged
#    after the recovery window, and expiry is announced by events;
#  - on a node whose worker works elsewhere, an expired secret is refused
#    at read time (SM003) all the same.

use strict;
use warnings;
use Digest::MD5 qw(md5_hex);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SecretMgmtTest;

my $node = new_node(
	'worker',
	conf => join("\n",
		'secret_mgmt.worker_naptime = 100',
		'secret_mgmt.retry_backoff_max = 1',
		'secret_mgmt.rotation_grace = 3',
		'secret_mgmt.recovery_window = 2',
		'secret_mgmt.expiry_warning = 3600',
		'log_statement = all',
		# without the log hook, which would withhold the statements that
		# call value functions: the log must show what the pg_role target
		# itself writes
		'secret_mgmt.redact_logs = off'));
setup_tenant($node, 'postgres', 'acme', 'acme_app');
$node->safe_psql('postgres', q{
	CREATE ROLE secret_mgmt_worker LOGIN;
	ALTER ROLE acme_app CREATEROLE;
	CREATE ROLE app_login LOGIN PASSWORD 'initial-password';
});
$node->append_conf('postgresql.conf', "secret_mgmt.worker_role = 'secret_mgmt_worker'");
$node->restart;

# --- the worker ------------------------------------------------------------
my $worker_sql = q{SELECT pid || '|' || usename FROM pg_stat_activity
	WHERE backend_type = 'secret_mgmt worker'};
ok($node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'secret_mgmt worker'}, '1'),
	'the worker appears in pg_stat_activity');
my ($pid, $user) = split /\|/, $node->safe_psql('postgres', $worker_sql);
is($user, 'secret_mgmt_worker', 'the worker connects as secret_mgmt.worker_role');
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'secret_mgmt_worker'}),
	'f', 'the worker role is not a superuser');

$node->append_conf('postgresql.conf', 'secret_mgmt.worker_naptime = 50');
$node->reload;
ok($node->poll_query_until('postgres',
		q{SELECT setting FROM pg_settings WHERE name = 'secret_mgmt.worker_naptime'}, '50'),
	'reload applies the new naptime');
my ($pid2) = split /\|/, $node->safe_psql('postgres', $worker_sql);
is($pid2, $pid, 'the worker survives a reload');

# --- hooks -------------------------------------------------------------------
$node->safe_psql('postgres', q{
	CREATE TABLE public.hook_log (id serial, step text, path text, version int,
	                              value_md5 text);
	CREATE TABLE public.hook_fail (path text PRIMARY KEY);
	GRANT SELECT, INSERT ON public.hook_log, public.hook_fail TO acme_app_group;
	GRANT USAGE ON SEQUENCE public.hook_log_id_seq TO acme_app_group;
	CREATE FUNCTION public.set_hook(p text, v integer) RETURNS void
	LANGUAGE plpgsql AS $$
	BEGIN
	    IF EXISTS (SELECT 1 FROM public.hook_fail f WHERE f.path = p) THEN
	        RAISE EXCEPTION 'target system unavailable';
	    END IF;
	    INSERT INTO public.hook_log (step, path, version, value_md5)
	    VALUES ('set', p, v, md5(secret_mgmt.secret_resolve(p, 'pending')));
	END $$;
	CREATE FUNCTION public.test_hook(p text, v integer) RETURNS void
	LANGUAGE plpgsql AS $$
	BEGIN
	    IF (SELECT value_md5 FROM public.hook_log
	         WHERE path = p AND step = 'set' ORDER BY id DESC LIMIT 1)
	       IS DISTINCT FROM md5(secret_mgmt.secret_resolve(p, v)) THEN
	        RAISE EXCEPTION 'target does not accept the new value';
	    END IF;
	    INSERT INTO public.hook_log (step, path, version, value_md5)
	    VALUES ('test', p, v, md5(secret_mgmt.secret_resolve(p, 'pending')));
	END $$;
});

sql_ok($node, 'postgres', q{
	SELECT secret_mgmt.secret_create('svc/token', 'first-value'::text);
	SELECT secret_mgmt.secret_set_rotation('svc/token', '1 second', 'hex(16)',
	       'public.set_hook(text,integer)', 'public.test_hook(text,integer)');
}, 'rotation with hooks configured', role => 'acme_app');

ok(poll_until($node, 'postgres',
		q{SELECT current_version >= 2 FROM secret_mgmt.secret_list('svc/token')}, 't', role => 'acme_app'),
	'the worker rotates the secret');

my $log = $node->safe_psql('postgres',
	q{SELECT string_agg(step || ':' || version, ',' ORDER BY id) FROM public.hook_log
	   WHERE path = 'svc/token' AND version = 2});
is($log, 'set:2,test:2', 'hook then test hook, both with the pending version');
my $current = scalar_sql($node, 'postgres',
	q{SELECT secret_mgmt.secret_resolve('svc/token', 2)}, role => 'acme_app');
like($current, qr/^[0-9a-f]{32}$/, 'the new value comes from the generator hex(16)');
is($node->safe_psql('postgres',
		q{SELECT value_md5 FROM public.hook_log WHERE path = 'svc/token' AND version = 2 AND step = 'set'}),
	md5_hex($current), 'the hook saw the pending value');
sql_ok($node, 'postgres', q{SELECT secret_mgmt.secret_set_rotation('svc/token', NULL)},
	'rotation of svc/token stopped', role => 'acme_app');

# --- a failing hook ---------------------------------------------------------
sql_ok($node, 'postgres', q{
	SELECT secret_mgmt.secret_create('svc/flaky', 'stable-value'::text);
	INSERT INTO public.hook_fail VALUES ('svc/flaky');
	SELECT secret_mgmt.secret_set_rotation('svc/flaky', '3 seconds', 'password(20, false)',
	       'public.set_hook(text,integer)', 'public.test_hook(text,integer)');
}, 'rotation with a failing hook configured', role => 'acme_app');
ok(poll_until($node, 'postgres',
		q{SELECT attempts >= 2 AND state = 'pending' AND last_error LIKE '%target system unavailable%'
		    FROM secret_mgmt.secret_rotations('svc/flaky')}, 't', role => 'acme_app'),
	'the failure is recorded and retried');
is(scalar_sql($node, 'postgres', q{
	SELECT secret_mgmt.secret_resolve('svc/flaky') || '|' || current_version || '|' || pending_version
	  FROM secret_mgmt.secret_rotations('svc/flaky')}, role => 'acme_app'),
	'stable-value|1|2', 'current is untouched while the hook fails; one pending version');
$node->safe_psql('postgres', q{DELETE FROM public.hook_fail});
ok(poll_until($node, 'postgres',
		q{SELECT current_version >= 2 FROM secret_mgmt.secret_rotations('svc/flaky')}, 't', role => 'acme_app'),
	'the retry succeeds once the target is back');
is($node->safe_psql('postgres',
		q{SELECT string_agg(DISTINCT version::text, ',') FROM public.hook_log
		   WHERE path = 'svc/flaky' AND version = 2}),
	'2', 'the retried rotation kept its pending version');
is(scalar_sql($node, 'postgres', q{
	SELECT secret_mgmt.secret_resolve('svc/flaky', 'previous')}, role => 'acme_app'),
	'stable-value', 'the replaced value is resolvable as previous');
like(scalar_sql($node, 'postgres', q{
	SELECT string_agg(kind, ',' ORDER BY event_id) FROM secret_mgmt.secret_events()
	 WHERE path = 'svc/flaky'}, role => 'acme_app'),
	qr/^created,rotation_configured,rotation_started,rotation_failed(,rotation_failed)*,rotated/,
	'the event feed tells the story');

# The grace period ends: "previous" goes.
sql_ok($node, 'postgres', q{SELECT secret_mgmt.secret_set_rotation('svc/flaky', NULL)},
	'rotation switched off', role => 'acme_app');
ok(poll_until($node, 'postgres',
		q{SELECT count(*) FROM secret_mgmt.secret_versions('svc/flaky') WHERE 'previous' = ANY (labels)}, '0', role => 'acme_app'),
	'previous is dropped after the grace period');

# --- the worker's changes are audited -----------------------------------------
$node->safe_psql('postgres', 'SELECT secret_mgmt.secret_audit_flush()');
is($node->safe_psql('postgres', q{
	SELECT string_agg(DISTINCT principal || ':' || action || ':' || outcome
	                  || ':' || coalesce(sqlstate, '') || ':' || coalesce(version::text, '')
	                  || ':' || (fingerprint IS NOT NULL)::text, ',')
	  FROM secret_mgmt.secret_audit
	 WHERE tenant_id = 'acme' AND path = 'svc/flaky'
	   AND action IN ('rotate', 'rotation_set', 'rotation_finish', 'grace_ended', 'set_rotation')}),
	join(',',
		'acme_app:set_rotation:ok:::false',
		'secret_mgmt_worker:grace_ended:ok::1:false',
		'secret_mgmt_worker:rotate:ok::2:true',
		'secret_mgmt_worker:rotation_finish:ok::2:false',
		'secret_mgmt_worker:rotation_set:error:P0001:2:false'),
	'the worker\'s rotation steps, failures and grace end are audited as its role');
cmp_ok($node->safe_psql('postgres', q{
	SELECT count(*) FROM secret_mgmt.secret_audit
	 WHERE tenant_id = 'acme' AND path = 'svc/flaky' AND action = 'rotation_set'}),
	'>=', 2, 'each failed attempt has its row');
my $flaky_v2 = scalar_sql($node, 'postgres',
	q{SELECT secret_mgmt.secret_resolve('svc/flaky', 2)}, role => 'acme_app');
is($node->safe_psql('postgres', use_tenant_sql('acme') . q{
	SELECT string_agg(principal || ':' || action || ':' || version, ',')
	  FROM secret_mgmt.secret_audit_find_value(:'v')}, extra_params => ['-v', "v=$flaky_v2"]),
	'secret_mgmt_worker:rotate:2', 'the generated value\'s fingerprint names the worker\'s rotation');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM secret_mgmt.secret_audit_verify('acme') WHERE broken_at IS NOT NULL}),
	'0', 'the chain verifies with the worker\'s rows in it');

# --- pg_role --------------------------------------------------------------
my $hba = $node->data_dir . '/pg_hba.conf';
my $hba_text = slurp_file($hba);
open my $fh, '>', $hba or die;
print $fh "local all app_login scram-sha-256\n$hba_text";
close $fh;
$node->reload;

my $login = sub {
	my ($password) = @_;
	local $ENV{PGPASSWORD} = $password;
	my ($rc, $out, $err) = sql_result($node, 'postgres', 'SELECT current_user', role => 'app_login');
	return $rc == 0 && $out eq 'app_login';
};
ok($login->('initial-password'), 'app_login logs in with its initial password');

my $offset = log_offset($node);
sql_ok($node, 'postgres', q{
	SELECT secret_mgmt.secret_create('db/app_login', 'initial-password'::text, 'password',
	       tags => '{"pg_role": "app_login"}');
	SELECT secret_mgmt.secret_set_rotation('db/app_login', NULL, 'password(24, true)',
	       'secret_mgmt.secret_target_pg_role(text,integer)',
	       'secret_mgmt.secret_test_pg_role(text,integer)');
	SELECT secret_mgmt.secret_rotate('db/app_login');
}, 'pg_role rotated with secret_rotate', role => 'acme_app');
my $new_password = scalar_sql($node, 'postgres',
	q{SELECT secret_mgmt.secret_resolve('db/app_login')}, role => 'acme_app');
is(length($new_password), 24, 'the new password has 24 characters');
ok($login->($new_password), 'app_login logs in with the new password');
ok(!$login->('initial-password'), 'the old password no longer works');
my $server_log = log_since($node, $offset);
unlike($server_log, qr/\Q$new_password\E/, 'the new password is not in the server log');
like($server_log, qr/secret_rotate/, 'the statements were logged (log_statement = all)');
like($node->safe_psql('postgres', q{SELECT rolpassword FROM pg_authid WHERE rolname = 'app_login'}),
	qr/^SCRAM-SHA-256\$4096:/, 'the role has a SCRAM-SHA-256 verifier');

# Rotated by the worker too.
sql_ok($node, 'postgres', q{SELECT secret_mgmt.secret_set_rotation('db/app_login', '1 second', 'password(24, true)',
	       'secret_mgmt.secret_target_pg_role(text,integer)',
	       'secret_mgmt.secret_test_pg_role(text,integer)')},
	'pg_role rotation scheduled', role => 'acme_app');
ok(poll_until($node, 'postgres',
		q{SELECT current_version >= 3 FROM secret_mgmt.secret_rotations('db/app_login')}, 't', role => 'acme_app'),
	'the worker rotates the role password');
sql_ok($node, 'postgres', q{SELECT secret_mgmt.secret_set_rotation('db/app_login', NULL, 'password(24, true)',
	       'secret_mgmt.secret_target_pg_role(text,integer)',
	       'secret_mgmt.secret_test_pg_role(text,integer)')},
	'pg_role rotation stopped', role => 'acme_app');
poll_until($node, 'postgres',
	q{SELECT state FROM secret_mgmt.secret_rotations('db/app_login')}, 'idle', role => 'acme_app');
$new_password = scalar_sql($node, 'postgres',
	q{SELECT secret_mgmt.secret_resolve('db/app_login')}, role => 'acme_app');
ok($login->($new_password), 'app_login logs in with the password the worker set');

# A tenant member cannot aim the pg_role target at a superuser.
my $superuser = $node->safe_psql('postgres', 'SELECT current_user');
sql_ok($node, 'postgres', qq{
	SELECT secret_mgmt.secret_create('db/root', 'x-password'::text, 'password',
	       tags => '{"pg_role": "$superuser"}')}, 'a secret naming a superuser', role => 'acme_app');
expect_error($node, 'postgres', q{
	SELECT secret_mgmt.secret_set_rotation('db/root', NULL, NULL,
	       'secret_mgmt.secret_target_pg_role(text,integer)');
	SELECT secret_mgmt.secret_rotate('db/root')}, 'SM002', qr/permission denied to set the password of role/,
	'changing a superuser password is refused', role => 'acme_app');

# --- retention -----------------------------------------------------------
sql_ok($node, 'postgres', q{
	SELECT secret_mgmt.secret_create('keep/two', 'v1'::text);
	SELECT secret_mgmt.secret_update('keep/two', 'v' || i) FROM generate_series(2, 6) AS i;
	SELECT secret_mgmt.secret_set_max_versions('keep/two', 2);
}, 'six versions, keep two', role => 'acme_app');
ok(poll_until($node, 'postgres',
		q{SELECT string_agg(version || ':' || state, ',' ORDER BY version)
		    FROM secret_mgmt.secret_versions('keep/two')},
		'1:destroyed,2:destroyed,3:destroyed,4:destroyed,5:enabled,6:enabled', role => 'acme_app'),
	'the oldest versions are destroyed, the rows stay (gap-free)');

sql_ok($node, 'postgres', q{
	SELECT secret_mgmt.secret_create('gone/soon', 'bye'::text);
	SELECT secret_mgmt.secret_delete('gone/soon');
}, 'a secret deleted', role => 'acme_app');
ok(poll_until($node, 'postgres',
		q{SELECT count(*) FROM secret_mgmt.secret_list('gone/', include_deleted => true)}, '0', role => 'acme_app'),
	'it is purged after the recovery window');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM secret_mgmt.secret_item WHERE path = 'gone/soon'}
		  . q{ UNION ALL SELECT count(*) FROM secret_mgmt.secret_event WHERE path = 'gone/soon' AND kind = 'purged'}),
	"0\n1", 'no row is left, one purged event');

# --- expiry ---------------------------------------------------------------
sql_ok($node, 'postgres', q{
	SELECT secret_mgmt.secret_create('exp/soon', 'x'::text, expires_at => now() + interval '2 seconds');
}, 'a secret expiring in two seconds', role => 'acme_app');
ok(poll_until($node, 'postgres',
		q{SELECT string_agg(kind, ',' ORDER BY event_id) FROM secret_mgmt.secret_events()
		   WHERE path = 'exp/soon' AND kind IN ('expiry_warning', 'expired')},
		'expiry_warning,expired', role => 'acme_app'),
	'one warning ahead, then one expired event');
expect_error($node, 'postgres', q{SELECT secret_mgmt.secret_resolve('exp/soon')},
	'SM003', qr/has expired/, 'the expired secret is refused', role => 'acme_app');
$node->stop;

# Expiry at read time without the worker (it works in another database).
my $idle = new_node('idle_worker', conf => "secret_mgmt.database = 'template1'");
setup_tenant($idle, 'postgres', 'acme', 'acme_app');
sql_ok($idle, 'postgres', q{
	SELECT secret_mgmt.secret_create('exp/a', 'x'::text, expires_at => clock_timestamp() + interval '1 second');
	SELECT secret_mgmt.secret_create('exp/past', 'x'::text, expires_at => clock_timestamp() - interval '1 millisecond');
}, 'secrets with expiry', role => 'acme_app');
expect_error($idle, 'postgres', q{SELECT secret_mgmt.secret_resolve('exp/past')},
	'SM003', qr/has expired/, 'an expiry one millisecond ago is refused', role => 'acme_app');
ok(poll_until($idle, 'postgres',
		q{SELECT count(*) FROM secret_mgmt.secret_events() WHERE kind = 'expired'}, '0', role => 'acme_app'),
	'no worker marks anything here');
ok(poll_until($idle, 'postgres',
		q{SELECT clock_timestamp() > expires_at FROM secret_mgmt.secret_list('exp/a')}, 't',
		role => 'acme_app'), 'time passes the expiry');
expect_error($idle, 'postgres', q{SELECT secret_mgmt.secret_resolve('exp/a')},
	'SM003', qr/has expired/, 'expiry holds at read time with no worker', role => 'acme_app');
$idle->stop;

done_testing();
