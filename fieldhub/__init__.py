"""The composition root of the ``fieldhub`` process: the command line and what each command is given.

It owns no behaviour of its own: it adds the hub's subcommands (``serve``, ``device``, ``token``), the
simulator's (``demo``, ``sim``) and the benchmarks' (``bench``), and chooses the road network ``serve``
hands the hub. It may import every package; none imports it.
"""
