"""The built-in model: a small DiT over a small autoencoder, trained here (see MODEL_CARD.md)."""
