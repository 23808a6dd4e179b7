"""A TPM 2.0 for unit tests: swtpm on the controller (TCP, a free port pair), reached by clevis and tpm2-tools
through TPM2TOOLS_TCTI, so the TPM binding (module_utils/deskguard_tpm_bind) is tested for real without a VM.
Its PCRs start at zero; extend() changes one the way a changed boot measurement would."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

TOOLS = ("swtpm", "clevis", "tpm2_pcrextend", "clevis-luks-bind")

needs_tpm_tools = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                     reason="swtpm, clevis and tpm2-tools are installed by .ci/setup")


def _free_port_pair() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port


class HostTpm:
    def __init__(self, folder: Path):
        self.folder = folder
        self.state = folder / "tpm-state"
        self.state.mkdir(mode=0o700)
        self.port = _free_port_pair()
        self.pid_file = folder / "swtpm.pid"
        subprocess.run(["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.state}",
                        "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                        "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
                        "--flags", "not-need-init,startup-clear", "--pid", f"file={self.pid_file}", "--daemon"],
                       check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 10
        while not self.pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.tcti = f"swtpm:host=127.0.0.1,port={self.port}"

    def extend(self, pcr: int) -> None:
        """Extend one sha256 PCR (a changed measurement: an option ROM, firmware)."""
        subprocess.run(["tpm2_pcrextend", f"{pcr}:sha256={'ab' * 32}"], check=True, capture_output=True,
                       env=dict(os.environ, TPM2TOOLS_TCTI=self.tcti), timeout=30)

    def stop(self) -> None:
        try:
            os.kill(int(self.pid_file.read_text().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass


@pytest.fixture
def host_tpm(tmp_path, monkeypatch):
    tpm = HostTpm(tmp_path)
    monkeypatch.setenv("TPM2TOOLS_TCTI", tpm.tcti)
    yield tpm
    tpm.stop()
