"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""


class SecsuiteError(Exception):
    """Base class: the message is the whole story, no traceback needed."""


class ConfigError(SecsuiteError):
    """A config file or field is invalid."""


class DataError(SecsuiteError):
    """A dataset is missing, malformed, or does not fit the model."""


class ModelError(SecsuiteError):
    """A model source or checkpoint cannot be loaded safely."""


class OutputError(SecsuiteError):
    """An output folder or file cannot be written (not a folder, read-only, full disk)."""


class ResumeError(SecsuiteError):
    """A --resume state belongs to another run (other weights, data or code) or cannot be read."""
