#!/usr/bin/env python3
"""greenpatch side by side with gevent, eventlet, plain threads and a C epoll server.

    python benchmarks/run.py [--systems greenpatch,gevent,eventlet,threads,c-epoll]
                             [--cases lat1,echo100,...] [--quick] [--repeats N]
    python benchmarks/run.py --profile greenpatch --cases echo100

The same unmodified stdlib servers (benchmarks/servers/) run under each system,
pinned to CPU 0; the C load generator (or wrk) runs on CPU 1.  Runs are
interleaved (A B C A B C ...), each run gets a fresh server process, and the
table shows medians with ratios against gevent from the same run.  Results go
to benchmarks/results/latest.{md,json,png}.  See benchmarks/README.md.

Every process this script starts is killed by PID when its case ends, on
errors and on Ctrl-C too; a server that fails is reported as "failed" with
the tail of its stderr, and the run goes on.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / "build"
SERVERS = HERE / "servers"
RESULTS = HERE / "results"
HOST = "127.0.0.1"
SERVER_CPU, CLIENT_CPU = "0", "1"

SYSTEMS = ("greenpatch", "gevent", "eventlet", "threads", "c-epoll")
BASELINE = "gevent"

# Runs the server after greenpatch.monkey_patch(), until `python -m greenpatch` exists.
GREENPATCH_WRAPPER = (
    "import runpy, sys, greenpatch\n"
    "patch = getattr(greenpatch, 'monkey_patch', None)\n"
    "if patch is None:\n"
    "    from greenpatch.patcher import monkey_patch as patch\n"
    "patch()\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)

# Profiling fallback when py-spy is unavailable: cProfile around the server, dumped on SIGTERM.
CPROFILE_WRAPPER = (
    "import cProfile, runpy, signal, sys\n"
    "out = sys.argv[1]; system = sys.argv[2]; sys.argv = sys.argv[3:]\n"
    "if system == 'greenpatch':\n"
    "    import greenpatch\n"
    "    (getattr(greenpatch, 'monkey_patch', None) or __import__('greenpatch.patcher').patcher.monkey_patch)()\n"
    "elif system == 'gevent':\n"
    "    from gevent import monkey; monkey.patch_all()\n"
    "elif system == 'eventlet':\n"
    "    import eventlet; eventlet.monkey_patch()\n"
    "def stop(*args):\n"
    "    raise SystemExit(0)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "prof = cProfile.Profile()\n"
    "prof.enable()\n"
    "try:\n"
    "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "finally:\n"
    "    prof.disable(); prof.dump_stats(out)\n"
)


# -- cases ----------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    name: str
    title: str
    kind: str                 # echo | churn | idle | http | micro
    server: str = "echo_threads"
    conns: int = 1
    size: int = 64
    parallel: int = 1


CASES = (
    Case("lat1", "1 conn x 64 B (latency)", "echo", conns=1, size=64),
    Case("echo100", "100 conns x 64 B (throughput)", "echo", conns=100, size=64),
    Case("echo1000", "1,000 conns x 64 B (scale)", "echo", conns=1000, size=64),
    Case("bw100", "100 conns x 16 KiB (bandwidth)", "echo", conns=100, size=16384),
    Case("churn50", "50-way connection churn", "churn", parallel=50, size=64),
    Case("idle10k", "10,000 idle connections (memory)", "idle", conns=10000, size=1),
    Case("ss100", "socketserver.ThreadingTCPServer, 100 conns x 64 B", "echo",
         server="echo_socketserver", conns=100, size=64),
    Case("http100", "http.server.ThreadingHTTPServer, wrk -c100 keep-alive", "http",
         server="http_server", conns=100),
    Case("micro", "microbenchmarks", "micro"),
)
CASE_BY_NAME = {case.name: case for case in CASES}

MICRO_BENCHES = (
    ("spawn_join", "spawn+join (us/thread)"),
    ("sleep0", "time.sleep(0) switch (us)"),
    ("event", "Event ping-pong (us/round trip)"),
    ("queue", "Queue ping-pong (us/round trip)"),
    ("socketpair", "socketpair 1-byte ping-pong (us/round trip)"),
    ("sleepers", "sleepers 0-1 s: mean lateness (us)"),
    ("timers", "pending timers, start+cancel (us/timer)"),
)
MICRO_APIS = ("patched", "native")

# metric key, label, direction (+1 higher is better, -1 lower is better, 0 informational)
ROWS = {
    "lat1": [("p50_us", "p50 latency us", -1), ("p99_us", "p99 latency us", -1),
             ("rate", "round trips/s", +1), ("server_cpu_us", "server CPU us/round trip", -1),
             ("client_cpu_pct", "loadgen CPU %", 0)],
    "echo": [("rate", "round trips/s", +1), ("server_cpu_us", "server CPU us/round trip", -1),
             ("p50_us", "p50 latency us", -1), ("p99_us", "p99 latency us", -1),
             ("client_cpu_pct", "loadgen CPU %", 0)],
    "bw100": [("mbytes_per_s", "MB/s (both directions)", +1), ("server_cpu_us", "server CPU us/round trip", -1),
              ("p99_us", "p99 latency us", -1), ("client_cpu_pct", "loadgen CPU %", 0)],
    "churn": [("rate", "connections/s", +1), ("server_cpu_us", "server CPU us/connection", -1),
              ("p99_us", "p99 connect..close us", -1), ("client_cpu_pct", "loadgen CPU %", 0)],
    "idle": [("rss_per_conn_kib", "server RSS KiB/connection", -1), ("rss_before_kb", "baseline RSS KiB", 0)],
    "http": [("rate", "requests/s", +1), ("server_cpu_us", "server CPU us/request", -1),
             ("p50_us", "p50 latency us", -1), ("p99_us", "p99 latency us", -1),
             ("client_cpu_pct", "wrk CPU %", 0)],
}


def rows_for(case: Case):
    return ROWS.get(case.name) or ROWS[case.kind]


@dataclass
class Params:
    repeats: int
    warmup: float
    duration: float
    settle: float
    wrk_seconds: int
    quick: bool


def params_for(args) -> Params:
    if args.quick:
        p = Params(repeats=1, warmup=0.5, duration=2.0, settle=1.0, wrk_seconds=2, quick=True)
    else:
        p = Params(repeats=3, warmup=1.0, duration=5.0, settle=2.0, wrk_seconds=5, quick=False)
    if args.repeats:
        p.repeats = args.repeats
    return p


class BenchError(Exception):
    """A run that failed; the message goes into the table's failure notes."""


# -- processes --------------------------------------------------------------------

_live: dict[int, subprocess.Popen] = {}   # every process started here and not yet reaped


def _kill_all_live() -> None:
    for proc in list(_live.values()):
        _stop(proc)


atexit.register(_kill_all_live)


def _stop(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """Ends one process we started, by its PID: SIGTERM, then SIGKILL after ``grace``."""
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        except ProcessLookupError:
            pass
    _live.pop(proc.pid, None)


def pin(cpu: str) -> list[str]:
    if os.cpu_count() and os.cpu_count() >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", cpu]
    return []


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_bounded(cmd: list, timeout: float) -> subprocess.CompletedProcess:
    """subprocess.run with a hard timeout; the child is killed by PID when it overstays."""
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, preexec_fn=_raise_nofile)
    _live[proc.pid] = proc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        name = next(Path(str(c)).name for c in cmd if str(c) not in ("taskset", "-c") and not str(c).isdigit())
        raise BenchError(f"{name} timed out after {timeout:.0f} s; stderr: {err.strip()[-400:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _live.pop(proc.pid, None)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class Server:
    """One server process: started, watched for READY, stopped by PID."""

    def __init__(self, cmd: list, logdir: Path, tag: str) -> None:
        self.cmd = [str(c) for c in cmd]
        self.out_path = logdir / f"{tag}.out"
        self.err_path = logdir / f"{tag}.err"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> int:
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(pin(SERVER_CPU) + self.cmd, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, preexec_fn=_raise_nofile,
                                         start_new_session=True)
        _live[self.proc.pid] = self.proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(rb"READY (\d+)", self.out_path.read_bytes())
            if match:
                self.port = int(match.group(1))
                return self.port
            if self.proc.poll() is not None:
                raise BenchError(f"server exited with status {self.proc.returncode} before READY")
            time.sleep(0.02)
        raise BenchError(f"server printed no READY line within {timeout:.0f} s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def stderr_tail(self, lines: int = 12) -> str:
        try:
            text = self.err_path.read_text(errors="replace")
        except OSError:
            return ""
        text = "\n".join(line for line in text.splitlines() if "EventletDeprecationWarning" not in line)
        return "\n".join(text.strip().splitlines()[-lines:])


def server_cmd(system: str, script: str, python: str) -> list | None:
    """How ``system`` runs ``servers/<script>.py``; None when it has no such server."""
    path = SERVERS / f"{script}.py"
    args = ["--host", HOST, "--port", "0"]
    if system == "c-epoll":
        return [BUILD / "c_echo", *args] if script == "echo_threads" else None
    if system == "threads":
        return [python, path, *args]
    if system == "gevent":
        return [python, "-m", "gevent.monkey", path, *args]
    if system == "eventlet":
        return [python, SERVERS / "eventlet_run.py", path, *args]
    if system == "greenpatch":
        if (ROOT / "greenpatch" / "__main__.py").exists():
            return [python, "-m", "greenpatch", path, *args]
        return [python, "-c", GREENPATCH_WRAPPER, path, *args]
    raise ValueError(f"unknown system {system}")


def build_c() -> None:
    """Compiles loadgen.c and c_echo.c with the system cc (-O2) when missing or stale."""
    BUILD.mkdir(exist_ok=True)
    cc = os.environ.get("CC", "cc")
    for name in ("loadgen", "c_echo"):
        src, exe = HERE / f"{name}.c", BUILD / name
        if exe.exists() and exe.stat().st_mtime >= src.stat().st_mtime:
            continue
        print(f"building {exe.relative_to(ROOT)} with {cc} -O2", flush=True)
        subprocess.run([cc, "-O2", "-Wall", "-o", str(exe), str(src)], check=True)


# -- one measurement ------------------------------------------------------------------

def proc_ticks(pid: int) -> int:
    """utime+stime of a whole process in clock ticks, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def run_loadgen(case: Case, server: Server, p: Params) -> dict:
    mode = {"echo": "pingpong", "churn": "churn", "idle": "idle"}[case.kind]
    setup_timeout = 120.0 if case.kind == "idle" else 30.0
    cmd = pin(CLIENT_CPU) + [
        BUILD / "loadgen", "--host", HOST, "--port", server.port, "--server-pid", server.pid,
        "--mode", mode, "--conns", case.conns, "--size", case.size, "--parallel", case.parallel,
        "--warmup", p.warmup, "--duration", p.duration, "--settle", p.settle, "--timeout", setup_timeout]
    result = run_bounded(cmd, timeout=p.warmup + p.duration + p.settle + setup_timeout + 45)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("{")), None)
    if line is None:
        raise BenchError(f"loadgen exited {result.returncode} without a result: {result.stderr.strip()[-400:]}")
    raw = json.loads(line)
    if case.kind == "idle":
        if raw["errors"]:
            raise BenchError(f"{raw['errors']} of {case.conns} idle connections failed")
        metrics = {
            "rss_before_kb": raw["rss_before_kb"], "rss_after_kb": raw["rss_after_kb"],
            "rss_per_conn_kib": (raw["rss_after_kb"] - raw["rss_before_kb"]) / case.conns,
            "setup_p99_us": raw["p99_us"],
        }
    else:
        if raw["round_trips"] == 0:
            raise BenchError(f"no round trip completed in the measured window ({raw['errors']} errors); "
                             f"loadgen: {result.stderr.strip()[-300:]}")
        metrics = {key: raw[key] for key in ("rate", "mbytes_per_s", "p50_us", "p90_us", "p99_us", "max_us",
                                             "client_cpu_pct", "errors")}
        metrics["server_cpu_us"] = raw["server_cpu_us_per_rt"]
        metrics["server_rss_kb"] = raw["rss_after_kb"]
    metrics["raw"] = raw
    return metrics


_WRK_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def _wrk_latency(text: str, pct: str) -> float | None:
    match = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(match.group(1)) * _WRK_UNITS[match.group(2)] if match else None


def run_wrk(case: Case, server: Server, p: Params) -> dict:
    if not shutil.which("wrk"):
        raise BenchError("wrk is not installed (apt-get install -y wrk)")
    url = f"http://{HOST}:{server.port}/"
    run_bounded(pin(CLIENT_CPU) + ["wrk", "-t1", f"-c{case.conns}", "-d1s", url], timeout=30)  # warm-up
    ticks0, ru0 = proc_ticks(server.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    result = run_bounded(pin(CLIENT_CPU) + ["wrk", "-t1", f"-c{case.conns}", f"-d{p.wrk_seconds}s", "--latency", url],
                         timeout=p.wrk_seconds + 30)
    wall = time.monotonic() - t0
    ticks1, ru1 = proc_ticks(server.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
    text = result.stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", text)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if result.returncode != 0 or not total or not rate:
        raise BenchError(f"wrk failed ({result.returncode}): {(result.stderr or text).strip()[-400:]}")
    requests = int(total.group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "rate": float(rate.group(1)),
        "p50_us": _wrk_latency(text, "50"), "p99_us": _wrk_latency(text, "99"),
        "server_cpu_us": (ticks1 - ticks0) / os.sysconf("SC_CLK_TCK") * 1e6 / max(requests, 1),
        "client_cpu_pct": 100.0 * client_cpu / wall,
        "errors": (sum(int(g) for g in errors.groups()) if errors else 0) + (int(non2xx.group(1)) if non2xx else 0),
        "raw": {"wrk_stdout": text},
    }


def run_server_case(case: Case, system: str, p: Params, python: str, logdir: Path, tag: str) -> dict:
    cmd = server_cmd(system, case.server, python)
    if cmd is None:
        return {"status": "n/a", "reason": f"{system} has no {case.server} server"}
    server = Server(cmd, logdir, tag)
    try:
        server.start()
        metrics = run_wrk(case, server, p) if case.kind == "http" else run_loadgen(case, server, p)
        if not server.alive():
            raise BenchError(f"server died during the run (status {server.proc.returncode})")
        return {"status": "ok", "metrics": metrics}
    except BenchError as exc:
        tail = server.stderr_tail()
        missing = re.search(r"No module named '(greenpatch\.[\w.]+)'", tail)
        if missing and system == "greenpatch":
            return {"status": "n/a", "reason": f"{missing.group(1)} is not written yet ({exc})"}
        return {"status": "failed", "error": str(exc), "stderr_tail": tail}
    except (OSError, ValueError, KeyError) as exc:  # e.g. /proc/PID gone because the server died
        alive = "" if server.alive() else " (the server had died)"
        return {"status": "failed", "error": f"{exc!r}{alive}", "stderr_tail": server.stderr_tail()}
    finally:
        server.stop()


def run_micro(system: str, api: str, bench: str, p: Params, python: str) -> dict:
    if system == "c-epoll":
        return {"status": "n/a", "reason": "no Python API"}
    cmd = pin(SERVER_CPU) + [python, "-W", "ignore", HERE / "micro.py", system, api, bench]
    if p.quick:
        cmd.append("--quick")
    try:
        result = run_bounded(cmd, timeout=120)
    except BenchError as exc:
        return {"status": "failed", "error": str(exc)}
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("MICRO ")), None)
    if line is None:
        tail = "\n".join(result.stderr.strip().splitlines()[-8:])
        return {"status": "failed", "error": f"exit status {result.returncode}", "stderr_tail": tail}
    try:
        data = json.loads(line[len("MICRO "):])
    except ValueError as exc:
        return {"status": "failed", "error": f"unreadable result {line[:200]!r}: {exc}"}
    status = data.pop("status")
    if status != "ok":
        return {"status": status, "reason": data.get("reason", "")}
    return {"status": "ok", "metrics": data}


# -- the whole run ----------------------------------------------------------------------

def machine_info(python: str) -> dict:
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    probe = (
        "import json, sys, importlib.metadata as m\n"
        "v = {}\n"
        "for name in ('greenpatch', 'gevent', 'eventlet', 'greenlet', 'matplotlib'):\n"
        "    try: v[name] = m.version(name)\n"
        "    except Exception: v[name] = None\n"
        "print(json.dumps({'python': sys.version.split()[0], 'implementation': sys.implementation.name, 'versions': v}))\n"
    )
    info = json.loads(subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or None
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "greenpatch"],
                                capture_output=True, text=True).stdout.strip())
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0].strip() \
        if shutil.which("wrk") else None
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
        "python": info["python"], "python_path": python, "versions": info["versions"],
        "greenpatch_commit": commit, "greenpatch_uncommitted_changes": dirty,
        "wrk": wrk, "greenpatch_runner": "python -m greenpatch" if (ROOT / "greenpatch" / "__main__.py").exists()
        else "monkey_patch() + runpy wrapper (no greenpatch/__main__.py yet)",
        "loadavg_start": os.getloadavg(),
    }


def run_all(args, p: Params, systems: list[str], cases: list[Case]) -> dict:
    data = {"command": shlex.join(["python", "benchmarks/run.py"] + sys.argv[1:]), "params": p.__dict__,
            "systems": systems, "cases": [c.name for c in cases], "machine": machine_info(args.python),
            "runs": [], "note": args.note, "interrupted": False}
    logdir = Path(tempfile.mkdtemp(prefix="greenpatch-bench-"))
    start = time.monotonic()
    try:
        for case in cases:
            print(f"== {case.name}: {case.title}", flush=True)
            if case.kind == "micro":
                for bench, _ in MICRO_BENCHES:
                    for api in MICRO_APIS:
                        for rep in range(p.repeats):
                            for system in systems:
                                if system == "c-epoll":
                                    continue
                                res = run_micro(system, api, bench, p, args.python)
                                res.update(case="micro", bench=bench, api=api, system=system, repeat=rep)
                                data["runs"].append(res)
                                _progress(f"micro {bench}/{api}", system, rep, res)
                continue
            for rep in range(p.repeats):
                for system in systems:
                    res = run_server_case(case, system, p, args.python, logdir, f"{case.name}-{system}-{rep}")
                    res.update(case=case.name, system=system, repeat=rep)
                    data["runs"].append(res)
                    _progress(case.name, system, rep, res)
    except KeyboardInterrupt:
        data["interrupted"] = True
        print("interrupted: writing what was measured so far", flush=True)
    finally:
        _kill_all_live()
        shutil.rmtree(logdir, ignore_errors=True)
    data["machine"]["loadavg_end"] = os.getloadavg()
    data["elapsed_s"] = round(time.monotonic() - start, 1)
    return data


def _progress(label: str, system: str, rep: int, res: dict) -> None:
    if res["status"] == "ok":
        m = res["metrics"]
        shown = {k: round(v, 2) for k, v in m.items()
                 if isinstance(v, (int, float)) and k in ("rate", "server_cpu_us", "p50_us", "p99_us", "value",
                                                          "rss_per_conn_kib", "client_cpu_pct", "max_late_ms")}
        print(f"  {label:<22} {system:<11} #{rep}  {shown}", flush=True)
    else:
        why = res.get("error") or res.get("reason", "")
        print(f"  {label:<22} {system:<11} #{rep}  {res['status'].upper()}: {why[:150]}", flush=True)


# -- summarising --------------------------------------------------------------------------

def cell_runs(data: dict, system: str, case: str, bench: str | None = None, api: str | None = None) -> list[dict]:
    return [r for r in data["runs"] if r["system"] == system and r["case"] == case
            and (bench is None or (r.get("bench") == bench and r.get("api") == api))]


def summarise(runs: list[dict], key: str) -> tuple[str, float | None, str]:
    """(status, median, note) for one metric over the repeats of one cell."""
    if not runs:
        return "not run", None, ""
    ok = [r for r in runs if r["status"] == "ok"]
    values = [r["metrics"].get(key) for r in ok]
    values = [v for v in values if isinstance(v, (int, float)) and v >= 0]
    if not values:
        status = "n/a" if all(r["status"] == "n/a" for r in runs) else "failed"
        return status, None, ""
    note = f" ({len(ok)}/{len(runs)} ok)" if len(ok) < len(runs) else ""
    return "ok", statistics.median(values), note


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table_rows(data: dict):
    """Yields (section, short name, title, metric label, direction, {system: (status, value, note)})."""
    cases = [CASE_BY_NAME[name] for name in data["cases"]]
    for case in cases:
        if case.kind == "micro":
            for bench, label in MICRO_BENCHES:
                for api in MICRO_APIS:
                    cells = {s: summarise(cell_runs(data, s, "micro", bench, api), "value") for s in data["systems"]}
                    yield "micro", f"{bench} ({api})", f"{bench} ({api})", label, -1, cells
                    if bench == "sleepers":
                        cells = {s: summarise(cell_runs(data, s, "micro", bench, api), "max_late_ms")
                                 for s in data["systems"]}
                        yield "micro", f"{bench} ({api})", f"{bench} ({api})", "sleepers: max lateness (ms)", -1, cells
            continue
        for key, label, direction in rows_for(case):
            cells = {s: summarise(cell_runs(data, s, case.name), key) for s in data["systems"]}
            yield "servers", case.name, case.title, label, direction, cells


def ratio_of(cells: dict, system: str) -> float | None:
    base = cells.get(BASELINE, ("", None, ""))[1]
    value = cells[system][1]
    if base and value is not None and base > 0:
        return value / base
    return None


def render_markdown(data: dict, chart_name: str | None) -> str:
    m = data["machine"]
    v = m["versions"]
    p = data["params"]
    systems = data["systems"]
    lines = [
        "# greenpatch benchmarks: latest run",
        "",
        f"- date: {m['date']}; total time {data['elapsed_s']} s" + ("; **interrupted**" if data["interrupted"] else ""),
        f"- machine: {m['nproc']} CPUs, {m['cpu_model']}, Linux {m['kernel']}; load average "
        f"{m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end",
        f"- Python {m['python']}; greenpatch {v.get('greenpatch')} (commit {m['greenpatch_commit']}"
        f"{', uncommitted changes' if m['greenpatch_uncommitted_changes'] else ''}), gevent {v.get('gevent')}, "
        f"eventlet {v.get('eventlet')}, greenlet {v.get('greenlet')}; {m['wrk'] or 'wrk missing'}",
        f"- greenpatch servers run with: {m['greenpatch_runner']}",
        f"- command: `{data['command']}`",
        f"- method: server pinned to CPU {SERVER_CPU}, load generator to CPU {CLIENT_CPU}; a fresh server per run; "
        f"runs interleaved across systems; {p['repeats']} repeat(s), median shown; {p['warmup']} s warm-up then "
        f"{p['duration']} s measured (wrk: {p['wrk_seconds']} s after a 1 s warm-up); "
        f"cells read `value (x gevent)`; ↑ higher is better, ↓ lower is better.",
    ]
    if data.get("note"):
        lines.append(f"- note: {data['note']}")
    lines.append("")
    current, shown = None, systems
    for section, _, title, label, direction, cells in table_rows(data):
        if section != current:
            current = section
            shown = [s for s in systems if section == "servers" or s != "c-epoll"]
            lines += ["", "## Servers (unmodified stdlib programs)" if section == "servers" else
                      "## Microbenchmarks (patched stdlib API and each library's native API)", "",
                      "| case | metric | " + " | ".join(shown) + " |", "|---|---|" + "---:|" * len(shown)]
        arrow = {1: " ↑", -1: " ↓", 0: ""}[direction]
        row = [title, label + arrow]
        for s in shown:
            status, value, note = cells[s]
            if status != "ok":
                row.append(status)
                continue
            ratio = ratio_of(cells, s) if direction else None
            text = fmt(value)
            if ratio is not None and s != BASELINE:
                text += f" ({ratio:.2f}x)"
            row.append(text + note)
        lines.append("| " + " | ".join(row) + " |")
    if chart_name:
        lines += ["", f"![improvement over gevent]({chart_name})", ""]
    notes = failure_notes(data)
    if notes:
        lines += ["", "## Failures, skipped cells and caveats", ""] + notes
    lines += [
        "", "Server CPU is utime+stime from /proc/PID/stat over the measured window divided by the round trips "
        "(10 ms tick granularity). Loadgen CPU near 100 % means the client, not the server, set the pace "
        "(expected only for c-epoll). Idle RSS per connection = (VmRSS with every connection open, after "
        f"{p['settle']} s) minus (VmRSS before connecting), divided by the connection count.", "",
    ]
    return "\n".join(lines)


def failure_notes(data: dict) -> list[str]:
    """One note per distinct failure (same system, reason and stderr), listing where it happened."""
    notes, groups = [], {}
    for r in data["runs"]:
        if r["status"] == "ok":
            errs = r["metrics"].get("errors")
            if errs:
                notes.append(f"- {r['system']} / {r['case']} #{r['repeat']}: {errs} client-side errors "
                             f"(connections reset or refused) during the run")
            continue
        where = r["case"] if r["case"] != "micro" else f"micro {r['bench']} ({r['api']})"
        key = (r["system"], r["status"], r.get("error") or r.get("reason", ""), r.get("stderr_tail", ""))
        groups.setdefault(key, [])
        if where not in groups[key]:
            groups[key].append(where)
    caveats = {}
    for r in data["runs"]:
        note = r["status"] == "ok" and r["metrics"].get("note")
        if note:
            where = f"micro {r['bench']} ({r['api']})"
            caveats.setdefault((r["system"], note), [])
            if where not in caveats[(r["system"], note)]:
                caveats[(r["system"], note)].append(where)
    for (system, note), wheres in caveats.items():
        notes.append(f"- {system} ran {', '.join(wheres)} with a caveat: {note}")
    for (system, status, why, tail), wheres in groups.items():
        text = f"- **{system}: {status}** in {', '.join(wheres)}: {why}"
        if tail:
            text += "\n\n  ```\n" + "\n".join("  " + ln for ln in tail.splitlines()) + "\n  ```"
        notes.append(text)
    return notes


_CHART_METRICS = (("p50", "p50"), ("round trips/s", "rt/s"), ("server CPU us/round trip", "CPU/rt"),
                  ("MB/s", "MB/s"), ("connections/s", "conn/s"), ("server CPU us/connection", "CPU/conn"),
                  ("server RSS", "RSS/conn"), ("requests/s", "req/s"), ("server CPU us/request", "CPU/req"))
CHART_TOP = 8.0   # bars above this (c-epoll's memory, say) are clipped and labelled


def render_chart(data: dict, path: Path) -> bool:
    """Bar chart of each system's improvement factor over gevent (>1 is better), log scale."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib is missing: no chart (pip install '.[bench]')", flush=True)
        return False
    others = [s for s in data["systems"] if s != BASELINE]
    panels = {"servers": [], "micro": []}
    for section, short, title, label, direction, cells in table_rows(data):
        if direction == 0 or BASELINE not in cells:
            continue
        if section == "servers" and not (label.startswith(("round trips/s", "server CPU", "MB/s", "connections/s",
                                                           "requests/s", "server RSS"))
                                         or (short == "lat1" and label.startswith("p50"))):
            continue
        if short == "lat1" and label.startswith("round trips"):
            continue
        if "max lateness" in label:
            continue
        factors = {}
        for s in others:
            ratio = ratio_of(cells, s)
            factors[s] = (ratio if direction > 0 else 1 / ratio) if ratio else None
        metric = next((short_name for prefix, short_name in _CHART_METRICS if label.startswith(prefix)), label)
        panels[section].append((f"{short}\n{metric}" if section == "servers" else short, factors))
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 1, figsize=(14, 5.5 * len(panels)), squeeze=False)
    colors = {"greenpatch": "#2a9d3f", "eventlet": "#e07b39", "threads": "#7f7f7f", "c-epoll": "#3b6fb6"}
    for ax, (section, items) in zip(axes[:, 0], panels.items()):
        here = [s for s in others if section == "servers" or s != "c-epoll"]
        width = 0.8 / max(len(here), 1)
        for i, s in enumerate(here):
            xs = [j + (i - (len(here) - 1) / 2) * width for j in range(len(items))]
            ys = [f[s] if f[s] else 0 for _, f in items]
            shown = [min(y, CHART_TOP) if y > 0 else float("nan") for y in ys]
            ax.bar(xs, shown, width, label=s, color=colors.get(s))
            for x, y in zip(xs, ys):
                if y <= 0:
                    ax.text(x, 1, "n/a", ha="center", va="bottom", fontsize=6, rotation=90, color="#999")
                elif y > CHART_TOP:  # clipped: say how far it went
                    ax.text(x, CHART_TOP, f"{y:.0f}x", ha="center", va="top", fontsize=6, rotation=90, color="white")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        lows = [f[s] for _, f in items for s in here if f.get(s)]
        ax.set_ylim(min(lows + [0.5]) * 0.7, CHART_TOP * 1.1)
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}x"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
            lambda y, _: f"{y:g}x" if f"{y:g}"[0] in "2357" else ""))
        ax.set_xticks(range(len(items)))
        ax.set_xticklabels([name for name, _ in items], fontsize=8, rotation=30 if section == "micro" else 0,
                           ha="right" if section == "micro" else "center")
        ax.set_ylabel("improvement over gevent (x, log; >1 better)")
        ax.set_title({"servers": "Servers: throughput, CPU per round trip, latency, memory",
                      "micro": "Microbenchmarks (time per operation, inverted)"}[section])
        ax.legend(fontsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)
    m = data["machine"]
    fig.suptitle(f"greenpatch vs gevent {m['versions'].get('gevent')} - {m['date'][:10]}, "
                 f"{m['nproc']} CPUs, Python {m['python']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def write_results(data: dict, out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for r in data["runs"]:  # keep the JSON small: wrk's text and the raw loadgen object are summarised
        raw = r.get("metrics", {}).get("raw")
        if isinstance(raw, dict) and "wrk_stdout" in raw:
            raw["wrk_stdout"] = raw["wrk_stdout"][-1500:]
    (out / f"{name}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    chart = out / f"{name}.png"
    have_chart = render_chart(data, chart)
    (out / f"{name}.md").write_text(render_markdown(data, chart.name if have_chart else None))
    print(f"wrote {out / (name + '.md')}, {out / (name + '.json')}" + (f", {chart}" if have_chart else ""),
          flush=True)
    if out.resolve() == RESULTS.resolve() and name == "latest":
        refresh_readme(data, have_chart)


def refresh_readme(data: dict, have_chart: bool) -> None:
    """Puts the latest table (and chart) between the results markers of benchmarks/README.md."""
    readme = HERE / "README.md"
    text = readme.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if start not in text or end not in text:
        return
    body = render_markdown(data, "results/latest.png" if have_chart else None)
    body = body.replace("# greenpatch benchmarks: latest run\n", "", 1).replace("\n## ", "\n### ")
    body += "\nRaw numbers: [results/latest.json](results/latest.json); table alone: [results/latest.md](results/latest.md).\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(head + start + "\n" + body.strip() + "\n" + end + tail)


# -- profiling ----------------------------------------------------------------------------

def find_py_spy(python: str) -> str | None:
    here = Path(python).parent / "py-spy"
    if here.exists():
        return str(here)
    found = shutil.which("py-spy")
    if found:
        return found
    print("py-spy is missing; installing it into the benchmark venv", flush=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "py-spy"], check=False)
    return str(here) if here.exists() else shutil.which("py-spy")


def summarise_collapsed(path: Path, top: int = 30) -> tuple[int, list[str]]:
    """Top functions by own and by inclusive samples from py-spy's raw (collapsed-stack) output."""
    own, incl, total = {}, {}, 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    by_file = {}
    for fn, n in own.items():
        match = re.search(r"\(([^()]*)\)$", fn)
        name = match.group(1) if match else fn
        by_file[name] = by_file.get(name, 0) + n
    out = ["", "Own samples by file:", f"{'samples':>8} {'%':>6}  file"]
    for name, n in sorted(by_file.items(), key=lambda kv: -kv[1])[:15]:
        out.append(f"{n:>8} {100.0 * n / max(total, 1):>5.1f}%  {name}")
    for title, table in (("own samples (where the CPU is spent)", own), ("inclusive samples (callee time included)", incl)):
        out += ["", f"Top {top} functions by {title}:", f"{'samples':>8} {'%':>6}  function (file)"]
        for fn, n in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            out.append(f"{n:>8} {100.0 * n / max(total, 1):>5.1f}%  {fn}")
    return total, out


def summarise_cprofile(path: Path, top: int = 30) -> list[str]:
    import io
    import pstats
    buf = io.StringIO()
    stats = pstats.Stats(str(path), stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return buf.getvalue().splitlines()


def run_profile(args, p: Params, system: str, case: Case) -> int:
    if case.kind not in ("echo", "churn"):
        print(f"--profile supports the loadgen echo/churn cases, not {case.name}", file=sys.stderr)
        return 2
    cmd = server_cmd(system, case.server, args.python)
    if cmd is None or system == "c-epoll":
        print(f"{system} cannot be profiled with a Python profiler", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if system == "greenpatch" else f"-{system}"
    out_path = Path(args.out) / f"profile-{case.name}{suffix}.txt"
    logdir = Path(tempfile.mkdtemp(prefix="greenpatch-profile-"))
    py_spy = None if args.profiler == "cprofile" else find_py_spy(args.python)
    seconds = p.warmup + p.duration
    header = [f"profile of {system} serving {case.title} ({case.name})",
              f"date {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}; "
              f"command: python benchmarks/run.py {' '.join(sys.argv[1:])}"]
    server = None
    try:
        if py_spy:
            server = Server(cmd, logdir, "server")
            server.start()
            raw = logdir / "pyspy.txt"
            spy_cmd = [py_spy, "record", "--pid", str(server.pid), "--rate", "250", "--format", "raw",
                       "--output", str(raw), "--duration", str(math.ceil(seconds) + 1), "--nonblocking", "--idle"]
            spy = subprocess.Popen(spy_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            _live[spy.pid] = spy
            time.sleep(0.5)
            metrics = run_loadgen(case, server, p)
            try:
                spy_log, _ = spy.communicate(timeout=seconds + 30)
            finally:
                _stop(spy)
            if not raw.exists():
                raise BenchError(f"py-spy wrote nothing: {spy_log.strip()[-500:]}")
            total, body = summarise_collapsed(raw)
            header.append(f"profiler: py-spy record --rate 250 --nonblocking --idle, {total} samples of "
                          f"stacks (idle ones too: time in epoll_wait shows as the poll call) over {math.ceil(seconds) + 1} s, warm-up included")
        else:
            prof_out = logdir / "server.prof"
            wrapped = [args.python, "-c", CPROFILE_WRAPPER, prof_out, system,
                       SERVERS / f"{case.server}.py", "--host", HOST, "--port", "0"]
            server = Server(wrapped, logdir, "server")
            server.start()
            metrics = run_loadgen(case, server, p)
            server.stop()
            if not prof_out.exists():
                raise BenchError("cProfile wrote no stats (the server did not exit through SIGTERM)")
            body = summarise_cprofile(prof_out)
            header.append("profiler: cProfile (py-spy unavailable); greenlet switches blur its call tree")
        header.append(f"under the profiler: {metrics['rate']:,.0f} round trips/s, "
                      f"server CPU {metrics['server_cpu_us']:.1f} us/round trip, loadgen CPU {metrics['client_cpu_pct']:.0f} %")
        out_path.write_text("\n".join(header + body) + "\n")
        print("\n".join(header + body[:40]))
        print(f"wrote {out_path}")
        return 0
    except BenchError as exc:
        tail = server.stderr_tail() if server else ""
        print(f"profile failed: {exc}\n{tail}", file=sys.stderr)
        out_path.write_text("\n".join(header + [f"FAILED: {exc}", tail]) + "\n")
        return 1
    finally:
        if server:
            server.stop()
        _kill_all_live()
        shutil.rmtree(logdir, ignore_errors=True)


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


# -- entry point -------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="cases: " + ", ".join(f"{c.name} ({c.title})" for c in CASES))
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated, from: " + ", ".join(SYSTEMS))
    parser.add_argument("--cases", default=",".join(c.name for c in CASES), help="comma-separated case names")
    parser.add_argument("--quick", action="store_true", help="1 repeat, 0.5 s warm-up, 2 s windows")
    parser.add_argument("--repeats", type=int, default=0, help="repeats per cell (default 3, --quick 1)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the Python servers (default: this one)")
    parser.add_argument("--out", default=str(RESULTS), help="results directory (default benchmarks/results)")
    parser.add_argument("--name", default="latest", help="results file stem (default latest)")
    parser.add_argument("--note", default="", help="a line of context for the results header")
    parser.add_argument("--profile", metavar="SYSTEM", help="profile SYSTEM's server on the first --cases case")
    parser.add_argument("--profiler", choices=("py-spy", "cprofile"), default="py-spy")
    args = parser.parse_args(argv)

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown += [c for c in names if c not in CASE_BY_NAME]
    if unknown:
        parser.error(f"unknown systems/cases: {', '.join(unknown)}")
    cases = [CASE_BY_NAME[n] for n in names]
    p = params_for(args)
    if os.cpu_count() is None or os.cpu_count() < 2:
        print("warning: fewer than 2 CPUs, server and load generator share a core", flush=True)
    build_c()
    signal.signal(signal.SIGTERM, _on_sigterm)   # like Ctrl-C: clean up, write what was measured

    if args.profile:
        if args.profile not in SYSTEMS:
            parser.error(f"unknown system {args.profile}")
        if args.cases == parser.get_default("cases"):
            cases = [CASE_BY_NAME["echo100"]]
        return run_profile(args, p, args.profile, cases[0])

    if BASELINE not in systems:
        print(f"note: {BASELINE} is not among --systems, so no ratios", flush=True)
    data = run_all(args, p, systems, cases)
    write_results(data, Path(args.out), args.name)
    return 130 if data["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
