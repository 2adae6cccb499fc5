"""The Keras 3 ViT family (`vit`) and its named specs (`spec`, importable without Keras)."""
