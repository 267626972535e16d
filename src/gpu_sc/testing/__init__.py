"""Test support shipped with gpu_sc (never imported by production code)."""
