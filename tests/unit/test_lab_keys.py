"""lab.image.ssh_key_pair: the lab's client key and the fleet's host key are made by the one helper, with the
real ssh-keygen: once, as a matching pair, whatever a killed earlier run left behind."""

from __future__ import annotations

import subprocess

import pytest

from deskguard.lab import fleet, image

pytestmark = pytest.mark.unit


def test_made_once_as_a_matching_pair_despite_leftovers(tmp_path):
    key = tmp_path / "keys" / "k_ed25519"
    key.parent.mkdir()
    (tmp_path / "keys" / "k_ed25519.tmp").write_text("half a pair from a killed run")
    assert image.ssh_key_pair(key, "test-comment") == key
    pub = key.with_name("k_ed25519.pub").read_text()
    assert pub.startswith("ssh-ed25519 ") and pub.strip().endswith("test-comment")
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True)
    assert derived.stdout.split()[:2] == pub.split()[:2]
    assert oct(key.stat().st_mode & 0o777) == oct(0o600)
    assert sorted(p.name for p in key.parent.iterdir()) == ["k_ed25519", "k_ed25519.pub"]
    first = key.read_bytes()
    image.ssh_key_pair(key, "test-comment")
    assert key.read_bytes() == first          # never replaced: hosts already trust it


def test_lab_and_fleet_keys_live_where_they_did(tmp_path, monkeypatch):
    monkeypatch.setattr(image, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(fleet, "cache_dir", lambda: tmp_path)
    assert image.lab_key() == tmp_path / "keys" / "lab_ed25519"
    assert fleet.host_key() == tmp_path / "fleet" / "ssh_host_ed25519_key"
    assert (tmp_path / "keys" / "lab_ed25519.pub").read_text().strip().endswith("deskguard-lab")
    assert (tmp_path / "fleet" / "ssh_host_ed25519_key.pub").read_text().strip().endswith("deskguard-lab-fleet")


def test_two_labs_starting_at_once_make_one_pair(tmp_path):
    """The cache is shared by every lab on the machine (two `lab up` at once both find the key missing)."""
    from concurrent.futures import ThreadPoolExecutor

    key = tmp_path / "fleet" / "ssh_host_ed25519_key"
    with ThreadPoolExecutor(max_workers=4) as pool:
        made = list(pool.map(lambda _: image.ssh_key_pair(key, "deskguard-lab-fleet"), range(8)))
    assert made == [key] * 8
    pub = key.with_name(key.name + ".pub").read_text()
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True)
    assert derived.stdout.split()[:2] == pub.split()[:2]
    assert sorted(p.name for p in key.parent.iterdir()) == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
