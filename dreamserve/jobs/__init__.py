"""Durable predictions: states, the store, the worker loop and the webhook outbox."""
