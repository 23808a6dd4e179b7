"""The endpoint_agent role's Windows path against the loopback responder: the same controller step as Linux
(configuration with the pinned order key and device UUID, key made on the laptop, only the public key back and
registered in the store), and the PowerShell agent's protocol pieces pinned by golden files. Whether Windows
runs them is not verified here (docs/agent.md)."""

from __future__ import annotations

import hashlib
import json
import re
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
                                         "interval_minutes": 30, "boot_delay_seconds": 90, "jitter_seconds": 300,
                                         "notify_path": "C:\\ProgramData\\deskguard\\operator\\deskguard-notify.ps1"}
    # The operator's toasts (issue 23): script, words and policy in the Users-readable folder, as text.
    operator = {p.rsplit("\\", 1)[1]: f for p, f in files.items() if p.startswith("C:\\ProgramData\\deskguard\\operator\\")}
    assert sorted(operator) == ["deskguard-notify.ps1", "operator-catalog.json", "operator.json"]
    assert all(f.get("public") is True for f in operator.values())
    assert operator["deskguard-notify.ps1"]["content"] == (REPO / "roles/endpoint_agent/files/deskguard-notify.ps1").read_text()
    assert operator["operator-catalog.json"]["content"] == (REPO / "roles/endpoint_agent/files/operator-catalog.json").read_text()
    assert json.loads(operator["operator.json"]["content"]) == {"language": "", "quiet_hours": "20:00-08:00",
                                                               "notify_every_hours": 4, "reboot_deadline_hours": 72}
    assert not any(f.get("public") for p, f in files.items() if p not in
                   {"C:\\ProgramData\\deskguard\\operator\\" + name for name in operator})
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
                   "manage-bde.exe -forcerecovery C:", f"$OrderLimit = {proto.LIMITS['order']}",
                   f"$SkewSeconds = {proto.CLOCK_SKEW_SECONDS}", "'deskguard/1'"):
        assert needle in text, needle
    words = {w for w in proto.REASONS if f"'{w}'" in text}
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
    literal = re.search(r"\$fetch = @\{(.*?)\}\s*\n\s*\$body = ", text, re.DOTALL).group(1)
    fields = set(re.findall(r"(?:^|;|\n)\s*(\w+) =", literal))
    assert fields == set(proto.build_fetch("0b6c9d55-8d1e-4f3a-9a51-3e1f0d2c7a10")), fields
    assert "type = 'fetch'" in literal and "nonce = (New-Nonce)" in literal
    assert "$body = $Utf8.GetBytes((New-Envelope $fetch $Config.device_key))" in text
    assert "$Config.order_fetch -eq 'static'" in text
    request = _function(text, "Invoke-AgentRequest")
    assert "Test-UrlAllowed" in request.split("::Send(")[0], "a request is made before the URL is checked"
    assert "$Config.allow_http -eq $true" in text and "StartsWith('http://')" in text


def _function(text: str, name: str) -> str:
    """The text of one PowerShell function of the agent, up to the next top-level function."""
    start = text.index(f"function {name}")
    end = text.find("\nfunction ", start + 1)
    return text[start:end if end > 0 else len(text)]


# ------------------------------------------------------- issue 20: the run's deadline and the pinned CA

AGENT_PS1 = REPO / "roles/endpoint_agent/files/deskguard-agent.ps1"


def _linux():
    import sys

    sys.path.insert(0, str(REPO / "plugins" / "module_utils"))
    import deskguard_agent
    import deskguard_agent_http

    return deskguard_agent, deskguard_agent_http


def test_every_request_of_a_run_goes_through_the_deadline_transport():
    """Invoke-WebRequest -TimeoutSec is not a deadline in Windows PowerShell 5.1 (a dribbled body holds it):
    no request may use it, or any other client without the deadline. The order fetch, the acks and the
    check-in all go through Invoke-AgentRequest, which gives [Deskguard.AgentHttp]::Send the smaller of
    timeout_seconds and what is left of the run's budget (as many requests as Linux's RUN_REQUESTS, with
    Linux's body limits), and the ca_file of agent.json."""
    agent, _ = _linux()
    text = AGENT_PS1.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("#", "//")))
    for client in ("Invoke-WebRequest", "Invoke-RestMethod", "Net.WebClient", "HttpClient", "Start-BitsTransfer"):
        assert client not in code, client
    assert f"$RunRequests = {agent.RUN_REQUESTS}" in text
    assert f"$OrderLimit = {agent.ORDER_LIMIT}" in text and f"$AnswerLimit = {agent.ANSWER_LIMIT}" in text
    request = _function(text, "Invoke-AgentRequest")
    assert "$timeout = [Math]::Min([double]$Config.timeout_seconds, $script:NetworkLeft)" in request
    assert "[Deskguard.AgentHttp]::Send($Method, $Url, $Body, $timeout, $Limit, (Get-CaFile $Config))" in request
    assert "$script:NetworkLeft -= $clock.Elapsed.TotalSeconds" in request.split("finally")[1]
    assert "Invoke-AgentRequest $method $url $body $OrderLimit $Config" in _function(text, "Get-OrderBody")
    assert "Invoke-AgentRequest 'POST' $url $Utf8.GetBytes($Envelope) $AnswerLimit $Config" in \
        _function(text, "Send-Envelope")
    assert "[string]$Config.ca_file" in _function(text, "Get-CaFile")
    run = text[text.index("# Run: one check-in cycle"):]
    budget = "$script:NetworkLeft = $RunRequests * [double]$Config.timeout_seconds"
    assert run.index("Initialize-AgentHttp") < run.index(budget) < run.index("Get-OrderBody")
    assert run.count("Send-Envelope '/v1/ack'") == 2 and run.count("Send-Envelope '/v1/checkin'") == 1
    # The C# side: the deadline's timer aborts the request, every read is bounded, the body is capped.
    source = text[text.index("$AgentHttpSource = @'"):text.index("'@", text.index("$AgentHttpSource = @'"))]
    for needle in ("request.Timeout = ms;", "request.ReadWriteTimeout = ms;", "request.Abort();",
                   "new Timer(", "ReadBounded(down, limit, clock, ms, late)", "clock.ElapsedMilliseconds >= ms",
                   "limit + 1 - got.Length", "request.AllowAutoRedirect = false;"):
        assert needle in source, needle


def test_the_server_certificate_check_is_per_request_and_pinned():
    """The certificate callback belongs to the one request (never the process-wide ServicePointManager
    callback, which would change every TLS connection of the process and outlive the run), chains end at
    ca_file's own certificate by thumbprint, and TLS is 1.2 or newer."""
    text = AGENT_PS1.read_text()
    assert not re.search(r"ServicePointManager\]?\s*(::|\.)\s*ServerCertificateValidationCallback", text)
    assert "CertificatePolicy" not in text and "{ $true }" not in text.replace(" ", " ")
    assert "request.ServerCertificateValidationCallback = check.Validate;" in text
    for needle in ("ChainPolicy.ExtraStore.AddRange(pinned)", "X509VerificationFlags.AllowUnknownCertificateAuthority",
                   "ca.Thumbprint, root.Thumbprint", "SslPolicyErrors.RemoteCertificateNameMismatch",
                   "ServicePointManager.SecurityProtocol = tls;", "SecurityProtocolType tls = SecurityProtocolType.Tls12;"):
        assert needle in text, needle
    for weak in ("Ssl3", "SecurityProtocolType.Tls11", "SecurityProtocolType.Tls |", "SecurityProtocolType.Tls;"):
        assert weak not in text, weak


def test_the_dead_man_switch_is_decided_before_any_request():
    """As on Linux: decided from the state file alone, so a server that stalls cannot postpone it."""
    text = AGENT_PS1.read_text()
    run = text[text.index("# Run: one check-in cycle"):]
    assert run.index("$deadman = Invoke-Deadman $Config $State") < run.index("Initialize-AgentHttp") < \
        run.index("Get-OrderBody")
    deadman = _function(text, "Invoke-Deadman") + _function(text, "Test-DeadmanKeep")
    for network in ("Invoke-AgentRequest", "Send-Envelope", "Get-OrderBody", "AgentHttp"):
        assert network not in deadman, network
    for needle in ("$Config.deadman_days", "$State.last_checkin", "$Config.installed_at", "$days * 86400",
                   "$State.deadman_locked_at = Get-UtcText $now", "Invoke-Lock", "$State.deadman_refused"):
        assert needle in deadman, needle


def test_the_windows_agent_says_what_the_linux_agent_says():
    """The same words for the same failures (docs/agent.md quotes them), read from both agents' sources."""
    agent, http = _linux()
    linux = "".join(Path(m.__file__).read_text() for m in (agent, http))
    text = AGENT_PS1.read_text()
    for words in ("the server is too slow (its deadline, ", "the server's TLS certificate is refused: ",
                  "answer larger than ", ": not sent, no time left",
                  " is plain HTTP, refused (https:// only; allow_http is for a lab)", "deskguard-agent: ",
                  "deskguard-agent/1", "unreachable: "):
        assert words in linux and words in text, words


def test_the_site_ca_flows_from_the_policy_to_the_windows_agent(responder, play, enc_site):
    """endpoint_agent_ca_file (the site's CA, a path on the laptop) reaches agent.json's ca_file, which the
    agent hands to every request (test above)."""
    responder.answers["deskguard_agent_install_windows"] = {"changed": True, "public_key": _device_pem()}
    ca = "C:\\ProgramData\\deskguard\\site-ca.pem"
    play("role.yml", deskguard_test_role="endpoint_agent", deskguard_device_uuid=enc_site[1],
         endpoint_agent_ca_file=ca, endpoint_agent_timeout_seconds=7, **AGENT)
    (call,) = [c for c in responder.calls if c.short == "deskguard_agent_install_windows"]
    files = {f["path"]: f["content"] for f in call.args["files"]}
    cfg = json.loads(files["C:\\ProgramData\\deskguard\\agent\\agent.json"])
    assert cfg["ca_file"] == ca and cfg["timeout_seconds"] == 7 and cfg["allow_http"] is False


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
