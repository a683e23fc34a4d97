"""Operating a dataset: status, verify, remove (takedown), gc and the gallery."""
