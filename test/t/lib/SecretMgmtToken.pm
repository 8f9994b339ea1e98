# Minting signed tokens (JWS compact JWTs) for the tests: HS256 with
# Digest::SHA, RS256 and ES256 with the openssl command-line tool.  Keys
# are generated at test time.
package SecretMgmtToken;

use strict;
use warnings;
use Digest::SHA qw(hmac_sha256);
use File::Temp qw(tempfile);
use MIME::Base64 qw(encode_base64url);
use PostgreSQL::Test::Utils;

use Exporter 'import';
our @EXPORT = qw(new_rsa_key new_ec_key public_pem mint_token);

# A JSON text of a flat hash whose values are strings, numbers or arrays
# of strings (enough for JWT headers and claims; keys are sorted).
sub to_json
{
	my ($h) = @_;
	my $str = sub { my $s = shift; $s =~ s/(["\\])/\\$1/g; return qq{"$s"} };
	my @parts;
	for my $k (sort keys %$h)
	{
		my $v = $h->{$k};
		my $j =
			ref($v) eq 'ARRAY' ? '[' . join(',', map { $str->($_) } @$v) . ']'
		  : $v =~ /^-?\d+$/ ? $v
		  : $str->($v);
		push @parts, $str->($k) . ':' . $j;
	}
	return '{' . join(',', @parts) . '}';
}

# A new private key file in $dir: RSA 2048 or EC P-256.
sub new_rsa_key
{
	my ($dir, $name) = @_;
	my $path = "$dir/$name.pem";
	system_or_bail('openssl', 'genpkey', '-algorithm', 'RSA',
		'-pkeyopt', 'rsa_keygen_bits:2048', '-out', $path, '-quiet');
	return $path;
}

sub new_ec_key
{
	my ($dir, $name) = @_;
	my $path = "$dir/$name.pem";
	system_or_bail('openssl', 'genpkey', '-algorithm', 'EC',
		'-pkeyopt', 'ec_paramgen_curve:P-256', '-out', $path);
	return $path;
}

# The PEM public key of a private key file.
sub public_pem
{
	my ($keyfile) = @_;
	my $pem = `openssl pkey -in '$keyfile' -pubout`;
	die "openssl pkey failed" if $? != 0;
	return $pem;
}

# DER ECDSA-Sig-Value -> raw r || s, 32 bytes each.
sub der_to_raw
{
	my ($der) = @_;
	my @b = unpack('C*', $der);
	my $i = 2;
	$i++ if $b[1] & 0x80;
	my @ints;
	for (1 .. 2)
	{
		die 'bad DER' unless $b[$i] == 0x02;
		my $len = $b[ $i + 1 ];
		my $v = pack('C*', @b[ $i + 2 .. $i + 1 + $len ]);
		$v =~ s/^\x00+//;
		push @ints, ("\x00" x (32 - length($v))) . $v;
		$i += 2 + $len;
	}
	return join('', @ints);
}

# mint_token(header => {...}, claims => {...}, alg => 'HS256'|'RS256'|'ES256'|'none',
#            secret => $bytes (HS256), keyfile => $pem_path (RS256/ES256))
sub mint_token
{
	my (%o) = @_;
	my $input = encode_base64url(to_json($o{header})) . '.'
	  . encode_base64url(to_json($o{claims}));
	my $sig = '';
	if ($o{alg} eq 'HS256')
	{
		$sig = hmac_sha256($input, $o{secret});
	}
	elsif ($o{alg} eq 'RS256' || $o{alg} eq 'ES256')
	{
		my ($fh, $msgfile) = tempfile(UNLINK => 1);
		binmode $fh;
		print $fh $input;
		close $fh;
		$sig = `openssl dgst -sha256 -sign '$o{keyfile}' '$msgfile'`;
		die "openssl dgst failed" if $? != 0;
		$sig = der_to_raw($sig) if $o{alg} eq 'ES256';
	}
	return $input . '.' . encode_base64url($sig);
}

1;
