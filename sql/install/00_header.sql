/*
 * secret_mgmt--0.1.0.sql
 *		Tables, row-level security and the SQL surface of the secret store.
 *
 * Built by make from the parts in sql/install/, one per subsystem, in name
 * order; edit the parts, not the built script.
 *
 * Every table carries tenant_id, has row-level security enabled and forced,
 * and is reachable only through the API functions below: no privilege on any
 * table is granted to anybody.  The API functions are written in C; each one
 * identifies its caller, checks tenant membership itself, and only then runs
 * its internal statements as the extension owner with bound parameters.  That
 * is why EXECUTE on them is granted to PUBLIC.
 *
 * Everything is schema-qualified and operators are written as
 * OPERATOR(pg_catalog.=) so that nothing on a caller's search_path can
 * intercept the script or the statements it defines.
 */

\echo Use "CREATE EXTENSION secret_mgmt" to load this file. \quit
