/*-------------------------------------------------------------------------
 *
 * events.h
 *		The per-tenant event feed, NOTIFY, and delivery to sinks.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_EVENTS_H
#define SECRET_MGMT_EVENTS_H

#include "secret_mgmt.h"

#include "utils/uuid.h"

/* One message for a sink (built by events.c, sent by webhook.c / amqp.c). */
typedef struct SmOutMessage
{
	int64		event_id;
	char	   *message_id;		/* the event's opaque id */
	char	   *body;			/* JSON */
	int			body_len;
	int64		timestamp;		/* Unix seconds, for the signature */
} SmOutMessage;

extern void sm_events_init(void);
extern void sm_event_emit(const char *tenant, const char *kind,
						  const pg_uuid_t *secret_id, const char *path,
						  int32 version, const char *actor, const char *detail);
extern int	sm_events_deliver(int max_messages);

/* webhook.c: POST each message; returns how many were accepted (2xx). */
extern int	sm_webhook_send(const char *url, const char *ca_file, int timeout_ms,
							const uint8 *key, size_t key_len,
							SmOutMessage *msgs, int n, char *err, size_t errlen);

/* amqp.c: publish with confirms; returns how many the broker confirmed. */
extern int	sm_amqp_send(const char *host, int port, const char *vhost,
						 const char *user, const char *password,
						 const char *exchange, const char *routing_key,
						 int timeout_ms, SmOutMessage *msgs, int n,
						 char *err, size_t errlen);

#endif							/* SECRET_MGMT_EVENTS_H */
