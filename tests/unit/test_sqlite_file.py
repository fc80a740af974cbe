"""One SQLite file opened by many at the same moment: a master and its workers starting together."""
import multiprocessing

from swarm.sqlite_file import SqliteFile
from swarm.tables.embedded import EmbeddedTables

SCHEMA = ["CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v TEXT)"]


def _open_and_write(path: str, start, n: int, out) -> None:
    start.wait()
    try:
        f = SqliteFile(path, "test file", SCHEMA)
        with f.transaction() as cur:
            cur.execute("INSERT INTO t VALUES (?, ?)", (str(n), "x"))
        f.close()
        out.put(None)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        out.put(repr(exc))


def test_processes_opening_a_new_file_at_once_all_open_it(tmp_path):
    path = str(tmp_path / "shared.db")
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_open_and_write, args=(path, start, n, out)) for n in range(8)]
    for p in procs:
        p.start()
    start.set()
    errors = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    assert errors == [None] * 8
    f = SqliteFile(path, "test file", SCHEMA)
    with f.transaction() as cur:
        cur.execute("SELECT COUNT(*) FROM t")
        assert cur.fetchone()[0] == 8
    assert str(f._conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"


def test_an_embedded_table_store_opens_beside_another_process_holding_it(tmp_path):
    url = tmp_path / "tables.db"
    first = EmbeddedTables(str(url))
    first.create_table("t", ["f"])
    second = EmbeddedTables(str(url))
    assert "t" in second.tables()
    first.close()
    second.close()
