"""Trip booking: a saga application built on sagaway's public API."""
