--
-- tamper: ciphertexts copied between rows, versions and tenants, flipped
-- bits, truncations and forged length fields are all refused with SM005 --
-- never another row's plaintext, never a crash.  Run as superuser, who can
-- write the tables directly (as an attacker with table access could).
--
\set VERBOSITY terse
\set SHOW_CONTEXT never

SELECT secret_mgmt.secret_use_tenant('acme');
SELECT secret_mgmt.secret_create('t/one', 'one-v1') IS NOT NULL AS created;
SELECT secret_mgmt.secret_create('t/two', 'two-v1') IS NOT NULL AS created;
SELECT secret_mgmt.secret_update('t/two', 'two-v2');
SELECT secret_mgmt.secret_use_tenant('globex');
SELECT secret_mgmt.secret_create('t/other', 'globex-v1') IS NOT NULL AS created;
SELECT secret_mgmt.secret_use_tenant('acme');

CREATE TEMP TABLE saved AS
  SELECT v.tenant_id, v.secret_id, v.version, v.key_id, v.envelope
    FROM secret_mgmt.secret_version v;
CREATE FUNCTION pg_temp.sid(t text, p text) RETURNS uuid LANGUAGE sql AS
  $$SELECT secret_id FROM secret_mgmt.secret_item WHERE tenant_id = t AND path = p$$;
CREATE FUNCTION pg_temp.env(t text, p text, ver int) RETURNS bytea LANGUAGE sql AS
  $$SELECT envelope FROM saved WHERE tenant_id = t AND secret_id = pg_temp.sid(t, p) AND version = ver$$;
-- put every envelope back as it was (in two steps, so that no envelope
-- still sitting in a moved-to row collides with its original's nonce)
CREATE FUNCTION pg_temp.heal() RETURNS void LANGUAGE sql AS $$
  UPDATE secret_mgmt.secret_version v
     SET envelope = set_byte(s.envelope, 17, get_byte(s.envelope, 17) # 128)
    FROM saved s
   WHERE v.tenant_id = s.tenant_id AND v.secret_id = s.secret_id AND v.version = s.version;
  UPDATE secret_mgmt.secret_version v SET envelope = s.envelope, key_id = s.key_id
    FROM saved s
   WHERE v.tenant_id = s.tenant_id AND v.secret_id = s.secret_id AND v.version = s.version;
$$;

CREATE FUNCTION pg_temp.set_env(t text, p text, ver int, e bytea) RETURNS void LANGUAGE sql AS $$
  UPDATE secret_mgmt.secret_version SET envelope = e
   WHERE tenant_id = t AND secret_id = pg_temp.sid(t, p) AND version = ver
$$;
-- the same envelope twice under one data key repeats its nonce: refused
SELECT try($$SELECT pg_temp.set_env('acme', 't/one', 1, pg_temp.env('acme', 't/two', 1))$$);
-- so move it instead: t/two v1's ciphertext into t/one v1 (the source row
-- gets a copy with one nonce bit flipped)
SELECT pg_temp.set_env('acme', 't/two', 1, set_byte(pg_temp.env('acme', 't/two', 1), 6, get_byte(pg_temp.env('acme', 't/two', 1), 6) # 1));
SELECT pg_temp.set_env('acme', 't/one', 1, pg_temp.env('acme', 't/two', 1));
SELECT try($$SELECT secret_mgmt.secret_resolve('t/one')$$);
SELECT try($$SELECT secret_mgmt.secret_resolve('t/two', 1)$$);
SELECT pg_temp.heal();
-- swap two versions of one secret
SELECT pg_temp.set_env('acme', 't/two', 2, set_byte(pg_temp.env('acme', 't/two', 2), 6, get_byte(pg_temp.env('acme', 't/two', 2), 6) # 1));
SELECT pg_temp.set_env('acme', 't/two', 1, pg_temp.env('acme', 't/two', 2));
SELECT pg_temp.set_env('acme', 't/two', 2, pg_temp.env('acme', 't/two', 1));
SELECT try($$SELECT secret_mgmt.secret_resolve('t/two', 1)$$);
SELECT try($$SELECT secret_mgmt.secret_resolve('t/two', 2)$$);
-- a rollback to a tampered version fails and writes nothing
SELECT try($$SELECT secret_mgmt.secret_rollback('t/two', 1)$$);
SELECT pg_temp.heal();
SELECT max(version) AS t_two_versions FROM secret_mgmt.secret_version
 WHERE tenant_id = 'acme' AND secret_id = pg_temp.sid('acme', 't/two');
-- copy from another tenant (data key id made to match, so only the AAD differs)
UPDATE secret_mgmt.secret_version
   SET envelope = overlay(pg_temp.env('globex', 't/other', 1) placing
                          substring(pg_temp.env('acme', 't/one', 1) from 3 for 4) from 3 for 4),
       key_id = (SELECT key_id FROM saved WHERE tenant_id = 'acme' AND secret_id = pg_temp.sid('acme', 't/one'))
 WHERE tenant_id = 'acme' AND secret_id = pg_temp.sid('acme', 't/one') AND version = 1;
SELECT try($$SELECT secret_mgmt.secret_resolve('t/one')$$);
SELECT pg_temp.heal();

-- flip one bit at every byte position of an envelope: header, nonce,
-- ciphertext, tag
CREATE TEMP TABLE flips AS
  SELECT pos FROM generate_series(1, length(pg_temp.env('acme', 't/one', 1)) - 1) AS pos;
CREATE FUNCTION pg_temp.flip_and_resolve(pos int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
    UPDATE secret_mgmt.secret_version
       SET envelope = set_byte(envelope, pos, get_byte(envelope, pos) # 1)
     WHERE tenant_id = 'acme' AND secret_id = pg_temp.sid('acme', 't/one') AND version = 1;
    r := try($q$SELECT secret_mgmt.secret_resolve('t/one')$q$);
    PERFORM pg_temp.heal();
    RETURN r;
END $$;
SELECT r AS outcome, count(*) AS positions
  FROM (SELECT pg_temp.flip_and_resolve(pos) AS r FROM flips) s
 GROUP BY r ORDER BY r;
SELECT secret_mgmt.secret_resolve('t/one');

-- truncations (tag 0..15 bytes, no ciphertext), and a forged length field
CREATE FUNCTION pg_temp.cut_and_resolve(newlen int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
    UPDATE secret_mgmt.secret_version
       SET envelope = substring(envelope from 1 for newlen)
     WHERE tenant_id = 'acme' AND secret_id = pg_temp.sid('acme', 't/one') AND version = 1;
    r := try($q$SELECT secret_mgmt.secret_resolve('t/one')$q$);
    PERFORM pg_temp.heal();
    RETURN r;
END $$;
SELECT r AS outcome, count(*) AS lengths
  FROM (SELECT pg_temp.cut_and_resolve(n) AS r
          FROM generate_series(38, length(pg_temp.env('acme', 't/one', 1)) - 1) n) s
 GROUP BY r ORDER BY r;
-- shorter than the framing cannot even be stored
SELECT try($$SELECT pg_temp.cut_and_resolve(37)$$);
UPDATE secret_mgmt.secret_version
   SET envelope = overlay(envelope placing '\x7fffffff'::bytea from 19 for 4)
 WHERE tenant_id = 'acme' AND secret_id = pg_temp.sid('acme', 't/one') AND version = 1;
SELECT try($$SELECT secret_mgmt.secret_resolve('t/one')$$);
UPDATE secret_mgmt.secret_version
   SET envelope = overlay(envelope placing '\xffffffff'::bytea from 19 for 4)
 WHERE tenant_id = 'acme' AND secret_id = pg_temp.sid('acme', 't/one') AND version = 1;
SELECT try($$SELECT secret_mgmt.secret_resolve('t/one')$$);
SELECT pg_temp.heal();
-- a value that is not an envelope at all cannot be stored
SELECT try($$UPDATE secret_mgmt.secret_version SET envelope = convert_to('plain secret', 'UTF8')
              WHERE tenant_id = 'acme' AND secret_id = pg_temp.sid('acme', 't/one')$$);

-- the wrapped data key: a flipped bit, another tenant's key, a forged root
-- key id.  A backend that already unwrapped a data key keeps it for
-- secret_mgmt.cache_ttl; the stored form is judged at the next unwrap, so
-- each case runs in a fresh session.
CREATE TABLE public.saved_keys AS SELECT * FROM secret_mgmt.secret_data_key;
CREATE FUNCTION public.heal_keys() RETURNS void LANGUAGE sql AS $$
  UPDATE secret_mgmt.secret_data_key d SET wrapped = s.wrapped, kek_id = s.kek_id
    FROM public.saved_keys s
   WHERE d.tenant_id = s.tenant_id AND d.key_id = s.key_id
$$;
UPDATE secret_mgmt.secret_data_key SET wrapped = set_byte(wrapped, 20, get_byte(wrapped, 20) # 1)
 WHERE tenant_id = 'acme';
\c
\set VERBOSITY terse
SELECT secret_mgmt.secret_use_tenant('acme');
SELECT try($$SELECT secret_mgmt.secret_resolve('t/one')$$);
SELECT try($$SELECT secret_mgmt.secret_update('t/one', 'never written')$$);
SELECT public.heal_keys();
UPDATE secret_mgmt.secret_data_key SET wrapped = (SELECT wrapped FROM public.saved_keys WHERE tenant_id = 'globex' LIMIT 1)
 WHERE tenant_id = 'acme';
\c
\set VERBOSITY terse
SELECT secret_mgmt.secret_use_tenant('acme');
SELECT try($$SELECT secret_mgmt.secret_resolve('t/one')$$);
SELECT public.heal_keys();
UPDATE secret_mgmt.secret_data_key SET kek_id = '0000000000000000' WHERE tenant_id = 'acme';
\c
\set VERBOSITY terse
SELECT secret_mgmt.secret_use_tenant('acme');
SELECT try($$SELECT secret_mgmt.secret_resolve('t/one')$$);
SELECT public.heal_keys();
DROP FUNCTION public.heal_keys();
DROP TABLE public.saved_keys;

-- healed, everything reads again
SELECT secret_mgmt.secret_resolve('t/one'), secret_mgmt.secret_resolve('t/two', 1),
       secret_mgmt.secret_resolve('t/two');

-- no table holds a value in the clear
SELECT count(*) AS plaintext_hits
  FROM secret_mgmt.secret_version v
 WHERE position(convert_to('one-v1', 'UTF8') in coalesce(v.envelope, '')) > 0
    OR position(convert_to('two-v2', 'UTF8') in coalesce(v.envelope, '')) > 0;
