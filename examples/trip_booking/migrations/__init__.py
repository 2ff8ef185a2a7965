"""The trip application's own Alembic revisions (``SagaApp(migrations="migrations")``).

``sagaway migrate --app trips.app:app`` applies them after sagaway's own, with a version
table of their own (``alembic_version_trips``). The participants' outbox and inbox
tables are sagaway's to create; these revisions create only the example's tables.
"""
