"""The HTTP API of an installation: sagas, admin, dashboard, health and contracts,
plus the routes an application adds (the order application adds /orders)."""
