"""Deployment definitions of svrctl, installed as ``svrctl.deployments``."""
