"""Tiny stand-ins of the paper's checkpoints and data, in their real formats (DESIGN.md §7)."""
