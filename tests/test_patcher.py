"""monkey_patch, is_patched, original and PatchWarning.

Patching is process-wide, so every test that patches runs in a child
interpreter: this pytest process itself is never patched.
"""

import importlib
import json
import subprocess
import sys
import textwrap

import pytest

from greenpatch import PatchWarning, is_patched, monkey_patch
from greenpatch.patcher import PATCHES, patched

FLAGS = [patch.flag for patch in PATCHES]
MODULES = [target for patch in PATCHES for target in patch.targets]
# What a child prints first: the on_import targets its start-up already imported (patched at once).
IMPORTED = """
import json, sys
from greenpatch.patcher import PATCHES as _P
print(json.dumps([t for p in _P if p.on_import for t in p.targets if t in sys.modules]))
"""


def expected_done(flags, imported):
    """The modules monkey_patch() patches at once: on_import targets only if already imported."""
    return [t for p in PATCHES if p.flag in flags for t in p.targets if not p.on_import or t in imported]


def in_child_imported(code, cwd=None):
    """in_child, plus the on_import targets that were imported before ``code`` ran."""
    result = subprocess.run([sys.executable, "-c", IMPORTED + textwrap.dedent(code)], cwd=cwd,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    return json.loads(lines[0]), json.loads(lines[-1])


def in_child(code, cwd=None):
    """Run ``code`` in a fresh interpreter and return what it printed last, as JSON."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_this_process_is_not_patched():
    assert patched() == []
    assert not any(is_patched(flag) for flag in FLAGS)


@pytest.mark.parametrize("target", MODULES)
def test_every_target_has_a_green_twin_that_lists_what_it_replaces(target):
    green = importlib.import_module(f"greenpatch.green.{target}")
    assert green.__implements__, target
    stdlib = importlib.import_module(target)
    for name in green.__implements__:
        assert hasattr(green, name) or not hasattr(stdlib, name), f"{target}.{name}"


def test_unknown_flag_is_a_type_error_and_patches_nothing():
    with pytest.raises(TypeError, match="unknown flags.*'sockets'"):
        monkey_patch(sockets=True)
    assert patched() == []


def test_patching_everything_reports_the_modules_in_registry_order():
    imported, result = in_child_imported("""
        import json, greenpatch
        print(json.dumps(greenpatch.monkey_patch()))
    """)
    assert result == expected_done(FLAGS, imported)


def test_on_import_targets_of_the_registry_are_not_imported_by_the_patch():
    imported, result = in_child_imported("""
        import json, sys, greenpatch
        from greenpatch.patcher import PATCHES, is_patched, report
        greenpatch.monkey_patch()
        lazy = [t for p in PATCHES if p.on_import for t in p.targets]
        print(json.dumps([[t for t in lazy if t in sys.modules], [is_patched(t) for t in lazy],
                          report()["patched_on_import"]]))
    """)
    lazy = [t for p in PATCHES if p.on_import for t in p.targets]
    assert result[0] == imported, "monkey_patch() imported an on_import target"
    assert result[1] == [True] * len(lazy)
    assert result[2] == sorted(set(lazy) - set(imported))


def test_second_call_returns_nothing_and_changes_nothing():
    imported, result = in_child_imported("""
        import json, socket, sys, threading, time, greenpatch
        from greenpatch.patcher import PATCHES
        first = greenpatch.monkey_patch()
        names = [(m, n) for p in PATCHES for m in p.targets if m in sys.modules
                 for n in __import__("greenpatch.green." + m, fromlist=["x"]).__implements__]
        mods = {m: __import__(m) for m, _ in names}
        before = {f"{m}.{n}": id(getattr(mods[m], n, None)) for m, n in names}
        second = greenpatch.monkey_patch()
        third = greenpatch.monkey_patch(socket=True)
        after = {f"{m}.{n}": id(getattr(mods[m], n, None)) for m, n in names}
        print(json.dumps([first, second, third, before == after]))
    """)
    assert result == [expected_done(FLAGS, imported), [], [], True]


@pytest.mark.parametrize("flags, expected", [
    ({"socket": True}, {"socket"}),
    ({"time": True, "select": True}, {"time", "select"}),
    ({"thread": False}, set(FLAGS) - {"thread"}),
    ({"socket": False, "queue": False}, set(FLAGS) - {"socket", "queue"}),
    ({flag: False for flag in FLAGS}, set()),
])
def test_flags_select_groups(flags, expected):
    imported, result = in_child_imported(f"""
        import json, greenpatch
        from greenpatch.patcher import PATCHES, is_patched, original
        import socket, time
        done = greenpatch.monkey_patch(**{flags!r})
        print(json.dumps({{
            "done": done,
            "flags": {{p.flag: is_patched(p.flag) for p in PATCHES}},
            "socket is green": socket.socket is not original("socket", "socket"),
            "sleep is green": time.sleep is not original("time", "sleep"),
        }}))
    """)
    assert result["done"] == expected_done(expected, imported)
    assert result["flags"] == {flag: flag in expected for flag in FLAGS}
    assert result["socket is green"] == ("socket" in expected)
    assert result["sleep is green"] == ("time" in expected)


def test_is_patched_answers_for_modules_and_for_flags():
    result = in_child("""
        import json, greenpatch
        from greenpatch import is_patched
        greenpatch.monkey_patch(select=True, thread=True)
        print(json.dumps({name: is_patched(name) for name in
                          ["select", "selectors", "thread", "_thread", "threading",
                           "socket", "time", "queue", "os", "no_such_thing"]}))
    """)
    assert result == {
        "select": True, "selectors": True, "thread": True, "_thread": True, "threading": True,
        "socket": False, "time": False, "queue": False, "os": False, "no_such_thing": False,
    }


def test_original_gives_the_stdlib_objects_after_the_patch():
    result = in_child("""
        import json, socket, time, greenpatch
        from greenpatch import original
        std_socket, std_create, std_sleep = socket.socket, socket.create_connection, time.sleep
        greenpatch.monkey_patch(socket=True, time=True)
        plain = original("socket")
        print(json.dumps({
            "patched": socket.socket is not std_socket and time.sleep is not std_sleep,
            "module": plain.socket is std_socket and plain.create_connection is std_create,
            "attr": original("socket", "socket") is std_socket and original("time", "sleep") is std_sleep,
            "copy": plain is not socket and socket.socket is not std_socket,
            "unpatched": original("os", "getpid") is __import__("os").getpid,
        }))
    """)
    assert result == {"patched": True, "module": True, "attr": True, "copy": True, "unpatched": True}


def test_warns_about_names_bound_before_the_patch(tmp_path):
    (tmp_path / "early.py").write_text("from socket import socket\n")
    result = in_child("""
        import json, warnings, greenpatch
        import early
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            greenpatch.monkey_patch(socket=True)
        print(json.dumps([[w.category.__name__, str(w.message)] for w in caught]))
    """, cwd=tmp_path)
    assert len(result) == 1
    category, message = result[0]
    assert category == PatchWarning.__name__
    assert "early.socket (socket.socket)" in message


def test_no_warning_when_patched_first(tmp_path):
    (tmp_path / "late.py").write_text("from socket import socket\n")
    result = in_child("""
        import json, warnings, greenpatch
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            greenpatch.monkey_patch()
            import late
        print(json.dumps([str(w.message) for w in caught if issubclass(w.category, greenpatch.PatchWarning)]))
    """, cwd=tmp_path)
    assert result == []


def test_originals_are_the_stdlib_objects_when_threading_is_imported_by_the_patch():
    result = in_child("""
        import json, greenpatch
        greenpatch.monkey_patch()
        from greenpatch import original
        names = ["_CRLock", "get_ident", "Lock", "_allocate_lock", "Condition", "Event", "local"]
        print(json.dumps({name: getattr(original("threading", name), "__module__", "") for name in names}))
    """)
    assert not [name for name, module in result.items() if module.startswith("greenpatch")], result


def test_on_import_targets_are_patched_when_first_imported_not_before(tmp_path):
    (tmp_path / "lazymod.py").write_text("def block():\n    return 'original'\n")
    result = in_child("""
        import json, sys, types
        from greenpatch import patcher
        twin = types.ModuleType("greenpatch.green.lazymod")
        twin.__implements__ = ["block"]
        twin.block = lambda: "green"
        sys.modules["greenpatch.green.lazymod"] = twin
        patcher.PATCHES += (patcher.Patch("lazy", ("lazymod",), "test", on_import=True),)
        patcher._FLAGS["lazy"] = patcher.PATCHES[-1]
        before = [patcher.monkey_patch(lazy=True), "lazymod" in sys.modules, patcher.is_patched("lazy"),
                  patcher.report()["patched_on_import"]]
        import lazymod
        after = [lazymod.block(), patcher.original("lazymod", "block")(), patcher.report()["patched_on_import"],
                 patcher.monkey_patch(lazy=True)]
        print(json.dumps([before, after]))
    """, cwd=tmp_path)
    assert result == [[[], False, True, ["lazymod"]], ["green", "original", [], []]]


# -- on_import targets: first import anywhere, reload, unpatching ---------------------------

LAZY = """
import importlib, json, sys, threading, types, warnings
from greenpatch import patcher
twin = types.ModuleType("greenpatch.green.lazymod")
twin.__implements__ = ["block"]
twin.block = lambda: "green"
sys.modules["greenpatch.green.lazymod"] = twin
patcher.PATCHES += (patcher.Patch("lazy", ("lazymod",), "test", on_import=True),)
patcher._FLAGS["lazy"] = patcher.PATCHES[-1]
"""


def lazy_child(code, cwd):
    """in_child, with a fake on_import target ``lazymod`` (flag ``lazy``) in the registry."""
    return in_child(LAZY + textwrap.dedent(code), cwd=cwd)


# Executing lazymod takes a while and switches green threads (time.sleep is green once patched).
LAZYMOD = "import time\ntime.sleep({pause})\n\ndef block():\n    return 'original'\n"


@pytest.fixture
def lazy_dir(tmp_path):
    (tmp_path / "lazymod.py").write_text(LAZYMOD.format(pause=0))
    return tmp_path


def test_flag_false_does_not_unpatch_and_says_so(lazy_dir):
    result = lazy_child("""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            patcher.monkey_patch(lazy=True, time=True)
            patcher.monkey_patch(lazy=False, socket=True)   # pending: still patched when imported
            patcher.monkey_patch(time=False, select=True)   # done: stays patched
        import lazymod, time
        print(json.dumps([lazymod.block(), time.sleep is not patcher.original("time", "sleep"),
                          patcher.is_patched("lazy"), [str(w.message) for w in caught]]))
    """, cwd=lazy_dir)
    assert result[:3] == ["green", True, True]
    assert result[3] == [
        "greenpatch: monkey_patch(lazy=False) changes nothing: lazymod will be patched when first "
        "imported and greenpatch cannot unpatch",
        "greenpatch: monkey_patch(time=False) changes nothing: time is patched and greenpatch cannot unpatch",
    ]


def test_reload_patches_again_and_a_fresh_copy_is_left_alone(lazy_dir):
    result = lazy_child("""
        patcher.monkey_patch(lazy=True, socket=True, select=True)
        import lazymod, select, selectors, socket
        modules = [socket, selectors, select]

        def names():
            return [[getattr(m, n, None) for n in patcher.report()["patched"][m.__name__]] for m in modules]

        green = names()
        for module in [lazymod, *modules]:
            assert importlib.reload(module) is module
        after = names()
        reloaded = [lazymod.block(), patcher.original("lazymod", "block")(), after == green,
                    patcher.original("socket", "socket") is not socket.socket]
        del sys.modules["lazymod"]
        fresh = importlib.import_module("lazymod")
        print(json.dumps([reloaded, fresh is not lazymod, fresh.block(), lazymod.block()]))
    """, cwd=lazy_dir)
    assert result == [["green", "original", True, True], True, "original", "green"]


def test_a_name_imported_from_an_on_import_target_after_the_patch_is_green(lazy_dir):
    (lazy_dir / "uses_lazy.py").write_text("from lazymod import block\n")
    result = lazy_child("""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            patcher.monkey_patch(lazy=True)
            import uses_lazy
        print(json.dumps([uses_lazy.block(), patcher.report()["originals_still_referenced"],
                          [str(w.message) for w in caught]]))
    """, cwd=lazy_dir)
    assert result == ["green", {}, []]


def test_a_copy_bound_before_the_target_is_first_imported_is_named(lazy_dir):
    # lazymod re-exports lazyimpl.block, as ssl re-exports _ssl's functions: a module that took
    # it from lazyimpl before lazymod was imported holds the original.
    (lazy_dir / "lazyimpl.py").write_text("def block():\n    return 'original'\n")
    (lazy_dir / "lazymod.py").write_text("from lazyimpl import block\n")
    (lazy_dir / "early.py").write_text("from lazyimpl import block\n")
    result = lazy_child("""
        import early
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            patcher.monkey_patch(lazy=True)
            import lazymod
        print(json.dumps([lazymod.block(), early.block(), patcher.report()["originals_still_referenced"],
                          [str(w.message) for w in caught], patcher.rebind(), early.block()]))
    """, cwd=lazy_dir)
    assert result[:3] == ["green", "original", {"early.block": "lazymod.block"}]
    assert len(result[3]) == 1 and "early.block (lazymod.block)" in result[3][0]
    assert result[4:] == [["early.block (lazymod.block)"], "green"]


def test_green_threads_importing_at_once_all_get_the_patched_module(tmp_path):
    (tmp_path / "lazymod.py").write_text(LAZYMOD.format(pause=0.1))
    result = lazy_child("""
        patcher.monkey_patch()
        import time
        seen, beats = [], []

        def importer():
            import lazymod   # the first one executes it (and sleeps); the others wait for it
            seen.append(lazymod.block())

        def heartbeat():
            for _ in range(10):
                before = time.monotonic()
                time.sleep(0.01)
                beats.append(time.monotonic() - before)

        threads = [threading.Thread(target=importer) for _ in range(5)] + [threading.Thread(target=heartbeat)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(json.dumps([seen, max(beats) < 0.1, patcher.report()["patched_on_import"]]))
    """, cwd=tmp_path)
    assert result == [["green"] * 5, True, sorted(t for p in PATCHES if p.on_import for t in p.targets)]


def test_an_os_thread_importing_while_the_main_thread_imports_too(tmp_path):
    (tmp_path / "lazymod.py").write_text(LAZYMOD.format(pause=0.2))
    result = lazy_child("""
        patcher.monkey_patch()
        import time
        start_os_thread = patcher.original("_thread", "start_new_thread")
        seen = []

        def importer():
            import lazymod
            seen.append(("os thread", lazymod.block()))

        start_os_thread(importer, ())
        time.sleep(0.05)            # the OS thread is inside lazymod now
        import lazymod              # waits for it (greenly), then sees the patched module
        seen.append(("main", lazymod.block()))
        while len(seen) < 2:
            time.sleep(0.01)
        print(json.dumps(sorted(seen)))
    """, cwd=tmp_path)
    assert result == [["main", "green"], ["os thread", "green"]]


def test_a_copy_executed_aside_is_left_alone_and_the_real_import_still_patched(lazy_dir):
    result = lazy_child("""
        import importlib.util
        patcher.monkey_patch(lazy=True)
        spec = importlib.util.find_spec("lazymod")
        aside = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(aside)                 # not sys.modules["lazymod"]
        import lazymod
        print(json.dumps([aside.block(), lazymod.block(), type(lazymod.__loader__).__name__,
                          type(lazymod.__spec__.loader).__name__]))
    """, cwd=lazy_dir)
    assert result == ["original", "green", "SourceFileLoader", "SourceFileLoader"]


def test_rebind_asked_for_also_applies_to_a_target_patched_on_import_later(lazy_dir):
    (lazy_dir / "lazyimpl.py").write_text("def block():\n    return 'original'\n")
    (lazy_dir / "lazymod.py").write_text("from lazyimpl import block\n")
    (lazy_dir / "early.py").write_text("from lazyimpl import block\n")
    result = lazy_child("""
        import early
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            patcher.monkey_patch(lazy=True, rebind=True)
            import lazymod
        print(json.dumps([early.block(), patcher.report()["rebound_on_request"], len(caught)]))
    """, cwd=lazy_dir)
    assert result == ["green", ["early.block (lazymod.block)"], 0]


def test_patching_while_an_os_thread_is_inside_the_targets_first_import(tmp_path):
    (tmp_path / "lazymod.py").write_text(LAZYMOD.format(pause=0.2))
    result = lazy_child("""
        import _thread, time
        seen = []

        def importer():
            import lazymod
            seen.append(lazymod.block)

        _thread.start_new_thread(importer, ())     # a real thread, before the patch
        time.sleep(0.05)                           # it is executing lazymod now
        patcher.monkey_patch(lazy=True)            # lazymod is in sys.modules: waits for it, then patches
        import lazymod
        while not seen:
            time.sleep(0.01)
        print(json.dumps([lazymod.block(), patcher.is_patched("lazy"), patcher.report()["patched_on_import"]]))
    """, cwd=tmp_path)
    assert result == ["green", True, []]
