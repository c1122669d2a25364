"""The safeguard rules an organisation runs: their modes, measured precision and thresholds."""
