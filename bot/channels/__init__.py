"""Channels: thin adapters that turn a chat message into a conversation-service call."""


class ChannelConfigError(Exception):
    """A channel's settings cannot work; the message says which setting to change."""
