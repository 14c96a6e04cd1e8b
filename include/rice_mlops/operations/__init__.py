"""Operations: the command line and the helpers of the hosts Airflow runs on (accounts,
broker and MLflow checks, health checks, preloading, the demo driver). No task imports them.
"""
