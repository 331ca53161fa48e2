"""The narrow family of errors that mean "the configuration or the data is wrong".

The `preflight` command reports these in one line and exits with status 2, at any point of a run.
Other exceptions raised while a run trains keep their traceback: they are bugs to report, not
settings to fix. (Errors raised while the command parses the config and builds the classes, such
as an invalid hyperparameter, are configuration errors whatever their type.)
"""


class PreflightConfigError(ValueError):
    """A setting, a file or a piece of data that cannot work; the message is one line saying where and why."""
