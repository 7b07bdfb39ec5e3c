"""Built-in plugins of svrctl, installed as ``svrctl.plugins``."""
