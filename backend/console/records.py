"""The pharmacist's records: bag reconciliation, losses and their DEA deadlines, reports."""
