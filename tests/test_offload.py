"""The offload table: blocking C calls run in real threads (issue 6, item 8).

The sqlite3 scenarios run patched in child interpreters (the pytest process
stays unpatched); ``offload()`` itself is also tested in-process on a module
made for the test.  Each scenario keeps a heartbeat green thread (10 ms
sleeps) and asserts it was never more than 100 ms late.
"""

import functools
import subprocess
import sys
import threading
import time
import types

import pytest

import greenpatch
from greenpatch.offload import TABLE, offload, offloaded, restore

from children import assert_kept_beating, heartbeat, program, run_child

pytestmark = pytest.mark.timeout(60)

PRELUDE = """
import os, sqlite3, tempfile

def new_db():
    path = os.path.join(tempfile.mkdtemp(), "db.sqlite")
    with sqlite3.connect(path) as conn:
        conn.execute("create table t (who text)")
    return path
"""

child = functools.partial(run_child, prelude=PRELUDE)


def test_the_lock_holder_commits_while_another_thread_waits_on_the_busy_timeout():
    # Under gevent and eventlet the waiter's busy handler sleeps in C for the
    # whole timeout with the holder unable to run: "database is locked", the
    # waiter's row is lost, and the heartbeat is two seconds late.
    out = child("""
        beat = Heartbeat()
        path = new_db()
        errors = []

        def holder():
            conn = sqlite3.connect(path, timeout=2)
            conn.execute("begin immediate")
            conn.execute("insert into t values ('holder')")
            time.sleep(0.3)
            conn.commit()
            conn.close()

        def waiter(i):
            time.sleep(0.05)
            conn = sqlite3.connect(path, timeout=2)
            try:
                with conn:
                    conn.execute("insert into t values (?)", (f"waiter {i}",))
            except sqlite3.OperationalError as exc:
                errors.append(str(exc))
            conn.close()

        start = time.monotonic()
        threads = [threading.Thread(target=holder)] + [threading.Thread(target=waiter, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        rows = sorted(r[0] for r in sqlite3.connect(path).execute("select who from t"))
        print(json.dumps(dict(beat.done(), rows=rows, errors=errors, elapsed=elapsed)))
    """)
    assert out["errors"] == []
    assert out["rows"] == ["holder", "waiter 0", "waiter 1", "waiter 2"]
    assert out["elapsed"] < 1.5  # the waiters got the lock when it was freed, not at the timeout
    assert_kept_beating(out, min_beats=20)


def test_a_busy_wait_that_times_out_still_raises_database_is_locked():
    out = child("""
        beat = Heartbeat()
        path = new_db()
        holder = sqlite3.connect(path)
        holder.execute("begin exclusive")
        waiter = sqlite3.connect(path, timeout=0.3)
        start = time.monotonic()
        try:
            waiter.execute("insert into t values ('x')")
            error = None
        except sqlite3.OperationalError as exc:
            error = str(exc)
        elapsed = time.monotonic() - start
        holder.rollback()
        print(json.dumps(dict(beat.done(), error=error, elapsed=elapsed)))
    """)
    assert out["error"] == "database is locked"
    assert out["elapsed"] >= 0.25
    assert_kept_beating(out, min_beats=15)


def test_results_and_errors_match_the_stdlib():
    code = """
        import sqlite3 as real
        res = {}
        conn = sqlite3.connect(":memory:")
        res["green"] = getattr(type(conn), "_gp_green", False)
        conn.execute("create table t (x)")
        conn.executemany("insert into t values (?)", [(i,) for i in range(10)])
        cur = conn.execute("select x from t order by x")
        res["cursor_green"] = getattr(type(cur), "_gp_green", False)
        res["mix"] = [cur.fetchone(), next(cur), cur.fetchmany(3), cur.fetchone(), cur.fetchall(), cur.fetchone()]
        res["iter"] = [r[0] for r in conn.execute("select x from t where x < 4")]
        res["fetchmany_default"] = conn.execute("select x from t").fetchmany()
        res["script"] = type(conn.executescript("create table u (y); insert into u values (1);")).__name__
        with conn:
            conn.execute("insert into u values (2)")
        try:
            with conn:
                conn.execute("insert into u values (3)")
                raise KeyError
        except KeyError:
            pass
        res["committed"] = conn.execute("select y from u").fetchall()
        conn.row_factory = sqlite3.Row
        res["row"] = dict(conn.execute("select 5 as five").fetchone())
        conn.row_factory = None
        for bad in ("selec 1", "select * from missing"):
            try:
                conn.execute(bad)
            except sqlite3.Error as exc:
                res.setdefault("errors", []).append([type(exc).__name__, str(exc)])

        def boom(x):
            if x == 3:
                raise ValueError("three")
            return x

        conn.create_function("boom", 1, boom)
        got = []
        try:
            for row in conn.execute("select boom(x) from t"):
                got.append(row[0])
        except sqlite3.OperationalError as exc:
            got.append(str(exc))
        res["error_mid_rows"] = got
        conn.close()
        try:
            conn.execute("select 1")
        except sqlite3.ProgrammingError as exc:
            res["closed"] = str(exc)
        print(json.dumps(res))
    """
    green = child(code)
    plain = child(code, patch=False)
    assert green.pop("green") and green.pop("cursor_green")
    assert not plain.pop("green") and not plain.pop("cursor_green")
    assert green == plain
    assert green["mix"] == [[0], [1], [[2], [3], [4]], [5], [[6], [7], [8], [9]], None]
    # the rows before the failing one, then the error (how many depends on the Python: it steps one row ahead)
    assert green["error_mid_rows"][:2] == [0, 1]
    assert green["error_mid_rows"][-1] == "user-defined function raised exception"


def test_check_same_thread_keeps_its_meaning():
    out = child("""
        strict = sqlite3.connect(":memory:")
        relaxed = sqlite3.connect(":memory:", check_same_thread=False)
        res = {}

        def other():
            try:
                strict.execute("select 1")
            except sqlite3.ProgrammingError as exc:
                res["strict"] = str(exc).split(".")[0]
            res["relaxed"] = relaxed.execute("select 2").fetchone()[0]

        t = threading.Thread(target=other)
        t.start()
        t.join()
        res["owner"] = strict.execute("select 3").fetchone()[0]
        print(json.dumps(res))
    """)
    assert out == {"strict": "SQLite objects created in a thread can only be used in that same thread",
                   "relaxed": 2, "owner": 3}


def test_factories_and_module_names():
    out = child("""
        class MyConnection(sqlite3.Connection):
            def answer(self):
                return 42

        class MyCursor(sqlite3.Cursor):
            pass

        import sqlite3.dbapi2 as dbapi2
        import greenpatch.patcher as patcher
        conn = sqlite3.connect(":memory:", factory=MyConnection)
        cur = conn.cursor(MyCursor)
        cur.execute("select 1")
        print(json.dumps({
            "mine": isinstance(conn, MyConnection) and conn.answer() == 42,
            "green": getattr(type(conn), "_gp_green", False),
            "cursor": isinstance(cur, MyCursor) and getattr(type(cur), "_gp_green", False),
            "fetched": cur.fetchone()[0],
            "dbapi2": dbapi2.connect is sqlite3.connect,
            "report": patcher.report()["patched"].get("sqlite3"),
            "original": patcher.original("sqlite3", "connect") is patcher.original("sqlite3.dbapi2", "connect"),
        }))
    """)
    assert out == {"mine": True, "green": True, "cursor": True, "fetched": 1, "dbapi2": True,
                   "report": ["connect"], "original": True}


def test_connections_opened_and_dropped_reuse_their_threads():
    out = child("""
        from greenpatch import hub
        path = new_db()
        for i in range(200):
            conn = sqlite3.connect(path)
            conn.execute("insert into t values (?)", (str(i),))
            conn.commit()
            conn.close()
        conn = sqlite3.connect(path)
        print(json.dumps({"threads": hub.own_threads, "rows": conn.execute("select count(*) from t").fetchone()[0]}))
    """)
    assert out["rows"] == 200
    assert out["threads"] <= 4  # a thread per live connection (and the shared pool's), not one per connection made


def test_sqlite3_imported_after_the_patch_is_patched_on_import():
    out = child("""
        import greenpatch.patcher as patcher
        before = "sqlite3" in sys.modules
        waiting = patcher.report()["patched_on_import"]
        import sqlite3
        print(json.dumps({"before": before, "waiting": waiting,
                          "green": getattr(type(sqlite3.connect(":memory:")), "_gp_green", False)}))
    """, prelude="")
    assert out["before"] is False
    assert "sqlite3" in out["waiting"]
    assert out["green"] is True


FLOCK_SCRIPT = """
    import fcntl
    {offload}
    beat = Heartbeat()
    path = os.path.join(tempfile.mkdtemp(), "lock")
    open(path, "w").close()
    order = []

    def worker(name, hold):
        with open(path) as f:
            fcntl.flock(f, fcntl.LOCK_EX)   # a second open file in this process waits for the first
            order.append(name + " locked")
            time.sleep(hold)
            order.append(name + " unlocks")
            fcntl.flock(f, fcntl.LOCK_UN)

    threads = [threading.Thread(target=worker, args=("a", 0.3))]
    threads[0].start()
    time.sleep(0.05)
    threads.append(threading.Thread(target=worker, args=("b", 0)))
    threads[1].start()
    for t in threads:
        t.join()
    print(json.dumps(dict(beat.done(), order=order)))
"""


def test_user_offload_of_a_blocking_c_function_flock():
    # Without the entry, b's flock blocks the OS thread while a, which holds
    # the lock, can never run to release it: the program hangs.
    out = child(FLOCK_SCRIPT.format(offload="greenpatch.offload('fcntl.flock')"))
    assert out["order"] == ["a locked", "a unlocks", "b locked", "b unlocks"]
    assert_kept_beating(out, min_beats=20)


def test_without_the_entry_the_flock_program_hangs():
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", program(FLOCK_SCRIPT.format(offload=""), prelude=PRELUDE)],
                       capture_output=True, timeout=3)


# -- offload() itself, in-process -------------------------------------------------


@pytest.fixture
def blocky(monkeypatch):
    """A module with a blocking function and a class, made for the test."""
    module = types.ModuleType("blocky_for_test")
    real_sleep = time.sleep  # the pytest process is unpatched: this blocks the OS thread

    def block(seconds):
        real_sleep(seconds)
        return threading.get_ident()

    class Client:
        def __init__(self):
            self.log = []

        def query(self, seconds, tag):
            self.log.append(("start", tag))
            real_sleep(seconds)
            self.log.append(("end", tag))
            return tag

        def outer(self):
            return self.query(0, "inner")

    module.block = block
    module.Client = Client
    monkeypatch.setitem(sys.modules, "blocky_for_test", module)
    yield module
    for target in offloaded():
        if target.startswith("blocky_for_test."):
            restore(target)


def test_offload_a_function_runs_it_in_a_real_thread(blocky):
    original = blocky.block
    offload("blocky_for_test.block")
    offload("blocky_for_test.block")  # twice: no double wrapping
    assert offloaded().count("blocky_for_test.block") == 1
    assert blocky.block.__wrapped__ is original
    lateness, stop = [], []
    beat = greenpatch.spawn(heartbeat, lateness, stop)
    threads = [greenpatch.spawn(blocky.block, 0.3) for _ in range(4)]
    start = time.monotonic()
    idents = {t.wait() for t in threads}
    elapsed = time.monotonic() - start
    stop.append(True)
    beat.wait()
    assert threading.get_ident() not in idents
    assert elapsed < 1.0  # the four calls overlapped in the shared pool
    assert len(lateness) >= 20 and max(lateness) < 0.100
    restore("blocky_for_test.block")
    assert blocky.block is original


def test_serialized_methods_take_turns_per_object_and_overlap_across_objects(blocky):
    offload("blocky_for_test.Client.query", serialize=True)
    one, two = blocky.Client(), blocky.Client()
    calls = [greenpatch.spawn(one.query, 0.1, i) for i in range(3)] + [greenpatch.spawn(two.query, 0.1, "x")]
    start = time.monotonic()
    assert [c.wait() for c in calls] == [0, 1, 2, "x"]
    elapsed = time.monotonic() - start
    assert one.log == [("start", 0), ("end", 0), ("start", 1), ("end", 1), ("start", 2), ("end", 2)]
    assert two.log == [("start", "x"), ("end", "x")]
    assert elapsed >= 0.3
    # a call made by an offloaded call runs at once in the same worker (no deadlock on the object's thread)
    offload("blocky_for_test.Client.outer", serialize=True)
    assert one.outer() == "inner"


def test_exceptions_come_back_with_their_traceback(blocky):
    offload("blocky_for_test.block")
    with pytest.raises(TypeError) as info:
        blocky.block("not a number")
    assert "block" in {entry.name for entry in info.traceback}


def test_c_type_methods_cannot_be_offloaded_in_place():
    with pytest.raises(TypeError, match="C type"):
        offload("sqlite3.Connection.execute")
    with pytest.raises(ValueError):
        offload("sqlite3")
    with pytest.raises(ModuleNotFoundError):
        offload("no_such_module_anywhere.func")
    with pytest.raises(AttributeError):
        offload("sqlite3.no_such_function")


def test_the_table_lists_the_sqlite_calls():
    targets = {entry.target: entry.serialize for entry in TABLE}
    assert targets["sqlite3.connect"] is False
    for name in ("execute", "executemany", "executescript", "commit", "rollback", "close", "__exit__"):
        assert targets[f"sqlite3.Connection.{name}"] is True
    for name in ("execute", "fetchone", "fetchmany", "fetchall", "__next__"):
        assert targets[f"sqlite3.Cursor.{name}"] == "connection"
