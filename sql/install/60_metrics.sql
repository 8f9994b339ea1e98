
---------------------------------------------------------------------------
-- Metrics (metrics.c): cluster-wide counters since server start, for
-- monitoring.  Superusers and members of pg_monitor read them; anyone
-- else is refused with SM002 (checked in C).  Labels name actions,
-- outcomes and bucket bounds only: never a tenant, a path, a principal or
-- a value.
---------------------------------------------------------------------------

-- One row per sample, named as in the exposition format; value is a
-- double precision (counters are exact up to 2^53).
CREATE FUNCTION secret_mgmt.secret_metrics(
    OUT name text, OUT labels jsonb, OUT value double precision)
RETURNS SETOF record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_metrics';

-- The same samples in the Prometheus text exposition format 0.0.4.
CREATE FUNCTION secret_mgmt.secret_metrics_prometheus()
RETURNS text
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'secret_metrics_prometheus';
