"""The one root of adwatch's exceptions."""


class AdwatchError(Exception):
    """Base class of every error adwatch raises on purpose."""


class ConfigError(AdwatchError):
    """A setting is missing or invalid; the message names the environment variable."""
