"""vhost-device-vsock: the user-space vsock device used where the host kernel has no vhost-vsock.

It is packaged only in Debian sid; its binary runs on bookworm. We fetch the .deb with a private package
list (never touching the system's apt state) and unpack the one binary into the assets.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from boxlite.provision._common import Progress, debian_mirror, file_lock, run_logged

PACKAGE = "vhost-device-vsock"


def installed_binary() -> Path | None:
    found = shutil.which(PACKAGE)
    return Path(found) if found else None


def ensure_vsock_device(assets: Path, cache: Path, progress: Progress) -> Path:
    system = installed_binary()
    if system is not None:
        return system
    out = assets / PACKAGE
    if out.exists():
        return out
    with file_lock(cache / "vsock.lock"):
        if out.exists():
            return out
        progress(f"fetching {PACKAGE} from Debian sid (private package list)")
        work = Path(tempfile.mkdtemp(prefix="vsock-", dir=cache))
        try:
            (work / "lists/partial").mkdir(parents=True)
            (work / "cache/archives/partial").mkdir(parents=True)
            sources = work / "sources.list"
            sources.write_text(f"deb {debian_mirror()} sid main\n")
            apt = ["apt-get", "-q", f"-oDir::Etc::SourceList={sources}", "-oDir::Etc::SourceParts=/dev/null",
                   f"-oDir::State::Lists={work / 'lists'}", f"-oDir::Cache={work / 'cache'}",
                   "-oAPT::Sandbox::User=root"]
            log = cache / "vsock.log"
            run_logged([*apt, "update"], log, progress, what="sid package list download")
            run_logged([*apt, "download", PACKAGE], log, progress, what=f"{PACKAGE} download", cwd=work)
            deb = next(work.glob(f"{PACKAGE}_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True)
            tmp = out.with_suffix(".tmp")
            shutil.copy2(work / "x/usr/bin" / PACKAGE, tmp)
            tmp.replace(out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return out
