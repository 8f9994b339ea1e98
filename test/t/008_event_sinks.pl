# Events delivered to a real RabbitMQ and to an HTTPS webhook, end to end.
#
# A RabbitMQ server (Debian's rabbitmq-server) runs as this unprivileged
# user on loopback, with its own node name, ports, epmd and data
# directories; a Python HTTPS receiver (test/fixtures/webhook_receiver.py)
# checks every request's HMAC-SHA256 signature; the messages in RabbitMQ
# are consumed with the pika client (test/fixtures/amqp_consume.py).
#
#  - every event of the tenant's feed after the sinks were created reaches
#    both sinks, signed where it should be, each exactly once, in order;
#  - NOTIFY secret_mgmt carries only the events' opaque ids;
#  - with both sinks down, changes go on, deliveries wait (their state and
#    last error visible through secret_sinks()), and once the sinks are
#    back everything arrives: nothing lost, nothing twice.

use strict;
use warnings;
use File::Path qw(make_path);
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SecretMgmtTest;

my $python = '/usr/bin/python3';
my $dir = PostgreSQL::Test::Utils::tempdir('sinks');
my $amqp_port = PostgreSQL::Test::Cluster::get_free_port();
my $dist_port = PostgreSQL::Test::Cluster::get_free_port();
my $epmd_port = PostgreSQL::Test::Cluster::get_free_port();
my $hook_port = PostgreSQL::Test::Cluster::get_free_port();
my $queue = 'secret_mgmt.events';

# --- RabbitMQ -----------------------------------------------------------------
my $rmq = "$dir/rabbitmq";
make_path("$rmq/mnesia", "$rmq/log");
open my $fh, '>', "$rmq/rabbitmq.conf" or die;
print $fh "listeners.tcp.default = 127.0.0.1:$amqp_port\n";
close $fh;
open $fh, '>', "$rmq/enabled_plugins" or die;
print $fh "[].\n";
close $fh;
my %rmq_env = (
	HOME => $rmq,
	RABBITMQ_MNESIA_BASE => "$rmq/mnesia",
	RABBITMQ_LOG_BASE => "$rmq/log",
	RABBITMQ_NODENAME => "sm_test_$amqp_port\@localhost",
	RABBITMQ_NODE_IP_ADDRESS => '127.0.0.1',
	RABBITMQ_NODE_PORT => $amqp_port,
	RABBITMQ_DIST_PORT => $dist_port,
	RABBITMQ_CONFIG_FILE => "$rmq/rabbitmq",
	RABBITMQ_ENABLED_PLUGINS_FILE => "$rmq/enabled_plugins",
	RABBITMQ_PID_FILE => "$rmq/pid",
	RABBITMQ_SERVER_START_ARGS => '-kernel inet_dist_use_interface {127,0,0,1}',
	ERL_EPMD_ADDRESS => '127.0.0.1',
	ERL_EPMD_PORT => $epmd_port);
my $rmq_bin = '/usr/lib/rabbitmq/bin';

sub with_rmq_env
{
	my ($code) = @_;
	local @ENV{ keys %rmq_env } = values %rmq_env;
	return $code->();
}

sub rabbitmqctl
{
	my @args = @_;
	return with_rmq_env(sub {
		my ($out, $err) = ('', '');
		my $ok = IPC::Run::run([ "$rmq_bin/rabbitmqctl", @args ], '>', \$out, '2>', \$err,
			IPC::Run::timeout(60));
		diag("rabbitmqctl @args: $err") unless $ok;
		return $ok;
	});
}

sub consume
{
	my ($mode) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ $python, 'test/fixtures/amqp_consume.py', $amqp_port, $queue, $mode ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(30));
	return $ok ? $out : undef;
}

my $broker = with_rmq_env(sub {
	IPC::Run::start([ "$rmq_bin/rabbitmq-server" ], '>', "$rmq/stdout.log", '2>&1');
});
my $deadline = time() + 120;
my $up = 0;
while (time() < $deadline)
{
	if (defined consume('declare')) { $up = 1; last; }
	sleep 1;
}
ok($up, 'RabbitMQ runs on loopback as an unprivileged user')
  or BAIL_OUT("RabbitMQ did not start: " . substr(slurp_file("$rmq/stdout.log"), -2000));

# --- the HTTPS receiver ---------------------------------------------------
my $ssl = "$dir/tls";
make_path($ssl);
my @openssl = (
	[ qw(openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca),
	  '-keyout', "$ssl/ca.key", '-out', "$ssl/ca.crt" ],
	[ qw(openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1),
	  '-keyout', "$ssl/server.key", '-out', "$ssl/server.csr" ]);
for my $cmd (@openssl)
{
	my ($o, $e) = ('', '');
	IPC::Run::run($cmd, '>', \$o, '2>', \$e) or die "openssl failed: $e";
}
open $fh, '>', "$ssl/ext" or die;
print $fh "subjectAltName = IP:127.0.0.1\n";
close $fh;
my ($o, $err) = ('', '');
IPC::Run::run([ qw(openssl x509 -req -days 2 -CAcreateserial), '-in', "$ssl/server.csr",
		'-CA', "$ssl/ca.crt", '-CAkey', "$ssl/ca.key", '-out', "$ssl/server.crt",
		'-extfile', "$ssl/ext" ], '>', \$o, '2>', \$err) or die "openssl failed: $err";

my $hmac_key = random_hex(32);
write_key_file("$dir/hmac.key", $hmac_key);
my $received = "$dir/webhook.jsonl";
my $receiver;
my $receiver_out = '';
sub start_receiver
{
	$receiver_out = '';
	$receiver = IPC::Run::start(
		[ $python, 'test/fixtures/webhook_receiver.py', $hook_port,
		  "$ssl/server.crt", "$ssl/server.key", "$dir/hmac.key", $received ],
		'>', \$receiver_out, '2>&1', IPC::Run::timeout(600));
	$receiver->pump until $receiver_out =~ /listening/;
}
start_receiver();

# --- the node -------------------------------------------------------------
my $node = new_node(
	'sinks',
	conf => join("\n",
		'secret_mgmt.worker_naptime = 100',
		'secret_mgmt.retry_backoff_max = 1'));
setup_tenant($node, 'postgres', 'acme', 'acme_app');
$node->safe_psql('postgres',
	q{SELECT secret_mgmt.secret_tenant_add_member('acme', 'acme_app_group', admin => true)});

sql_ok($node, 'postgres', qq{
	SELECT secret_mgmt.secret_create('sinks/webhook-key', '$hmac_key'::text);
	SELECT secret_mgmt.secret_create('sinks/rabbitmq', '{"username": "guest", "password": "guest"}'::jsonb);
	SELECT secret_mgmt.secret_sink_create('hook', 'webhook',
	       '{"url": "https://127.0.0.1:$hook_port/events", "ca_file": "$ssl/ca.crt", "timeout_ms": 3000}',
	       'sinks/webhook-key');
	SELECT secret_mgmt.secret_sink_create('rabbit', 'rabbitmq',
	       '{"host": "127.0.0.1", "port": $amqp_port, "routing_key": "$queue", "timeout_ms": 3000}',
	       'sinks/rabbitmq');
}, 'credentials and two sinks', role => 'acme_app');
my $first = scalar_sql($node, 'postgres',
	q{SELECT coalesce(max(event_id), 0) FROM secret_mgmt.secret_events()}, role => 'acme_app');

# LISTEN while changes happen: payloads are opaque ids.
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN secret_mgmt');

my $changes = sub {
	my ($tag) = @_;
	sql_ok($node, 'postgres', qq{
		SELECT secret_mgmt.secret_create('app/$tag/' || i, 'value-$tag-' || i) FROM generate_series(1, 5) AS i;
		SELECT secret_mgmt.secret_update('app/$tag/1', 'changed-$tag'::text);
		SELECT secret_mgmt.secret_rotate('app/$tag/2');
		SELECT secret_mgmt.secret_delete('app/$tag/3');
	}, "changes ($tag)", role => 'acme_app');
};

# The feed after the sinks were created: event ids, in order.
my $feed_ids = sub {
	my $out = scalar_sql($node, 'postgres',
		"SELECT string_agg(event_id::text, ',' ORDER BY event_id) FROM secret_mgmt.secret_events($first)",
		role => 'acme_app');
	return $out;
};

my @amqp_messages;
my $amqp_ids = sub {
	my $out = consume('drain');
	push @amqp_messages, map { decode_json($_) } grep { /\S/ } split /\n/, ($out // '');
	return join(',', map { $_->{event_id} } @amqp_messages);
};
my $hook_ids = sub {
	return '' unless -e $received;
	my @lines = grep { /\S/ } split /\n/, slurp_file($received);
	return join(',', map { $_->{event_id} } grep { $_->{valid} } map { decode_json($_) } @lines);
};
my $wait_delivered = sub {
	my ($what) = @_;
	my $want = $feed_ids->();
	my ($got_amqp, $got_hook) = ('', '');
	my $deadline = time() + 60;
	while (time() < $deadline)
	{
		$got_amqp = $amqp_ids->();
		$got_hook = $hook_ids->();
		last if $got_amqp eq $want && $got_hook eq $want;
		select(undef, undef, undef, 0.2);
	}
	is($got_amqp, $want, "$what: RabbitMQ got every event once, in order");
	is($got_hook, $want, "$what: the webhook got every event once, in order, correctly signed");
};

$changes->('one');
$wait_delivered->('sinks up');
ok(!grep({ $_->{type} ne 'secret_mgmt.event' } @amqp_messages), 'AMQP messages are typed');
my @lines = map { decode_json($_) } grep { /\S/ } split /\n/, slurp_file($received);
is(scalar(grep { !$_->{valid} } @lines), 0, 'no request had a bad signature');

# NOTIFY payloads are the opaque ids of the events, nothing else.
my $notified = $listener->query_safe('SELECT 1');
my @payloads = ($listener->{stderr} . $notified) =~ /"secret_mgmt" with payload "([^"]*)"/g;
ok(@payloads >= 5, 'notifications were sent');
ok(!grep({ !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/ } @payloads),
	'every payload is an opaque id');
$listener->quit;

# --- both sinks down for a while ------------------------------------------------
$receiver->kill_kill;
ok(rabbitmqctl('stop_app'), 'RabbitMQ stopped');
$changes->('two');
ok(poll_until($node, 'postgres', q{
	SELECT bool_and(pending > 0 AND last_error IS NOT NULL) FROM secret_mgmt.secret_sinks()}, 't',
	role => 'acme_app'), 'deliveries wait, with their error visible');
my $attempts = scalar_sql($node, 'postgres',
	q{SELECT max(attempts) FROM secret_mgmt.secret_deliveries('hook') WHERE state = 'pending'},
	role => 'acme_app');
ok(poll_until($node, 'postgres', qq{
	SELECT max(attempts) > $attempts FROM secret_mgmt.secret_deliveries('hook') WHERE state = 'pending'}, 't',
	role => 'acme_app'), 'delivery is retried');
$changes->('three');

ok(rabbitmqctl('start_app'), 'RabbitMQ started again');
start_receiver();
$wait_delivered->('after the outage');
is(scalar_sql($node, 'postgres',
		q{SELECT sum(pending) FROM secret_mgmt.secret_sinks()}, role => 'acme_app'),
	'0', 'nothing is left pending');

# --- cleanup -------------------------------------------------------------
$node->stop;
$receiver->kill_kill;
rabbitmqctl('stop');
$broker->kill_kill;
with_rmq_env(sub { IPC::Run::run([ 'epmd', '-kill' ], '>', \my $x, '2>', \my $y) });
done_testing();

# However the test ends, leave no broker, receiver or epmd running.
END
{
	local $?;
	$receiver->kill_kill if $receiver && $receiver->pumpable;
	if ($broker && $broker->pumpable)
	{
		eval { rabbitmqctl('stop') };
		$broker->kill_kill;
	}
	eval { with_rmq_env(sub { IPC::Run::run([ 'epmd', '-kill' ], '>', \my $x, '2>', \my $y) }) };
}
