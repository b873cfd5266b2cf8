"""kopf handlers: thin decorators that call into plain modules. Importing registers them."""

from kubetrain_operator.handlers import lifecycle, watch

__all__ = ["lifecycle", "watch"]
