"""The endpoint_agent role's Windows path against the loopback responder: the same controller step as Linux
(configuration with the pinned order key and device UUID, key made on the laptop, only the public key back and
registered in the store), and the PowerShell agent's protocol pieces pinned by golden files. Whether Windows
runs them is not verified here (docs/agent.md)."""

from __future__ import annotations

import hashlib
import re
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_golden import assert_golden

pytestmark = pytest.mark.windows
REPO = Path(__file__).resolve().parents[2]
AGENT = {"endpoint_agent_enabled": True, "endpoint_agent_orders_url": "https://orders.example.com/o",
         "endpoint_agent_server_url": "https://deskguard.example.com", "endpoint_agent_interval_minutes": 30}


def _device_pem():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass
class _Pinned:
    """A recorded call with file contents replaced by their digest: the golden file pins which files go where
    and the task settings, the syntax gate and the script's own golden digest pin the content."""
    module: str
    args: dict
    check_mode: bool = False
    no_log: bool = False


UTILS = REPO / "plugins" / "module_utils"


def _pinned(calls):
    out = []
    for c in calls:
        args = json.loads(json.dumps(c.args))
        for f in args.get("files", []):
            text = f.pop("content")
            source = UTILS / f["path"].rsplit("\\", 1)[-1]
            if f["path"].endswith("agent.json"):
                f["content"] = json.loads(text)
                f["content"]["device_uuid"] = "<device uuid>"
                f["content"]["installed_at"] = "<enrolment time>"
                f["content"]["order_public_key"] = "<order public key>"
            elif source.suffix == ".psm1" and source.is_file():
                # The kit's own module_utils, sent from their one source: pinned by where they come from (so a
                # section's own change does not touch this file), the content compared with it here.
                assert text == source.read_text(), f"{f['path']} is not {source}"
                f["source"] = str(source.relative_to(REPO))
            else:
                f["sha256"] = hashlib.sha256(text.encode()).hexdigest()
        out.append(_Pinned(c.module, args, c.check_mode, c.no_log))
    return out


def test_windows_agent_matches_golden_and_registers_the_device_key(responder, play, enc_site):
    from deskguard.store import Store

    pem = _device_pem()
    responder.answers["deskguard_agent_install_windows"] = {"changed": True, "key_created": True, "files": [],
                                                     "public_key": pem}
    play("role.yml", deskguard_test_role="endpoint_agent", deskguard_device_uuid=enc_site[1], **AGENT)
    (call,) = [c for c in responder.calls if c.short == "deskguard_agent_install_windows"]
    files = {f["path"]: f for f in call.args["files"]}
    script = files["C:\\ProgramData\\deskguard\\agent\\deskguard-agent.ps1"]["content"]
    assert script == (REPO / "roles/endpoint_agent/files/deskguard-agent.ps1").read_text()
    cfg = json.loads(files["C:\\ProgramData\\deskguard\\agent\\agent.json"]["content"])
    assert cfg["device_uuid"] == enc_site[1] and cfg["device_key"] == "deskguard-agent-device"
    from deskguard.orders.agent import order_public_pem

    assert cfg["order_public_key"] == order_public_pem(enc_site[0])
    assert call.args["windows_task"] == {"agent_path": "C:\\ProgramData\\deskguard\\agent\\deskguard-agent.ps1",
                                         "interval_minutes": 30, "boot_delay_seconds": 90, "jitter_seconds": 300}
    assert not any("private" in k for k in call.args)       # the laptop makes its own key
    assert_golden("endpoint_agent", _pinned(responder.calls))
    with Store.open(enc_site[0]) as store:
        assert store.get_agent_public_key(enc_site[1]).strip() == pem.strip()


def test_a_bad_device_key_from_windows_fails_the_play_and_is_not_registered(responder, play, enc_site):
    from deskguard.store import Store

    responder.answers["deskguard_agent_install_windows"] = {"changed": True, "public_key": "-----BEGIN nonsense"}
    proc = play("role.yml", expect_rc=2, deskguard_test_role="endpoint_agent", deskguard_device_uuid=enc_site[1],
                **AGENT)
    assert "no valid device public key" in proc.stdout
    with Store.open(enc_site[0]) as store:
        assert store.get_agent_public_key(enc_site[1]) is None


def test_the_agent_refuses_to_install_without_urls(responder, play, enc_site):
    proc = play("role.yml", expect_rc=2, deskguard_test_role="endpoint_agent", deskguard_device_uuid=enc_site[1],
                endpoint_agent_enabled=True)
    assert "endpoint_agent needs endpoint_agent_orders_url" in proc.stdout
    assert responder.calls == []


def test_the_powershell_agent_speaks_the_protocol():
    """What can be checked without Windows: the script uses the P1363 form .NET produces (SignData/VerifyData
    on ECDsaCng with SHA-256), the protocol's key id, its size limits and refusal words, and the WMI bridge call
    the design names."""
    import sys

    sys.path.insert(0, str(REPO / "plugins" / "module_utils"))
    import deskguard_protocol as proto

    text = (REPO / "roles/endpoint_agent/files/deskguard-agent.ps1").read_text()
    for needle in ("ECDsaCng", "CngAlgorithm]::Sha256", ".VerifyData($payloadBytes, $signature)", ".SignData($body)",
                   "Substring(0, 16)", "root\\cimv2\\mdm\\dmmap", "'MDM_RemoteWipe'", "'doWipeProtectedMethod'",
                   "manage-bde.exe -forcerecovery C:", "$OrderLimit = %d" % proto.LIMITS["order"],
                   "$SkewSeconds = %d" % proto.CLOCK_SKEW_SECONDS, "'deskguard/1'"):
        assert needle in text, needle
    words = {w for w in proto.REASONS if "'%s'" % w in text}
    assert words >= {"oversized", "malformed", "unknown_key", "bad_signature", "foreign_device", "foreign_volumes",
                     "expired", "not_yet_valid", "replayed", "unsupported"}


def test_the_powershell_agent_fetches_its_order_signed_like_linux():
    """The same fetch as the Linux agent (docs/agent-protocol.md): a payload with exactly the fields
    check_fetch accepts, signed with the device key and POSTed to {orders_url}/{device uuid}; a plain GET only
    with order_fetch static; http:// URLs refused unless allow_http. Read from the script: not run on Windows."""
    import sys

    sys.path.insert(0, str(REPO / "plugins" / "module_utils"))
    import deskguard_protocol as proto

    text = (REPO / "roles/endpoint_agent/files/deskguard-agent.ps1").read_text()
    literal = re.search(r"\$fetch = @\{(.*?)\}\s*\n\s*\$resp", text, re.S).group(1)
    fields = set(re.findall(r"(?:^|;|\n)\s*(\w+) =", literal))
    assert fields == set(proto.build_fetch("0b6c9d55-8d1e-4f3a-9a51-3e1f0d2c7a10")), fields
    assert "type = 'fetch'" in literal and "nonce = (New-Nonce)" in literal
    assert "-Method Post -Body $Utf8.GetBytes((New-Envelope $fetch $Config.device_key))" in text
    assert "$Config.order_fetch -eq 'static'" in text
    get_order = text[text.index("function Get-OrderBody"):text.index("function Send-Json")]
    send_json = text[text.index("function Send-Json"):text.index("function Add-Refusal")]
    for body in (get_order, send_json):
        assert "Test-UrlAllowed" in body.split("try {")[0], "a request is made before the URL is checked"
    assert "$Config.allow_http -eq $true" in text and "StartsWith('http://')" in text


# ------------------------------------------------------------------- the check-in's posture (same code as comply)

AGENT_DIR = "C:\\ProgramData\\deskguard\\agent\\"
COLLECT = "Ansible.ModuleUtils.DeskguardCollectPosture"
POSTURE_MODULE = REPO / "plugins" / "modules_windows" / "deskguard_posture.ps1"
FUNCTION = re.compile(r"(?mi)^\s*function\s+([\w-]+)")


def _installed(responder, play, enc_site) -> dict:
    """{path on the laptop: content} of what the role deploys, as recorded by the responder."""
    responder.answers["deskguard_agent_install_windows"] = {"changed": True, "public_key": _device_pem()}
    play("role.yml", deskguard_test_role="endpoint_agent", deskguard_device_uuid=enc_site[1], **AGENT)
    (call,) = [c for c in responder.calls if c.short == "deskguard_agent_install_windows"]
    return {f["path"]: f["content"] for f in call.args["files"]}


def composition(files: dict) -> dict:
    """What the agent runs to fill a check-in, read from the deployed files: the folder it imports from, the
    entry point and the util defining it, and for each section of the collection's table the function and
    the deployed util that defines (and exports) it."""
    agent = files[AGENT_DIR + "deskguard-agent.ps1"]
    utils = {path.rsplit("\\", 1)[-1]: text for path, text in files.items() if path.endswith(".psm1")}
    imports = re.search(r"Join-Path \$PSScriptRoot '(\w+)'", agent).group(1)
    defined = {name: {fn.lower() for fn in FUNCTION.findall(text)} for name, text in utils.items()}

    def where(fn):
        found = sorted(name for name, fns in defined.items() if fn.lower() in fns)
        return found[0] if len(found) == 1 else found     # a list: missing or defined twice

    def exported(name, fn):
        lines = re.findall(r"(?m)^Export-ModuleMember -Function (.*)$", utils.get(name, ""))
        return not lines or any(re.search(rf"\b{fn}\b", line) for line in lines)

    entry = "Invoke-DeskguardPostureCollection"
    table = re.findall(r"(?m)^    (\w+) = '(Get-DeskguardPosture\w+)'$", utils[COLLECT + ".psm1"])
    return {"agent": AGENT_DIR + "deskguard-agent.ps1", "imports_every_psm1_in": AGENT_DIR + imports,
            "utils_deployed_there": sorted(p for p in files if p.startswith(AGENT_DIR + imports + "\\")),
            "entry": {"function": entry, "called_by_agent": f"{entry} -Params" in agent,
                      "defined_in": where(entry), "exported": exported(where(entry), entry)},
            "sections": [{"section": s, "function": fn, "defined_in": where(fn),
                          "exported": isinstance(where(fn), str) and exported(where(fn), fn)} for s, fn in table]}


def test_the_agent_collects_the_nightly_posture_from_the_utils_it_is_given(responder, play, enc_site):
    """The agent's composed program, pinned by a golden file: it imports the posture module_utils the role
    deploys beside it, calls the collection the nightly module calls, and every section of that collection's
    table is defined, once, by a deployed util that exports it. The deployed utils are exactly those the
    nightly module (deskguard_posture.ps1) has Ansible bundle."""
    files = _installed(responder, play, enc_site)
    comp = composition(files)
    assert comp["entry"] == {"function": "Invoke-DeskguardPostureCollection", "called_by_agent": True,
                             "defined_in": COLLECT + ".psm1", "exported": True}
    assert len(comp["sections"]) >= 12
    assert all(isinstance(s["defined_in"], str) and s["exported"] for s in comp["sections"]), comp["sections"]
    required = set(re.findall(r"(?m)^#Requires -Module (Ansible\.ModuleUtils\.\w+)$", POSTURE_MODULE.read_text()))
    assert {p.rsplit("\\", 1)[-1][:-len(".psm1")] for p in comp["utils_deployed_there"]} == required
    assert comp["imports_every_psm1_in"] + "\\" + COLLECT + ".psm1" in files
    # The sections get the params the nightly run sends the module for this host (test_posture_windows.py).
    from deskguard.compliance.policy import effective, posture_params

    cfg = json.loads(files[AGENT_DIR + "agent.json"])
    assert cfg["posture_params"] == posture_params(effective({**AGENT, "ansible_user": "deskguard-test"}))
    assert_golden("endpoint_agent_composition", [_Pinned("deskguard-agent.ps1 (composed)", comp)])


def test_what_the_role_deploys_to_windows_parses_and_reads_the_same_in_any_code_page(responder, play, enc_site):
    """The syntax gate over the files as sent (the agent and every util it imports), and ASCII only: the
    install writes them without a byte-order mark, which Windows PowerShell 5.1 reads in the ANSI code page."""
    from pssyntax import problems

    files = _installed(responder, play, enc_site)
    scripts = {p: text for p, text in files.items() if p.endswith((".ps1", ".psm1"))}
    assert len(scripts) >= 14
    assert {p: problems(text) for p, text in scripts.items() if problems(text)} == {}
    assert [p for p, text in scripts.items() if not text.isascii()] == []


def test_the_agent_checks_in_with_the_collected_posture():
    """The check-in's posture is the collection's result (not the agent's own facts), the configuration's
    posture params go to it as tables (Windows PowerShell 5.1 has no ConvertFrom-Json -AsHashtable), and the
    canonical JSON handles what the sections return: every integer width, doubles in the invariant culture's
    round-trip form, never NaN, enums by name, objects with note properties."""
    text = (REPO / "roles/endpoint_agent/files/deskguard-agent.ps1").read_text()
    run = text[text.index("# Run: one check-in cycle"):]
    assert "$posture = Get-Posture $Config" in run and "posture = $posture" in run
    assert "agent = @{ installed = $true" not in text          # the old agent-facts-only check-in is gone
    for needle in ("ConvertTo-Hashtable $Config.posture_params", "[System.Management.Automation.PSCustomObject]",
                   "[uint32], [long], [uint64]", "ToString('R', $Invariant)", "[double]::IsNaN($number)",
                   "$Value -is [enum]", "$global:ErrorActionPreference = 'Stop'", "Import-Module -Name $util.FullName -Global"):
        assert needle in text, needle
