"""svrctl: server automation on Prefect."""
