"""The SSH engine: connect with verified host keys, run commands that really stop, fan out.

Layers, each adding one thing: ``target`` (where and how to connect) ->
``keys`` and ``hostkeys`` (what to trust) -> ``connection`` (an open, verified,
authenticated session) -> ``exec`` (one command, streamed, bounded, stopped on
timeout) -> ``fanout`` (many servers at once) and ``probe`` (the connection test).
Nothing outside this package imports paramiko.
"""
