"""Speed measurements of moco-ref (figures only; the tests never time anything)."""
