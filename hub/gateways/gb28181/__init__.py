"""The GB/T 28181 gateway: body cameras and other video devices registered over SIP, their positions, presence
and alarms turned into the hub's fixes, status and ``sos`` events and handed to the ingest pipeline. It may
import gb28181, devices and the pipeline's ``submit`` signature, never incidents, drones or video.
"""

from hub.gateways.gb28181.gateway import Gb28181Gateway, Submit

__all__ = ["Gb28181Gateway", "Submit"]
