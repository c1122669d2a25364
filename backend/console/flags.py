"""The compliance officer's flag queue and a flag's page: its rule, evidence timeline, review."""
