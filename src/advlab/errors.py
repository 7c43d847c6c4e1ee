"""Errors that mean "the user asked for something that cannot work".

Entry points print these as one line (no traceback) and exit non-zero, because the fix is in the
command line or the files on disk, not in the code.
"""


class AdvlabError(Exception):
    """Base class for user-facing errors with an actionable message."""


class ConfigError(AdvlabError, ValueError):
    """A configuration value is invalid or inconsistent with another one."""


class DatasetFilesMissingError(AdvlabError, FileNotFoundError):
    """Dataset files are absent and could not be downloaded."""


class DatasetFilesCorruptError(AdvlabError):
    """Dataset files are present but damaged or do not belong together."""
