"""Devices' logins, MQTT, GB/T 28181 SIP or a gateway's (JT/T 808, OwnTracks, OsmAnd; admin only): add, list, rotate,
revoke. A secret is in the answer once and nowhere else."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import Field

from hub.api.access_models import DeviceCertificate, DeviceLogin, DeviceLoginList, DeviceRevoked
from hub.api.deps import Admin, ProvisionerDep
from hub.api.inputs import ApiModel

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])

ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
DeviceId = Annotated[str, Path(pattern=ID)]
KINDS = r"^(bodycam|radio|vehicle|drone|camera|phone|tracker|gateway)$"


class DeviceIn(ApiModel):
    device_id: str = Field(pattern=ID)
    unit_id: str = Field(pattern=ID)
    kind: str | None = Field(default=None, pattern=KINDS)
    protocol: str = Field(default="mqtt", pattern=r"^(mqtt|gb28181|jt808|owntracks|osmand)$")
    # gb28181 only: the camera's password (else one is generated); never stored, only its digest HA1
    password: str | None = Field(default=None, min_length=8, max_length=32)
    # jt808 only: the terminal's phone number (digits, checked by the provisioning) and, optionally, its terminal id
    phone: str | None = Field(default=None, max_length=64)
    terminal_id: str | None = Field(default=None, max_length=64)


class RotateIn(ApiModel):
    password: str | None = Field(default=None, min_length=8, max_length=32)  # gb28181 only, as in DeviceIn


def _issued(answer: dict[str, Any], status: int = 200) -> JSONResponse:
    """An answer carrying a secret (a password, a private key): never cached anywhere, shown this once."""
    return JSONResponse(answer, status_code=status, headers={"Cache-Control": "no-store"})


@router.get("", response_model=DeviceLoginList)
async def list_devices(who: Admin, provisioner: ProvisionerDep) -> dict[str, Any]:
    rows = await provisioner.list()
    for row in rows:
        for key in ("created_at", "rotated_at", "revoked_at"):
            row[key] = int(row[key].timestamp() * 1000) if row[key] is not None else None
    return {"devices": rows}


@router.post("", status_code=201, response_model=DeviceLogin)
async def add_device(body: DeviceIn, who: Admin, provisioner: ProvisionerDep) -> JSONResponse:
    creds = await provisioner.add(body.device_id, body.unit_id, body.kind, actor=who.name, role=who.role,
                                  protocol=body.protocol, password=body.password, phone=body.phone,
                                  terminal_id=body.terminal_id)
    return _issued(creds.as_dict(), 201)


@router.post("/{device_id}/rotate", response_model=DeviceLogin)
async def rotate_device(device_id: DeviceId, who: Admin, provisioner: ProvisionerDep,
                        body: RotateIn | None = None) -> JSONResponse:
    creds = await provisioner.rotate(device_id, actor=who.name, role=who.role,
                                     password=body.password if body is not None else None)
    return _issued(creds.as_dict())


@router.post("/{device_id}/certificate", response_model=DeviceCertificate)
async def device_certificate(device_id: DeviceId, who: Admin, provisioner: ProvisionerDep) -> JSONResponse:
    """A client certificate (and its new private key, shown once) for the broker's mTLS listener."""
    answer = await provisioner.certificate(device_id, actor=who.name, role=who.role)
    return _issued(answer)


@router.delete("/{device_id}", response_model=DeviceRevoked)
async def revoke_device(device_id: DeviceId, who: Admin, provisioner: ProvisionerDep) -> dict[str, Any]:
    await provisioner.revoke(device_id, actor=who.name, role=who.role)
    return {"device_id": device_id, "login": "revoked"}
