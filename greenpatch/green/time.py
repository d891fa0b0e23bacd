"""Green twin of ``time``: only ``sleep`` changes; it yields to other green threads."""

from __future__ import annotations

import math
import operator
import time as _time
from time import *  # noqa: F401,F403  (the twin exposes every name of the original)

from greenpatch import greenthread

__implements__ = ["sleep"]


def sleep(secs: float, /) -> None:
    """Suspend the calling green thread for ``secs`` seconds; same argument checks as ``time.sleep``."""
    if type(secs) is not float and type(secs) is not int:
        # The stdlib accepts floats and anything with __index__; reuse its errors.
        secs = float(secs) if isinstance(secs, float) else operator.index(secs)
    if secs > 0:
        greenthread.sleep(secs)
    elif secs == 0:
        greenthread.sleep(0)
    elif math.isnan(secs):
        raise ValueError("Invalid value NaN (not a number)")
    else:
        raise ValueError("sleep length must be non-negative")


sleep.__doc__ = _time.sleep.__doc__
