"""Errors caused by the user's files or settings; the scripts print their one-line message and
exit with status 2 instead of showing a traceback."""


class UserError(ValueError):
    """Base class: a file, folder, setting or value the user can fix; the message names it."""


class ConfigError(UserError):
    """A config file, key or value that cannot be used."""


class DatasetError(UserError):
    """A data folder or image that cannot be used."""


class EncodingsError(UserError):
    """An encodings file that is missing, malformed, unsafe or made by another model."""


class ModelFileError(UserError):
    """A model file that is missing or cannot be loaded safely."""


class WriteError(UserError, OSError):
    """A file that could not be written (a full disk, a quota, a read-only folder); the message
    names it and says whether the previous file is kept. Also an OSError, for callers that
    handled the raw one."""


class TrainingDivergedError(UserError):
    """The loss became NaN or infinite; the message names the step and the likely cause."""
