--
-- loghygiene: secret_health() and the logging-profile check as the
-- caller's session sees it; secret_mgmt.strict_logging refusing value
-- operations (and only those) while a setting could record a value;
-- who may read the health and change the settings.
--
\set VERBOSITY terse
\set SHOW_CONTEXT never

CREATE ROLE regress_lh_app;
CREATE ROLE regress_lh_monitor IN ROLE pg_monitor;
SELECT secret_mgmt.secret_tenant_create('lh');
SELECT secret_mgmt.secret_tenant_add_member('lh', 'regress_lh_app');
SELECT secret_mgmt.secret_use_tenant('lh');
SELECT secret_mgmt.secret_grant('**', 'regress_lh_app',
                                ARRAY['read', 'list', 'create', 'update', 'rotate']);
SELECT secret_mgmt.secret_use_tenant(NULL);

-- the document
SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(secret_mgmt.secret_health()) k;
SELECT h -> 'key_loaded' AS key_loaded, h -> 'sealed' AS sealed,
       h #> '{audit_queue,capacity}' AS capacity,
       h #> '{audit_queue,rejected}' AS rejected,
       jsonb_typeof(h -> 'backends') AS backends,
       h #> '{logging,strict_logging}' AS strict, h #> '{logging,redact_logs}' AS redact
  FROM secret_mgmt.secret_health() h;

-- PostgreSQL's default log_parameter_max_length = -1 is reported
SELECT w ->> 'setting' AS setting, w ->> 'value' AS value, w ->> 'safe' AS safe
  FROM jsonb_array_elements(secret_mgmt.secret_health() #> '{logging,warnings}') w;
SET log_parameter_max_length = 0;
SELECT secret_mgmt.secret_health() #> '{logging,safe}' AS safe;

-- the check follows the session's settings
SET log_statement = 'all';
SET log_min_error_statement = 'warning';
SET debug_print_rewritten = on;
SELECT w ->> 'setting' AS setting, w ->> 'value' AS value, w ->> 'safe' AS safe
  FROM jsonb_array_elements(secret_mgmt.secret_health() #> '{logging,warnings}') w;
RESET debug_print_rewritten;

-- strict logging refuses value operations while they are set
SET secret_mgmt.strict_logging = on;
SET ROLE regress_lh_app;
SELECT public.try_full($$SELECT secret_mgmt.secret_create('db/pw', 'lh-value-1')$$);
RESET ROLE;
RESET log_statement;
RESET log_min_error_statement;
SET ROLE regress_lh_app;
SELECT secret_mgmt.secret_create('db/pw', 'lh-value-1') IS NOT NULL AS created;
SELECT secret_mgmt.secret_resolve('db/pw');

-- any user may log parameters of their own failing statements: then that
-- session's value operations are refused, and only those
SET log_parameter_max_length_on_error = -1;
SELECT public.try($$SELECT secret_mgmt.secret_resolve('db/pw')$$);
SELECT public.try($$SELECT secret_mgmt.secret_resolve_bytea('db/pw', 1)$$);
SELECT public.try($$SELECT secret_mgmt.secret_update('db/pw', 'lh-value-2')$$);
SELECT public.try($$SELECT secret_mgmt.secret_rotate('db/pw', 'lh-value-3')$$);
SELECT public.try($$SELECT secret_mgmt.secret_render('x=${db/pw}')$$);
SELECT secret_mgmt.secret_rollback('db/pw', 1);
SELECT array_agg(version ORDER BY version) AS versions FROM secret_mgmt.secret_versions('db/pw');
RESET log_parameter_max_length_on_error;
SELECT secret_mgmt.secret_resolve('db/pw');

-- only superusers change the settings, and read the health with pg_monitor
SELECT public.try($$SET secret_mgmt.strict_logging = off$$);
SELECT public.try($$SET secret_mgmt.redact_logs = off$$);
SELECT public.try($$SELECT secret_mgmt.secret_health()$$);
RESET ROLE;
SET ROLE regress_lh_monitor;
SELECT secret_mgmt.secret_health() #> '{logging,strict_logging}' AS strict;
RESET ROLE;
RESET secret_mgmt.strict_logging;
RESET log_parameter_max_length;
