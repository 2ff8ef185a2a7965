"""Process entry points: one per component, each runnable as N instances."""
