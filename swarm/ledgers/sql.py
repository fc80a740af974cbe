"""The ledger in SQL, shared by the SQLite and MySQL implementations.

``SqlLedger`` is every role at once, put together from one part per
interface of ``swarm.ledger``, each on ``core.SqlCore`` (the transaction and
the dialect):

- ``claims.ClaimSql``: claims, leases and completes (``WorkerLedger``), through
  the group commit of ``group``;
- ``runs.RunSql``: runs, phases, the plan, the master's watch and the history
  (``MasterLedger``, ``HistoryLedger``);
- ``results.ResultSql``: checks, publications and operators' decisions (``ResultLedger``);
- ``dead_letters.DeadLetterSql``: dead letters (``DeadLetterLedger``);
- ``controls.ControlSql``: what operators put in force on the fleet (``ControlLedger``);
- ``schema.SchemaSql``: the tables, their migrations, and pruning (``SchemaLedger``).

A dialect (``swarm.ledgers.sqlite``, ``swarm.ledgers.mysql``) adds the
connection, the transaction, the master's lock and its own spellings.
"""
from __future__ import annotations

from swarm.ledger import Ledger
from swarm.ledgers.claims import ClaimSql
from swarm.ledgers.controls import ControlSql
from swarm.ledgers.dead_letters import DeadLetterSql
from swarm.ledgers.results import ResultSql
from swarm.ledgers.runs import RunSql
from swarm.ledgers.schema import SCHEMA_VERSION, SchemaSql

__all__ = ["SCHEMA_VERSION", "SqlLedger"]


class SqlLedger(ClaimSql, RunSql, ResultSql, DeadLetterSql, ControlSql, SchemaSql, Ledger):
    """Every role in SQL: everything but the connection, the master's lock and the dialect."""
