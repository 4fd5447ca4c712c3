"""A Taskonomy engine over cached features (Zamir et al., CVPR 2018).

Stages: scenes (generated data) -> extract (stage I, feature cache) -> transfer (stage II) -> ahp
(stage III) -> taxonomy (stage IV). The command line is `taskonomy`; in Python, `taskonomy.open_run(path)`;
see README.md.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["TaskonomyError", "TaskonomyWarning", "__version__", "open_run"]


def __getattr__(name: str):
    # the package's front door: `taskonomy.open_run` without importing the application layer at import time
    if name == "open_run":
        from taskonomy.api import open_run

        return open_run
    raise AttributeError(f"module 'taskonomy' has no attribute {name!r}")


class TaskonomyError(Exception):
    """A problem with the user's input or run folder; the CLI prints it as one line and exits 2."""


class TaskonomyWarning(UserWarning):
    """Our own warnings; the test suite turns them into errors."""
