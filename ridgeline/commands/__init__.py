"""Subcommands of the measurement side (devices, profile)."""
