/*-------------------------------------------------------------------------
 *
 * tenant.h
 *		Tenants, membership, and who is calling.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_TENANT_H
#define SECRET_MGMT_TENANT_H

#include "access/xact.h"
#include "query.h"

/* The principal of an API call and the tenant it acts for. */
typedef struct SmCaller
{
	Oid			roleid;
	char	   *rolename;
	char	   *tenant;
	bool		is_admin;		/* tenant admin or platform admin */
	bool		is_superuser;
	/* resolution context (NULL where unset) */
	char	   *team;
	char	   *project;
	char	   *user;
} SmCaller;

extern void sm_caller_resolve(SmSession *session, SmCaller *caller,
							  const char *path);
extern void sm_tenant_xact_callback(XactEvent event, void *arg);
extern void sm_tenant_select_for_xact(const char *tenant);

#endif							/* SECRET_MGMT_TENANT_H */
