"""The one error type for bad preference data."""

from ..errors import PreflightConfigError


class PreferenceDataError(PreflightConfigError):
    """Bad preference data. The message is one line naming the file, the line or row (1-based) and the problem."""
