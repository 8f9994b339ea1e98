
---------------------------------------------------------------------------
-- Operations (health.c, loghygiene.c)
---------------------------------------------------------------------------

-- The state of the store as one document: key loaded, sealed, the worker,
-- the audit queue, the logging profile and the log hook's counters, and
-- the external backends' circuit breakers.  Superusers and members of
-- pg_monitor only (checked in C).
CREATE FUNCTION secret_mgmt.secret_health()
RETURNS jsonb
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_health';
