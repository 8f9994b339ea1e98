/*-------------------------------------------------------------------------
 *
 * types.h
 *		Secret types: what a valid value of each type looks like.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRET_MGMT_TYPES_H
#define SECRET_MGMT_TYPES_H

#include "secret_mgmt.h"

#include "utils/timestamp.h"

extern void sm_type_check_name(const char *type);
extern void sm_type_validate(const char *type, const uint8 *value, size_t len,
							 TimestampTz *not_after, bool *has_not_after);
extern Datum sm_value_to_jsonb(const uint8 *value, size_t len);

#endif							/* SECRET_MGMT_TYPES_H */
