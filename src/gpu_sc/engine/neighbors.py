"""Engine steps: neighbors (registered on import)."""
