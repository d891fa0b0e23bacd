"""Early activation: ``GREENPATCH=1 python app.py`` patches before any other import.

The package installs ``greenpatch-early.pth`` into site-packages.  Its single
line runs at interpreter start-up (``site`` executes ``.pth`` lines that start
with ``import``) and costs one ``os.environ`` lookup unless ``GREENPATCH`` is
set to something other than ``""`` or ``"0"``; then it imports this module,
which calls ``monkey_patch()`` before ``sitecustomize`` and the program's own
imports.  Child Python processes inherit the variable, so they are patched too.

``GREENPATCH=1`` (or ``all``) patches everything; ``GREENPATCH=socket,select``
patches only those groups of ``greenpatch.patcher.PATCHES``.
"""

from __future__ import annotations

import os
import sys


def _flags(value: str) -> dict[str, bool]:
    from greenpatch.patcher import PATCHES

    if value.strip().lower() in ("1", "all", "true", "yes"):
        return {}
    known = {patch.flag for patch in PATCHES}
    chosen = [flag.strip() for flag in value.split(",") if flag.strip()]
    unknown = [flag for flag in chosen if flag not in known]
    if unknown:
        sys.stderr.write(f"greenpatch: GREENPATCH={value!r}: unknown group(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(known))}); patching everything\n")
        return {}
    return {flag: True for flag in chosen}


def activate() -> None:
    from greenpatch.patcher import monkey_patch

    monkey_patch(**_flags(os.environ.get("GREENPATCH", "1")))


activate()
