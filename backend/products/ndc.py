"""National Drug Codes: the 10-digit labeler-product-package forms and the 11-digit 5-4-2 form."""

from __future__ import annotations

import re

# The three 10-digit configurations FDA assigns, hyphenated, and the 11-digit form billing and
# DEA records use. A 10-digit code without hyphens is ambiguous (which segment gets the zero?),
# so only the hyphenated 10-digit forms are accepted.
HYPHENATED = re.compile(r"^(\d{4,5})-(\d{3,4})-(\d{1,2})$")
SEGMENTS = {(4, 4, 2), (5, 3, 2), (5, 4, 1), (5, 4, 2)}
ELEVEN = re.compile(r"^\d{11}$")
PROBLEM = ("an NDC as 11 digits, or hyphenated as 4-4-2, 5-3-2, 5-4-1 or 5-4-2 "
           "(10 digits without hyphens are ambiguous)")


def normalise(text: str) -> str | None:
    """Return `text` as the 11-digit NDC (no hyphens), or None if it is not a valid NDC."""
    text = text.strip()
    if ELEVEN.match(text):
        return text
    if not (match := HYPHENATED.match(text)):
        return None
    labeler, product, package = match.groups()
    if (len(labeler), len(product), len(package)) not in SEGMENTS:
        return None
    return labeler.zfill(5) + product.zfill(4) + package.zfill(2)


def formatted(ndc: str | None) -> str:
    """Return an 11-digit NDC as 5-4-2 with hyphens; blank for a product without one."""
    if not ndc:
        return ""
    return f"{ndc[:5]}-{ndc[5:9]}-{ndc[9:]}"
