"""A peer in the same run: sagaway's order saga rebuilt on DBOS Transact, for ``sagaway bench``.

Nothing here is imported by sagaway at run time. The modules that need DBOS
(:mod:`sagaway.bench_peer.dbos_saga`, :mod:`sagaway.bench_peer.dbos_app`) import it only
when the peer server runs, in a process of its own; the helpers the bench calls
(:mod:`sagaway.bench_peer.server`, :mod:`sagaway.bench_peer.invariants`) need the
``bench`` extra (``pip install -e '.[bench]'``) only when they are called.

- :mod:`~sagaway.bench_peer.tables` and :mod:`~sagaway.bench_peer.rules`: the peer's
  schema and the order saga's business rules, the same as sagaway's participants apply.
- :mod:`~sagaway.bench_peer.dbos_saga`: the ``order_fulfillment`` DBOS workflow, its
  steps as exactly-once datasource transactions or as plain at-least-once steps.
- :mod:`~sagaway.bench_peer.dbos_app`: the HTTP surface the bench drives, in one process.
- :mod:`~sagaway.bench_peer.server`: ``start_dbos_peer``, fresh databases and a subprocess.
- :mod:`~sagaway.bench_peer.invariants`: ``check_dbos_invariants``.
- :mod:`~sagaway.bench_peer.load`: a small load driver to measure the peer on its own.
"""
