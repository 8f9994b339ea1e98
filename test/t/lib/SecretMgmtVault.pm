# SecretMgmtVault: the loopback Vault of the TAP suite.
#
#  - certificates made at test time with openssl: a test CA, a server
#    certificate for 127.0.0.1 signed by it, an expired one signed by it,
#    and one from another CA;
#  - the Vault fixture (test/fixtures/vault_fixture.py) and the fault proxy
#    (test/fixtures/fault_proxy.py), run with Debian's /usr/bin/python3 on
#    127.0.0.1 and stopped when the test ends;
#  - vault_api() for set-up calls, proxy_mode() / proxy_stats() for the
#    proxy's control port, fixture_requests() for the fixture's request log.

package SecretMgmtVault;

use strict;
use warnings;

use Cwd qw(abs_path);
use Exporter 'import';
use File::Basename qw(dirname);
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

our @EXPORT = qw(
  make_certs start_vault start_proxy vault_api vault_ok
  proxy_mode proxy_stats proxy_reset fixture_requests fixtures_dir
);

my $python = '/usr/bin/python3';
my $fixtures = abs_path(dirname(__FILE__) . '/../../fixtures');
my @children;

END
{
	local $?;    # keep the test's own exit status
	for my $h (@children)
	{
		eval { $h->kill_kill(grace => 2); };
	}
}

# Where the fixture scripts are.
sub fixtures_dir { return $fixtures; }

sub _run
{
	my (@cmd) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '>', \$out, '2>', \$err)
	  or die "command failed: @cmd\n$err";
	return $out;
}

# Certificates in $dir: ca.crt, server.{crt,key}, expired.crt (same key),
# wrong_ca.crt, wrong.{crt,key}.  Returns $dir.
sub make_certs
{
	my ($dir) = @_;
	my @ec = ('-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes');
	open my $fh, '>', "$dir/server.ext" or die;
	print $fh "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
	  . "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n";
	close $fh;
	for my $ca ('ca', 'wrong_ca')
	{
		_run('openssl', 'req', '-x509', @ec, '-keyout', "$dir/$ca.key",
			'-out', "$dir/$ca.crt", '-subj', "/CN=secret_mgmt $ca", '-days', '2');
	}
	_run('openssl', 'req', @ec, '-keyout', "$dir/server.key",
		'-out', "$dir/server.csr", '-subj', '/CN=127.0.0.1');
	_run('openssl', 'req', @ec, '-keyout', "$dir/wrong.key",
		'-out', "$dir/wrong.csr", '-subj', '/CN=127.0.0.1');
	my @sign = ('openssl', 'x509', '-req', '-extfile', "$dir/server.ext");
	_run(@sign, '-in', "$dir/server.csr", '-CA', "$dir/ca.crt", '-CAkey', "$dir/ca.key",
		'-CAcreateserial', '-out', "$dir/server.crt", '-days', '2');
	# Valid until yesterday: expired, but otherwise right.
	_run(@sign, '-in', "$dir/server.csr", '-CA', "$dir/ca.crt", '-CAkey', "$dir/ca.key",
		'-CAcreateserial', '-out', "$dir/expired.crt", '-days', '-1');
	_run(@sign, '-in', "$dir/wrong.csr", '-CA', "$dir/wrong_ca.crt",
		'-CAkey', "$dir/wrong_ca.key", '-CAcreateserial', '-out', "$dir/wrong.crt",
		'-days', '2');
	chmod 0644, glob("$dir/*.crt");
	return $dir;
}

sub _wait_file
{
	my ($path) = @_;
	for (1 .. 200)
	{
		return PostgreSQL::Test::Utils::slurp_file($path) if -s $path;
		usleep(50_000);
	}
	die "$path did not appear";
}

# Start the Vault fixture.  Returns a hash: url, port, ca, root, log.
sub start_vault
{
	my ($dir) = @_;
	my $root = 'hvs.root-' . join('', map { sprintf '%02x', int(rand(256)) } 1 .. 12);
	open my $fh, '>', "$dir/root_token" or die;
	print $fh "$root\n";
	close $fh;
	chmod 0600, "$dir/root_token";
	unlink "$dir/vault.port";
	my $h = IPC::Run::start(
		[
			$python, "$fixtures/vault_fixture.py",
			'--cert', "$dir/server.crt", '--key', "$dir/server.key",
			'--port-file', "$dir/vault.port", '--log', "$dir/vault.log",
			'--root-token-file', "$dir/root_token"
		],
		'>', "$dir/vault.out", '2>', "$dir/vault.err");
	push @children, $h;
	my $port = _wait_file("$dir/vault.port");
	$port =~ s/\s+//g;
	return {
		url => "https://127.0.0.1:$port",
		port => $port,
		ca => "$dir/ca.crt",
		root => $root,
		log => "$dir/vault.log",
		dir => $dir,
	};
}

# Start the fault proxy in front of $vault.  Returns a hash: url, port, control.
sub start_proxy
{
	my ($dir, $vault, %opt) = @_;
	unlink "$dir/proxy.port";
	my $h = IPC::Run::start(
		[
			$python, "$fixtures/fault_proxy.py",
			'--upstream', $vault->{port}, '--ca', "$dir/ca.crt",
			'--cert', "$dir/server.crt", '--key', "$dir/server.key",
			'--wrong-cert', "$dir/wrong.crt", '--wrong-key', "$dir/wrong.key",
			'--expired-cert', "$dir/expired.crt",
			'--slow', $opt{slow} // 10, '--hold', $opt{hold} // 30,
			'--port-file', "$dir/proxy.port"
		],
		'>', "$dir/proxy.out", '2>', "$dir/proxy.err");
	push @children, $h;
	my ($port, $control) = split ' ', _wait_file("$dir/proxy.port");
	return {
		url => "https://127.0.0.1:$port",
		port => $port,
		control => "http://127.0.0.1:$control",
	};
}

# One Vault call as the root token.  Returns ($ok, $decoded_body_or_undef).
sub vault_api
{
	my ($vault, $method, $path, $body) = @_;
	my ($out, $err) = ('', '');
	my @cmd = ($python, "$fixtures/vault_admin.py", $vault->{url}, $vault->{ca},
		$vault->{root}, $method, $path);
	push @cmd, encode_json($body) if defined $body;
	my $ok = IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
	my $json = eval { $out =~ /\S/ ? decode_json($out) : undef };
	return ($ok, $json);
}

# A Vault call that must succeed; returns the decoded body.
sub vault_ok
{
	my ($vault, $method, $path, $body) = @_;
	my ($ok, $json) = vault_api($vault, $method, $path, $body);
	die "vault $method $path failed: " . encode_json($json // {}) unless $ok;
	return $json;
}

sub _control
{
	my ($proxy, $what) = @_;
	my $r = HTTP::Tiny->new(timeout => 10)->get("$proxy->{control}/$what");
	die "proxy control $what failed: $r->{status}" unless $r->{success};
	return decode_json($r->{content});
}

sub proxy_mode { my ($p, $m) = @_; return _control($p, "mode/$m"); }
sub proxy_stats { my ($p) = @_; return _control($p, 'stats'); }
sub proxy_reset { my ($p) = @_; return _control($p, 'reset'); }

# The fixture's request log: a list of {method, path, token, namespace, status}.
sub fixture_requests
{
	my ($vault) = @_;
	return [] unless -e $vault->{log};
	return [ map { decode_json($_) } grep { /\S/ }
		  split /\n/, PostgreSQL::Test::Utils::slurp_file($vault->{log}) ];
}

1;
