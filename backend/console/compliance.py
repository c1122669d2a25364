"""The compliance officer's pages: the flag queue, a flag, nurses, patients, rules, the trail."""
