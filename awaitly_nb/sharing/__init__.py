"""Sharing state with teammates: portable bundles (export/import) and their signing."""
