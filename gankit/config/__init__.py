"""Recipes and the registries they pick components from: reading, validating, listing."""
