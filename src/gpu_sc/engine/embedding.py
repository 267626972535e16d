"""Engine steps: embedding (registered on import)."""
