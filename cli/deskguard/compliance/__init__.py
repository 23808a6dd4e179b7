"""The nightly compliance run: controls, their evaluation against the policy, runs in the store, reports.

See docs/compliance.md.
"""
