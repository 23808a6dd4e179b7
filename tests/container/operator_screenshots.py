"""Screenshots for docs/operators.md (issue 23): a desktop notification drawn by a real notification server and
`deskguard-status` in a terminal, in Japanese and English, made in a laptop container of your lab.

Not a test and not in CI (it downloads ~40 MB of .debs once and takes a minute or two). Re-run it after a
wording change:

    export DESKGUARD_LAB_RUN=/var/tmp/deskguard-lab-$USER    # your own lab
    .venv/bin/deskguard lab up --containers 1
    .venv/bin/python tests/container/operator_screenshots.py   # writes docs/images/operator-*.png
    .venv/bin/deskguard lab down

What runs is the kit's own operator code as `endpoint_agent` deploys it (the module_utils beside the agent in
/usr/lib/deskguard-agent, the /usr/bin launchers), fed a status as the agent's `save_after_run` writes it after
a run that saw a pending restart, and one kept announcement. The pictures come from Xvfb (its frame buffer file,
`-fbdir`), dunst (a freedesktop notification server that draws) and xterm, with the IPA Gothic font: installed
in the container from the controller's .deb cache (tests/container/labdebs.py), so the lab image is unchanged.
The container is changed (files under /usr and /var/lib): use a fresh one, `lab down` after.
"""

from __future__ import annotations

import base64
import io
import shlex
import struct
import sys
import tarfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "container"))
sys.path.insert(0, str(ROOT / "cli"))

PACKAGES = ["xvfb", "dunst", "xterm", "fonts-ipafont-gothic", "dbus-x11"]
OUT = ROOT / "docs" / "images"
ANNOUNCEMENT = {"id": "0b5f8f66-1c0e-4a8e-9d59-0b2f5a1f7c11", "languages": [],
                "issued_at": "2026-12-06T00:00:00Z", "expires_at": "2099-01-01T00:00:00Z"}
TEXTS = {"ja": "明日9時から9時30分まで通話システムを更新します。", "en": "The call system is updated tomorrow 9:00-9:30."}

DUNSTRC = """[global]
    font = DejaVu Sans,IPAGothic 11
    width = 420
    origin = top-left
    offset = (10, 10)
    frame_width = 1
    frame_color = "#8c8c8c"
    separator_height = 8
    padding = 10
    horizontal_padding = 12
    format = "<b>%s</b>\\n%b"
    word_wrap = yes
    icon_position = off
    show_age_threshold = -1
[urgency_normal]
    background = "#fafafa"
    foreground = "#202020"
    timeout = 0
"""

# In the container, as root. $1: language. The operator is the lab image's `tanaka`; the status and the
# announcement are written by the kit's own code, as the agent would after a run that saw a pending restart.
SHOOT = r"""set -e
lang=$1; text=$2
rm -rf /var/lib/deskguard-status /tmp/shot; mkdir -p /tmp/shot; chmod 777 /tmp/shot
cat > /etc/deskguard/operator.json <<'EOF'
{"language": "", "quiet_hours": "", "notify_every_hours": 4, "reboot_deadline_hours": 72}
EOF
TZ=Asia/Tokyo python3 - "$text" <<'EOF'
import json, sys, time
sys.path.insert(0, "/usr/lib/deskguard-agent")
import deskguard_operator_announcements as ann, deskguard_operator_status as st
now = int(time.time())
posture = {"updates": {"reboot_pending": True}, "screen_lock": {"idle_delay": "uint32 300", "lock_enabled": True}}
st.save_after_run(posture, {"mode": "block"}, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 600)), True,
                  st.STATUS_DIR)
ann.prepare(st.STATUS_DIR)
kept = dict(json.load(open("/tmp/dgshot/announcement.json")), text=sys.argv[1])
with open("%s/announcements/%s.json" % (st.STATUS_DIR, kept["id"]), "w") as fh:
    json.dump(kept, fh, ensure_ascii=False)
EOF
chmod -R a+rX /var/lib/deskguard-status
Xvfb :7 -screen 0 460x280x24 -fbdir /tmp/shot -nolisten tcp -nocursor >/tmp/shot/xvfb.log 2>&1 & xvfb=$!
for i in $(seq 50); do [ -e /tmp/.X11-unix/X7 ] && break; sleep 0.2; done
home=$(getent passwd tanaka | cut -d: -f6)
runuser -u tanaka -- env -i HOME=$home PATH=/usr/bin:/bin DISPLAY=:7 LANG=C.UTF-8 TZ=Asia/Tokyo \
  XDG_STATE_HOME=/tmp/shot/state-$lang dbus-run-session -- sh -c "
    dunst -config /tmp/dgshot/dunstrc >/tmp/shot/dunst.log 2>&1 & d=\$!
    for i in \$(seq 50); do busctl --user call org.freedesktop.DBus / org.freedesktop.DBus NameHasOwner s \
      org.freedesktop.Notifications 2>/dev/null | grep -q true && break; sleep 0.2; done
    LANG=$lang deskguard-notify --once; sleep 3; cp /tmp/shot/Xvfb_screen0 /tmp/shot/notify.xwd; kill \$d"
kill $xvfb; wait $xvfb 2>/dev/null || true
Xvfb :7 -screen 0 1100x200x24 -fbdir /tmp/shot -nolisten tcp -nocursor >/tmp/shot/xvfb.log 2>&1 & xvfb=$!
for i in $(seq 50); do [ -e /tmp/.X11-unix/X7 ] && break; sleep 0.2; done
runuser -u tanaka -- env -i HOME=$home PATH=/usr/bin:/bin DISPLAY=:7 LANG=C.UTF-8 TZ=Asia/Tokyo \
  xterm -geometry 118x8+0+0 -fa 'DejaVu Sans Mono' -fd IPAGothic -fs 10 -bg white -fg black -T deskguard-status \
  -e sh -c "printf '\\033[?25l$ deskguard-status --lang $lang\n'; deskguard-status --lang $lang; sleep 30" & term=$!
sleep 4
cp /tmp/shot/Xvfb_screen0 /tmp/shot/status.xwd
kill $term $xvfb 2>/dev/null; wait 2>/dev/null || true
tar -C /tmp/shot -c notify.xwd status.xwd | base64 -w0
"""


def xwd_to_rgb(data: bytes) -> tuple[int, int, list[bytes]]:
    """An X window dump (Xvfb's -fbdir file, 24/32-bit TrueColor) as rows of RGB bytes."""
    for order in (">", "<"):
        fields = struct.unpack(order + "25I", data[:100])
        if fields[0] < 4096:
            break
    size, _v, _fmt, _depth, width, height, _xo, byte_order, _bu, _bbo, _pad, bpp, line = fields[:13]
    ncolors = fields[19]
    assert bpp == 32, f"expected a 32-bit frame buffer, got {bpp} bits per pixel"
    start = size + ncolors * 12
    rows = []
    for y in range(height):
        raw = data[start + y * line: start + y * line + width * 4]
        pixels = struct.unpack(("<" if byte_order == 0 else ">") + f"{width}I", raw)
        rows.append(b"".join(bytes(((p >> 16) & 255, (p >> 8) & 255, p & 255)) for p in pixels))
    return width, height, rows


def crop(width: int, rows: list[bytes], margin: int = 6) -> tuple[int, int, list[bytes]]:
    """Cut to what differs from the background (the top-left pixel's colour), with a margin."""
    bg = rows[0][:3]
    used = [y for y, r in enumerate(rows) if r != bg * width]
    cols = [x for x in range(width) if any(r[3 * x:3 * x + 3] != bg for r in rows)]
    if not used:
        return width, len(rows), rows
    top, bottom = max(used[0] - margin, 0), min(used[-1] + margin, len(rows) - 1)
    left, right = max(cols[0] - margin, 0), min(cols[-1] + margin, width - 1)
    return right - left + 1, bottom - top + 1, [r[3 * left:3 * (right + 1)] for r in rows[top:bottom + 1]]


def png(width: int, height: int, rows: list[bytes]) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main() -> int:
    import json

    import labdebs

    from deskguard.lab.access import run_ssh
    from deskguard.lab.state import LabState

    host = LabState.load().hosts["lab-ct1"]
    print(f"installing {' '.join(PACKAGES)} in lab-ct1 from the .deb cache")
    labdebs.install(host, PACKAGES)
    pack = io.BytesIO()
    with tarfile.open(fileobj=pack, mode="w:gz") as tar:
        for path in sorted((ROOT / "plugins" / "module_utils").glob("deskguard_*.py")):   # what the agent carries
            tar.add(path, f"lib/{path.name}")
        for name in ("deskguard-notify", "deskguard-status"):
            tar.add(ROOT / "roles" / "endpoint_agent" / "files" / name, f"bin/{name}")
        for name, text in (("dunstrc", DUNSTRC), ("announcement.json", json.dumps(ANNOUNCEMENT))):
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    setup = ("set -e; sudo rm -rf /tmp/dgshot; sudo mkdir -p /tmp/dgshot /usr/lib/deskguard-agent /etc/deskguard; "
             "base64 -d | sudo tar xz -C /tmp/dgshot; sudo chmod -R a+rX /tmp/dgshot; "
             "sudo cp /tmp/dgshot/lib/*.py /usr/lib/deskguard-agent/; "
             "sudo install -m 0755 /tmp/dgshot/bin/* /usr/bin/")
    done = run_ssh(host, setup, stdin=base64.b64encode(pack.getvalue()).decode(), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    OUT.mkdir(parents=True, exist_ok=True)
    for lang, text in TEXTS.items():
        shot = run_ssh(host, f"sudo bash -c {shlex.quote(SHOOT)} shoot {lang} {shlex.quote(text)}", timeout=300)
        assert shot.returncode == 0, shot.stdout[-2000:] + shot.stderr[-3000:]
        with tarfile.open(fileobj=io.BytesIO(base64.b64decode(shot.stdout.split()[-1]))) as tar:
            for kind in ("notify", "status"):
                width, _height, rows = xwd_to_rgb(tar.extractfile(f"{kind}.xwd").read())
                target = OUT / f"operator-{kind}-{lang}.png"
                target.write_bytes(png(*crop(width, rows)))
                print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
