"""Site workers: evaluation where the hidden cases live, with nothing shared but the server's HTTP API.

``protocol`` (the request and response bodies), ``server`` (the server's side: tokens, claims, leases,
recording), ``client`` / ``download`` / ``worker`` (the site's side). The web edge is arena/web/site_api.py.
"""
