"""Notifications: what a message says and the channels that carry it; the delivery log."""
