"""Lab spec files: the whole lab (datastores, tag categories, VMs and their disks) in JSON or TOML.

``load_spec(path)`` reads one into a ``LabSpec`` (errors name the file and the field);
``default_spec(vms, disks_per_vm, disk_size_mib)`` is the lab ``vbm up`` builds. The format is
documented in docs/lab.md ("Spec files"); lab/specs/ has examples.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lab.model import DatastoreSpec, DiskSpec, LabSpec, TagCategorySpec, TagRef, VMSpec

__all__ = [
    "SpecError",
    "default_spec",
    "lab_from_dict",
    "load_spec",
    "parse_size",
    "spec_to_dict",
    "vm_from_dict",
]

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class SpecError(ValueError):
    """A spec file (or a VM spec) that cannot be used; the message names the file and field."""


def parse_size(text: str | int) -> int:
    """64M, 1G, 5123K, 1048576 (or an int) -> bytes; a positive multiple of 1 KiB."""
    if isinstance(text, bool):
        raise ValueError(f"bad size {text!r}")
    if isinstance(text, int):
        size = text
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*", str(text).upper())
        if not m:
            raise ValueError(f"bad size {text!r} (e.g. 64M, 1G, 5123K or bytes)")
        size = int(m.group(1)) * _UNITS[m.group(2)]
    if size <= 0 or size % 1024:
        raise ValueError(f"size {text!r} must be a positive multiple of 1 KiB")
    return size


def default_spec(vms: int, disks_per_vm: int, disk_size_mib: int) -> LabSpec:
    """The lab `vbm up` builds: VMs lab-vm-01.., disk d of VM i has size + d*3 KiB and seed
    i*16 + d (i from 0), CBT on."""
    size = disk_size_mib * 1024 * 1024
    return LabSpec(
        vms=tuple(
            VMSpec(
                name=f"lab-vm-{i + 1:02d}",
                disks=tuple(DiskSpec(size=size + d * 3 * 1024, seed=i * 16 + d) for d in range(disks_per_vm)),
                cbt=True,
            )
            for i in range(vms)
        )
    )


def load_spec(path: str | Path) -> LabSpec:
    """Read a lab spec file (.json, or .toml) into a LabSpec."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SpecError(f"{path}: cannot read the spec file: {e.strerror or e}") from None
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise SpecError(f"{path}: not valid {kind}: {e}") from None
    try:
        return lab_from_dict(data)
    except SpecError as e:
        raise SpecError(f"{path}: {e}") from None


def spec_to_dict(spec: LabSpec) -> dict[str, Any]:
    """The JSON the simulator reads (and a spec file may hold)."""
    return asdict(spec)


# ------------------------------------------------------------------------------- validation


def _fail(where: str, msg: str) -> SpecError:
    return SpecError(f"{where}: {msg}")


def _obj(value: Any, where: str, allowed: set[str], required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, f"expected an object, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _fail(f"{where}.{unknown[0]}", f"unknown field (known: {', '.join(sorted(allowed))})")
    for key in required:
        if key not in value:
            raise _fail(f"{where}.{key}", "is required")
    return dict(value)


def _typed(d: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...], default: Any) -> Any:
    if key not in d:
        return default
    v = d[key]
    ok = isinstance(v, kind) and not (isinstance(v, bool) and bool not in _as_tuple(kind))
    if not ok:
        names = " or ".join(t.__name__ for t in _as_tuple(kind))
        raise _fail(f"{where}.{key}", f"expected {names}, got {v!r}")
    return v


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(where, f"expected a non-empty string, got {value!r}")
    return value


def _list(d: dict[str, Any], key: str, where: str) -> list[Any]:
    v = d.get(key, [])
    if not isinstance(v, list):
        raise _fail(f"{where}.{key}", f"expected a list, got {type(v).__name__}")
    return v


def _num(d: dict[str, Any], key: str, where: str) -> float:
    v = _typed(d, key, where, (int, float), 0)
    if v < 0:
        raise _fail(f"{where}.{key}", f"must be >= 0, got {v!r}")
    return float(v)


_DISK_FIELDS = {"size", "seed", "layout", "thick", "mode", "kind", "compatibility", "datastore"}
_VM_FIELDS = {
    "name",
    "disks",
    "cbt",
    "power_on",
    "folder",
    "host",
    "resource_pool",
    "datastore",
    "tags",
    "quiesce_fails",
    "count",
}
_LAB_FIELDS = {
    "vms",
    "cbt_max_areas",
    "username",
    "password",
    "tools_boot_seconds",
    "datastores",
    "tag_categories",
}


def disk_from_dict(value: Any, where: str, default_seed: int = 0) -> DiskSpec:
    if isinstance(value, str | int) and not isinstance(value, bool):
        value = {"size": value}
    d = _obj(value, where, _DISK_FIELDS, ("size",))
    try:
        size = parse_size(d["size"])
    except ValueError as e:
        raise _fail(f"{where}.size", str(e)) from None
    try:
        return DiskSpec(
            size=size,
            seed=_typed(d, "seed", where, int, default_seed),
            layout=_typed(d, "layout", where, str, "mixed"),
            thick=_typed(d, "thick", where, bool, False),
            mode=_typed(d, "mode", where, str, "persistent"),
            kind=_typed(d, "kind", where, str, "flat"),
            compatibility=_typed(d, "compatibility", where, str, ""),
            datastore=_typed(d, "datastore", where, str, ""),
        )
    except ValueError as e:
        if isinstance(e, SpecError):
            raise
        raise _fail(where, str(e)) from None


def _tag(value: Any, where: str) -> TagRef:
    if isinstance(value, str):
        cat, sep, name = value.partition(":")
        if not sep or not cat or not name:
            raise _fail(where, f'a tag is "category:tag", got {value!r}')
        return TagRef(cat, name)
    d = _obj(value, where, {"category", "name"}, ("category", "name"))
    return TagRef(_typed(d, "category", where, str, ""), _typed(d, "name", where, str, ""))


def vm_from_dict(value: Any, where: str = "vm", vm_index: int = 0, copy: int = 0) -> VMSpec:
    """One VM of a spec file (``count`` is expanded by ``lab_from_dict``, not here)."""
    d = _obj(value, where, _VM_FIELDS - {"count"}, ("name",))
    name = _typed(d, "name", where, str, "")
    if not name.strip() or any(c in name for c in "/[]"):
        raise _fail(f"{where}.name", f"invalid VM name {name!r} (not empty, no / [ ])")
    disks = []
    for j, disk in enumerate(_list(d, "disks", where)):
        spec = disk_from_dict(disk, f"{where}.disks[{j}]", default_seed=vm_index * 16 + j)
        if copy and isinstance(disk, Mapping) and "seed" in disk:
            spec = DiskSpec(**{**asdict(spec), "seed": spec.seed + 16 * copy})
        disks.append(spec)
    return VMSpec(
        name=name,
        disks=tuple(disks),
        cbt=_typed(d, "cbt", where, bool, False),
        power_on=_typed(d, "power_on", where, bool, True),
        folder=_typed(d, "folder", where, str, "").strip("/"),
        host=_typed(d, "host", where, str, ""),
        resource_pool=_typed(d, "resource_pool", where, str, ""),
        datastore=_typed(d, "datastore", where, str, ""),
        tags=tuple(_tag(t, f"{where}.tags[{k}]") for k, t in enumerate(_list(d, "tags", where))),
        quiesce_fails=_typed(d, "quiesce_fails", where, bool, False),
    )


def lab_from_dict(data: Any) -> LabSpec:
    """A whole spec (the parsed JSON/TOML document) -> LabSpec, checked."""
    d = _obj(data, "spec", _LAB_FIELDS)
    datastores: list[DatastoreSpec] = []
    for i, ds in enumerate(_list(d, "datastores", "spec")):
        where = f"datastores[{i}]"
        if isinstance(ds, str):
            ds = {"name": ds}
        o = _obj(ds, where, {"name", "latency_ms", "bandwidth_mbps"}, ("name",))
        datastores.append(
            DatastoreSpec(
                name=_typed(o, "name", where, str, ""),
                latency_ms=_num(o, "latency_ms", where),
                bandwidth_mbps=_num(o, "bandwidth_mbps", where),
            )
        )
    ds_names = [ds.name for ds in datastores] or ["LocalDS_0"]
    for i, name in enumerate(ds_names):
        if not name.strip() or any(c in name for c in "/[]\\") or ds_names.index(name) != i:
            raise _fail(f"datastores[{i}].name", f"invalid or repeated datastore name {name!r}")
    categories: list[TagCategorySpec] = []
    declared: set[TagRef] = set()
    for i, c in enumerate(_list(d, "tag_categories", "spec")):
        where = f"tag_categories[{i}]"
        o = _obj(c, where, {"name", "tags", "cardinality", "description", "associable_types"}, ("name",))
        cat = TagCategorySpec(
            name=_typed(o, "name", where, str, ""),
            tags=tuple(_str(t, f"{where}.tags[{k}]") for k, t in enumerate(_list(o, "tags", where))),
            cardinality=_typed(o, "cardinality", where, str, "MULTIPLE"),
            description=_typed(o, "description", where, str, ""),
            associable_types=tuple(_list(o, "associable_types", where)),
        )
        if cat.cardinality not in ("SINGLE", "MULTIPLE"):
            raise _fail(f"{where}.cardinality", f"{cat.cardinality!r} is not SINGLE or MULTIPLE")
        if not cat.name or any(cat.name == other.name for other in categories):
            raise _fail(f"{where}.name", f"empty or repeated category name {cat.name!r}")
        categories.append(cat)
        declared.update(TagRef(cat.name, t) for t in cat.tags)
    vms: list[VMSpec] = []
    for i, vm in enumerate(_list(d, "vms", "spec")):
        where = f"vms[{i}]"
        item = _obj(vm, where, _VM_FIELDS, ("name",))
        count = _typed(item, "count", where, int, 1)
        item.pop("count", None)
        if count < 1:
            raise _fail(f"{where}.count", f"must be >= 1, got {count}")
        template = _typed(item, "name", where, str, "")
        if count > 1 and "{n" not in template:
            raise _fail(f"{where}.name", 'with "count", the name needs {n} (e.g. "web-{n:02d}")')
        for n in range(1, count + 1):
            if count > 1:
                try:
                    item["name"] = template.format(n=n)
                except (KeyError, IndexError, ValueError) as e:
                    raise _fail(f"{where}.name", f"bad name template {template!r}: {e}") from None
            vms.append(vm_from_dict(item, where, vm_index=len(vms), copy=n - 1))
    seen: set[str] = set()
    for vm in vms:
        if vm.name in seen:
            raise _fail("vms", f"VM name {vm.name!r} twice")
        seen.add(vm.name)
        for place, dsname in [("datastore", vm.datastore)] + [
            (f"disks[{j}].datastore", disk.datastore) for j, disk in enumerate(vm.disks)
        ]:
            if dsname and dsname not in ds_names:
                declared_ds = ", ".join(ds_names)
                raise _fail(f"vms[{vm.name}].{place}", f"no datastore {dsname!r} (declared: {declared_ds})")
        for k, tag in enumerate(vm.tags):
            if tag not in declared:
                raise _fail(
                    f"vms[{vm.name}].tags[{k}]",
                    f"tag {tag.category}:{tag.name} is not declared in tag_categories",
                )
    return LabSpec(
        vms=tuple(vms),
        cbt_max_areas=_typed(d, "cbt_max_areas", "spec", int, 0),
        username=_typed(d, "username", "spec", str, "user"),
        password=_typed(d, "password", "spec", str, "pass"),
        tools_boot_seconds=_num(d, "tools_boot_seconds", "spec"),
        datastores=tuple(datastores),
        tag_categories=tuple(categories),
    )
