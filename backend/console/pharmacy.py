"""The pharmacist's pages: inventory, movements, counts, bags, losses and reports."""
