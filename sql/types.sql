--
-- types: every secret type accepts what it should and refuses what it
-- should with SM007 -- and a refusal never quotes the value.
--
\set VERBOSITY terse
\set SHOW_CONTEXT never
SELECT secret_mgmt.secret_use_tenant('acme');

-- valid values
SELECT secret_mgmt.secret_create('ty/gen', 'anything at all', 'generic') IS NOT NULL AS generic;
SELECT secret_mgmt.secret_create('ty/pw', 'correct horse', 'password') IS NOT NULL AS password;
SELECT secret_mgmt.secret_create('ty/key', 'sk_live_abc123', 'api_key') IS NOT NULL AS api_key;
SELECT secret_mgmt.secret_create('ty/oauth', '{"access_token": "at", "refresh_token": "rt", "expires_at": "2030-01-01T00:00:00Z"}', 'oauth_token') IS NOT NULL AS oauth_token;
SELECT secret_mgmt.secret_create('ty/uri', 'postgresql://app@db.internal:5432/app', 'connection_string') IS NOT NULL AS uri;
SELECT secret_mgmt.secret_create('ty/kv', 'host=db.internal user=app dbname=app', 'connection_string') IS NOT NULL AS keyword_value;
SELECT secret_mgmt.secret_create('ty/ssh', E'-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n', 'ssh_key') IS NOT NULL AS ssh_key;
SELECT secret_mgmt.secret_create('ty/cloud', '{"access_key_id": "AKIA", "secret_access_key": "s"}', 'cloud_credentials') IS NOT NULL AS cloud;
SELECT secret_mgmt.secret_create('ty/json', '[1, 2, 3]', 'json') IS NOT NULL AS json_array;
SELECT secret_mgmt.secret_resolve_jsonb('ty/json');
SELECT secret_mgmt.secret_create('ty/cert', $pem$-----BEGIN CERTIFICATE-----
MIIBiTCCAS+gAwIBAgIUN8xmqlJ4t3XMaTPt15i9T9wIhdEwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPcmVncmVzcy5leGFtcGxlMB4XDTI2MTEyMjA4MzcyOVoXDTM2
MTExOTA4MzcyOVowGjEYMBYGA1UEAwwPcmVncmVzcy5leGFtcGxlMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEsHsPAN3r8+nCzr2Xl1m0mF/iVtGJWo9vYLys+t+Q
J4xYRgkFsfKB8BzIjW4VbhLiY2s99R9RlVDTbkfsgIu/J6NTMFEwHQYDVR0OBBYE
FBWFq1xSVXF4ILaUmp95zUboMni2MB8GA1UdIwQYMBaAFBWFq1xSVXF4ILaUmp95
zUboMni2MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAMkJ4HgV
PHseol1kxncY3TK1ODDiqzcD60Z3clmJ8SxlAiBAsNvtCCS5BBDE7ZROAfh6TqgQ
Y/Ch21FXZCsTP+bJ/Q==
-----END CERTIFICATE-----
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgT6tjZXI+LEYqmdpl
oQVnuLQIxU8H14q8enfKdlP6MeahRANCAASwew8A3evz6cLOvZeXWbSYX+JW0Yla
j29gvKz635AnjFhGCQWx8oHwHMiNbhVuEuJjaz31H1GVUNNuR+yAi78n
-----END PRIVATE KEY-----
$pem$, 'certificate') IS NOT NULL AS certificate;
-- a certificate's expiry comes from the certificate
SELECT path, type, expires_at AT TIME ZONE 'UTC' AS expires_utc FROM secret_mgmt.secret_list('ty/cert');
SELECT secret_mgmt.secret_resolve('ty/cert') LIKE '-----BEGIN CERTIFICATE-----%' AS cert_round_trip;
-- an explicit earlier expiry wins over the certificate's
SELECT secret_mgmt.secret_create('ty/cert2', secret_mgmt.secret_resolve('ty/cert'), 'certificate',
                                 expires_at => '2030-01-01 00:00:00+00') IS NOT NULL AS created;
SELECT expires_at AT TIME ZONE 'UTC' AS expires_utc FROM secret_mgmt.secret_list('ty/cert2');
-- the certificate's expiry is recorded on its version (so each renewed
-- certificate written as a new version carries its own), not on the secret
SELECT secret_mgmt.secret_create('ty/cert3', secret_mgmt.secret_resolve('ty/cert'), 'certificate') IS NOT NULL AS created;
SELECT version, expires_at AT TIME ZONE 'UTC' AS version_expires_utc
  FROM secret_mgmt.secret_versions('ty/cert3');

-- invalid values: SM007, and no part of the value in the message
CREATE TEMP TABLE bad (type text, value text);
INSERT INTO bad VALUES
  ('password', ''),
  ('api_key', ''),
  ('api_key', 'CANARY has spaces'),
  ('api_key', E'CANARY\ttab'),
  ('oauth_token', '{"refresh_token": "CANARY"}'),
  ('oauth_token', '{"access_token": ""}'),
  ('oauth_token', '["CANARY"]'),
  ('oauth_token', 'CANARY not json'),
  ('cloud_credentials', '"CANARY"'),
  ('json', '{"CANARY": '),
  ('json', '{"a": "\u0000CANARY"}'),
  ('json', '{"a": 1e999999999}'),
  ('connection_string', 'CANARY'),
  ('connection_string', ''),
  ('ssh_key', 'CANARY'),
  ('certificate', 'CANARY'),
  ('certificate', E'-----BEGIN CERTIFICATE-----\nCANARY\n-----END CERTIFICATE-----\n');
-- values travel as PL/pgSQL variables, i.e. bound parameters
CREATE FUNCTION pg_temp.try_create(p text, v text, t text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM secret_mgmt.secret_create(p, v, t);
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
SELECT type, r AS refusal, r LIKE '%CANARY%' AS leaks
  FROM (SELECT type, pg_temp.try_create('ty/bad/' || md5(type || value), value, type) AS r
          FROM bad) s
 ORDER BY type, refusal;
-- the same rules apply on update, to the secret's own type
SELECT try($$SELECT secret_mgmt.secret_update('ty/oauth', '{"no": "token"}')$$);
SELECT try($$SELECT secret_mgmt.secret_update('ty/pw', '')$$);
SELECT secret_mgmt.secret_update('ty/oauth', '{"access_token": "at2"}');
SELECT secret_mgmt.secret_resolve_jsonb('ty/oauth') ->> 'access_token' AS access_token;
-- nothing half-written by the refusals
SELECT count(*) AS bad_rows FROM secret_mgmt.secret_list('ty/bad/');
-- bytea values of a text type
SELECT try($$SELECT secret_mgmt.secret_create('ty/jb', '\x7b7d'::bytea, 'json')$$);
SELECT secret_mgmt.secret_resolve_jsonb('ty/jb');
SELECT try($$SELECT secret_mgmt.secret_create('ty/jb2', '\xff00'::bytea, 'json')$$);
