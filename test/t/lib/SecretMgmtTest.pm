# SecretMgmtTest: shared helpers of the TAP suite.
#
#  - root keys: random 64-hex-digit keys written to files outside every
#    data directory, mode 0600 unless asked otherwise;
#  - nodes: a PostgreSQL::Test::Cluster with secret_mgmt preloaded, whose
#    key settings live in an included file (secret_mgmt_key.conf) so that a
#    test can point the server at another key source and restart;
#  - tenants: a tenant with a NOLOGIN member group and a LOGIN role that
#    inherits it;
#  - SQL: run as the superuser or connected as a given role, with verbose
#    error reports so that every error carries its SQLSTATE.

package SecretMgmtTest;

use strict;
use warnings;

use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# PostgreSQL::Test::Utils creates $TESTDIR/tmp_check, but not $TESTDIR
# itself, in its INIT block; every module's BEGIN-time code runs before
# that, so make sure the directory exists here.
BEGIN
{
	if ($ENV{TESTDIR} && !-d $ENV{TESTDIR})
	{
		require File::Path;
		File::Path::make_path($ENV{TESTDIR});
	}
}

our @EXPORT = qw(
  random_hex random_bytes new_key_file write_key_file
  new_node set_key_source set_preload
  setup_tenant sql_ok sql_result expect_error log_offset log_since
  scalar_sql use_tenant_sql poll_until
);

# $n random bytes from the kernel.
sub random_bytes
{
	my ($n) = @_;
	open my $fh, '<:raw', '/dev/urandom' or die "cannot open /dev/urandom: $!";
	my $got = read($fh, my $buf, $n);
	close $fh;
	die "short read from /dev/urandom" unless defined $got && $got == $n;
	return $buf;
}

# $n random bytes as 2*$n lower-case hex digits.
sub random_hex
{
	my ($n) = @_;
	return unpack('H*', random_bytes($n));
}

# Write $content to $path with $mode (default 0600), never more open than
# that, even for a moment.
sub write_key_file
{
	my ($path, $content, $mode) = @_;
	$mode = 0600 unless defined $mode;
	unlink $path;
	my $old_umask = umask 077;
	open my $fh, '>:raw', $path or die "cannot write $path: $!";
	print $fh $content;
	close $fh or die "cannot close $path: $!";
	umask $old_umask;
	chmod $mode, $path or die "cannot chmod $path: $!";
	return $path;
}

# A fresh root key in a file of its own under a new temporary directory
# (outside every data directory).  Returns ($path, $hex).
sub new_key_file
{
	my $dir = PostgreSQL::Test::Utils::tempdir('sm_key');
	chmod 0700, $dir;
	my $hex = random_hex(32);
	my $path = write_key_file("$dir/root.key", "$hex\n");
	return ($path, $hex);
}

sub _quote_conf
{
	my ($v) = @_;
	$v =~ s/'/''/g;
	return "'$v'";
}

# Point the node at a key source: key_file => PATH and/or key_command =>
# CMD (an unset one is written as the empty string).  Takes effect at the
# next (re)start.
sub set_key_source
{
	my ($node, %src) = @_;
	my $conf = '';
	$conf .= 'secret_mgmt.key_file = ' . _quote_conf($src{key_file} // '') . "\n";
	$conf .= 'secret_mgmt.key_command = ' . _quote_conf($src{key_command} // '') . "\n";
	my $file = $node->data_dir . '/secret_mgmt_key.conf';
	open my $fh, '>', $file or die "cannot write $file: $!";
	print $fh $conf;
	close $fh;
	chmod 0600, $file;
	return;
}

# Preload the library or not, from the next (re)start on.
sub set_preload
{
	my ($node, $on) = @_;
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = '" . ($on ? 'secret_mgmt' : '') . "'");
	return;
}

# A started node.  Options:
#   key_file => PATH, key_command => CMD   the key source (default: a new key)
#   preload => 0                           do not preload the library
#   extension => 0                         do not CREATE EXTENSION in postgres
#   conf => STRING                         more postgresql.conf lines
# Returns the node; when a key file was generated here, also its path and
# hex digits: ($node, $key_path, $key_hex) in list context.
sub new_node
{
	my ($name, %opt) = @_;
	my ($key_path, $key_hex);
	my $preload = $opt{preload} // 1;

	if (!exists $opt{key_file} && !exists $opt{key_command})
	{
		($key_path, $key_hex) = new_key_file();
		$opt{key_file} = $key_path;
	}

	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', "include 'secret_mgmt_key.conf'");
	$node->append_conf('postgresql.conf', $opt{conf}) if defined $opt{conf};
	set_key_source($node, key_file => $opt{key_file}, key_command => $opt{key_command});
	set_preload($node, $preload);
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION secret_mgmt')
	  if $preload && ($opt{extension} // 1);
	return wantarray ? ($node, $key_path, $key_hex) : $node;
}

# As the superuser in $db: a tenant $tenant, a NOLOGIN group "${role}_group"
# that is its member and holds the everyday capabilities on all of the
# tenant's paths, and a LOGIN role $role that inherits the group.
sub setup_tenant
{
	my ($node, $db, $tenant, $role) = @_;
	$node->safe_psql(
		$db, qq{
		CREATE ROLE ${role}_group NOLOGIN;
		CREATE ROLE $role LOGIN IN ROLE ${role}_group;
		SELECT secret_mgmt.secret_tenant_create('$tenant');
		SELECT secret_mgmt.secret_tenant_add_member('$tenant', '${role}_group');
		SELECT secret_mgmt.secret_use_tenant('$tenant');
		SELECT secret_mgmt.secret_grant('**', '${role}_group',
			ARRAY['read', 'list', 'create', 'update', 'delete', 'rotate']);
	});
	return;
}

# SQL that selects a tenant for the session and prints nothing.
sub use_tenant_sql
{
	my ($tenant) = @_;
	return "DO \$\$BEGIN PERFORM secret_mgmt.secret_use_tenant('$tenant'); END\$\$;\n";
}

sub _psql_params
{
	my (%opt) = @_;
	my @extra = ('-v', 'VERBOSITY=verbose');
	push @extra, '-U', $opt{role} if defined $opt{role};
	return (extra_params => \@extra);
}

# Run SQL (role => R connects as R instead of the superuser).  Returns
# ($rc, $stdout, $stderr); never dies on an SQL error.
sub sql_result
{
	my ($node, $db, $sql, %opt) = @_;
	my ($stdout, $stderr) = ('', '');
	my $rc = $node->psql($db, $sql, stdout => \$stdout, stderr => \$stderr,
		_psql_params(%opt));
	return ($rc, $stdout, $stderr);
}

# Run SQL that must succeed; one assertion.  Returns stdout.
sub sql_ok
{
	my ($node, $db, $sql, $name, %opt) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($rc, $out, $err) = sql_result($node, $db, $sql, %opt);
	ok($rc == 0 && $err !~ /ERROR|FATAL/, $name)
	  or diag("rc=$rc\nstderr: $err");
	return $out;
}

# Run SQL and return its stdout, with no assertion (undef on error, which
# is reported as a diagnostic).
sub scalar_sql
{
	my ($node, $db, $sql, %opt) = @_;
	my ($rc, $out, $err) = sql_result($node, $db, $sql, %opt);
	if ($rc != 0)
	{
		diag("SQL failed (rc=$rc): $err");
		return undef;
	}
	return $out;
}

# Run SQL (as role => R, or the superuser) until its output is $expected,
# every 100 ms for at most $opt{timeout} seconds (default 60).  Returns
# true if it was; otherwise reports the last output as a diagnostic.
sub poll_until
{
	my ($node, $db, $sql, $expected, %opt) = @_;
	my $deadline = time() + ($opt{timeout} // 60);
	my $last = '';
	while (time() < $deadline)
	{
		my ($rc, $out, $err) = sql_result($node, $db, $sql, %opt);
		$last = $rc == 0 ? $out : "error: $err";
		return 1 if $rc == 0 && $out eq $expected;
		select(undef, undef, undef, 0.1);
	}
	diag("poll_until: expected <$expected>, last got <$last>");
	return 0;
}

# Run SQL that must fail with $sqlstate and a message (primary line) matching $msg_re;
# two assertions.  Returns stderr for further checks (detail, hint).
sub expect_error
{
	my ($node, $db, $sql, $sqlstate, $msg_re, $name, %opt) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($rc, $out, $err) = sql_result($node, $db, $sql, %opt);
	isnt($rc, 0, "$name: fails");
	like($err, qr/ERROR:\s+\Q$sqlstate\E:\s+[^\n]*$msg_re/, "$name: $sqlstate");
	return $err;
}

# Current end of the server log, and what was logged since an offset.
sub log_offset
{
	my ($node) = @_;
	return -s $node->logfile // 0;
}

sub log_since
{
	my ($node, $offset) = @_;
	return PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
}

1;
