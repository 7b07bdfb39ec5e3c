"""Prefect block types of svrctl, installed as ``svrctl.blocks``."""
