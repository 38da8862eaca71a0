"""JT/T 808 (2013 and 2019): the TCP protocol of vehicle terminals, as a pure codec that knows nothing of the hub
(it may import devices and geo only), like :mod:`gb28181` for GB/T 28181.

The receive path: :class:`~jt808.frame.Deframer` cuts a TCP stream into checked packets,
:class:`~jt808.subpackage.Reassembler` joins sub-packages, :func:`~jt808.codec.decode_message` reads the header
and the typed body, :func:`~jt808.location.to_fix` makes a location the hub's fix. Every refusal on the way is a
:class:`~jt808.errors.Jt808Error` whose ``reason`` names a drop counter (:data:`~jt808.errors.REASONS`).
"""
