"""The one exception type for bad user input, shared by envs, rewards, agents and the runner.

A :class:`ConfigError` carries a message meant for the person at the terminal: one line that
says what was wrong, what is accepted, and where to look. The runner prints it without a
traceback and exits non-zero; anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad user input (an unknown name, a missing file, a value out of range)."""
