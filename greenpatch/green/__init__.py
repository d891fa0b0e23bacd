"""Green twins of standard library modules; each lists what it replaces in ``__implements__``.

The helpers here let a twin reuse the stdlib's own Python code: a copy of a
stdlib function that reads the twin's namespace as its globals builds green
objects (``socket``, ``time``, ...) wherever the original names them.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, MutableMapping


def rebind(func: types.FunctionType, namespace: MutableMapping, module: str) -> types.FunctionType:
    """A copy of ``func`` whose global names are looked up in ``namespace``, shown as defined in ``module``."""
    green = types.FunctionType(func.__code__, namespace, func.__name__, func.__defaults__, func.__closure__)  # type: ignore[arg-type]
    green.__kwdefaults__ = func.__kwdefaults__
    green.__qualname__ = func.__qualname__
    green.__doc__ = func.__doc__
    green.__annotations__ = dict(func.__annotations__)
    green.__dict__.update(func.__dict__)
    green.__module__ = module
    return green


def rebind_functions(original: types.ModuleType, namespace: MutableMapping, module: str,
                     uses: Iterable[str]) -> None:
    """Put in ``namespace`` a rebound copy of each function of ``original`` whose code uses a name in ``uses``.

    Aliases stay aliases (one copy per function object), and functions that
    other modules merely re-export are left alone.
    """
    uses = frozenset(uses)
    rebound: dict[int, types.FunctionType] = {}
    for name, value in vars(original).items():
        if (isinstance(value, types.FunctionType) and value.__module__ == original.__name__
                and _uses(value.__code__, uses)):
            if id(value) not in rebound:
                rebound[id(value)] = rebind(value, namespace, module)
            namespace[name] = rebound[id(value)]


def _uses(code: types.CodeType, names: frozenset) -> bool:
    if not names.isdisjoint(code.co_names):
        return True
    return any(_uses(const, names) for const in code.co_consts if isinstance(const, types.CodeType))
