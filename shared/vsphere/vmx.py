"""VM configuration files: reading a `.vmx` and rewriting it and the disk descriptors for a
restore as a new VM.

A `.vmx` is lines of `key = "value"`. A restored copy gets a new display name, new disk and
NVRAM file names, no identity of the original (BIOS/instance UUIDs, generated MAC addresses,
swap and log paths: vCenter assigns new ones), CBT off (a new VM starts a new change epoch; the
first backup of it turns CBT on), and optionally every NIC on another network.
"""

from __future__ import annotations

import re

_LINE = re.compile(r'^\s*([A-Za-z0-9_.:\-]+)\s*=\s*"(.*)"\s*$')
_DISK = re.compile(r"^(scsi|sata|ide|nvme)(\d+):(\d+)\.fileName$", re.IGNORECASE)
_NIC = re.compile(r"^ethernet(\d+)\.(.+)$", re.IGNORECASE)
_EXTENT = re.compile(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)\s+"([^"]+)"(.*)$')

# identity and placement of the original VM: vCenter gives the restored copy its own
_DROP = (
    "uuid.bios",
    "uuid.location",
    "vc.uuid",
    "sched.swap.derivedname",
    "migrate.hostlog",
    "migrate.hostlogstate",
    "migrate.migrationid",
    "ctkenabled",
    "checkpoint.vmstate",
)


def parse(text: str) -> dict[str, str]:
    """key -> value of every `key = "value"` line (keys as written; later lines win)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def disk_files(text: str) -> dict[str, str]:
    """Device (e.g. 'scsi0:0') -> descriptor file name of every present disk in a `.vmx`."""
    values = parse(text)
    lower = {k.lower(): v for k, v in values.items()}
    out: dict[str, str] = {}
    for key, value in values.items():
        m = _DISK.match(key)
        if not m or not value.lower().endswith(".vmdk"):
            continue
        device = f"{m.group(1)}{m.group(2)}:{m.group(3)}"
        if lower.get(f"{device.lower()}.present", "true").lower() == "false":
            continue
        out[device] = value
    return out


def restore_vmx(
    text: str, name: str, disks: dict[str, str], nvram: str, network: str | None, drop: tuple[str, ...] = ()
) -> str:
    """The `.vmx` of a restored copy: `disks` maps old descriptor names (as the file lists them,
    or their base names) to new ones; `nvram` is the new NVRAM file name; `drop` names devices
    (e.g. 'scsi0:2') whose lines are left out (disks that are not in the backup)."""
    by_base = {old.rsplit("/", 1)[-1]: new for old, new in disks.items()}
    dropped = tuple(f"{d.lower()}." for d in drop)
    out: list[str] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            out.append(line)
            continue
        key, value = m.group(1), m.group(2)
        low = key.lower()
        if low in _DROP or low.endswith(".ctkenabled") or low.startswith(dropped or ("\0",)):
            continue
        nic = _NIC.match(key)
        if nic and nic.group(2).lower() in ("generatedaddress", "generatedaddressoffset"):
            continue
        if low == "displayname":
            value = name
        elif low == "nvram":
            value = nvram
        elif _DISK.match(key) and value.lower().endswith(".vmdk"):
            value = disks.get(value) or by_base.get(value.rsplit("/", 1)[-1], value)
        elif nic and nic.group(2).lower() == "networkname" and network is not None:
            value = network
        out.append(f'{key} = "{_escape(value)}"')
    return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace('"', "|22")


def restore_descriptor(text: str, flat: str) -> str:
    """A disk descriptor pointing at the new flat file, without the original's CBT file."""
    out: list[str] = []
    extents = 0
    for line in text.splitlines():
        if line.strip().lower().startswith("changetrackpath"):
            continue
        m = _EXTENT.match(line.strip())
        if m:
            extents += 1
            line = f'{m.group(1)} {m.group(2)} {m.group(3)} "{flat}"{m.group(5)}'
        out.append(line)
    if extents != 1:
        raise ValueError(f"the disk descriptor has {extents} extents; a restore needs exactly one")
    return "\n".join(out) + "\n"


def descriptor(capacity: int, flat: str, adapter: str = "lsilogic") -> str:
    """A monolithic flat ('vmfs') descriptor for a disk whose own was not backed up."""
    sectors = -(-capacity // 512)
    cylinders = max(1, sectors // (255 * 63))
    return (
        '# Disk DescriptorFile\nversion=1\nencoding="UTF-8"\nCID=fffffffe\nparentCID=ffffffff\n'
        'createType="vmfs"\n\n# Extent description\n'
        f'RW {sectors} VMFS "{flat}"\n\n# The Disk Data Base\n#DDB\n\n'
        f'ddb.adapterType = "{adapter}"\nddb.geometry.cylinders = "{cylinders}"\n'
        'ddb.geometry.heads = "255"\nddb.geometry.sectors = "63"\nddb.virtualHWVersion = "13"\n'
    )
