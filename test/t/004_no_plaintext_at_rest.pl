# No plaintext value reaches a relation file or the WAL.
#
# Random canary values -- a different one for every write: text, bytea,
# jsonb, 1 MiB text and 1 MiB bytea, created, updated and rolled back --
# are written through the API on a node with wal_level = replica and full
# page writes, between two CHECKPOINTs.  Every file under the data
# directory (base/, global/, pg_wal/, ...) is then read as raw bytes and
# searched for every canary, and the output of pg_waldump over the WAL of
# those writes is searched too: no canary may be found.  A positive
# control written to an ordinary table in the same window must be found,
# in base/ and in pg_wal/, which proves that the scan sees what is there.

use strict;
use warnings;
use Digest::MD5 qw(md5_hex);
use File::Find;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SecretMgmtTest;

my $node = new_node(
	'at_rest',
	conf => "wal_level = replica\nfull_page_writes = on\n"
	  . "wal_compression = off\nwal_keep_size = '256MB'\n");
setup_tenant($node, 'postgres', 'acme', 'acme_app');

# Canaries.  Text ones are 32 hex digits; binary ones are raw bytes, found
# either raw or as the hex digits they were sent as.
my %text = map { $_ => random_hex(16) } qw(create update1 update2 json scoped);
my $bytea1 = random_bytes(24);
my $bytea2 = random_bytes(24);
my $big_text = random_hex(512 * 1024);    # 1 MiB of hex digits
my $big_bytes = random_bytes(1024 * 1024);
my $control = random_hex(16);

is(length($big_text), 1024 * 1024, 'big text canary is 1 MiB');

# Needles: name => bytes that must not appear at rest.
my %needles;
$needles{"text $_"} = $text{$_} for keys %text;
$needles{'bytea 1 (raw)'} = $bytea1;
$needles{'bytea 1 (hex)'} = unpack('H*', $bytea1);
$needles{'bytea 2 (raw)'} = $bytea2;
$needles{'bytea 2 (hex)'} = unpack('H*', $bytea2);
for my $at (0, 512 * 1024, 1024 * 1024 - 32)
{
	$needles{"big text at $at"} = substr($big_text, $at, 32);
	$needles{"big bytea at $at (raw)"} = substr($big_bytes, $at, 32);
	$needles{"big bytea at $at (hex)"} = unpack('H*', substr($big_bytes, $at, 32));
}

my $start_lsn = $node->safe_psql('postgres',
	'CHECKPOINT; SELECT pg_current_wal_insert_lsn()');

my $bytea1_hex = unpack('H*', $bytea1);
my $bytea2_hex = unpack('H*', $bytea2);
my $big_bytes_hex = unpack('H*', $big_bytes);
sql_ok(
	$node, 'postgres', qq{
	SELECT secret_mgmt.secret_create('app/text', '$text{create}'::text);
	SELECT secret_mgmt.secret_update('app/text', '$text{update1}'::text);
	SELECT secret_mgmt.secret_update('app/text', '$text{update2}'::text);
	SELECT secret_mgmt.secret_rollback('app/text', 1);
	SELECT secret_mgmt.secret_create('app/bytea', '\\x$bytea1_hex'::bytea);
	SELECT secret_mgmt.secret_update('app/bytea', '\\x$bytea2_hex'::bytea);
	SELECT secret_mgmt.secret_create('app/json', '{"token": "$text{json}"}'::jsonb);
	SELECT secret_mgmt.secret_create('app/scoped', '$text{scoped}'::text,
	                                 scope => 'team', scope_id => 'blue');
	SELECT secret_mgmt.secret_create('app/big-text', '$big_text'::text);
	SELECT secret_mgmt.secret_create('app/big-bytea', '\\x$big_bytes_hex'::bytea);
},
	'canary secrets written',
	role => 'acme_app');

# The canaries really are the stored values.
is( scalar_sql(
		$node, 'postgres', q{
	SELECT secret_mgmt.secret_resolve('app/text')
	UNION ALL SELECT secret_mgmt.secret_resolve('app/text', 3)
	UNION ALL SELECT encode(secret_mgmt.secret_resolve_bytea('app/bytea'), 'hex')
	UNION ALL SELECT secret_mgmt.secret_resolve_jsonb('app/json') ->> 'token'
	UNION ALL SELECT md5(secret_mgmt.secret_resolve('app/big-text'))
	UNION ALL SELECT md5(secret_mgmt.secret_resolve_bytea('app/big-bytea'))},
		role => 'acme_app'),
	join("\n",
		$text{create}, $text{update2}, $bytea2_hex, $text{json},
		md5_hex($big_text), md5_hex($big_bytes)),
	'canaries resolve');

# Positive control: an ordinary table in the same window.  Written in ten
# separate transactions, because one WAL record may straddle a WAL page
# boundary, where a page header splits the bytes; ten cannot all do so.
$node->safe_psql('postgres', 'CREATE TABLE plain_control (v text)');
$node->safe_psql('postgres', "INSERT INTO plain_control VALUES ('$control')")
  for 1 .. 10;
my $end_lsn = $node->safe_psql('postgres',
	'CHECKPOINT; SELECT pg_current_wal_insert_lsn()');

# Search every file under the data directory.  Returns a hash: needle
# name => list of files (relative to the data directory) holding it.
sub scan_data_dir
{
	my ($datadir, $needles) = @_;
	my %hits;
	my $files = 0;
	find(
		{
			no_chdir => 1,
			wanted => sub {
				return unless -f $File::Find::name;
				open my $fh, '<:raw', $File::Find::name or return;
				local $/;
				my $data = <$fh>;
				close $fh;
				$files++;
				(my $rel = $File::Find::name) =~ s{^\Q$datadir\E/}{};
				while (my ($name, $needle) = each %{$needles})
				{
					push @{ $hits{$name} }, $rel if index($data, $needle) >= 0;
				}
			}
		},
		$datadir);
	return (\%hits, $files);
}

my $datadir = $node->data_dir;
my ($hits, $nfiles) =
  scan_data_dir($datadir, { %needles, control => $control });
cmp_ok($nfiles, '>', 100, "scanned $nfiles files");

my @control_files = @{ $hits->{control} // [] };
ok((grep { m{^base/} } @control_files), 'positive control found in base/')
  or diag('control found in: ' . join(', ', @control_files));
ok((grep { m{^pg_wal/} } @control_files), 'positive control found in pg_wal/')
  or diag('control found in: ' . join(', ', @control_files));

for my $name (sort keys %needles)
{
	is(join(', ', @{ $hits->{$name} // [] }), '', "$name: not found at rest");
}

# pg_waldump over the WAL written in the window.
my ($stdout, $stderr) = ('', '');
my $ok = IPC::Run::run [ 'pg_waldump', '-p', "$datadir/pg_wal", '-s', $start_lsn, '-e', $end_lsn ],
  '>', \$stdout, '2>', \$stderr;
ok($ok, 'pg_waldump reads the window') or diag($stderr);
like($stdout, qr/rmgr: Heap\s+len \(rec\/tot\):.*desc: INSERT/, 'pg_waldump shows the inserts');
my @dump_hits = grep { index($stdout, $needles{$_}) >= 0 } sort keys %needles;
is(join(', ', @dump_hits), '', 'no canary in the pg_waldump output');

$node->stop;
done_testing();
