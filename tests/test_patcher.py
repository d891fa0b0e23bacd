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
    result = in_child("""
        import json, greenpatch
        print(json.dumps(greenpatch.monkey_patch()))
    """)
    assert result == MODULES


def test_second_call_returns_nothing_and_changes_nothing():
    result = in_child("""
        import json, socket, threading, time, greenpatch
        from greenpatch.patcher import PATCHES
        first = greenpatch.monkey_patch()
        names = [(m, n) for p in PATCHES for m in p.targets
                 for n in __import__("greenpatch.green." + m, fromlist=["x"]).__implements__]
        mods = {m: __import__(m) for m, _ in names}
        before = {f"{m}.{n}": id(getattr(mods[m], n, None)) for m, n in names}
        second = greenpatch.monkey_patch()
        third = greenpatch.monkey_patch(socket=True)
        after = {f"{m}.{n}": id(getattr(mods[m], n, None)) for m, n in names}
        print(json.dumps([first, second, third, before == after]))
    """)
    assert result == [MODULES, [], [], True]


@pytest.mark.parametrize("flags, expected", [
    ({"socket": True}, {"socket"}),
    ({"time": True, "select": True}, {"time", "select"}),
    ({"thread": False}, set(FLAGS) - {"thread"}),
    ({"socket": False, "queue": False}, set(FLAGS) - {"socket", "queue"}),
    ({flag: False for flag in FLAGS}, set()),
])
def test_flags_select_groups(flags, expected):
    result = in_child(f"""
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
    assert result["done"] == [t for p in PATCHES if p.flag in expected for t in p.targets]
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
