"""Files: atomic writes and loads (``fileio``), ``.npz`` archives read without
pickle (``safenpz``), run records (``runrecord``)."""
