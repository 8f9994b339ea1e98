# HashiCorp Vault KV version 2 as a secret store, end to end, over HTTPS
# against the loopback fixture (and the fault proxy where Vault must be
# unreachable).  API calls run as the tenant's non-superuser role.
#
#   - secret_create(..., backend => 'kv') keeps the local copy and queues a
#     write in secret_outbox; the worker delivers it with check-and-set,
#     and Vault then holds exactly the versions we expect (read back from
#     the fixture); updates, rollbacks, secret_rotate and the worker's own
#     rotations are delivered the same way;
#   - a rolled-back transaction leaves nothing in Vault;
#   - a write that Vault stored but whose outcome was lost is recognised,
#     not written twice; a crash (immediate shutdown) between commit and
#     delivery is delivered after restart;
#   - a change made in Vault directly is a conflict: recorded, an event,
#     not overwritten, until secret_outbox_retry();
#   - reads: the local copy while fresh, Vault with fresh => true or after
#     secret_mgmt.cache_ttl; a deleted newest version (404 with metadata)
#     is "not found", not an outage;
#   - the lifecycle maps to KV delete / undelete / destroy / metadata
#     delete; secret_migrate() moves secrets both ways, audited;
#   - no token and no value in the server log or in the outbox.

use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SecretMgmtTest;
use SecretMgmtVault;

my $dir = PostgreSQL::Test::Utils::tempdir('vault_kv');
make_certs($dir);
my $vault = start_vault($dir);
my $proxy = start_proxy($dir, $vault);

my $node = new_node(
	'vault_kv',
	conf => "secret_mgmt.ca_file = '$vault->{ca}'\n"
	  . "secret_mgmt.http_timeout_ms = 2000\n"
	  . "secret_mgmt.http_breaker_failures = 0\n"
	  . "secret_mgmt.worker_naptime = 100\n"
	  . "secret_mgmt.retry_backoff_max = 1\n"
	  . "secret_mgmt.cache_ttl = 2\n");

# --- the Vault side: the minimal KV policy of docs/backends.md ----------
my $policy = <<'HCL';
path "secret/data/acme/*"     { capabilities = ["create", "read", "update"] }
path "secret/metadata/acme/*" { capabilities = ["read", "delete"] }
path "secret/delete/acme/*"   { capabilities = ["update"] }
path "secret/undelete/acme/*" { capabilities = ["update"] }
path "secret/destroy/acme/*"  { capabilities = ["update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self"  { capabilities = ["update"] }
HCL
vault_ok($vault, 'POST', '/v1/sys/policy/pg-kv', { policy => $policy });
my $token = vault_ok($vault, 'POST', '/v1/auth/token/create',
	{ policies => ['pg-kv'], ttl => '1h' })->{auth}{client_token};
my $token_file = "$dir/kv_token";
open my $fh, '>', $token_file or die;
print $fh $token;
close $fh;

setup_tenant($node, 'postgres', 'acme', 'acme_app');
sql_ok(
	$node, 'postgres', qq{
	SELECT secret_mgmt.secret_use_tenant('global');
	SELECT secret_mgmt.secret_create('vault/kv-token', pg_read_file('$token_file'));
	SELECT secret_mgmt.secret_use_tenant(NULL);
	SELECT secret_mgmt.secret_backend_create('kv', 'vault',
	    jsonb_build_object('address', '$vault->{url}'), 'vault/kv-token');
	SELECT secret_mgmt.secret_backend_create('kvp', 'vault',
	    jsonb_build_object('address', '$proxy->{url}'), 'vault/kv-token');
	SELECT secret_mgmt.secret_backend_create('kv-others', 'vault',
	    jsonb_build_object('address', '$vault->{url}', 'tenants', jsonb_build_array('globex', 'initech')),
	    'vault/kv-token');
	INSERT INTO secret_mgmt.secret_backend (name, kind, config, credentials_path, created_by)
	    VALUES ('aws1', 'aws', '{}', 'vault/kv-token', 'test');
},
	'token stored in the global tenant; backends kv (direct), kvp (through the proxy), kv-others (for other tenants)');
expect_error($node, 'postgres', q{SELECT secret_mgmt.secret_backend_create('kv-none', 'vault',
	    '{"address": "https://127.0.0.1:1", "tenants": []}', 'vault/kv-token')},
	'22023', 'invalid', 'a backend for no tenant is refused');

my $app = use_tenant_sql('acme');
my %as_app = (role => 'acme_app');

# KV state of a key of tenant acme, as the fixture holds it.
sub kv_meta
{
	my ($key) = @_;
	my ($ok, $json) = vault_api($vault, 'GET', "/v1/secret/metadata/acme/$key");
	return $ok ? $json->{data} : undef;
}

sub kv_value
{
	my ($key, $version) = @_;
	my $q = $version ? "?version=$version" : '';
	my ($ok, $json) = vault_api($vault, 'GET', "/v1/secret/data/acme/$key$q");
	return $ok ? $json->{data}{data}{value} : undef;
}

# Vault's versions of a key: "n:value" (or n:deleted / n:destroyed).
sub kv_versions
{
	my ($key) = @_;
	my $m = kv_meta($key) or return 'none';
	my @out;
	for my $n (sort { $a <=> $b } keys %{ $m->{versions} })
	{
		my $v = $m->{versions}{$n};
		push @out, $v->{destroyed} ? "$n:destroyed"
		  : $v->{deletion_time} ? "$n:deleted"
		  : "$n:" . (kv_value($key, $n) // '?');
	}
	return join(',', @out);
}

sub app_sql
{
	my ($sql) = @_;
	return scalar_sql($node, 'postgres', $app . $sql, %as_app);
}

# Wait until no outbox row of the tenant is pending.
sub delivered
{
	my ($name) = @_;
	ok( poll_until(
			$node, 'postgres',
			"SELECT count(*) FROM secret_mgmt.secret_outbox WHERE state = 'pending'", '0'),
		"$name: the outbox is delivered");
}

# --- refusals -------------------------------------------------------------
expect_error($node, 'postgres', $app . "SELECT secret_mgmt.secret_create('x', 'v', backend => 'nope')",
	'42704', 'backend "nope" does not exist', 'unknown backend', %as_app);
expect_error($node, 'postgres', $app . "SELECT secret_mgmt.secret_create('x', 'v', backend => 'aws1')",
	'0A000', 'backend "aws1" of kind "aws" cannot store secrets', 'backend of another kind',
	%as_app);
expect_error(
	$node, 'postgres',
	$app . "SELECT secret_mgmt.secret_create('x', 'v', scope => 'team', scope_id => 't1', backend => 'kv')",
	'0A000', 'a secret of scope "team" cannot be stored in backend "kv"', 'team scope', %as_app);
expect_error($node, 'postgres', $app . "SELECT secret_mgmt.secret_create('x', 'v', backend => 'kv-others')",
	'SM002', 'permission denied to store secrets of tenant "acme" in backend "kv-others"',
	'a backend that does not serve the tenant', %as_app);
expect_error($node, 'postgres', $app . "SELECT secret_mgmt.secret_migrate('**', 'kv-others')",
	'SM002', 'permission denied to store secrets of tenant "acme" in backend "kv-others"',
	'no migration into a backend that does not serve the tenant', %as_app);

# --- create, update, rollback, rotate ------------------------------------
sql_ok(
	$node, 'postgres', $app . q{
	SELECT secret_mgmt.secret_create('app/db', 'kv-value-one', backend => 'kv');
}, 'create a vault-backed secret', %as_app);
delivered('create');
is(kv_versions('app/db'), '1:kv-value-one', 'Vault holds version 1 with the value');
is(app_sql(q{SELECT string_agg(op || ' ' || version || ' ' || state || ' ' || backend_version, ';' ORDER BY seq)
	FROM secret_mgmt.secret_outbox_status('app/db', true)}),
	'write 1 delivered 1', 'the outbox row records the KV version');
is(app_sql(q{SELECT backend FROM secret_mgmt.secret_list('app/')}), 'kv', 'secret_list shows the backend');

sql_ok(
	$node, 'postgres', $app . q{
	SELECT secret_mgmt.secret_update('app/db', 'kv-value-two');
	SELECT secret_mgmt.secret_rollback('app/db', 1);
	SELECT secret_mgmt.secret_rotate('app/db', 'kv-value-four');
}, 'update, rollback and rotate', %as_app);
delivered('update, rollback, rotate');
is(kv_versions('app/db'), '1:kv-value-one,2:kv-value-two,3:kv-value-one,4:kv-value-four',
	'Vault holds the four versions in order');
is($node->safe_psql('postgres', q{SELECT string_agg(version || '=' || backend_version, ',' ORDER BY version)
	FROM secret_mgmt.secret_version v JOIN secret_mgmt.secret_item i USING (tenant_id, secret_id)
	WHERE i.path = 'app/db'}), '1=1,2=2,3=3,4=4', 'each version is mapped to its KV version');

# --- an aborted transaction leaves nothing ---------------------------------
my ($rc, $out, $err) = sql_result(
	$node, 'postgres', $app . q{
	BEGIN;
	SELECT secret_mgmt.secret_create('app/never', 'kv-never-stored', backend => 'kv');
	SELECT secret_mgmt.secret_update('app/db', 'kv-never-stored');
	SELECT string_agg(path || ' ' || op || ' ' || version || ' ' || state, ';' ORDER BY seq)
	  FROM secret_mgmt.secret_outbox_status('app/');
	ROLLBACK;
}, %as_app);
is($rc, 0, 'a transaction writes and rolls back');
like($out, qr/^app\/never write 1 pending;app\/db write 5 pending$/m,
	'the writes are queued in the writing transaction');
$node->safe_psql('postgres', 'SELECT pg_sleep(0.5)');
is(kv_meta('app/never'), undef, 'rolled back: no key in Vault');
is(kv_meta('app/db')->{current_version}, 4, 'rolled back: app/db unchanged in Vault');
is($node->safe_psql('postgres', q{SELECT count(*) FROM secret_mgmt.secret_outbox WHERE path = 'app/never'}),
	'0', 'rolled back: no outbox row');

# --- reads ------------------------------------------------------------------
is(app_sql(q{SELECT secret_mgmt.secret_resolve('app/db')}), 'kv-value-four', 'resolve: the current value');
is(app_sql(q{SELECT secret_mgmt.secret_resolve('app/db', fresh => true)}), 'kv-value-four',
	'resolve fresh: Vault holds our version');
is(app_sql(q{SELECT secret_mgmt.secret_resolve('app/db', 2)}), 'kv-value-two', 'resolve by version');
vault_ok($vault, 'POST', '/v1/secret/data/acme/app/db', { data => { value => 'kv-external' } });
is(app_sql(q{SELECT secret_mgmt.secret_resolve('app/db', true)}), 'kv-external',
	'resolve fresh: a version written in Vault directly is served');
ok(poll_until($node, 'postgres', $app . q{SELECT secret_mgmt.secret_resolve('app/db')}, 'kv-external', %as_app),
	'resolve: once the local copy is older than cache_ttl, Vault is asked');

# A value of a mebibyte of control characters: each is six bytes once
# escaped in JSON, so the write's body and the read's answer run to six
# mebibytes, past the HTTP client's default cap on answers.
sql_ok(
	$node, 'postgres', $app . q{
	SELECT secret_mgmt.secret_create('app/big', repeat(chr(1), 1048576) || 'end', backend => 'kv');
}, 'create a large vault-backed secret', %as_app);
delivered('large value');
is(length(kv_value('app/big') // ''), 1048579, 'Vault holds the large value whole');
is(app_sql(q{SELECT secret_mgmt.secret_resolve('app/big', fresh => true)
	= repeat(chr(1), 1048576) || 'end'}), 't', 'a fresh read returns the large value from Vault');

# --- conflict ----------------------------------------------------------------
my $events_before = $node->safe_psql('postgres', q{SELECT count(*) FROM secret_mgmt.secret_event WHERE kind = 'backend_conflict'});
sql_ok($node, 'postgres', $app . q{SELECT secret_mgmt.secret_update('app/db', 'kv-mine')},
	'update after an external write', %as_app);
ok( poll_until(
		$node, 'postgres',
		$app . q{SELECT state FROM secret_mgmt.secret_outbox_status('app/db') ORDER BY seq DESC LIMIT 1},
		'conflict', %as_app),
	'conflict: the row is marked');
like(app_sql(q{SELECT last_error FROM secret_mgmt.secret_outbox_status('app/db') WHERE state = 'conflict'}),
	qr/^conflict: the backend's current version of the key is 5, expected 4/, 'conflict: recorded on the row');
is($node->safe_psql('postgres', q{SELECT count(*) FROM secret_mgmt.secret_event WHERE kind = 'backend_conflict'}),
	$events_before + 1, 'conflict: an event');
is($node->safe_psql('postgres', q{SELECT secret_mgmt.secret_health() #>> '{outbox,conflicts}'}),
	'1', 'conflict: secret_health counts it in the outbox backlog');
is(kv_meta('app/db')->{current_version}, 5, 'conflict: nothing overwritten in Vault');
is(kv_value('app/db'), 'kv-external', 'conflict: Vault keeps the external value');
expect_error($node, 'postgres', $app . q{SELECT secret_mgmt.secret_outbox_retry('app/db')},
	'SM002', 'permission denied', 'retry needs admin', %as_app);
$node->safe_psql('postgres', q{SELECT secret_mgmt.secret_use_tenant('acme');
	SELECT secret_mgmt.secret_grant('app/**', 'acme_app_group', ARRAY['admin'])});
is(app_sql(q{SELECT secret_mgmt.secret_outbox_retry('app/db')}), '1', 'retry: one row re-queued');
delivered('retry');
is(kv_meta('app/db')->{current_version}, 6, 'retry: written over the external version');
is(kv_value('app/db'), 'kv-mine', 'retry: Vault holds our value');
is(kv_value('app/db', 5), 'kv-external', 'retry: the external version stays in the history');

# --- a lost outcome is recognised; a crash before delivery is delivered ------
proxy_mode($proxy, 'refuse');
sql_ok($node, 'postgres', $app . q{SELECT secret_mgmt.secret_create('app/idem', 'kv-idem', backend => 'kvp')},
	'create while Vault is unreachable', %as_app);
ok( poll_until(
		$node, 'postgres',
		$app . q{SELECT attempts > 0 AND state = 'pending' AND last_error LIKE 'SM006: vault at % could not be reached'
			FROM secret_mgmt.secret_outbox_status('app/idem')}, 't', %as_app),
	'unreachable: SM006 recorded on the row, retried later');
unlike(app_sql(q{SELECT string_agg(last_error, ' ') FROM secret_mgmt.secret_outbox_status('app/idem')}),
	qr/kv-idem/, 'no value in the recorded error');
# As if an earlier attempt had reached Vault and its answer was lost.
vault_ok($vault, 'POST', '/v1/secret/data/acme/app/idem', { options => { cas => 0 }, data => { value => 'kv-idem' } });
proxy_mode($proxy, 'pass');
delivered('lost outcome');
is(kv_versions('app/idem'), '1:kv-idem', 'lost outcome: recognised, not written twice');
is(app_sql(q{SELECT state || ' ' || backend_version FROM secret_mgmt.secret_outbox_status('app/idem', true)}),
	'delivered 1', 'lost outcome: recorded as KV version 1');

proxy_mode($proxy, 'refuse');
sql_ok(
	$node, 'postgres', $app . q{
	SELECT secret_mgmt.secret_create('app/crash', 'kv-crash-1', backend => 'kvp');
	SELECT secret_mgmt.secret_update('app/crash', 'kv-crash-2');
}, 'two writes committed while Vault is unreachable', %as_app);
ok(poll_until($node, 'postgres',
		q{SELECT bool_or(attempts > 0) FROM secret_mgmt.secret_outbox WHERE path = 'app/crash'}, 't'),
	'crash: delivery attempted and failed');
$node->stop('immediate');
is(kv_meta('app/crash'), undef, 'crash: nothing in Vault');
proxy_mode($proxy, 'pass');
$node->start;
delivered('after the restart');
is(kv_versions('app/crash'), '1:kv-crash-1,2:kv-crash-2', 'crash: both writes delivered after the restart');

# --- the worker's rotations ---------------------------------------------------
sql_ok($node, 'postgres', $app . q{
	SELECT secret_mgmt.secret_create('app/rot', 'kv-rot-1', backend => 'kv',
	    rotation_period => '1 second', generator => 'hex(8)')}, 'a rotating vault-backed secret', %as_app);
ok( poll_until(
		$node, 'postgres',
		q{SELECT count(*) >= 2 FROM secret_mgmt.secret_outbox WHERE path = 'app/rot' AND state = 'delivered'}, 't'),
	'the worker rotated it and the rotation was delivered');
my ($rv, $kvv) = split /\|/, $node->safe_psql('postgres',
	q{SELECT version || '|' || backend_version FROM secret_mgmt.secret_outbox WHERE path = 'app/rot' AND state = 'delivered' ORDER BY seq DESC LIMIT 1});
is(kv_value('app/rot', $kvv), app_sql("SELECT secret_mgmt.secret_resolve('app/rot', $rv)"),
	'Vault holds the rotated value of that version');
$node->safe_psql('postgres', q{UPDATE secret_mgmt.secret_item SET rotation_period = NULL WHERE path = 'app/rot';
	UPDATE secret_mgmt.secret_lifecycle SET due_at = NULL});

# --- lifecycle ------------------------------------------------------------------
sql_ok(
	$node, 'postgres', $app . q{
	SELECT secret_mgmt.secret_create('app/life', 'kv-life-1', backend => 'kv');
	SELECT secret_mgmt.secret_update('app/life', 'kv-life-2');
	SELECT secret_mgmt.secret_update('app/life', 'kv-life-3');
}, 'three versions', %as_app);
delivered('three versions');
sql_ok(
	$node, 'postgres', $app . q{
	SELECT secret_mgmt.secret_version_disable('app/life', 1);
	SELECT secret_mgmt.secret_version_destroy('app/life', 2);
}, 'disable 1, destroy 2', %as_app);
delivered('disable, destroy');
is(kv_versions('app/life'), '1:deleted,2:destroyed,3:kv-life-3', 'disable: KV delete; destroy: KV destroy');
sql_ok($node, 'postgres', $app . q{SELECT secret_mgmt.secret_version_enable('app/life', 1)}, 'enable 1', %as_app);
delivered('enable');
is(kv_versions('app/life'), '1:kv-life-1,2:destroyed,3:kv-life-3', 'enable: KV undelete');
sql_ok($node, 'postgres', $app . q{SELECT secret_mgmt.secret_delete('app/life')}, 'soft delete', %as_app);
delivered('delete');
is(kv_versions('app/life'), '1:deleted,2:destroyed,3:deleted', 'delete: every version deleted in KV');
sql_ok($node, 'postgres', $app . q{SELECT secret_mgmt.secret_restore('app/life')}, 'restore', %as_app);
delivered('restore');
is(kv_versions('app/life'), '1:kv-life-1,2:destroyed,3:kv-life-3', 'restore: enabled versions undeleted');
# A newest version deleted in Vault directly: "not found", not an outage.
vault_ok($vault, 'POST', '/v1/secret/delete/acme/app/life', { versions => [3] });
expect_error($node, 'postgres', $app . q{SELECT secret_mgmt.secret_resolve('app/life', fresh => true)},
	'SM001', 'the newest version of secret "app/life" is deleted in backend "kv"',
	'a deleted version (404 with metadata)', %as_app);
sql_ok($node, 'postgres', $app . q{SELECT secret_mgmt.secret_delete('app/life'); SELECT secret_mgmt.secret_purge('app/life')},
	'delete and purge', %as_app);
delivered('purge');
is(kv_meta('app/life'), undef, 'purge: KV metadata delete');

# Retention: versions the worker prunes are destroyed in KV too.
sql_ok(
	$node, 'postgres', $app . q{
	SELECT secret_mgmt.secret_create('app/prune', 'kv-prune-1', backend => 'kv');
	SELECT secret_mgmt.secret_update('app/prune', 'kv-prune-2');
	SELECT secret_mgmt.secret_update('app/prune', 'kv-prune-3');
}, 'three versions to prune', %as_app);
delivered('prune set-up');
sql_ok($node, 'postgres', $app . q{SELECT secret_mgmt.secret_set_max_versions('app/prune', 1)},
	'keep one version', %as_app);
ok( poll_until(
		$node, 'postgres',
		q{SELECT count(*) FROM secret_mgmt.secret_outbox WHERE path = 'app/prune' AND op = 'destroy' AND state = 'delivered'},
		'1'),
	'retention: the pruned version is destroyed through the outbox');
is(kv_versions('app/prune'), '1:destroyed,2:kv-prune-2,3:kv-prune-3',
	'retention: version 1 destroyed in KV; previous (labelled) and current kept');

# --- migration ------------------------------------------------------------------
sql_ok(
	$node, 'postgres', $app . q{
	SELECT secret_mgmt.secret_create('mig/a', 'kv-mig-a1');
	SELECT secret_mgmt.secret_update('mig/a', 'kv-mig-a2');
	SELECT secret_mgmt.secret_create('mig/b', 'kv-mig-b1');
	SELECT secret_mgmt.secret_version_disable('mig/a', 1);
}, 'local secrets to migrate', %as_app);
is(app_sql(q{SELECT secret_mgmt.secret_migrate('mig/*', 'kv')}), '0', 'migrate: nothing without admin');
$node->safe_psql('postgres', q{SELECT secret_mgmt.secret_use_tenant('acme');
	SELECT secret_mgmt.secret_grant('mig/**', 'acme_app_group', ARRAY['admin'])});
is(app_sql(q{SELECT secret_mgmt.secret_migrate('mig/*', 'kv')}), '2', 'migrate local -> kv: two secrets');
delivered('migrate to kv');
is(kv_versions('mig/a'), '1:deleted,2:kv-mig-a2', 'migrate: versions in order, the disabled one deleted');
is(kv_versions('mig/b'), '1:kv-mig-b1', 'migrate: the second secret');
vault_ok($vault, 'POST', '/v1/secret/data/acme/mig/a', { data => { value => 'kv-mig-a3' } });
is(app_sql(q{SELECT secret_mgmt.secret_migrate('mig/a', 'local')}), '1', 'migrate kv -> local');
delivered('migrate to local');
is(kv_meta('mig/a'), undef, 'migrate to local: the Vault copy is removed');
is(app_sql(q{SELECT secret_mgmt.secret_resolve('mig/a')}), 'kv-mig-a3',
	'migrate to local: the version only Vault held was imported');
is(app_sql(q{SELECT backend FROM secret_mgmt.secret_list('mig/a')}), 'local', 'migrate to local: backend switched');
is($node->safe_psql('postgres', q{SELECT count(*) FROM secret_mgmt.secret_audit WHERE action = 'migrate' AND outcome = 'ok'}),
	'3', 'migrations are audited');
is($node->safe_psql('postgres', q{SELECT count(*) FROM secret_mgmt.secret_event WHERE kind = 'migrated'}),
	'3', 'migrations are events');

# --- nothing secret in the log or the outbox ---------------------------------
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
ok(index($log, $token) < 0, 'the Vault token is not in the server log');
# Statements are logged with their literals here (log_statement = all);
# what the extension logs itself, and its details, must hold no value.
my @own = grep { /secret_mgmt: |DETAIL:/ } split /\n/, $log;
ok(@own > 0 && !grep({ /kv-(?:value|idem|crash|life|mig|mine|never|external)/ } @own),
	'no value in what the extension logs');
like($log, qr/delivery to backend "kvp" of secret "app\/idem" of tenant "acme" failed/,
	'failed deliveries are logged');
is($node->safe_psql('postgres', q{SELECT count(*) FROM secret_mgmt.secret_outbox
	WHERE row_to_json(secret_outbox)::text LIKE '%kv-%'}), '0', 'no value in any outbox row');

done_testing();
