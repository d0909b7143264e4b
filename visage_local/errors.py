"""Errors that reach the user as one clear line instead of a traceback."""


class VisageError(Exception):
    """A failure the user can act on; the CLI prints its message and exits with ``exit_code``."""

    exit_code = 1


class ModelFileError(VisageError):
    """A model file is missing, unreadable, malformed or of a kind visage-local cannot handle."""


class ConfigError(VisageError):
    """Settings that cannot work together, found after the command line was parsed."""

    exit_code = 2
