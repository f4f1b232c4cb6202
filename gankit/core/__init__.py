"""Errors meant for people, atomic folders, model sizes: what every layer may use."""
