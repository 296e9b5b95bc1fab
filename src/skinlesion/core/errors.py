"""The project's own error types.

Every failure a user can cause (bad data, bad config, bad checkpoint, bad upload) is raised as a
subclass of :class:`SkinLesionError` with a message that names the problem; entry points turn it
into one clear line on stderr instead of a traceback.
"""


class SkinLesionError(Exception):
    """Base class: a problem the user can fix, described in the message."""


class DataError(SkinLesionError):
    """The data root, its folders or the manifest are not usable."""


class ImageDecodeError(DataError):
    """A file could not be decoded as a safe, usable RGB image."""


class ConfigError(SkinLesionError):
    """A configuration value is unknown or inconsistent."""


class CheckpointError(SkinLesionError):
    """A checkpoint or exported model is missing, unreadable or unsafe."""


class SweepError(SkinLesionError):
    """A sweep cannot go on: too many of its trials failed, or its study holds nothing to report."""
