"""The experiment driver: the command line (``cli``), one network's run
(``run``, with its stages in ``stages``) and network specifications
(``netspec``). ``python -m branchynet.driver`` or ``python -m
branchynet.experiment`` runs it."""
