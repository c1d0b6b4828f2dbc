"""WinDI Chat: a self-hosted real-time messenger backend."""

__version__ = "0.1.0"
