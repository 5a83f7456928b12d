"""Keep native libraries' chatter (kernel logs, export warnings) off the user's terminal."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

_debug = False


def set_debug(enabled: bool) -> None:
    global _debug
    _debug = enabled


@contextlib.contextmanager
def quiet(*fds: int) -> Iterator[None]:
    """Send the given file descriptors (default: stderr) to a scratch file for the duration.

    C++ kernels write straight to fd 2, so redirecting sys.stderr alone would not silence them.
    With --debug nothing is hidden.
    """
    if _debug:
        yield
        return
    fds = fds or (2,)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            for fd in fds:
                os.dup2(sink.fileno(), fd)
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
