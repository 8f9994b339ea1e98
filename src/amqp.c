/*-------------------------------------------------------------------------
 *
 * amqp.c
 *		Delivering events to RabbitMQ (AMQP 0-9-1, through rabbitmq-c).
 *
 * Used only by the worker with no transaction open.  One connection per
 * batch: connect with a timeout, log in (PLAIN), open a channel, switch it
 * to publisher confirms, then publish each message (persistent, JSON,
 * message_id = the event's opaque id) and wait for the broker's ack before
 * the next one, so that "confirmed" means the broker has taken
 * responsibility for it and the count returned is exact and in order.
 * Every wait is bounded by the sink's timeout.  No palloc or ereport here:
 * errors are reported through `err`.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/time.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include "events.h"

/* Describe a failed RPC reply in err. */
static bool
reply_ok(amqp_rpc_reply_t r, const char *what, char *err, size_t errlen)
{
	switch (r.reply_type)
	{
		case AMQP_RESPONSE_NORMAL:
			return true;
		case AMQP_RESPONSE_NONE:
			snprintf(err, errlen, "%s: no reply from the broker", what);
			break;
		case AMQP_RESPONSE_LIBRARY_EXCEPTION:
			snprintf(err, errlen, "%s: %s", what, amqp_error_string2(r.library_error));
			break;
		case AMQP_RESPONSE_SERVER_EXCEPTION:
			if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD)
			{
				amqp_connection_close_t *m = r.reply.decoded;

				snprintf(err, errlen, "%s: connection closed by the broker (%u %.*s)",
						 what, m->reply_code, (int) m->reply_text.len,
						 (char *) m->reply_text.bytes);
			}
			else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
			{
				amqp_channel_close_t *m = r.reply.decoded;

				snprintf(err, errlen, "%s: channel closed by the broker (%u %.*s)",
						 what, m->reply_code, (int) m->reply_text.len,
						 (char *) m->reply_text.bytes);
			}
			else
				snprintf(err, errlen, "%s: broker error (method 0x%08x)", what, r.reply.id);
			break;
	}
	return false;
}

/* Wait for the broker to confirm the last publish; false on nack or timeout. */
static bool
wait_confirm(amqp_connection_state_t conn, int timeout_ms, char *err, size_t errlen)
{
	struct timeval tv;
	amqp_frame_t frame;
	int			rc;

	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	for (;;)
	{
		amqp_maybe_release_buffers(conn);
		rc = amqp_simple_wait_frame_noblock(conn, &frame, &tv);
		if (rc != AMQP_STATUS_OK)
		{
			snprintf(err, errlen, "waiting for the broker's confirm: %s", amqp_error_string2(rc));
			return false;
		}
		if (frame.frame_type != AMQP_FRAME_METHOD)
			continue;
		switch (frame.payload.method.id)
		{
			case AMQP_BASIC_ACK_METHOD:
				return true;
			case AMQP_BASIC_NACK_METHOD:
				snprintf(err, errlen, "the broker refused the message (nack)");
				return false;
			case AMQP_BASIC_RETURN_METHOD:
				/* unroutable: the confirm follows; count it as not delivered */
				snprintf(err, errlen, "the broker could not route the message");
				(void) amqp_simple_wait_frame_noblock(conn, &frame, &tv);
				return false;
			case AMQP_CHANNEL_CLOSE_METHOD:
			case AMQP_CONNECTION_CLOSE_METHOD:
				snprintf(err, errlen, "the broker closed the channel");
				return false;
			default:
				break;
		}
	}
}

/*
 * Publish each message to `exchange` with `routing_key`; returns how many
 * the broker confirmed, in order.
 */
int
sm_amqp_send(const char *host, int port, const char *vhost,
			 const char *user, const char *password,
			 const char *exchange, const char *routing_key,
			 int timeout_ms, SmOutMessage *msgs, int n,
			 char *err, size_t errlen)
{
	amqp_connection_state_t conn;
	amqp_socket_t *socket;
	struct timeval tv;
	int			sent = 0;
	int			rc;
	bool		logged_in = false;
	bool		channel_open = false;

	err[0] = '\0';
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;

	conn = amqp_new_connection();
	if (conn == NULL)
	{
		strlcpy(err, "could not allocate an AMQP connection", errlen);
		return 0;
	}
	socket = amqp_tcp_socket_new(conn);
	if (socket == NULL)
	{
		strlcpy(err, "could not create an AMQP socket", errlen);
		amqp_destroy_connection(conn);
		return 0;
	}
	(void) amqp_set_handshake_timeout(conn, &tv);
	(void) amqp_set_rpc_timeout(conn, &tv);
	rc = amqp_socket_open_noblock(socket, host, port, &tv);
	if (rc != AMQP_STATUS_OK)
	{
		snprintf(err, errlen, "could not connect to %s:%d: %s", host, port, amqp_error_string2(rc));
		amqp_destroy_connection(conn);
		return 0;
	}

	if (!reply_ok(amqp_login(conn, vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
							 user, password), "login", err, errlen))
		goto done;
	logged_in = true;
	amqp_channel_open(conn, 1);
	if (!reply_ok(amqp_get_rpc_reply(conn), "opening a channel", err, errlen))
		goto done;
	channel_open = true;
	amqp_confirm_select(conn, 1);
	if (!reply_ok(amqp_get_rpc_reply(conn), "enabling publisher confirms", err, errlen))
		goto done;

	for (int i = 0; i < n; i++)
	{
		amqp_basic_properties_t props;
		amqp_bytes_t body;

		memset(&props, 0, sizeof(props));
		props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
			AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_TYPE_FLAG;
		props.content_type = amqp_cstring_bytes("application/json");
		props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
		props.message_id = amqp_cstring_bytes(msgs[i].message_id);
		props.timestamp = (uint64_t) msgs[i].timestamp;
		props.type = amqp_cstring_bytes("secret_mgmt.event");
		body.bytes = msgs[i].body;
		body.len = msgs[i].body_len;
		rc = amqp_basic_publish(conn, 1, amqp_cstring_bytes(exchange),
								amqp_cstring_bytes(routing_key),
								1 /* mandatory */ , 0, &props, body);
		if (rc != AMQP_STATUS_OK)
		{
			snprintf(err, errlen, "publishing: %s", amqp_error_string2(rc));
			break;
		}
		if (!wait_confirm(conn, timeout_ms, err, errlen))
			break;
		sent++;
	}

done:
	if (channel_open)
		(void) amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
	if (logged_in)
		(void) amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(conn);
	return sent;
}
