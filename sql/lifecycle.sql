--
-- lifecycle: rotation policies, generators, secret_rotate and its four
-- steps, retention settings, the event feed and its isolation, sinks.
-- (The worker's own behaviour is tested by TAP: test/t/006..008.)
--
\set VERBOSITY terse
\set SHOW_CONTEXT never
-- (The extension and try() come from core.)

CREATE ROLE regress_lc_a;
CREATE ROLE regress_lc_admin;
CREATE ROLE regress_lc_b;
SELECT secret_mgmt.secret_tenant_create('lc_a');
SELECT secret_mgmt.secret_tenant_create('lc_b');
SELECT secret_mgmt.secret_tenant_add_member('lc_a', 'regress_lc_a');
SELECT secret_mgmt.secret_tenant_add_member('lc_a', 'regress_lc_admin', admin => true);
SELECT secret_mgmt.secret_tenant_add_member('lc_b', 'regress_lc_b');
SELECT secret_mgmt.secret_use_tenant('lc_a');
SELECT secret_mgmt.secret_grant('**', 'regress_lc_a', ARRAY['read', 'list', 'create', 'update', 'delete', 'rotate']);
SELECT secret_mgmt.secret_use_tenant('lc_b');
SELECT secret_mgmt.secret_grant('**', 'regress_lc_b', ARRAY['read', 'list', 'create', 'update', 'delete', 'rotate']);
SELECT secret_mgmt.secret_use_tenant(NULL);

-- A hook that records its calls (as the role that configured it).
CREATE TABLE public.lc_calls (step text, path text, version int, value_len int);
GRANT INSERT, SELECT ON public.lc_calls TO PUBLIC;
CREATE FUNCTION public.lc_set(p text, v integer) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.lc_calls
    VALUES ('set', p, v, length(secret_mgmt.secret_resolve(p, 'pending')));
END $$;
CREATE FUNCTION public.lc_test(p text, v integer) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.lc_calls VALUES ('test', p, v, length(secret_mgmt.secret_resolve(p, v)));
END $$;
CREATE FUNCTION public.lc_fail(p text, v integer) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'target refused version %', v;
END $$;
CREATE FUNCTION public.lc_wrong(p text) RETURNS void LANGUAGE sql AS 'SELECT';
CREATE FUNCTION public.lc_gen(p text) RETURNS text LANGUAGE sql AS $$ SELECT 'gen-for-' || p $$;
CREATE FUNCTION public.lc_private_gen() RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$;
REVOKE EXECUTE ON FUNCTION public.lc_private_gen() FROM PUBLIC;

SET ROLE regress_lc_a;

-- generators, through secret_rotate
SELECT secret_mgmt.secret_create('g/pw', 'initial', 'password') IS NOT NULL AS created;
SELECT secret_mgmt.secret_rotate('g/pw');
SELECT length(secret_mgmt.secret_resolve('g/pw')) AS default_password_length;
SELECT secret_mgmt.secret_set_rotation('g/pw', NULL, 'password(12, false)');
SELECT secret_mgmt.secret_rotate('g/pw');
SELECT secret_mgmt.secret_resolve('g/pw') ~ '^[A-Za-z0-9]{12}$' AS alnum_12;
SELECT secret_mgmt.secret_set_rotation('g/pw', NULL, 'hex(5)');
SELECT secret_mgmt.secret_rotate('g/pw');
SELECT secret_mgmt.secret_resolve('g/pw') ~ '^[0-9a-f]{10}$' AS hex_5;
SELECT secret_mgmt.secret_set_rotation('g/pw', NULL, 'base64(9)');
SELECT secret_mgmt.secret_rotate('g/pw');
SELECT length(decode(secret_mgmt.secret_resolve('g/pw'), 'base64')) AS base64_bytes;
SELECT secret_mgmt.secret_set_rotation('g/pw', NULL, 'uuid');
SELECT secret_mgmt.secret_rotate('g/pw');
SELECT secret_mgmt.secret_resolve('g/pw')::uuid IS NOT NULL AS is_uuid;
SELECT secret_mgmt.secret_set_rotation('g/pw', NULL, 'apikey(sk_live)');
SELECT secret_mgmt.secret_rotate('g/pw');
SELECT secret_mgmt.secret_resolve('g/pw') ~ '^sk_live_[A-Za-z0-9]{40}$' AS apikey;
SELECT secret_mgmt.secret_set_rotation('g/pw', NULL, 'public.lc_gen(text)');
SELECT secret_mgmt.secret_rotate('g/pw');
SELECT secret_mgmt.secret_resolve('g/pw') AS from_function;
SELECT secret_mgmt.secret_rotate('g/pw', 'given-value');
SELECT secret_mgmt.secret_resolve('g/pw') AS given,
       secret_mgmt.secret_resolve('g/pw', 'previous') AS previous;
SELECT version, state, labels FROM secret_mgmt.secret_versions('g/pw');
SELECT path, period, generator, hook, state, pending_version, current_version, attempts
  FROM secret_mgmt.secret_rotations('g/');

-- invalid policies
SELECT try($$SELECT secret_mgmt.secret_set_rotation('g/pw', '0 seconds')$$);
SELECT try($$SELECT secret_mgmt.secret_set_rotation('g/pw', '-1 day')$$);
SELECT try($$SELECT secret_mgmt.secret_set_rotation('g/pw', '1 second', 'password(7)')$$);
SELECT try($$SELECT secret_mgmt.secret_set_rotation('g/pw', '1 second', 'password(8, maybe)')$$);
SELECT try($$SELECT secret_mgmt.secret_set_rotation('g/pw', '1 second', 'hex(2000)')$$);
SELECT try($$SELECT secret_mgmt.secret_set_rotation('g/pw', '1 second', 'apikey(bad prefix)')$$);
SELECT try($$SELECT secret_mgmt.secret_set_rotation('g/pw', '1 second', 'public.no_such_function')$$);
SELECT try($$SELECT secret_mgmt.secret_set_rotation('g/pw', '1 second', 'public.lc_wrong(text)')$$);
SELECT try($$SELECT secret_mgmt.secret_set_rotation('g/pw', '1 second', 'public.lc_private_gen()')$$);
SELECT try($$SELECT secret_mgmt.secret_set_rotation('g/pw', '1 second', NULL, 'public.lc_wrong(text)')$$);
SELECT try($$SELECT secret_mgmt.secret_set_rotation('g/none', '1 second')$$);
SELECT secret_mgmt.secret_create('g/cert', '{"a": 1}'::jsonb) IS NOT NULL AS created;
SELECT try($$SELECT secret_mgmt.secret_set_rotation('g/cert', '1 day')$$);
SELECT try($$SELECT secret_mgmt.secret_rotate('g/cert')$$);
SELECT secret_mgmt.secret_create('g/key', 'k', 'api_key', rotation_period => '1 second') IS NOT NULL AS created;
SELECT period, generator FROM secret_mgmt.secret_rotations('g/key');
SELECT try($$SELECT secret_mgmt.secret_rotate('g/key', 'has space')$$);

-- the four steps, in one call: set, test, finish
SELECT secret_mgmt.secret_create('h/db', 'old-value') IS NOT NULL AS created;
SELECT secret_mgmt.secret_set_rotation('h/db', NULL, 'password(16, true)',
       'public.lc_set(text,integer)', 'public.lc_test(text,integer)');
SELECT secret_mgmt.secret_rotate('h/db');
SELECT step, path, version, value_len FROM public.lc_calls ORDER BY step = 'test';
SELECT secret_mgmt.secret_resolve('h/db', 'previous') AS previous;
SELECT version, labels FROM secret_mgmt.secret_versions('h/db');

-- a failing hook: the whole call fails, nothing is kept
SELECT secret_mgmt.secret_set_rotation('h/db', NULL, 'password(16, true)', 'public.lc_fail(text,integer)');
SELECT try($$SELECT secret_mgmt.secret_rotate('h/db')$$);
SELECT version, labels FROM secret_mgmt.secret_versions('h/db');

-- retention settings
SELECT secret_mgmt.secret_set_max_versions('h/db', 3);
SELECT try($$SELECT secret_mgmt.secret_set_max_versions('h/db', 0)$$);
SELECT max_versions FROM secret_mgmt.secret_rotations('h/db');

-- the event feed: gap-free ids, ids and names only
SELECT event_id, kind, path, version, actor, detail FROM secret_mgmt.secret_events()
 WHERE path LIKE 'h/%' ORDER BY event_id;
SELECT count(*) = max(event_id) AND min(event_id) = 1 AS gap_free FROM secret_mgmt.secret_events();
SELECT count(*) AS after_last FROM secret_mgmt.secret_events(since => 1000000);
-- a rolled-back change leaves no event (and no gap)
BEGIN;
SELECT secret_mgmt.secret_update('h/db', 'rolled-back');
ROLLBACK;
BEGIN;
SAVEPOINT s;
SELECT secret_mgmt.secret_update('h/db', 'in-savepoint');
ROLLBACK TO SAVEPOINT s;
SELECT secret_mgmt.secret_update('h/db', 'kept');
COMMIT;
SELECT kind, version FROM secret_mgmt.secret_events()
 WHERE event_id > (SELECT max(event_id) - 1 FROM secret_mgmt.secret_events());
SELECT count(*) = max(event_id) AS still_gap_free FROM secret_mgmt.secret_events();

-- sinks: administrators only, credentials by path, valid settings
SELECT try($$SELECT secret_mgmt.secret_sink_create('s1', 'webhook', '{"url": "https://x.example"}', 'h/db')$$);
RESET ROLE;
SET ROLE regress_lc_admin;
SELECT try($$SELECT secret_mgmt.secret_sink_create('s1', 'webhook', '{"url": "http://x.example"}', 'h/db')$$);
SELECT try($$SELECT secret_mgmt.secret_sink_create('s1', 'webhook', '{"url": "https://x.example"}')$$);
SELECT try($$SELECT secret_mgmt.secret_sink_create('s1', 'smtp', '{}', 'h/db')$$);
SELECT try($$SELECT secret_mgmt.secret_sink_create('1bad', 'webhook', '{"url": "https://x.example"}', 'h/db')$$);
SELECT try($$SELECT secret_mgmt.secret_sink_create('s2', 'rabbitmq', '{"host": "127.0.0.1"}', 'h/db')$$);
SELECT try($$SELECT secret_mgmt.secret_sink_create('s2', 'rabbitmq', '{"host": "127.0.0.1", "routing_key": "q", "port": 70000}', 'h/db')$$);
SELECT secret_mgmt.secret_sink_create('s1', 'webhook', '{"url": "https://x.example"}', 'h/db');
SELECT try($$SELECT secret_mgmt.secret_sink_create('s1', 'webhook', '{"url": "https://x.example"}', 'h/db')$$);
SELECT secret_mgmt.secret_update('h/db', 'after-sink');
SELECT name, kind, credentials_path, enabled, pending, delivered FROM secret_mgmt.secret_sinks();
SELECT state, attempts FROM secret_mgmt.secret_deliveries('s1');
SELECT secret_mgmt.secret_sink_drop('s1');
SELECT try($$SELECT secret_mgmt.secret_sink_drop('s1')$$);
RESET ROLE;

-- another tenant sees none of it
SET ROLE regress_lc_b;
SELECT count(*) AS events_of_b FROM secret_mgmt.secret_events();
SELECT count(*) AS rotations_of_b FROM secret_mgmt.secret_rotations();
SELECT try($$SELECT secret_mgmt.secret_rotate('h/db')$$);
SELECT try($$SELECT secret_mgmt.secret_set_rotation('h/db', '1 day')$$);
SELECT try($$SELECT secret_mgmt.secret_set_max_versions('h/db', 1)$$);
SELECT try($$SELECT secret_mgmt.secret_target_pg_role('h/db', 1)$$);
SELECT try($$SELECT secret_mgmt.secret_test_pg_role('h/db', 1)$$);
RESET ROLE;

-- the tables themselves stay closed
SET ROLE regress_lc_a;
SELECT try($$SELECT * FROM secret_mgmt.secret_event$$);
SELECT try($$SELECT * FROM secret_mgmt.secret_lifecycle$$);
SELECT try($$SELECT * FROM secret_mgmt.secret_sink$$);
RESET ROLE;
