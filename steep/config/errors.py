"""The error every part of steep.config raises for a file, an override or a key the user can fix."""

from __future__ import annotations

from steep.errors import SteepError


class ConfigError(SteepError):
    """A config problem a user can fix; the message says what and how."""
