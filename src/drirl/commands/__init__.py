"""The command line, one module per ``drirl`` command group: ``data``, ``reward``, ``align``, ``eval`` (with
``judge``) and ``run`` (with ``demo``). Each module has ``register(subparsers)``; :mod:`drirl.cli` calls them.

This is the top layer: a command module may import any stage (the reward command hands the alignment stage's
policy step to the reward stage, which does not import it); no other module imports a command module.
"""
