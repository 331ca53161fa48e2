"""The one error type for bad preference data."""


class PreferenceDataError(ValueError):
    """Bad preference data. The message is one line naming the file, the line or row (1-based) and the problem."""
