"""asyncio inside green threads: every green thread runs its own event loop (issue 6, item 12).

Patching is process-wide, so each test runs its program in a child
interpreter; the program prints one JSON line that the test checks.  Each
program also runs a heartbeat green thread (10 ms sleeps) to prove the hub
kept running the other green threads.
"""

import functools

import pytest

from children import HEARTBEAT, assert_kept_beating, run_child

pytestmark = pytest.mark.timeout(60)

run = functools.partial(run_child, timeout=50)


def test_asyncio_is_patched_when_first_imported_not_by_monkey_patch():
    result = run("""
        import greenpatch.patcher as patcher
        before = "asyncio" in sys.modules
        import asyncio, selectors
        from greenpatch.green import asyncio as green_asyncio
        loop = asyncio.new_event_loop()
        print(json.dumps({
            "imported_by_patch": before,
            "patched": patcher.is_patched("asyncio"),
            "get_running_loop": asyncio.get_running_loop is green_asyncio.get_running_loop,
            "events": asyncio.events._set_running_loop is green_asyncio._set_running_loop,
            "green_selector": type(loop._selector).__module__,
        }))
        loop.close()
    """)
    assert result == {"imported_by_patch": False, "patched": True, "get_running_loop": True,
                      "events": True, "green_selector": "greenpatch.green.selectors"}


def test_ten_green_threads_each_run_asyncio_run_at_once():
    result = run("""
        import asyncio
        running = [0]
        peak = [0]

        async def work(n):
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            total = 0
            for step in range(5):
                await asyncio.sleep(0.01 * (1 + n % 3))
                total += step
            tasks = [asyncio.create_task(asyncio.sleep(0.01, result=k)) for k in range(3)]
            total += sum(await asyncio.gather(*tasks))
            assert asyncio.get_running_loop() is loops[n]
            running[0] -= 1
            return n * 100 + total

        async def main(n):
            loops[n] = asyncio.get_running_loop()
            return await work(n)

        loops, results = {}, {}
        beat = Heartbeat()
        threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, asyncio.run(main(n))))
                   for n in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(json.dumps({"results": [results[n] for n in range(10)], "peak": peak[0],
                          "distinct_loops": len({id(loop) for loop in loops.values()}),
                          "beat": beat.done()}))
    """)
    assert result["results"] == [n * 100 + 13 for n in range(10)]
    assert result["peak"] == 10  # all ten loops were running at the same time
    assert result["distinct_loops"] == 10
    assert_kept_beating(result["beat"])


def test_loops_built_with_new_event_loop_in_threads_and_c_level_state():
    # Future() and Task without loop=, current_task() and the async-generator
    # hooks are read from the OS thread's state by C code; each loop must see its own.
    result = run("""
        import asyncio

        async def ticker(n):
            for k in range(3):
                await asyncio.sleep(0.005)
                yield n * 10 + k

        async def work(n):
            loop = asyncio.get_running_loop()
            future = asyncio.Future()
            loop.call_later(0.01, future.set_result, n)
            got = await future
            same_loop = future.get_loop() is loop
            task = asyncio.current_task()
            ticks = [tick async for tick in ticker(n)]
            agen = ticker(n)
            await agen.__anext__()            # first iteration registers it with this loop only
            mine = agen in loop._asyncgens and all(
                agen not in other._asyncgens for other in loops.values() if other is not loop)
            await agen.aclose()
            return [got, same_loop, task is not None and task.get_loop() is loop, ticks, mine]

        loops, results = {}, {}

        def thread_main(n):
            loop = loops[n] = asyncio.new_event_loop()
            try:
                results[n] = loop.run_until_complete(work(n))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

        beat = Heartbeat()
        threads = [threading.Thread(target=thread_main, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(json.dumps({"results": [results[n] for n in range(6)], "beat": beat.done(),
                          "hooks_after": list(sys.get_asyncgen_hooks()) == [None, None]}))
    """)
    assert result["results"] == [[n, True, True, [n * 10, n * 10 + 1, n * 10 + 2], True] for n in range(6)]
    assert result["hooks_after"]
    assert_kept_beating(result["beat"])


def test_coroutine_calling_a_green_blocking_function_lets_other_loops_run():
    # time.sleep() and a socket recv() inside a coroutine park the whole loop's
    # green thread; another green thread starts and runs its own loop meanwhile.
    result = run("""
        import asyncio, socket
        order = []
        a, b = socket.socketpair()

        async def blocking_one():
            order.append("blocking: start")
            time.sleep(0.1)                 # green, but blocks this loop
            order.append("blocking: slept")
            data = a.recv(10)               # green, blocks this loop until the other loop sends
            order.append("blocking: got " + data.decode())
            return asyncio.get_running_loop() is loops["blocking"]

        async def other_one():
            order.append("other: start")
            await asyncio.sleep(0.02)
            b.sendall(b"ping")
            order.append("other: sent")
            return asyncio.get_running_loop() is loops["other"]

        loops, results = {}, {}

        def thread_main(name, coro_fn):
            async def main():
                loops[name] = asyncio.get_running_loop()
                return await coro_fn()
            results[name] = asyncio.run(main())

        beat = Heartbeat()
        first = threading.Thread(target=thread_main, args=("blocking", blocking_one))
        first.start()
        time.sleep(0.03)                    # the first loop is now inside time.sleep()
        second = threading.Thread(target=thread_main, args=("other", other_one))
        second.start()
        first.join()
        second.join()
        print(json.dumps({"order": order, "results": results, "beat": beat.done()}))
    """)
    assert result["results"] == {"blocking": True, "other": True}
    assert result["order"] == ["blocking: start", "other: start", "other: sent",
                               "blocking: slept", "blocking: got ping"]
    assert_kept_beating(result["beat"])


def test_call_soon_threadsafe_from_another_green_thread_wakes_the_loop():
    result = run("""
        import asyncio
        ready = threading.Event()
        box = {}

        async def main():
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            box["loop"], box["future"] = loop, future
            ready.set()
            return await future             # the loop's green thread waits in its selector

        def setter():
            ready.wait()
            time.sleep(0.05)
            box["loop"].call_soon_threadsafe(box["future"].set_result, "from another thread")

        beat = Heartbeat()
        helper = threading.Thread(target=setter)
        helper.start()
        value = asyncio.run(main())
        helper.join()
        print(json.dumps({"value": value, "beat": beat.done()}))
    """)
    assert result["value"] == "from another thread"
    assert_kept_beating(result["beat"])


def test_run_in_executor_and_to_thread_use_green_threads():
    result = run("""
        import asyncio, os

        def os_threads():
            return len(os.listdir("/proc/self/task"))

        def blocking(n):
            time.sleep(0.05)
            return n * 2, threading.current_thread() is not threading.main_thread()

        async def main():
            loop = asyncio.get_running_loop()
            before = os_threads()
            done = await asyncio.gather(*(loop.run_in_executor(None, blocking, n) for n in range(8)))
            more = await asyncio.gather(*(asyncio.to_thread(blocking, n) for n in range(8, 12)))
            return [list(item) for item in done + more], os_threads() - before

        beat = Heartbeat()
        results = {}
        threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, asyncio.run(main())))
                   for k in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(json.dumps({"results": [results[0], results[1]], "beat": beat.done()}))
    """)
    for values, new_os_threads in result["results"]:
        assert values == [[n * 2, True] for n in range(12)]
        assert new_os_threads == 0
    assert_kept_beating(result["beat"])


def test_asyncio_streams_in_two_loops_at_once():
    result = run("""
        import asyncio

        async def handle(reader, writer):
            while line := await reader.readline():
                writer.write(line.upper())
                await writer.drain()
            writer.close()

        def server_thread(started, stop):
            async def main():
                server = await asyncio.start_server(handle, "127.0.0.1", 0)
                started["port"] = server.sockets[0].getsockname()[1]
                started["event"].set()
                async with server:
                    while not stop:
                        await asyncio.sleep(0.01)
            asyncio.run(main())

        async def client(n, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            got = []
            for k in range(5):
                writer.write(f"loop {n} line {k}\\n".encode())
                await writer.drain()
                got.append((await reader.readline()).decode().strip())
                await asyncio.sleep(0.005)
            writer.close()
            await writer.wait_closed()
            return got

        started = {"event": threading.Event()}
        stop = []
        beat = Heartbeat()
        server = threading.Thread(target=server_thread, args=(started, stop))
        server.start()
        started["event"].wait()
        results = {}
        clients = [threading.Thread(target=lambda n=n: results.__setitem__(n, asyncio.run(client(n, started["port"]))))
                   for n in range(2)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        stop.append(True)
        server.join()
        print(json.dumps({"results": [results[0], results[1]], "beat": beat.done()}))
    """)
    for n in range(2):
        assert result["results"][n] == [f"LOOP {n} LINE {k}" for k in range(5)]
    assert_kept_beating(result["beat"])


def test_asyncio_imported_before_the_patch_works_too():
    result = run("""
        import asyncio, selectors
        import greenpatch
        greenpatch.monkey_patch()
        exec(PRELUDE_TEXT)

        async def main(n):
            await asyncio.sleep(0.02)
            await asyncio.sleep(0.02)
            return n, type(asyncio.get_running_loop()._selector).__module__

        beat = Heartbeat()
        results = {}
        threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, asyncio.run(main(n))))
                   for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        policy_local = type(asyncio.get_event_loop_policy()._local).__mro__[1].__module__
        print(json.dumps({"results": [list(results[n]) for n in range(4)], "policy_local": policy_local,
                          "beat": beat.done()}))
    """.replace("PRELUDE_TEXT", repr(HEARTBEAT)), patch=False)
    assert result["results"] == [[n, "greenpatch.green.selectors"] for n in range(4)]
    assert result["policy_local"] == "greenpatch.green._thread"
    assert_kept_beating(result["beat"])


def test_each_green_thread_has_its_own_current_event_loop():
    # set_event_loop/get_event_loop outside a running loop are per thread, so per green thread.
    result = run("""
        import asyncio, warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        seen = {}

        def thread_main(n):
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            time.sleep(0.02)                # the others set theirs meanwhile
            seen[n] = asyncio.get_event_loop() is loop
            asyncio.set_event_loop(None)
            loop.close()

        threads = [threading.Thread(target=thread_main, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(json.dumps([seen[n] for n in range(4)]))
    """)
    assert result == [True] * 4


def test_a_second_loop_in_the_same_green_thread_is_still_refused():
    result = run("""
        import asyncio

        async def main():
            inner = asyncio.sleep(0)
            try:
                asyncio.run(inner)
            except RuntimeError as exc:
                inner.close()
                return str(exc)

        print(json.dumps(asyncio.run(main())))
    """)
    assert result == "asyncio.run() cannot be called from a running event loop"


def test_a_child_forked_inside_a_running_loop_starts_without_one():
    result = run("""
        import asyncio, os, warnings
        warnings.simplefilter("ignore", DeprecationWarning)

        async def inner():
            await asyncio.sleep(0.01)
            return "child loop"

        async def main():
            await asyncio.sleep(0.01)
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    box = {}
                    thread = threading.Thread(target=lambda: box.setdefault("ran", asyncio.run(inner())))
                    thread.start()
                    thread.join()
                    report = {"running": asyncio._get_running_loop() is None, "thread": box.get("ran")}
                    os.write(write_end, json.dumps(report).encode())
                finally:
                    os._exit(0)
            os.close(write_end)
            os.waitpid(pid, 0)
            report = json.loads(os.read(read_end, 1000))
            os.close(read_end)
            report["parent_loop_kept"] = asyncio.get_running_loop() is not None
            return report

        print(json.dumps(asyncio.run(main())))
    """)
    assert result == {"running": True, "thread": "child loop", "parent_loop_kept": True}
