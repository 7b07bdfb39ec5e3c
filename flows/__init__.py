"""Prefect flows of svrctl, installed as ``svrctl.flows``."""
