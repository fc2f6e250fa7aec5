"""The Service Bus wire vocabulary the SDK speaks, in one place.

Every name here was read from the azure-servicebus 7.x source (``_common/constants.py``,
``_pyamqp/aio/_cbs_async.py``, ``_pyamqp/aio/_management_link_async.py``, the pyamqp transport)
rather than guessed, so a mismatch with the SDK shows up as one wrong constant.
"""

from __future__ import annotations

from typing import Final

# Nodes and address suffixes.
CBS_NODE: Final = "$cbs"
MANAGEMENT_SUFFIX: Final = "/$management"
DEAD_LETTER_SUFFIX: Final = "/$DeadLetterQueue"

# SASL: the SDK's JWT/SAS token auth always negotiates ANONYMOUS and then authenticates over $cbs.
SASL_MECHANISMS: Final = "ANONYMOUS"

# Receive-link attach property carrying the receiver's client identifier.
RECEIVER_NAME_PROPERTY: Final = "com.microsoft:receiver-name"

# CBS put-token request/response (note the dashes: CBS differs from entity management).
CBS_OPERATION_KEY: Final = "operation"
CBS_PUT_TOKEN: Final = "put-token"
CBS_STATUS_CODE: Final = "status-code"
CBS_STATUS_DESCRIPTION: Final = "status-description"

# Entity management ($management) request/response.
MGMT_OPERATION_KEY: Final = "operation"
MGMT_STATUS_CODE: Final = "statusCode"
MGMT_STATUS_DESCRIPTION: Final = "statusDescription"
MGMT_ERROR_CONDITION: Final = "errorCondition"
OP_RENEW_LOCK: Final = "com.microsoft:renew-lock"
OP_UPDATE_DISPOSITION: Final = "com.microsoft:update-disposition"
LOCK_TOKENS: Final = "lock-tokens"
EXPIRATIONS: Final = "expirations"
DISPOSITION_STATUS: Final = "disposition-status"
DISPOSITION_COMPLETED: Final = "completed"
DISPOSITION_ABANDONED: Final = "abandoned"
DISPOSITION_SUSPENDED: Final = "suspended"  # what the SDK sends for dead-letter
MGMT_DEAD_LETTER_REASON: Final = "deadletter-reason"
MGMT_DEAD_LETTER_DESCRIPTION: Final = "deadletter-description"

# Dead-letter details: on a link `rejected` outcome they ride in the error's info map under these
# keys, and on the dead-lettered message they are application properties with the same names.
DEAD_LETTER_REASON: Final = "DeadLetterReason"
DEAD_LETTER_DESCRIPTION: Final = "DeadLetterErrorDescription"
DEAD_LETTER_CONDITION: Final = "com.microsoft:dead-letter"
MAX_DELIVERY_COUNT_EXCEEDED: Final = "MaxDeliveryCountExceeded"

# Error conditions the SDK maps to typed exceptions.
MESSAGE_LOCK_LOST: Final = "com.microsoft:message-lock-lost"
NOT_IMPLEMENTED: Final = "amqp:not-implemented"

# Broker-set message annotations the SDK reads back.
SEQUENCE_NUMBER: Final = "x-opt-sequence-number"
ENQUEUED_TIME: Final = "x-opt-enqueued-time"
LOCKED_UNTIL: Final = "x-opt-locked-until"
LOCK_TOKEN: Final = "x-opt-lock-token"

# Descriptor codes of the AMQP message sections (AMQP 1.0 part 3.2).
SECTION_HEADER: Final = 0x70
SECTION_DELIVERY_ANNOTATIONS: Final = 0x71
SECTION_MESSAGE_ANNOTATIONS: Final = 0x72
SECTION_PROPERTIES: Final = 0x73
SECTION_APPLICATION_PROPERTIES: Final = 0x74
SECTION_DATA: Final = 0x75
SECTION_SEQUENCE: Final = 0x76
SECTION_VALUE: Final = 0x77
SECTION_FOOTER: Final = 0x78
