"""Green ``selectors``: every selector class of the stdlib, waiting through the green ``select``.

The stdlib binds ``select.select``, ``select.poll`` and ``select.epoll`` into
class attributes when it is imported, so patching the ``select`` module alone
does not reach them.  Each class here subclasses its stdlib twin and
overrides only that attribute; registration, keys, maps and errors are the
stdlib's code.  kqueue and devpoll (not on Linux) have no green twin, so
``DefaultSelector`` is the green epoll, poll or select selector, in that order.
"""

from __future__ import annotations

import selectors as _stdselectors

globals().update({name: value for name, value in vars(_stdselectors).items()
                  if not (name.startswith("__") and name.endswith("__"))})

from greenpatch.green import select as _green_select  # noqa: E402


class SelectSelector(_stdselectors.SelectSelector):
    __doc__ = _stdselectors.SelectSelector.__doc__
    # A staticmethod: a Python function would otherwise bind ``self``
    # (the stdlib's builtin does not).
    _select = staticmethod(_green_select.select)


__implements__ = ["SelectSelector"]

if hasattr(_stdselectors, "PollSelector") and hasattr(_green_select, "poll"):
    class PollSelector(_stdselectors.PollSelector):
        __doc__ = _stdselectors.PollSelector.__doc__
        _selector_cls = _green_select.poll

    __implements__.append("PollSelector")

if hasattr(_stdselectors, "EpollSelector") and hasattr(_green_select, "epoll"):
    class EpollSelector(_stdselectors.EpollSelector):
        __doc__ = _stdselectors.EpollSelector.__doc__
        _selector_cls = _green_select.epoll

    __implements__.append("EpollSelector")

if "EpollSelector" in __implements__:
    DefaultSelector = EpollSelector
elif "PollSelector" in __implements__:
    DefaultSelector = PollSelector
else:
    DefaultSelector = SelectSelector
__implements__.append("DefaultSelector")
