"""Engine steps: clustering (registered on import)."""
