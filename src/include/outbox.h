/*-------------------------------------------------------------------------
 *
 * outbox.h
 *		Secrets stored in an external backend: the outbox of changes the
 *		worker delivers after commit, and reads through to the backend.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_OUTBOX_H
#define SECRET_MGMT_OUTBOX_H

#include "lookup.h"
#include "tenant.h"

#include "utils/uuid.h"

extern void sm_outbox_check_backend(const char *backend, const char *tenant,
									const char *scope);
extern bool sm_outbox_queue(const SmCaller *c, const pg_uuid_t *id, const char *op,
							int32 version);
extern void sm_outbox_queue_for(const char *tenant, const pg_uuid_t *id,
								const char *path, const char *backend,
								const char *op, int32 version, const char *actor);
extern uint8 *sm_outbox_read_through(const char *tenant, const char *path,
									 const SmResolved *r, bool fresh, size_t *len);
extern int	sm_outbox_deliver(int max);

#endif							/* SECRET_MGMT_OUTBOX_H */
