"""Edge camera monitor: capture -> detection -> tracking and zones -> counting -> safety -> publishing."""

__version__ = "0.1.0"
