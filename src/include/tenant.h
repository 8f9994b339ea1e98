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

/*
 * The principal of an API call and the tenant it acts for: a role, or --
 * after secret_assume() in this transaction -- a verified token's subject
 * and groups.
 */
typedef struct SmCaller
{
	Oid			roleid;
	char	   *rolename;		/* as recorded in created_by: role or token:sub */
	char	   *tenant;
	bool		is_admin;		/* tenant admin or platform admin */
	bool		is_superuser;
	bool		assumed;		/* a token principal */
	char	   *subject;		/* token subject */
	List	   *groups;			/* token groups (char *) */
	const char *as_tenant;		/* a tenant as principal (tenant: grants) */
	bool		outsider;		/* examined principal outside the tenant */
	/* resolution context (NULL where unset) */
	char	   *team;
	char	   *project;
	char	   *user;
} SmCaller;

extern void sm_caller_resolve(SmSession *session, SmCaller *caller,
							  const char *path);
extern void sm_tenant_xact_callback(XactEvent event, void *arg);
extern void sm_tenant_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
									   SubTransactionId parentSubid, void *arg);
extern void sm_assume_principal(const char *tenant, const char *subject,
								List *groups, const char *team, const char *project);
extern bool sm_is_broker(Oid role, const char *tenant);
extern void sm_require_tenant_admin(SmSession *session, const char *tenant);
extern void sm_require_role_admin(SmSession *session, Oid role, const char *action);
extern void sm_tenant_select_for_xact(const char *tenant);

#endif							/* SECRET_MGMT_TENANT_H */
