"""``python -m sagaway``: the same as the ``sagaway`` console script."""

from sagaway.cli import app

app()
