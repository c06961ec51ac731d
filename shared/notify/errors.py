"""The one error a channel raises."""

from __future__ import annotations


class NotifyError(Exception):
    """A message could not be delivered; the text names the channel and the reason, no secret."""
