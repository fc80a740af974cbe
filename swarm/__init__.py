"""Swarm: staged, checkpointing master/worker batch processing over HBase."""
from swarm import checks
from swarm.checks import CheckResult
from swarm.effects import Continue, Count, Delete, Put, Send
from swarm.envelope import Envelope
from swarm.errors import Abort, BadMessage, Fault
from swarm.stage import Chunk, Job, Retry, Stage

__all__ = [
    "Abort", "BadMessage", "CheckResult", "Chunk", "Continue", "Count", "Delete", "Envelope", "Fault", "Job", "Put",
    "Retry", "Send", "Stage", "checks",
]
__version__ = "0.1.0"
