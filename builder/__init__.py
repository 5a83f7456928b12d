"""slmpack: turn a small language model into validated, ready-to-embed mobile SDKs."""

__version__ = "0.1.0"
