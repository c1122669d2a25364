"""Families of safeguard rules, each a registry of pure checks over its own facts."""
