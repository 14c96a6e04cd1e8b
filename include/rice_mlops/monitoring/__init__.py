"""Watching the model in service: its prediction logs against a reference (issue 23)."""
