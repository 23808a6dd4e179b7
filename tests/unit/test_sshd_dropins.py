"""ACC-005 against foreign sshd drop-ins: sshd keeps the first value it reads and reads sshd_config.d in name
order, so a keyword the kit sets, in a file that sorts before the kit's drop-in (or in a Match block anywhere),
beats the kit. The accounts module comments those lines out (a copy kept aside) and says which."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_sshd_dropins as dropins  # noqa: E402

pytestmark = pytest.mark.unit

KIT = "PermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "sshd_config.d"
    d.mkdir()
    (d / "00-deskguard-accounts.conf").write_text(KIT)
    return d


def test_a_dropin_sorting_first_loses_the_kits_keywords_and_keeps_the_rest(folder):
    (folder / "00-break.conf").write_text("# vendor\nPermitRootLogin yes\nX11Forwarding yes\npasswordauthentication=yes\n")
    (folder / "50-later.conf").write_text("PermitRootLogin yes\n")   # sorts after the kit's: sshd ignores it
    found = dropins.overrides(str(folder / "00-deskguard-accounts.conf"), KIT)
    assert [(o["path"], o["lines"]) for o in found] == [
        (str(folder / "00-break.conf"), ["PermitRootLogin yes", "passwordauthentication=yes"])]
    new = found[0]["content"]
    assert "X11Forwarding yes" in new and "# vendor" in new
    assert [line for line in new.splitlines() if not line.startswith("#")] == ["X11Forwarding yes"]


def test_a_match_block_anywhere_is_neutralised_for_the_kits_keywords(folder):
    (folder / "90-match.conf").write_text("UseDNS no\nPermitRootLogin yes\nMatch User backup\n  PasswordAuthentication yes\n")
    found = dropins.overrides(str(folder / "00-deskguard-accounts.conf"), KIT)
    assert [o["lines"] for o in found] == [["PasswordAuthentication yes"]]


def test_keywords_the_kit_does_not_set_are_left_alone(folder):
    (folder / "00-allow.conf").write_text("AllowUsers dgadmin\n")
    assert dropins.overrides(str(folder / "00-deskguard-accounts.conf"), KIT) == []
    kit = KIT + "AllowUsers dgadmin tanaka\n"
    assert [o["lines"] for o in dropins.overrides(str(folder / "00-deskguard-accounts.conf"), kit)] == [
        ["AllowUsers dgadmin"]]


def test_neutralising_keeps_a_copy_and_says_where(folder, tmp_path):
    (folder / "00-break.conf").write_text("PermitRootLogin yes\n")
    (folder / "00-break.conf").chmod(0o600)
    found = dropins.overrides(str(folder / "00-deskguard-accounts.conf"), KIT)
    done = dropins.neutralise(found, str(tmp_path / "backup"))
    assert done == [{"path": str(folder / "00-break.conf"), "lines": ["PermitRootLogin yes"],
                     "backup": done[0]["backup"]}]
    assert Path(done[0]["backup"]).read_text() == "PermitRootLogin yes\n"
    assert (folder / "00-break.conf").stat().st_mode & 0o777 == 0o600
    assert "PermitRootLogin yes" not in [line.strip() for line in (folder / "00-break.conf").read_text().splitlines()]
    # Run again: nothing left to neutralise.
    assert dropins.overrides(str(folder / "00-deskguard-accounts.conf"), KIT) == []
