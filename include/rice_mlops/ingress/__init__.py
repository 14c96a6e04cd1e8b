"""Ingress (runs inside the Airflow API server, mounted at /webhooks by plugins/): the GitHub
webhook receiver. It verifies the signature, filters the event and triggers the DAG over the
REST API; it holds the webhook secret and an account that may only trigger runs.
"""
