"""The lab swtpm's command log and the refusal the TPM VM test waits for (lab/tpm.py), without a VM.

The log below is swtpm 0.7.1's level-20 format, cut from a real run (tpm2-tools against swtpm: a PCR-policy
Unseal after the PCR changed, answered 0x99D): tests/vm/test_tpm_vm.py waits for such an answer instead of
watching the prompt for a minute, so the reader must find it, and must find none where there is none.
"""

from __future__ import annotations

import shutil
import socket

import pytest

from deskguard.lab import tpm

pytestmark = pytest.mark.unit

HEAD = """\
 Ctrl Cmd: length 5
 00 00 00 05 00 
 Ctrl Rsp: length 4
 00 00 00 00 
 SWTPM_IO_Read: length 22
 80 01 00 00 00 16 00 00 01 7A 00 00 00 06 00 00 
 01 00 00 00 00 7F 
 SWTPM_IO_Write: length 27
 80 01 00 00 00 1B 00 00 00 00 01 00 00 00 06 00 
 00 00 01 00 00 01 05 00 4D 42 49 
"""
UNSEAL_REFUSED = """\
 SWTPM_IO_Read: length 91
 80 02 00 00 00 5B 00 00 01 5E 80 00 00 00 00 00 
 00 49 03 00 00 01 00 20 5C 47 09 8B 03 F2 AB 39 
 1C DC DA B3 80 80 10 CE 53 FE 69 CE 65 59 E8 BD 
 1E A1 01 3B 42 0E E7 3F 01 00 20 00 BB 02 2B 5B 
 CB 10 DD 8A 32 23 22 69 33 A8 D3 87 41 02 A7 86 
 44 1D 45 C2 B6 FB 01 56 75 7D 27 
 SWTPM_IO_Write: length 10
 80 01 00 00 00 0A 00 00 09 9D 
"""


def _log(tmp_path, text: str):
    path = tmp_path / "swtpm.log"
    path.write_text(text)
    return path


def test_commands_pair_each_command_code_with_its_response_code(tmp_path):
    assert tpm.commands(_log(tmp_path, HEAD + UNSEAL_REFUSED)) == [(0x17A, 0), (tpm.CC_UNSEAL, 0x99D)]
    assert tpm.refusals(tpm.commands(_log(tmp_path, HEAD + UNSEAL_REFUSED))) == [(tpm.CC_UNSEAL, 0x99D)]


def test_no_refusal_in_a_log_without_one(tmp_path):
    unsealed = UNSEAL_REFUSED.replace("00 00 09 9D", "00 00 00 00")  # the bound boot's answer
    assert tpm.refusals(tpm.commands(_log(tmp_path, HEAD + unsealed))) == []
    assert tpm.refusals(tpm.commands(_log(tmp_path, HEAD))) == []
    assert tpm.commands(tmp_path / "missing.log") == []
    # Another command refused (here a GetCapability) is not clevis's try.
    other = HEAD.replace("1B 00 00 00 00 01", "1B 00 00 01 01 01")
    pairs = tpm.commands(_log(tmp_path, other))
    assert pairs[-1] == (0x17A, 0x101) and tpm.refusals(pairs) == []
    # A warning is not a refusal: a bound lab boot's Load was answered TPM_RC_RETRY (0x922), then 0 on the retry.
    retry = UNSEAL_REFUSED.replace("01 5E 80", "01 57 80").replace("00 00 09 9D", "00 00 09 22")
    assert tpm.commands(_log(tmp_path, HEAD + retry))[-1] == (tpm.CC_LOAD, 0x922)
    assert tpm.refusals(tpm.commands(_log(tmp_path, HEAD + retry))) == []
    assert tpm.is_error(0x99D) and tpm.is_error(0x101) and not tpm.is_error(0x922) and not tpm.is_error(0)


def test_a_response_swtpm_is_still_writing_is_not_read_yet(tmp_path):
    cut = HEAD + UNSEAL_REFUSED[:UNSEAL_REFUSED.rindex(" 80 01")] + " 80 01 00 00 00 0A 00 00 09"  # no newline yet
    assert tpm.commands(_log(tmp_path, cut)) == [(0x17A, 0)]


@pytest.mark.skipif(shutil.which("swtpm") is None, reason="swtpm is installed by .ci/setup")
def test_log_commands_starts_a_fresh_log_at_the_command_level_and_the_default_logs_nothing(tmp_path):
    rundir = tmp_path / "vm1"
    rundir.mkdir()
    for log_commands in (False, True):
        tpm.log_path(rundir).write_text("an earlier boot\n")
        tpm.start(rundir, log_commands=log_commands)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(tpm.socket_path(rundir)))
                s.sendall(b"\x00\x00\x00\x01")  # CMD_GET_CAPABILITY on the control channel
                s.recv(8)
        finally:
            tpm.stop(rundir)
        text = tpm.log_path(rundir).read_text()
        if log_commands:
            assert "an earlier boot" not in text and " Ctrl Cmd: length 4" in text, text
        else:
            assert text == "an earlier boot\n"
