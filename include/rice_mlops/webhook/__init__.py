"""GitHub webhook receiver: verify the signature, filter the event, trigger the DAG over REST."""
