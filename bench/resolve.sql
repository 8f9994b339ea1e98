-- (a) secret_mgmt: look up, decrypt and return the current version of a
-- random secret of the tenant.
\set i random(1, 10000)
SELECT secret_mgmt.secret_resolve('bench/s' || :i);
