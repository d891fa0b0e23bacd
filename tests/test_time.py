"""greenpatch.green.time: a green sleep with the stdlib's argument checks."""

import math
import time as std_time

import pytest

import greenpatch
from greenpatch.green import time as green_time


def test_dir_covers_the_stdlib_module():
    public = {name for name in dir(std_time) if not name.startswith("_")}
    assert public <= set(dir(green_time))


@pytest.mark.parametrize("bad, exc, message", [
    (-1, ValueError, "sleep length must be non-negative"),
    (-0.5, ValueError, "sleep length must be non-negative"),
    (math.nan, ValueError, "Invalid value NaN"),
    ("1", TypeError, "'str' object cannot be interpreted as an integer"),
    (None, TypeError, "'NoneType' object cannot be interpreted as an integer"),
])
def test_bad_arguments_raise_like_the_stdlib(bad, exc, message):
    with pytest.raises(exc) as green_info:
        green_time.sleep(bad)
    with pytest.raises(exc) as std_info:
        std_time.sleep(bad)
    assert message in str(green_info.value)
    assert str(green_info.value) == str(std_info.value)


def test_sleeps_overlap_in_green_threads():
    start = std_time.monotonic()
    threads = [greenpatch.spawn(green_time.sleep, 0.2) for _ in range(20)]
    for thread in threads:
        thread.wait()
    elapsed = std_time.monotonic() - start
    assert 0.2 <= elapsed < 20 * 0.2 / 2


def test_sleep_zero_yields_to_others():
    ran = []
    greenpatch.spawn(ran.append, "other")
    green_time.sleep(0)
    assert ran == ["other"]


def test_sleep_accepts_index_objects_like_the_stdlib():
    class Zero:
        def __index__(self):
            return 0

    green_time.sleep(Zero())
    green_time.sleep(False)
