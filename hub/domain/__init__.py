"""Pure domain core of incidents and dispatch: no I/O, no asyncio, time passed in.

Arrival and departure detection, the incident and assignment state machine,
response-time (SLA) policies, and dispatch recommendation. The adapters (MQTT,
PostgreSQL, HTTP) feed these with data and persist what they decide.
"""
