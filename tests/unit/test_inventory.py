"""The inventory writer: round-trip YAML, atomic writes under a lock, refusal of broken files, and the
store + inventory pair staying consistent."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import re
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deskguard.site import inventory
from deskguard.errors import EXIT_ENVIRONMENT, EXIT_USAGE, UsageError
from deskguard.site.inventory import InventoryError, add_host, register_and_add, remove_host, validate_hostname

pytestmark = pytest.mark.unit

HOSTS = """\
# Our laptops -- keep this comment
all:
  vars:
    ansible_python_interpreter: auto_silent  # inline comment
  children:
    # the accounting team
    accounting:
      hosts:
        acc-01:
    laptops:
      hosts:
        zeta-laptop:   # first by hand
        alpha-laptop:
"""

HV = dict(os="ubuntu", address="10.8.0.42", port=22, ssh_user="tanaka", operator="Tanaka")


def snapshot(site):
    inv = site / "inventory"
    if not inv.exists():
        return {}
    return {str(p.relative_to(inv)): p.read_bytes() for p in sorted(inv.rglob("*")) if p.is_file()
            and p.name != ".lock"}


# -- hostnames ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "tanaka-laptop", "Tanaka-Laptop", "pc01.corp.example", "1x", "a" * 63,
                                  ".".join(["a" * 63] * 3) + "." + "a" * 61])
def test_valid_hostnames(name):
    assert validate_hostname(name) == name.lower()


@pytest.mark.parametrize("name", ["", " ", "a b", "-a", "a-", "a..b", ".a", "a.", "a_b", "a;rm -rf", "$(x)",
                                  "a/b", "../x", "a\nb", "ä", "a" * 64, ".".join(["a" * 63] * 4), None, 7])
def test_invalid_hostnames_are_one_line_usage_errors(name):
    with pytest.raises(UsageError) as err:
        validate_hostname(name)
    assert err.value.exit_code == EXIT_USAGE and "\n" not in str(err.value) and "RFC 1123" in str(err.value) \
        or "give a name" in str(err.value)


# -- add / remove -----------------------------------------------------------------------------------------------

def test_add_to_fresh_site_creates_both_files(site):
    assert add_host(site, "tanaka-laptop", {"ansible_host": "10.8.0.42", "ansible_port": 22})
    text = (site / "inventory" / "hosts.yml").read_text()
    assert "all:\n  children:\n    laptops:\n      hosts:\n        tanaka-laptop:\n" in text
    hv = (site / "inventory" / "host_vars" / "tanaka-laptop.yml").read_text()
    assert "ansible_host: 10.8.0.42\nansible_port: 22\n" in hv
    before = snapshot(site)
    assert add_host(site, "tanaka-laptop", {"ansible_host": "10.8.0.42", "ansible_port": 22}) is False
    assert snapshot(site) == before


def test_round_trip_keeps_comments_order_and_hand_edits(site):
    inv = site / "inventory"
    (inv / "host_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(HOSTS)
    (inv / "host_vars" / "alpha-laptop.yml").write_text("# hand-written\nansible_host: 10.0.0.1  # old\n"
                                                       "custom_var: [1, 2]\n")
    add_host(site, "tanaka-laptop", {"ansible_host": "10.8.0.42"})
    add_host(site, "alpha-laptop", {"ansible_host": "10.0.0.2", "ansible_port": 2222})
    text = (inv / "hosts.yml").read_text()
    assert text.startswith(HOSTS.rstrip("\n").rsplit("\n", 1)[0])  # everything before the last line intact
    for fragment in ("# Our laptops -- keep this comment", "# inline comment", "# the accounting team",
                     "zeta-laptop:   # first by hand"):
        assert fragment in text
    assert text.index("zeta-laptop") < text.index("alpha-laptop") < text.index("tanaka-laptop")
    assert inventory.list_hosts(site) == ["acc-01", "zeta-laptop", "alpha-laptop", "tanaka-laptop"]
    hv = (inv / "host_vars" / "alpha-laptop.yml").read_text()
    assert hv.startswith("# hand-written\nansible_host: 10.0.0.2  # old\ncustom_var: [1, 2]\nansible_port: 2222")

    remove_host(site, "zeta-laptop")
    text = (inv / "hosts.yml").read_text()
    assert "zeta-laptop" not in text and "# the accounting team" in text and "acc-01" in text


def test_remove_host_takes_it_out_of_every_group(site):
    add_host(site, "pc1", {"a": 1}, group="laptops")
    add_host(site, "pc1", {"a": 1}, group="desktops")
    add_host(site, "pc2", {"a": 1})
    assert remove_host(site, "pc1")
    assert inventory.list_hosts(site) == ["pc2"]
    assert not (site / "inventory" / "host_vars" / "pc1.yml").exists()
    assert remove_host(site, "pc1") is False


@pytest.mark.parametrize("content,line", [
    ("all:\n  children:\n    laptops:\n      hosts:\n        a: b: c\n", 5),
    ("all:\n  children:\n\tlaptops:\n", 3),
    ("all:\n  children: [\n    x\n", 4),
    ("all:\n  hosts:\n    a:\n  hosts:\n    b:\n", 4),  # duplicate key
])
def test_broken_yaml_is_refused_with_file_and_line_and_left_alone(site, store, content, line):
    path = site / "inventory" / "hosts.yml"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    before = snapshot(site)
    for call in (lambda: add_host(site, "tanaka-laptop", {"x": 1}), lambda: remove_host(site, "a"),
                 lambda: register_and_add(site, store, "tanaka-laptop", **HV)):
        with pytest.raises(InventoryError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and f"{path}:{line}:" in msg and err.value.exit_code == EXIT_ENVIRONMENT, msg
    assert snapshot(site) == before
    assert store.list_devices() == [] and store.list_audit() == []


@pytest.mark.parametrize("content", ["- a\n- b\n", "all: [1, 2]\n", "all:\n  children:\n    laptops: 3\n"])
def test_unexpected_shape_is_refused(site, content):
    path = site / "inventory" / "hosts.yml"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(InventoryError, match="fix it by hand"):
        add_host(site, "pc1", {"x": 1})
    assert path.read_text() == content


def _add_many(site, prefix, n, q):
    try:
        for i in range(n):
            add_host(site, f"{prefix}-{i:02d}", {"ansible_host": f"10.0.0.{i}"})
        q.put("ok")
    except BaseException as exc:  # pragma: no cover - reported to the parent
        q.put(repr(exc))


def test_concurrent_add_host_from_two_processes_both_land(site):
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_add_many, args=(site, p, 15, q)) for p in ("left", "right")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [q.get(timeout=5) for _ in procs] == ["ok", "ok"]
    hosts = inventory.list_hosts(site)
    assert sorted(hosts) == sorted([f"{p}-{i:02d}" for p in ("left", "right") for i in range(15)])
    assert len(list((site / "inventory" / "host_vars").glob("*.yml"))) == 30


def test_lock_times_out_with_one_line(site):
    with inventory.locked(site):
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()

        def child():
            try:
                with inventory.locked(site, timeout=0.2):
                    q.put("got it")
            except InventoryError as exc:
                q.put(str(exc))

        p = ctx.Process(target=child)
        p.start()
        p.join(10)
        assert "another deskguard is changing the inventory" in q.get(timeout=5)


# -- store + inventory together ------------------------------------------------------------------------------------

def test_register_and_add_then_rerun_converges(site, store):
    d, created = register_and_add(site, store, "tanaka-laptop", **HV)
    assert created and d.state == "registered"
    hv = (site / "inventory" / "host_vars" / "tanaka-laptop.yml").read_text()
    assert f"deskguard_device_uuid: {d.uuid}" in hv and "ansible_host: 10.8.0.42" in hv
    before = snapshot(site)
    d2, created2 = register_and_add(site, store, "tanaka-laptop", **HV)
    assert (d2.uuid, created2) == (d.uuid, False) and snapshot(site) == before
    assert [a.action for a in store.list_audit()] == ["device.register"]
    d3, _ = register_and_add(site, store, "tanaka-laptop", **{**HV, "address": "10.8.0.99"})
    assert d3.uuid == d.uuid and "ansible_host: 10.8.0.99" in \
        (site / "inventory" / "host_vars" / "tanaka-laptop.yml").read_text()
    assert [a.action for a in store.list_audit()] == ["device.register", "device.update"]


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_inventory_failure_rolls_back_the_store(site, store, monkeypatch, exc):
    inventory.ensure_hosts_file(site)
    register_and_add(site, store, "other-laptop", **HV)
    before = snapshot(site)
    real = inventory.atomic_write

    def failing(path, data, mode=0o644):
        if path.name == "hosts.yml":
            raise exc
        return real(path, data, mode)

    monkeypatch.setattr(inventory, "atomic_write", failing)
    with pytest.raises(type(exc)):
        register_and_add(site, store, "tanaka-laptop", **HV)
    assert snapshot(site) == before  # host_vars/tanaka-laptop.yml was taken back too
    assert store.get_device("tanaka-laptop") is None
    assert [a.target for a in store.list_audit()] == ["other-laptop"]
    monkeypatch.setattr(inventory, "atomic_write", real)
    d, created = register_and_add(site, store, "tanaka-laptop", **HV)  # a re-run converges
    assert created and "tanaka-laptop" in inventory.list_hosts(site)
    assert store.verify_audit() == (True, None)


def test_commit_failure_puts_the_inventory_back(site, store, monkeypatch):
    from sqlalchemy.orm import Session

    inventory.ensure_hosts_file(site)
    before = snapshot(site)

    def boom(self):
        raise RuntimeError("database went away")

    monkeypatch.setattr(Session, "commit", boom)
    with pytest.raises(RuntimeError):
        register_and_add(site, store, "tanaka-laptop", **HV)
    monkeypatch.undo()
    assert snapshot(site) == before and store.get_device("tanaka-laptop") is None


def test_killed_between_inventory_and_commit_converges_on_rerun(site, store):
    # Simulate SIGKILL after the inventory write, before the store commit: inventory has a stale uuid.
    add_host(site, "tanaka-laptop", {"ansible_host": "10.8.0.42", "deskguard_device_uuid": "stale"})
    d, created = register_and_add(site, store, "tanaka-laptop", **HV)
    assert created
    assert f"deskguard_device_uuid: {d.uuid}" in (site / "inventory/host_vars/tanaka-laptop.yml").read_text()


def test_remove_and_unlist(site, store):
    d, _ = register_and_add(site, store, "tanaka-laptop", **HV)
    store.add_secret(d.uuid, "luks-recovery", "slot1", b"sealed")
    removed = inventory.remove_and_unlist(site, store, "tanaka-laptop")
    assert removed.state == "removed" and "tanaka-laptop" not in inventory.list_hosts(site)
    assert not (site / "inventory/host_vars/tanaka-laptop.yml").exists()
    assert len(store.list_secrets(d.uuid, include_destroyed=False)) == 1


def test_windows_hostvars_use_winrm_over_https(site, store):
    d, _ = register_and_add(site, store, "sato-pc", **{**HV, "os": "windows", "port": 5986})
    hv = (site / "inventory/host_vars/sato-pc.yml").read_text()
    assert "ansible_connection: winrm" in hv and "ansible_winrm_scheme: https" in hv


# -- properties ----------------------------------------------------------------------------------------------------

_VALID = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*",
                    re.IGNORECASE)
_NASTY = st.sampled_from([" ", ";", "|", "&", "$", "`", "(", ")", "<", ">", "'", '"', "\\", "/", "\n", "\t",
                          "*", "?", "[", "]", "{", "}", "!", "#", "~", "_", ":", "=", "%", "\x00", "é", ".."])
invalid_hostnames = st.one_of(
    st.text(max_size=70).filter(lambda s: not (s.isascii() and _VALID.fullmatch(s))),
    st.builds(lambda a, n, b: a + n + b, st.text(string.ascii_lowercase, max_size=8), _NASTY,
              st.text(string.ascii_lowercase, max_size=8)),
    st.sampled_from(["-x", "x-", "a" * 64, ".".join(["a"] * 130)]),
)


@settings(max_examples=60, deadline=None)
@given(name=st.from_regex(_VALID, fullmatch=True, alphabet=st.characters(codec="ascii")))
def test_property_valid_names_round_trip_lowercased(name):
    assert validate_hostname(name) == name.lower()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=invalid_hostnames,
       port=st.one_of(st.just(22), st.integers(), st.text(max_size=5)),
       os_=st.one_of(st.just("ubuntu"), st.text(max_size=12)))
def test_property_invalid_input_is_usage_error_and_files_unchanged(site, store, name, port, os_):
    if not (site / "inventory" / "hosts.yml").exists():
        (site / "inventory").mkdir(exist_ok=True)
        (site / "inventory" / "hosts.yml").write_text(HOSTS)
    before = snapshot(site)
    with pytest.raises(UsageError) as err:
        register_and_add(site, store, name, **{**HV, "port": port, "os": os_})
    assert "\n" not in str(err.value) and err.value.exit_code == EXIT_USAGE
    with pytest.raises(UsageError):
        add_host(site, name, {"ansible_host": "x"})
    with pytest.raises(UsageError):
        remove_host(site, name)
    assert snapshot(site) == before
    assert store.list_devices() == [] and store.list_audit() == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=invalid_hostnames, sub=st.sampled_from(["show", "remove"]))
def test_property_cli_invalid_hostname_is_one_line_exit_2(site, store, name, sub):
    """Through the real entry point (in-process for speed; test_devices runs it as a subprocess)."""
    from deskguard.cli import main

    if not (site / "inventory" / "hosts.yml").exists():
        (site / "inventory").mkdir(exist_ok=True)
        (site / "inventory" / "hosts.yml").write_text(HOSTS)
    before = snapshot(site)
    err = io.StringIO()
    argv = ["devices", sub, "--site", str(site)] + (["--yes"] if sub == "remove" else []) + ["--", name]
    if "\x00" in name:
        return  # not representable in a real argv
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
            pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == EXIT_USAGE
    assert err.getvalue().count("\n") == 1 and err.getvalue().startswith("deskguard: ")
    assert "Traceback" not in err.getvalue()
    assert snapshot(site) == before
