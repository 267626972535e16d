"""Engine steps: preprocessing (registered on import)."""
