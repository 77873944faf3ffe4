"""The errors every layer may raise: each message is one line that names the problem."""


class ConfigError(ValueError):
    """A bad configuration, file or argument; the message names the key, value or file."""


class NonFiniteLossError(ValueError):
    """A loss term became NaN or infinite; the message names the step and the term."""
