"""Green subprocess under the global patch (run in child interpreters; the pytest process stays unpatched)."""

import functools

import pytest

from children import assert_kept_beating, run_child

child = functools.partial(run_child, prelude="import subprocess\n")


def test_green_popen_is_a_subclass_and_is_what_run_uses():
    out = child("""
        from greenpatch.green import subprocess as green
        import greenpatch.patcher as patcher
        print(json.dumps({"popen": subprocess.Popen is green.Popen,
                          "sub": issubclass(subprocess.Popen, patcher.original("subprocess", "Popen")),
                          "holders": patcher.report()["originals_still_referenced"]}))
    """)
    assert out == {"popen": True, "sub": True, "holders": {}}


@pytest.mark.parametrize("call", [
    "subprocess.run(['sleep', '0.5'])",
    "subprocess.call(['sleep', '0.5'])",
    "subprocess.check_output(['sh', '-c', 'sleep 0.5; echo hi'])",
    "subprocess.run(['sh', '-c', 'sleep 0.5; echo hi'], capture_output=True)",
    "subprocess.run(['sh', '-c', 'sleep 0.5; cat'], input=b'x' * 300000, stdout=subprocess.PIPE)",
    "subprocess.Popen(['sh', '-c', 'sleep 0.5; cat'], stdin=subprocess.PIPE,"
    " stdout=subprocess.DEVNULL).communicate(b'x' * 300000)",
    "subprocess.Popen(['sleep', '0.5']).wait()",
    "subprocess.Popen(['sleep', '0.5']).wait(timeout=5)",
    "subprocess.Popen(['sh', '-c', 'sleep 0.5; echo hi'], stdout=subprocess.PIPE).communicate(timeout=5)",
])
def test_waits_keep_a_heartbeat_on_time(call):
    out = child(f"""
        beat = Heartbeat()
        start = time.monotonic()
        result = {call}
        elapsed = time.monotonic() - start
        print(json.dumps(dict(beat.done(), elapsed=elapsed)))
    """)
    print(call, out)
    assert out["elapsed"] >= 0.4
    assert_kept_beating(out, min_beats=10, max_late=0.150)


def test_results_and_errors_match_the_stdlib():
    out = child("""
        res = {}
        res["out"] = subprocess.check_output(["sh", "-c", "echo out; echo err >&2"], stderr=subprocess.STDOUT).decode()
        res["rc"] = subprocess.call(["sh", "-c", "exit 3"])
        try:
            subprocess.check_call(["false"])
        except subprocess.CalledProcessError as exc:
            res["called"] = exc.returncode
        try:
            subprocess.run(["sleep", "5"], timeout=0.2)
        except subprocess.TimeoutExpired as exc:
            res["timeout"] = exc.timeout
        proc = subprocess.Popen(["sleep", "5"])
        try:
            proc.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            res["wait_timeout"] = True
        proc.kill()
        res["killed"] = proc.wait()
        res["echo"] = subprocess.run(["cat"], input=b"abc", capture_output=True).stdout.decode()
        print(json.dumps(res))
    """)
    assert 0.1 < out.pop("timeout") <= 0.2  # CPython reports the time left of the 0.2 s
    assert out == {"out": "out\nerr\n", "rc": 3, "called": 1,
                   "wait_timeout": True, "killed": -9, "echo": "abc"}


def test_ten_concurrent_runs_overlap():
    out = child("""
        beat = Heartbeat()
        start = time.monotonic()
        threads = [threading.Thread(target=subprocess.run, args=(["sleep", "0.3"],)) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(json.dumps(dict(beat.done(), elapsed=time.monotonic() - start)))
    """)
    print(out)
    assert 0.3 <= out["elapsed"] < 3
    assert out["late"] < 0.150


def test_signals_while_another_green_thread_waits_race_as_in_cpython():
    # One green thread waits in wait(); others terminate, signal and kill the same child, before
    # and after it is reaped.  CPython's rules: the waiter gets -SIGTERM, signalling a reaped
    # child does nothing (no ProcessLookupError, no signal to a reused pid), poll() agrees.
    out = child("""
        import signal
        beat = Heartbeat()
        proc = subprocess.Popen(["sleep", "5"])
        codes = []
        waiter = threading.Thread(target=lambda: codes.append(proc.wait()))
        waiter.start()
        time.sleep(0.1)
        assert proc.poll() is None
        proc.terminate()
        waiter.join()
        after = []
        for act in (proc.terminate, proc.kill, lambda: proc.send_signal(signal.SIGUSR1)):
            act()
            after.append(proc.returncode)
        # Two waiters on one child that is killed: both see the same status.
        proc2 = subprocess.Popen(["sleep", "5"])
        both = []
        waiters = [threading.Thread(target=lambda: both.append(proc2.wait())) for _ in range(2)]
        for t in waiters:
            t.start()
        time.sleep(0.05)
        proc2.kill()
        for t in waiters:
            t.join()
        print(json.dumps(dict(beat.done(), codes=codes, after=after, poll=proc.poll(), both=both)))
    """)
    assert out["codes"] == [-15]
    assert out["after"] == [-15, -15, -15] and out["poll"] == -15
    assert out["both"] == [-9, -9]
    assert out["late"] < 0.150
