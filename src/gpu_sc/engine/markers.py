"""Engine steps: markers (registered on import)."""
