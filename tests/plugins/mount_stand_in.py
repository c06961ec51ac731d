"""A stand-in for mount(8) and umount(8) (the kernel here has no NFS or CIFS): run by the mount
manager as its `mounts.mount_command` / `mounts.umount_command`, it appends what it was given to
a JSON-lines log (for CIFS also the credentials file's mode and its lines, the password as its
SHA-256) and then mounts what does mount here: the source's directory from the map file bound
at the mount point (`mount --bind`), `smbnetfs` (a FUSE file system a test can kill to make the
mount stale), or a tmpfs; a source mapped to `fail:<text>` exits 32 saying <text>.

    stand_in.py mount --log L --map M -t nfs -o OPTS SERVER:/EXPORT DIR
    stand_in.py umount --log L [-l] DIR
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path


def _credentials(opts: str) -> dict[str, object]:
    for opt in opts.split(","):
        if opt.startswith("credentials="):
            path = Path(opt.split("=", 1)[1])
            lines = []
            for line in path.read_text().splitlines():
                key, _, value = line.partition("=")
                lines.append(
                    f"{key}=sha256:{hashlib.sha256(value.encode()).hexdigest()}"
                    if key == "password"
                    else line
                )
            return {"credentials_mode": oct(stat.S_IMODE(path.stat().st_mode)), "credentials": lines}
    return {}


def main(argv: list[str]) -> int:
    action, log = argv[0], Path(argv[2])
    rest = argv[3:]
    if action == "umount":
        with log.open("a") as fh:
            fh.write(json.dumps({"argv": ["umount", *rest]}) + "\n")
        return subprocess.run(["umount", *rest]).returncode
    mapping = json.loads(Path(rest[1]).read_text()) if Path(rest[1]).exists() else {}
    args = rest[2:]
    kind = args[args.index("-t") + 1]
    opts = args[args.index("-o") + 1]
    positional = [a for i, a in enumerate(args) if a not in ("-t", "-o") and args[i - 1] not in ("-t", "-o")]
    source, point = positional
    record: dict[str, object] = {"argv": ["mount", *args]}
    if kind == "cifs":
        record.update(_credentials(opts))
    with log.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    target = mapping.get(source, "tmpfs")
    if target.startswith("fail:"):
        print(f"mount error(13): {target[5:]}", file=sys.stderr)
        return 32
    if target == "tmpfs":
        return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", point]).returncode
    if target.startswith("smbnetfs:"):
        home = Path(target.split(":", 1)[1])
        env = {**os.environ, "HOME": str(home)}
        return subprocess.run(
            ["smbnetfs", point, "-o", f"nonempty,config={home}/.smb/smbnetfs.conf"], env=env
        ).returncode
    return subprocess.run(["mount", "--bind", target, point]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
