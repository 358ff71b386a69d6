"""Table I rows (``tables``) and the report of a results folder (``report``)."""
