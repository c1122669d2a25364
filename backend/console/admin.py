"""The admin's pages: users, devices, policy thresholds and the organisation."""
