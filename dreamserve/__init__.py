"""dreamserve: a self-hosted Seedream 4.0-compatible image generation and editing service."""

__version__ = "0.1.0"
