"""The deployment lifecycle: what may be served (``policy``), loading a registry version into a deployment
(``loader``), deploying and swapping them (``manager``), keeping memory in bounds (``residency``), following alias
moves and registry webhooks (``promotion``, ``webhooks``). Knows nothing of HTTP or MCP."""
