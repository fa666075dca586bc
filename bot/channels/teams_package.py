"""The Teams app package (manifest.json + two icons, zipped) for sideloading or the admin center."""

from __future__ import annotations

import json
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from bot.channels import ChannelConfigError
from bot.commands import teams_commands

MANIFEST_VERSION = "1.17"
MANIFEST_SCHEMA = (
    "https://developer.microsoft.com/en-us/json-schemas/teams/v1.17/MicrosoftTeams.schema.json"
)
ACCENT = (0x1F, 0x42, 0xAA)  # dark blue
_GUID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class PackageInfo:
    app_id: str
    name: str = "Styringsbot"
    developer: str = "Oslo kommune"
    website: str = "https://www.oslo.kommune.no"
    privacy_url: str = "https://www.oslo.kommune.no/personvern"
    terms_url: str = "https://www.oslo.kommune.no"
    version: str = "1.0.0"


def manifest(info: PackageInfo) -> dict:
    commands = teams_commands()
    return {
        "$schema": MANIFEST_SCHEMA,
        "manifestVersion": MANIFEST_VERSION,
        "version": info.version,
        "id": info.app_id,
        "developer": {
            "name": info.developer,
            "websiteUrl": info.website,
            "privacyUrl": info.privacy_url,
            "termsOfUseUrl": info.terms_url,
        },
        "name": {"short": info.name[:30], "full": f"{info.name} – styring og roller"[:100]},
        "description": {
            "short": "Sitert svar om styring og roller i Oslo kommune."[:80],
            "full": (
                "Styringsbot svarer på spørsmål om Oslo kommunes styringssystem – styringsdialog, "
                "møteformer (etatsstyringsmøte, fagmøte, kontaktmøte), tildelingsbrev og "
                "tillitsbasert styring og ledelse – med sitater og kildehenvisning (dokument og "
                "lysbilde/side) fra kommunens egne dokumenter. Finnes ikke svaret i dokumentene, "
                "sier den det."
            ),
        },
        "icons": {"outline": "outline.png", "color": "color.png"},
        "accentColor": "#{:02X}{:02X}{:02X}".format(*ACCENT),
        "bots": [
            {
                "botId": info.app_id,
                "scopes": ["personal", "team", "groupChat"],
                "supportsFiles": False,
                "isNotificationOnly": False,
                "commandLists": [
                    {"scopes": ["personal", "team", "groupChat"], "commands": commands}
                ],
            }
        ],
        "permissions": ["identity", "messageTeamMembers"],
        "validDomains": [],
    }


def build_package(info: PackageInfo, output: Path) -> Path:
    """Write the zip Teams accepts: manifest.json, color.png (192²) and outline.png (32²)."""
    if not _GUID.match(info.app_id):
        raise ChannelConfigError(
            f"App-id-en {info.app_id!r} er ikke en GUID; bruk MICROSOFT_APP_ID fra "
            "appregistreringen i Azure (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)."
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest(info), ensure_ascii=False, indent=2))
        archive.writestr("color.png", _icon(192, ACCENT, (255, 255, 255), opaque=True))
        archive.writestr("outline.png", _icon(32, (255, 255, 255), (255, 255, 255), opaque=False))
    return output


def _icon(size: int, background: tuple[int, int, int], mark: tuple[int, int, int], *, opaque: bool):
    """A square icon with a speech-bubble mark: coloured and filled, or a white outline on
    transparency (what Teams asks of the outline icon)."""
    rows = []
    for y in range(size):
        row = bytearray([0])  # PNG filter type 0 for the row
        for x in range(size):
            u, v = (x + 0.5) / size, (y + 0.5) / size
            bubble = (0.2 <= u <= 0.8 and 0.22 <= v <= 0.66) or (
                0.3 <= u <= 0.42 and 0.66 < v <= 0.8 - (u - 0.3)
            )
            if opaque:
                edge = 0.26 <= u <= 0.74 and 0.28 <= v <= 0.6
                lines = edge and any(abs(v - t) < 0.025 for t in (0.36, 0.44, 0.52)) and u < 0.7
                colour = mark if bubble and (not edge or lines) else background
                row += bytes((*colour, 255))
            else:
                inner = 0.28 <= u <= 0.72 and 0.3 <= v <= 0.58
                row += bytes((*mark, 255)) if bubble and not inner else bytes((0, 0, 0, 0))
        rows.append(bytes(row))
    return _png(size, size, b"".join(rows))


def _png(width: int, height: int, raw: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
