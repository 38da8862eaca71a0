"""What a simulated ArduCopter watches while it runs: its failsafes and its pre-arm nag.

Pure state on the autopilot's boot clock (milliseconds passed in), so each rule is
tested by feeding times. Each check says whether its rule fires now;
:class:`~sim.copter.Copter` then does what ArduCopter does about it (a status
text, RTL or LAND, disarming).
"""

from __future__ import annotations

from sim.arducopter import PREARM_REPORT_S, CopterConfig

__all__ = ["Failsafes"]


class Failsafes:
    """The disarm delay on the ground, the battery and GCS failsafes and the repeated pre-arm report."""

    def __init__(self, now_ms: int) -> None:
        self.ground_since_ms = now_ms  # armed and standing since then
        self.battery_done = False  # the low-battery failsafe fires once per arming
        self.gcs_seen_ms: int | None = None  # the last heartbeat from MAV_GCS_SYSID; None: none since boot
        self.gcs_lost = False  # the GCS failsafe has fired and no heartbeat from MAV_GCS_SYSID has come since
        self.prearm_said_ms: int | None = None

    def armed(self, now_ms: int) -> None:
        self.ground_since_ms = now_ms
        self.battery_done = False

    def disarmed(self) -> None:
        self.gcs_lost = False

    def boot(self) -> None:
        """A reboot forgets the ground station and when it last reported a pre-arm failure."""
        self.gcs_seen_ms = None
        self.gcs_lost = False
        self.prearm_said_ms = None

    def disarm_due(self, config: CopterConfig, now_ms: int) -> bool:
        """Armed on the ground for DISARM_DELAY (0: never)."""
        return config.disarm_delay_s > 0 and now_ms - self.ground_since_ms >= config.disarm_delay_s * 1000

    def airborne(self, now_ms: int) -> None:
        """In the air (or taking off): the ground time counts from the next touchdown."""
        self.ground_since_ms = now_ms

    def battery_low(self, config: CopterConfig, battery_pct: float) -> bool:
        """True once per arming, when the charge first falls below the low-battery threshold."""
        if battery_pct >= config.low_battery_pct or self.battery_done:
            return False
        self.battery_done = True
        return True

    def gcs_heartbeat(self, config: CopterConfig, system_id: int, now_ms: int) -> bool:
        """A GCS heartbeat: only MAV_GCS_SYSID's count, as in ArduPilot. True when it clears the failsafe."""
        if system_id != config.gcs_sysid:
            return False
        self.gcs_seen_ms = now_ms
        cleared, self.gcs_lost = self.gcs_lost, False
        return cleared

    def gcs_timeout(self, config: CopterConfig, now_ms: int) -> bool:
        """FS_GCS_ENABLE: True once, when after a heartbeat from MAV_GCS_SYSID none came for FS_GCS_TIMEOUT."""
        if (config.fs_gcs_enable == 0 or self.gcs_lost or self.gcs_seen_ms is None
                or now_ms - self.gcs_seen_ms <= config.fs_gcs_timeout_s * 1000):
            return False
        self.gcs_lost = True
        return True

    def prearm_report(self, failure: str, now_ms: int) -> bool:
        """ArduPilot repeats a failing pre-arm check every 30 s while disarmed: True when ``failure`` (empty
        when the checks pass) is to be reported now."""
        due = self.prearm_said_ms is None or now_ms - self.prearm_said_ms >= PREARM_REPORT_S * 1000
        if not due or not failure:
            return False
        self.prearm_said_ms = now_ms
        return True
