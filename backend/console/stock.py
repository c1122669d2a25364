"""The pharmacist's stock: inventory, movements through the custody service, counts."""
