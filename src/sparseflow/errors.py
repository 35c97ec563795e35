"""User-facing errors.

Every error a user can cause by bad input derives from :class:`UserError`. The CLI prints its
message as one line on stderr and exits with code 2; Python callers can catch it.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a one-line message that names the field or file at fault."""

    def __str__(self) -> str:
        msg = super().__str__()
        return " ".join(msg.split())  # always one line


class ConfigError(UserError, ValueError):
    """An invalid configuration key, type or value."""


class StoreError(UserError):
    """The run store cannot be opened or read."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt, truncated or does not match the model."""
