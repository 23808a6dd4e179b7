"""Debian packages for one container test, fetched on the controller and installed in the laptop container.

Lab containers have no route out, and the programs some tests must start (browsers, pamtester, gsettings) are
not in the shared lab rootfs on purpose: adding them there would rebuild every lab image for everyone. So the
controller resolves the packages against the container's own dpkg status and release (apt with a private
state folder: the machine's apt is not touched), downloads the .debs once into a cache kept between runs, and
`install()` streams them over SSH and installs them with apt from a local file repository (dependencies in
order, nothing else pulled)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

from deskguard.lab.access import host_argv
from deskguard.lab.access import run_ssh as ssh
from deskguard.lab.image import debian_mirror

CACHE = Path(os.environ.get("DESKGUARD_TEST_DEBS") or Path.home() / ".cache" / "deskguard" / "test-debs")


def _apt(state: Path, *args: str) -> subprocess.CompletedProcess:
    opts = ["-o", f"Dir::State={state}/state", "-o", f"Dir::State::status={state}/status",
            "-o", f"Dir::Cache={state}/cache", "-o", f"Dir::Etc::SourceList={state}/sources.list",
            "-o", f"Dir::Etc::SourceParts={state}/none", "-o", f"Dir::Etc::Preferences={state}/none/p",
            "-o", f"Dir::Etc::PreferencesParts={state}/none", "-o", f"Dir::Etc::Trusted={state}/keyring.gpg",
            "-o", f"Dir::Etc::TrustedParts={state}/none", "-o", "Debug::NoLocking=1",
            "-o", "APT::Install-Recommends=0", "-o", "APT::Architecture=amd64", "-o", "Acquire::Languages=none"]
    return subprocess.run(["apt-get", "-q", *opts, *args], check=False, capture_output=True, text=True, timeout=900)


def fetch(host, packages: list[str]) -> list[Path]:
    """The .debs that installing `packages` on `host` needs (those not installed there yet), cached by the
    container's release, its installed packages and the names asked for."""
    facts = ssh(host, ". /etc/os-release; echo $VERSION_CODENAME; cat /var/lib/dpkg/status").stdout
    suite, _, status = facts.partition("\n")
    key = hashlib.sha256((suite + status + " ".join(sorted(packages))).encode()).hexdigest()[:16]
    folder = CACHE / f"{suite}-{key}"
    done = folder / "debs.list"
    if done.exists():
        return [folder / name for name in done.read_text().split()]
    state = folder / "apt"
    for sub in ("state/lists/partial", "cache/archives/partial", "none"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "status").write_text(status)
    mirror = debian_mirror()
    security = mirror.rsplit("/", 1)[0] + "/debian-security"
    (state / "sources.list").write_text(f"deb {mirror} {suite} main\ndeb {mirror} {suite}-updates main\n"
                                        f"deb {security} {suite}-security main\n")
    keyring = ssh(host, "base64 -w0 /usr/share/keyrings/debian-archive-keyring.gpg").stdout
    (state / "keyring.gpg").write_bytes(base64.b64decode(keyring))
    for args in (("update",), ("install", "-y", "--download-only", *packages)):
        proc = _apt(state, *args)
        assert proc.returncode == 0, f"apt-get {args[0]} for the container failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    debs = sorted((state / "cache" / "archives").glob("*.deb"))
    done.write_text("\n".join(d.relative_to(folder).as_posix() for d in debs) + "\n")
    return debs


def install(host, packages: list[str]) -> float:
    """Install `packages` in the container from the cached .debs; the size in MB that was copied."""
    debs = fetch(host, packages)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for deb in debs:
            tar.add(deb, arcname=deb.name)
    repo = "/var/tmp/deskguard-test-debs"
    # apt given the .deb files themselves (and no sources: the container's are unreachable) orders the installs
    # and refuses anything it cannot satisfy, which `dpkg -i *.deb` would not.
    script = (f"set -e; sudo rm -rf {repo}; sudo mkdir -p {repo}; sudo tar -x -C {repo}; "
              f"sudo apt-get -q -y --no-install-recommends -o Dir::Etc::SourceList=/dev/null "
              f"-o Dir::Etc::SourceParts=/nonexistent -o Acquire::Languages=none "
              f"install {' '.join(f'{repo}/{d.name}' for d in debs)} >/tmp/test-debs.log 2>&1 "
              f"|| {{ tail -20 /tmp/test-debs.log; exit 1; }}; echo installed")
    proc = subprocess.run(host_argv(host, [script]), input=buf.getvalue(), check=False,
                          capture_output=True, timeout=900)
    out = proc.stdout.decode(errors="replace")
    assert out.strip().endswith("installed"), (out + proc.stderr.decode(errors="replace"))[-3000:]
    missing = ssh(host, "dpkg-query -W -f '${Package} ${Status}\\n' " + " ".join(packages)).stdout
    assert all(line.endswith("install ok installed") for line in missing.splitlines()), missing
    return len(buf.getvalue()) / 1e6
