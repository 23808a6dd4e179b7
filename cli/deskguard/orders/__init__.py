"""Wipe and lock orders on the controller: building, signing and publishing them (issue), the order settings
from the policy (settings), and the HTTP server the agents talk to (server). See docs/wipe.md and
docs/agent-protocol.md."""
