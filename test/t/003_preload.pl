# The library must be preloaded, and says so when it is not.
#
# On a node without shared_preload_libraries, CREATE EXTENSION fails with
# "secret_mgmt must be loaded via shared_preload_libraries" and a hint,
# leaves nothing behind, and the server keeps serving.  On a node where
# the extension was created while preloaded and which is then restarted
# without the preload, calling the API (as a member or as the superuser)
# fails with the same message instead of touching the store; preloading
# again brings every value back.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SecretMgmtTest;

my $not_preloaded = qr/secret_mgmt must be loaded via shared_preload_libraries/;
my $hint = qr/HINT:\s+Add secret_mgmt to shared_preload_libraries/;

# A node that never preloads the library (its key file is configured all
# the same, as an operator who forgot only the preload would have it).
my $bare = new_node('bare', preload => 0);

my ($rc, $out, $err) = sql_result($bare, 'postgres', 'CREATE EXTENSION secret_mgmt');
isnt($rc, 0, 'CREATE EXTENSION without preload fails');
like($err, qr/ERROR:\s+(?:55000:\s+)?$not_preloaded/, 'CREATE EXTENSION says to preload');
like($err, $hint, 'CREATE EXTENSION hints at the fix');
unlike($err, qr/FATAL|terminated abnormally|connection to server was lost/,
	'CREATE EXTENSION fails with an error, not a lost session');
is( $bare->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_extension WHERE extname = 'secret_mgmt'}
		  . q{ UNION ALL SELECT count(*) FROM pg_namespace WHERE nspname = 'secret_mgmt'}),
	"0\n0",
	'nothing is left behind');
is($bare->safe_psql('postgres', 'SELECT 1'), '1', 'server still serves');
$bare->stop;

# Created while preloaded, then restarted without the preload.
my $node = new_node('unloaded');
setup_tenant($node, 'postgres', 'acme', 'acme_app');
sql_ok($node, 'postgres',
	q{SELECT secret_mgmt.secret_create('db/password', 'pw-one'::text)},
	'secret written while preloaded', role => 'acme_app');

set_preload($node, 0);
$node->restart;

($rc, $out, $err) = sql_result($node, 'postgres',
	q{SELECT secret_mgmt.secret_resolve('db/password')}, role => 'acme_app');
isnt($rc, 0, 'resolve without preload fails');
like($err, qr/ERROR:\s+(?:55000:\s+)?$not_preloaded/, 'resolve says to preload');
like($err, $hint, 'resolve hints at the fix');
unlike($err, qr/FATAL|terminated abnormally|connection to server was lost/,
	'resolve fails with an error, not a lost session');
unlike($err, qr/pw-one/, 'resolve error holds no value');

($rc, $out, $err) = sql_result($node, 'postgres',
	use_tenant_sql('acme') . q{SELECT secret_mgmt.secret_create('db/other', 'x'::text)});
isnt($rc, 0, 'superuser call without preload fails');
like($err, qr/ERROR:\s+(?:55000:\s+)?$not_preloaded/, 'superuser call says to preload');

# The store is untouched and the server keeps serving.
is($node->safe_psql('postgres', 'SELECT count(*) FROM secret_mgmt.secret_item'),
	'1', 'nothing was written without the preload');
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'server still serves');

set_preload($node, 1);
$node->restart;
is( scalar_sql(
		$node, 'postgres',
		q{SELECT secret_mgmt.secret_resolve('db/password')},
		role => 'acme_app'),
	'pw-one',
	'preloaded again: the value resolves');

$node->stop;
done_testing();
