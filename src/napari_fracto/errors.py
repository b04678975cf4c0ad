"""The one base for errors a user can act on.

A `UserError` carries a message that says what happened and what to do; the widgets and the CLI show it
as it is. Any other exception is a bug: it is logged with its traceback and shown as an internal error.
Pure Python, so every layer (readers, dataset, backends, training) can raise it without heavy imports.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix (a file, a setting, a server); the message tells them how."""
