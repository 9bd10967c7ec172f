"""Training: embedding cache, click simulation, losses, the trainer behind ``usam train``."""
