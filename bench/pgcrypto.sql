-- (c) pgcrypto: the same value, stored with pgp_sym_encrypt and decrypted
-- with its passphrase on every read.
\set i random(1, 10000)
SELECT pgp_sym_decrypt(value, 'bench-passphrase') FROM bench_pgp WHERE path = 'bench/s' || :i;
