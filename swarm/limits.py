"""Every size Swarm bounds in what it writes about a message, in one place.

A reason (why a message failed or was rejected) goes into a message header
and into the ledger; a header must fit in one AMQP frame, and a ledger row
in one MySQL packet, so neither may grow with its input.
"""

MAX_REASON_CHARS = 4000  # a reason in a dead letter's header or a rejection: start and end kept
MAX_ERROR_CHARS = 16_000  # an error (a traceback) the ledger records on a message or a run
MAX_DEAD_LETTER_BYTES = 1 << 20  # of a dead letter's body, kept; its full size and SHA-256 are kept besides
