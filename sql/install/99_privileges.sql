-- The install-time helper has done its work.
DROP FUNCTION secret_mgmt._protect(pg_catalog.regclass, text);

---------------------------------------------------------------------------
-- Privileges.  Every function above identifies and checks its caller in C,
-- so EXECUTE goes to PUBLIC; the tables stay private to the owner.
---------------------------------------------------------------------------

DO $grants$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::pg_catalog.regprocedure
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace OPERATOR(pg_catalog.=) 'secret_mgmt'::pg_catalog.regnamespace
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f);
    END LOOP;
END
$grants$;

GRANT USAGE ON SCHEMA secret_mgmt TO PUBLIC;
