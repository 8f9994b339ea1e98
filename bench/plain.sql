-- (b) baseline: the same value from a plain table, by primary key.
\set i random(1, 10000)
SELECT value FROM bench_plain WHERE path = 'bench/s' || :i;
