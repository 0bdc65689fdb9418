"""What runs inside the router pod: the config contract, orchestrator and model servers.

Nothing in this package imports ``routermesh.operator``.
"""
