"""The trip saga's participants: flights, hotels, payments.

The package is called ``services`` like one of sagaway's own subpackages on purpose:
sagaway's modules live under ``sagaway.``, so a team's ``services`` is never shadowed.
"""
