/*-------------------------------------------------------------------------
 *
 * rotation.h
 *		Rotation: generators, the four-step state machine, the pg_role
 *		target, and the worker's lifecycle sweeps.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_ROTATION_H
#define SECRET_MGMT_ROTATION_H

#include "tenant.h"

#include "utils/timestamp.h"
#include "utils/uuid.h"

typedef enum SmGenKind
{
	SM_GEN_PASSWORD,
	SM_GEN_HEX,
	SM_GEN_BASE64,
	SM_GEN_UUID,
	SM_GEN_APIKEY,
	SM_GEN_FUNCTION
} SmGenKind;

/* A parsed generator (generator.c). */
typedef struct SmGenerator
{
	SmGenKind	kind;
	int			n;				/* length or byte count */
	bool		symbols;		/* password: include symbols */
	char		prefix[32];		/* apikey */
	Oid			fn;				/* user function */
	char	   *canonical;		/* the form that is stored */
} SmGenerator;

/* generator.c */
extern void sm_generator_parse(const char *spec, Oid owner, SmGenerator *g);
extern const char *sm_generator_default(const char *type);
extern uint8 *sm_generator_run(const SmGenerator *g, const char *path, Oid owner,
							   size_t *len);

/* rotation.c */
extern void sm_rotation_on_create(const SmCaller *c, const pg_uuid_t *id,
								  const char *path, const char *type,
								  Interval *period, const char *generator);
extern int	sm_rotation_run_due(const char *tenant, int max);

/* lifecycle.c: expiry, grace, purge and pruning sweeps of one tenant */
extern int	sm_lifecycle_sweep(const char *tenant, int max);

/* scram.c */
extern char *sm_scram_verifier(const char *password);

#endif							/* SECRET_MGMT_ROTATION_H */
