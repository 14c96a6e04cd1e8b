"""Monitoring (the release zone's monitoring DAG): the serving servers' prediction logs read
with bounds, judged against the drift reference the release zone computed and keeps.
"""
