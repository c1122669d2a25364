"""Oversight: the safeguard rules and their modes, the audit trail, and the ledger's integrity."""
