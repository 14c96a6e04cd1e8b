"""Serving what the pipeline ships: the proxy's routing, the serving state, and the verdicts
of the shadow and canary stages, as pure functions the release zone wires to Docker.

`proxy_config` renders the serving proxy's nginx configuration from checked numbers;
`state` keeps which digest serves at which weight; `verdicts` decides each stage from
measured numbers (prediction logs joined by request id, two scrapes of `/metrics`).
"""
