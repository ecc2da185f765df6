"""Names of every queue, table and blob container the service uses.

One place, so the code, ``host.json`` and ``infra/`` cannot drift: ``tests/test_infra_names.py`` checks that
each name here is declared in Bicep and that Bicep declares nothing else. Queue names follow the Functions
convention that a message dequeued ``maxDequeueCount`` times moves to ``<queue>-poison``.
"""

from typing import Final

POISON_SUFFIX: Final = "-poison"

# Queues: webhook -> worker hand-offs (base64 text, as the Functions queue trigger expects).
QUEUE_INBOUND: Final = "inbound-messages"  # message references accepted by the notification webhook
QUEUE_LIFECYCLE: Final = "lifecycle-events"  # Graph lifecycle events (reauthorize, removed, missed)
QUEUE_CATCHUP: Final = "catchup-requests"  # per-connection delta catch-up runs
QUEUE_EVENTS: Final = "enrollio-events"  # wake-ups of the outbox's events to Enrollio, one per delivery attempt

QUEUES: Final = (QUEUE_INBOUND, QUEUE_LIFECYCLE, QUEUE_CATCHUP, QUEUE_EVENTS)
POISON_QUEUES: Final = tuple(q + POISON_SUFFIX for q in QUEUES)

# Tables (alphanumeric names). Partition keys are chosen so every hot read is a point read.
TABLE_CONNECTIONS: Final = "Connections"  # PK user id, RK connection id
TABLE_SUBSCRIPTIONS: Final = "Subscriptions"  # PK subscription id: the webhook's point read; one per mailbox
# PK mailbox (tenant + user object id); RK "": its subscription id and last notification; RK connection id: a
# connection that syncs it (R1: several users may connect one mailbox). One partition query reads a mailbox whole.
TABLE_MAILBOXES: Final = "Mailboxes"
TABLE_THREADS: Final = "Threads"  # PK thread id: a thread read by id is a point read
TABLE_THREAD_KEYS: Final = "ThreadKeys"  # PK connection id, RK hashed conversationId / Message-ID -> thread
TABLE_MESSAGES: Final = "Messages"  # PK thread id, RK hashed Message-ID: one row per message, ever
TABLE_SKIPS: Final = "Skips"  # PK user id, RK hashed Message-ID: why a thread message did not sync
TABLE_IDEMPOTENCY: Final = "IdempotencyKeys"  # PK user id, RK Idempotency-Key
TABLE_DELTA_CURSORS: Final = "DeltaCursors"  # PK connection id, RK folder
TABLE_OAUTH_FLOWS: Final = "OAuthFlows"  # PK state: short-lived MSAL auth-code flows
TABLE_FAILURES: Final = "Failures"  # what landed in a poison queue, for operators
TABLE_SPENT_SIGNATURES: Final = "SpentSignatures"  # PK kind-hour, RK signature hash: each accepted once
TABLE_OUTBOX: Final = "EventOutbox"  # PK event id: events to Enrollio not yet delivered (pending or refused)

TABLES: Final = (
    TABLE_CONNECTIONS,
    TABLE_SUBSCRIPTIONS,
    TABLE_MAILBOXES,
    TABLE_THREADS,
    TABLE_THREAD_KEYS,
    TABLE_MESSAGES,
    TABLE_SKIPS,
    TABLE_IDEMPOTENCY,
    TABLE_DELTA_CURSORS,
    TABLE_OAUTH_FLOWS,
    TABLE_FAILURES,
    TABLE_SPENT_SIGNATURES,
    TABLE_OUTBOX,
)

# Blob containers: anything that can exceed a table property's 64 KiB.
CONTAINER_BODIES: Final = "message-bodies"
CONTAINER_ATTACHMENTS: Final = "attachments"
CONTAINER_TOKEN_CACHES: Final = "token-caches"  # noqa: S105 (a name, not a secret). AES-GCM encrypted MSAL caches, one per connection
CONTAINER_MAILBOX_GATES: Final = "mailbox-gates"  # per mailbox: 4 leased slot blobs and its throttle deadline

CONTAINERS: Final = (CONTAINER_BODIES, CONTAINER_ATTACHMENTS, CONTAINER_TOKEN_CACHES, CONTAINER_MAILBOX_GATES)
