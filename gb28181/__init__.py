"""GB/T 28181 (2016, tolerant of 2022 devices): the SIP signalling and MANSCDP bodies of police body cameras and
other video devices, as a library that knows nothing of the hub (it may import devices and geo only).
"""
