"""Errors a user can cause, each mapped to an exit code (DESIGN §11)."""

from __future__ import annotations


class SlmpackError(Exception):
    """Base of every error slmpack reports as a sentence instead of a traceback."""

    exit_code = 1


class UserInputError(SlmpackError):
    """Bad input: recipe, CLI arguments, unsupported scheme/target/op, missing files. Exit code 2."""

    exit_code = 2


class GateFailedError(SlmpackError):
    """A validation gate failed; the message names the gate and the figures. Exit code 1."""

    exit_code = 1
