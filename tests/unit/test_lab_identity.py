"""Two labs on one machine: each lab's index, and the machine-wide names and ranges derived from it
(cli/deskguard/lab/identity.py). The registry is the unit tier's own (tests/unit/conftest.py)."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

import pytest

from deskguard.errors import LabError
from deskguard.lab import container, fleet, identity, manager, network, vm

pytestmark = pytest.mark.unit

INDEXES = range(identity.MAX_INDEX + 1)
IFNAME = re.compile(r"^[A-Za-z0-9-]{1,15}$")  # what `ip link add` takes and nspawn keeps as is


def every_name(k: int) -> list[str]:
    """Every machine-wide name lab k can make at the lab's bounds."""
    names = [identity.bridge_name(k)]
    for n in range(1, manager.MAX_FLEET + 1):
        names += [identity.fleet_netns(k, n), identity.fleet_veth(k, n)]
    for n in range(1, manager.MAX_CONTAINERS + 1):
        machine = identity.machine_name(k, container.container_name(n))
        names += [machine, f"vb-{machine}"]
    return names


def test_the_default_lab_keeps_every_name_it_always_had(monkeypatch):
    monkeypatch.delenv("DESKGUARD_LAB_RUN", raising=False)
    monkeypatch.delenv("DESKGUARD_LAB_PORT_BASE", raising=False)
    assert identity.lab_index() == 0
    assert (network.bridge(), network.bridge_mac()) == ("dglab0", "02:d6:13:ff:ff:01")
    assert (network.host_address(), network.lab_network()) == ("10.213.0.1", "10.213.0.0/16")
    assert (network.container_address(3), network.fleet_address(250)) == ("10.213.1.3", "10.213.3.1")
    assert manager.management_networks() == ("10.213.0.0/16", "10.0.2.0/24")
    assert (fleet.netns_name("lab-f001"), fleet.veth_name("lab-f001"), fleet.host_mac("lab-f258")) == \
        ("lab-f001", "dg-f001", "02:d6:13:00:01:02")
    assert (container.machine_name("lab-ct1"), container.veth_name("lab-ct1")) == ("lab-ct1", "vb-lab-ct1")
    assert vm.port_base() == 2220
    # Spelled out as the default folder, it is still the default lab (nothing claimed).
    monkeypatch.setenv("DESKGUARD_LAB_RUN", "/var/tmp/deskguard-lab/")
    assert identity.lab_index() == 0 and not identity.REGISTRY.exists()


def test_another_run_folder_is_another_lab_with_all_its_names(tmp_path, monkeypatch):
    monkeypatch.setenv("DESKGUARD_LAB_RUN", str(tmp_path / "ci-lab"))
    monkeypatch.delenv("DESKGUARD_LAB_PORT_BASE", raising=False)
    k = identity.lab_index()
    assert 1 <= k <= identity.MAX_INDEX and k == identity.preferred_index(tmp_path / "ci-lab")
    assert network.bridge() == f"dglab{k}" and network.lab_network() == f"10.{213 + k}.0.0/16"
    assert fleet.netns_name("lab-f007") == f"lab{k}-f007" and fleet.veth_name("lab-f007") == f"dg{k}-f007"
    assert container.veth_name("lab-ct2") == f"vb-lab{k}-ct2"
    assert manager.management_networks()[0] == f"10.{213 + k}.0.0/16"
    assert vm.port_base() == 2220 + 1000 * k
    # The host names themselves (inventory, hostnames) are the lab's own: the same in every lab.
    assert (fleet.host_name(7), container.container_name(2)) == ("lab-f007", "lab-ct2")


def test_an_index_is_stable_for_its_folder(tmp_path):
    run = tmp_path / "lab-a"
    first = identity.lab_index(run)
    assert [identity.lab_index(run) for _ in range(3)] == [first] * 3
    assert (run / "lab-index").read_text() == f"{first}\n"
    assert os.readlink(identity.REGISTRY / f"index-{first}") == str(run)
    # The same path always asks for the same index first (no randomness, no state).
    assert identity.preferred_index(run) == identity.preferred_index(Path(str(run) + "/"))
    # After a reboot the registry (in /run) is empty: the folder keeps its index and claims it again.
    (identity.REGISTRY / f"index-{first}").unlink()
    assert identity.lab_index(run) == first and (identity.REGISTRY / f"index-{first}").is_symlink()


def folders_with_the_same_first_choice(root: Path, count: int) -> list[Path]:
    by_choice: dict[int, list[Path]] = {}
    for i in range(2000):
        folder = root / f"run{i}"
        by_choice.setdefault(identity.preferred_index(folder), []).append(folder)
        if len(by_choice[identity.preferred_index(folder)]) == count:
            return by_choice[identity.preferred_index(folder)]
    raise AssertionError("no hash collision found")


def test_two_folders_with_the_same_hash_get_different_indexes(tmp_path):
    a, b = folders_with_the_same_first_choice(tmp_path, 2)
    ka, kb = identity.lab_index(a), identity.lab_index(b)
    assert ka == identity.preferred_index(a) and kb != ka
    assert kb == ka % identity.MAX_INDEX + 1  # the next free one
    # Each keeps its own; neither's names overlap the other's.
    assert (identity.lab_index(a), identity.lab_index(b)) == (ka, kb)
    assert not set(every_name(ka)) & set(every_name(kb))


def test_a_stale_claim_is_taken_over_and_a_released_index_is_free_again(tmp_path):
    a, b = folders_with_the_same_first_choice(tmp_path, 2)
    k = identity.lab_index(a)
    identity.release(a)
    assert not (a / "lab-index").exists() and not (identity.REGISTRY / f"index-{k}").exists()
    assert identity.lab_index(b) == k
    # A claim whose folder was removed (a CI run's temporary folder) no longer holds its index.
    import shutil

    shutil.rmtree(b)
    assert identity.lab_index(a) == k
    # Releasing the default lab, or a folder that never claimed, changes nothing.
    identity.release(identity.DEFAULT_RUNTIME_DIR)
    identity.release(tmp_path / "never")
    assert identity.lab_index(a) == k


def test_when_every_index_is_taken_the_next_lab_is_refused_in_one_line(tmp_path):
    for i in range(identity.MAX_INDEX):
        identity.lab_index(tmp_path / f"lab{i}")
    taken = {identity.lab_index(tmp_path / f"lab{i}") for i in range(identity.MAX_INDEX)}
    assert taken == set(range(1, identity.MAX_INDEX + 1))
    with pytest.raises(LabError, match="all 42 lab indexes of this machine are taken") as err:
        identity.lab_index(tmp_path / "one-too-many")
    assert "\n" not in str(err.value)


def test_every_name_fits_and_no_two_labs_share_a_name_or_an_address():
    seen: dict[str, int] = {}
    for k in INDEXES:
        for name in every_name(k):
            assert IFNAME.match(name), name  # ≤ 15 characters, nothing ip or nspawn would change
            assert seen.setdefault(name, k) == k, f"{name} is lab {seen[name]}'s and lab {k}'s"
    nets = [ipaddress.ip_network(f"10.{identity.second_octet(k)}.0.0/16") for k in INDEXES]
    assert all(not a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:])
    assert str(nets[-1]) == "10.255.0.0/16"
    macs = [identity.bridge_mac(k) for k in INDEXES]
    macs += [identity.fleet_mac(k, n) for k in INDEXES for n in range(1, manager.MAX_FLEET + 1)]
    assert len(set(macs)) == len(macs)
    ports = [identity.port_base(k) + off for k in INDEXES for off in range(1, identity.PORT_STRIDE)]
    assert len(set(ports)) == len(ports) and max(ports) < 65536


def test_fleet_sweep_patterns_match_only_their_own_lab(tmp_path, monkeypatch):
    """`lab down` finds a lab's leftovers by their names: lab 1's pattern must not match lab 12's or lab 0's."""
    for k in (0, 1, 12):
        monkeypatch.setattr(network, "index", lambda k=k: k)
        netns_re, veth_re = fleet._pattern(identity.fleet_netns), fleet._pattern(identity.fleet_veth)
        for other in INDEXES:
            for n in (1, 999, 1000):
                assert bool(netns_re.match(identity.fleet_netns(other, n))) == (other == k)
                assert bool(veth_re.match(identity.fleet_veth(other, n))) == (other == k)
        assert netns_re.match(identity.fleet_netns(k, 42)).group(1) == "042"


def test_each_lab_has_its_own_inventory_folder_known_without_claiming(tmp_path, monkeypatch):
    monkeypatch.delenv("DESKGUARD_LAB_RUN", raising=False)
    assert manager.inventory_dir(tmp_path) == tmp_path / "inventory" / "lab"
    folders = set()
    for name in ("a", "b"):
        monkeypatch.setenv("DESKGUARD_LAB_RUN", str(tmp_path / name))
        folder = manager.inventory_dir(tmp_path)
        assert re.fullmatch(r"lab-[0-9a-f]{8}", folder.name) and folder == manager.inventory_dir(tmp_path)
        folders.add(folder)
    assert len(folders) == 2
    assert not identity.REGISTRY.exists() and not (tmp_path / "a").exists()  # a refused command makes nothing
