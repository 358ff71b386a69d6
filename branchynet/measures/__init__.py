"""Low-level measures the engines use: confidence of an exit (``confidence``),
per-exit costs (``costs``) and stage timers (``timing``)."""
