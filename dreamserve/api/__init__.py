"""The HTTP API: one module per dialect, plus app (routing, auth, errors) and files."""
