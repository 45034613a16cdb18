"""Errors a user can act on. The CLI prints their message, never a traceback."""


class CurationError(Exception):
    """Base class: the message names the drop, file, line and what to do."""


class ManifestError(CurationError):
    """A drop's manifest is missing, unparsable or incomplete: the whole drop is rejected."""


class ConfigError(CurationError):
    """curation.yaml is invalid."""


class GateError(CurationError):
    """A quality gate failed; downstream stages did not run."""


class UnsafePathError(CurationError):
    """A path inside a drop escapes the drop (symlink or '..')."""
