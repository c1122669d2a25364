"""A nurse's page and a patient's page: their flags, charts against peers and plan, records."""
