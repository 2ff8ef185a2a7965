"""The services: the HTTP API of any application (``api``), operator tools (``ops``),
and the built-in order application: its saga (``orders``) and its participants
(``inventory``, ``payment``, ``notification``), composed in ``order_app``."""
