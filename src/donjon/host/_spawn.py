"""Command lines for donjon's own host-side processes (keep loaders, keep runtimes).

They start with ``python -I -S``: ``-S`` skips the site module (and every ``.pth`` file in
site-packages, ~10 ms) and this process's import path is handed over instead, so the child
imports exactly the donjon this process runs; ``-I`` ignores ``PYTHON*`` variables, the user's
site directory and the current directory. (``donjon.backends.nil`` starts ``donjon run``'s keep
process the same way.)
"""

from __future__ import annotations

import os
import sys

__all__ = ["module_command"]


def module_command(module: str, function: str, *args: str) -> list[str]:
    """``python -I -S`` running ``module.function()`` with ``sys.argv[1:] == args``.

    The module's name stays visible in the command line (``/proc/PID/cmdline``), which is how
    the keep manager recognises its loaders after a restart.
    """
    paths = [p for p in sys.path if p and os.path.isabs(p)]
    bootstrap = (
        "import sys; i = sys.argv.index('--'); sys.path[:0] = sys.argv[1:i]; "
        f"del sys.argv[1 : i + 1]; from {module} import {function}; {function}()"
    )
    return [sys.executable, "-I", "-S", "-c", bootstrap, *paths, "--", *args]
