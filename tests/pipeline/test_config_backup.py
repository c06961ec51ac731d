"""`vbm config-backup` / `vbm config-restore` on a real pipeline: back up while the services run,
wipe the data directory, restore: the catalog, the jobs and the keys are back, the job runs on, and
a restore as a new VM from the point made before the backup is byte-identical. A wrong passphrase,
a changed byte and a file cut short are refused with a clear error and nothing written."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from shared.catalog.reports import KEY_FILE, signing_key
from shared.db import make_engine, make_sessionmaker
from shared.db.models import Job, RestorePointRow
from shared.runtime.tls import self_signed, tls_dir
from tests.pipeline.conftest import Pipeline
from tests.pipeline.test_restore import backup, folder, restore, wait_restore

PASSPHRASE = "correct horse battery staple"


def restaged(tmp: Path) -> list[Path]:
    """Staging directories a restore left beside the data directory (there must be none)."""
    return list(tmp.glob(".data.restore-*"))


async def test_backup_wipe_restore_and_restore_an_old_point(
    pipeline_factory: Callable[..., Pipeline], tmp_path: Path
) -> None:
    p = pipeline_factory()
    p.repo_dir = tmp_path / "repo"  # the repository is not part of what a restore brings back
    p.start("snapshotter", "mover", "verifier", "notifier")
    old, content = await backup(p)

    # the keys a configuration backup carries, as the running system has them
    signing_key(p.data)
    self_signed("0.0.0.0", tls_dir(p.data))
    (p.data / "secret.key").write_bytes(b"stand-in for the secret key file\n")
    keys = {rel: (p.data / rel).read_bytes() for rel in (str(KEY_FILE), "secret.key", "tls/gateway.key")}

    phrase = tmp_path / "passphrase"
    phrase.write_text(PASSPHRASE + "\n")
    out = tmp_path / "backups" / "vbm.vbmcfg"
    out.parent.mkdir()
    made = await p.cli("config-backup", "--output", str(out), "--passphrase-file", str(phrase))
    assert made[2] == 0, made
    assert "1 jobs, 1 restore points" in made[0] and "keys/report-signing.pem" in made[0]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and not list(out.parent.glob(".*partial"))
    assert PASSPHRASE.encode() not in out.read_bytes() and b"SQLite format" not in out.read_bytes()

    # a new machine: nothing of the data directory is left
    p.stop()
    p.engine.dispose()
    shutil.rmtree(p.data)

    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase at all\n")
    refused = await p.cli("config-restore", str(out), "--passphrase-file", str(wrong))
    assert refused[2] == 1 and "wrong passphrase" in refused[1], refused
    assert not p.data.exists() and not restaged(tmp_path)

    blob = bytearray(out.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    flipped = tmp_path / "flipped.vbmcfg"
    flipped.write_bytes(bytes(blob))
    cut = tmp_path / "cut.vbmcfg"
    cut.write_bytes(out.read_bytes()[:-100])
    for damaged, says in ((flipped, "fails authentication"), (cut, "cut short")):
        refused = await p.cli("config-restore", str(damaged), "--passphrase-file", str(phrase))
        assert refused[2] == 1 and "the file is damaged" in refused[1] and says in refused[1], refused
        assert "Traceback" not in refused[1] and PASSPHRASE not in refused[1]
        assert not p.data.exists() and not restaged(tmp_path)

    done = await p.cli("config-restore", str(out), "--passphrase-file", str(phrase))
    assert done[2] == 0, done
    assert "1 jobs, 1 restore points" in done[0] and "secret.key" in done[0]
    for rel, data in keys.items():
        assert (p.data / rel).read_bytes() == data
        assert stat.S_IMODE((p.data / rel).stat().st_mode) == 0o600
    again = await p.cli("config-restore", str(out), "--passphrase-file", str(phrase))
    assert again[2] == 2 and "is not empty" in again[1] and "--force" in again[1]

    # the catalog is back: the job runs on (incremental from the restored catalog), and the
    # point made before the backup restores as a new VM, byte-identical
    p.engine = make_engine(f"sqlite:///{p.data / 'vbm.db'}")
    p.sessions = make_sessionmaker(p.engine)
    with p.sessions() as s:
        (job,) = s.scalars(select(Job)).all()
        assert s.get(RestorePointRow, old.id) is not None
    p.start("snapshotter", "mover", "verifier", "notifier")
    run = await p.run_job(job.id)
    assert (await p.wait_run(run)).state == "succeeded", p.dump(run)
    restore_id = await restore(
        p, restore_point_id=old.id, name="web-back", datastore="LocalDS_0", network="VM Network"
    )
    restored = await wait_restore(p, restore_id)
    assert restored.state == "succeeded", (restored.error, p.logs())
    assert (folder(p, "web-back") / "web-back-flat.vmdk").read_bytes() == content[2000]
    assert (folder(p, "web-back") / "web-back_1-flat.vmdk").read_bytes() == content[2001]
