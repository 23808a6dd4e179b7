"""Recorded network environments for the network posture tests: what `ip -j`, sysfs, `nmcli -t`, `iw`, `wpa_cli`
and the DHCP clients' lease files show on a laptop in each situation. Each recording says where its shape comes
from; addresses, MACs and names are the documentation ranges or made up, the formats are the tools' own.

`sysfs` maps paths under /sys/class/net to file contents; a value starting with "->" is a symlink target
(how the kernel exposes the bound driver). `commands` maps a command line to its stdout; a missing entry is a
tool that is not installed. `files` are other files under the root (lease files).
"""

from __future__ import annotations

import contextlib
import socket


@contextlib.contextmanager
def call_system_listener():
    """A real TCP listener on the loopback standing in for the call system; yields its port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()


# NetworkManager's terse device view, as `nmcli -t -f GENERAL,DHCP4 device show IF` prints it (colons in values
# escaped with a backslash). Shape: NetworkManager 1.x; the DHCP option names are NM's (e.g. the Ubuntu
# "wireless-info" report of an HTC phone's USB tethering shows `vendor_encapsulated_options = ANDROID_METERED`
# and `GENERAL.METERED: yes (guessed)` for the rndis_host interface).
def nm_device(dev, nm_type, driver, metered, connection, dhcp=()):
    lines = [f"GENERAL.DEVICE:{dev}", f"GENERAL.TYPE:{nm_type}", "GENERAL.HWADDR:02\\:00\\:5E\\:10\\:00\\:01",
             "GENERAL.MTU:1500", "GENERAL.STATE:100 (connected)", f"GENERAL.CONNECTION:{connection}",
             "GENERAL.CON-PATH:/org/freedesktop/NetworkManager/ActiveConnection/2", f"GENERAL.DRIVER:{driver}",
             f"GENERAL.METERED:{metered}"]
    lines += [f"DHCP4.OPTION[{i}]:{opt}" for i, opt in enumerate(dhcp, 1)]
    return "\n".join(lines) + "\n"


def route(dev, gw, metric=100):
    return ('[{"dst":"default","gateway":"%s","dev":"%s","protocol":"dhcp","prefsrc":"192.0.2.10","metric":%d,'
            '"flags":[]}]' % (gw, dev, metric))


def usb_net(dev, ifindex, driver, vid, pid, extra=""):
    """A usbnet interface: net/IF/device is the USB interface (3-11:1.0), its parent the USB device with the ids."""
    return {f"{dev}/uevent": f"INTERFACE={dev}\nIFINDEX={ifindex}\n{extra}",
            f"{dev}/device": "-> ../../../devices/3-11:1.0",
            "../../devices/3-11:1.0/driver": f"-> ../../bus/usb/drivers/{driver}",
            "../../devices/idVendor": vid + "\n", "../../devices/idProduct": pid + "\n"}


IW_ANDROID_AP = """Connected to 02:1a:11:f5:3c:7e (on wlp2s0)
\tSSID: AndroidAP_7d21
\tfreq: 2437
\tRX: 120345 bytes (812 packets)
\tTX: 40231 bytes (301 packets)
\tsignal: -41 dBm
\trx bitrate: 72.2 MBit/s MCS 7 short GI
\ttx bitrate: 65.0 MBit/s MCS 7

\tbss flags:\tshort-slot-time
\tdtim period:\t2
\tbeacon int:\t100
"""

WPA_CLI_ANDROID_AP = """bssid=02:1a:11:f5:3c:7e
freq=2437
ssid=AndroidAP_7d21
id=0
mode=station
wifi_generation=4
pairwise_cipher=CCMP
group_cipher=CCMP
key_mgmt=WPA2-PSK
wpa_state=COMPLETED
ip_address=192.168.43.57
address=a0:88:b4:11:22:33
"""

# dhclient's lease database (/var/lib/dhcp/dhclient.IF.leases, isc-dhcp-client 4.4): an older lease for another
# interface, then the current one. dhclient writes option 43 as colon-hex when it is not plain text.
DHCLIENT_ANDROID = """lease {
  interface "enp0s31f6";
  fixed-address 192.168.178.34;
  option subnet-mask 255.255.255.0;
  option routers 192.168.178.1;
  renew 4 2026/11/26 09:12:01;
}
lease {
  interface "wlp2s0";
  fixed-address 192.168.43.57;
  option subnet-mask 255.255.255.0;
  option routers 192.168.43.1;
  option dhcp-lease-time 3600;
  option dhcp-message-type 5;
  option domain-name-servers 192.168.43.1;
  option dhcp-server-identifier 192.168.43.1;
  option vendor-encapsulated-options 41:4e:44:52:4f:49:44:5f:4d:45:54:45:52:45:44;
  renew 0 2026/11/29 01:10:00;
  rebind 0 2026/11/29 01:35:00;
  expire 0 2026/11/29 01:43:00;
}
"""

WIFI_SYSFS = {"wlp2s0/uevent": "DEVTYPE=wlan\nINTERFACE=wlp2s0\nIFINDEX=3\n", "wlp2s0/wireless/": "",
              "wlp2s0/device": "-> ../../../devices/0000:02:00.0",
              "../../devices/0000:02:00.0/driver": "-> ../../bus/pci/drivers/iwlwifi"}

NM_WIFI_HOME = "no:Nachbar:10\\:FE\\:ED\\:00\\:00\\:01:WPA2\nyes:FRITZ!Box 7590 XY:3C\\:A6\\:2F\\:11\\:22\\:33:WPA2\n"

RECORDINGS = {
    "container_veth": dict(
        source="a systemd-nspawn container's host0 (veth, no device/driver link: /sys/class/net/host0 points into "
               "/sys/devices/virtual/net), the lab's container laptops; no NetworkManager",
        commands={"ip -j -4 route show default": route("host0", "10.213.0.1")},
        sysfs={"host0": "-> ../../devices/virtual/net/host0",
               "../../devices/virtual/net/host0/uevent": "INTERFACE=host0\nIFINDEX=2\n"},
        kind="virtual", net001="pass", net002="pass"),
    "wired_home_broadband": dict(
        source="Intel I219 (e1000e) on a home router, NetworkManager connected; route JSON from iproute2 6.1",
        commands={"ip -j -4 route show default": route("enp0s31f6", "192.168.178.1"),
                  "nmcli -t -f GENERAL,DHCP4 device show enp0s31f6": nm_device(
                      "enp0s31f6", "ethernet", "e1000e", "no (guessed)", "Wired connection 1",
                      ["dhcp_lease_time = 864000", "routers = 192.168.178.1"])},
        sysfs={"enp0s31f6/uevent": "INTERFACE=enp0s31f6\nIFINDEX=2\n",
               "enp0s31f6/device": "-> ../../../devices/0000:00:1f.6",
               "../../devices/0000:00:1f.6/driver": "-> ../../bus/pci/drivers/e1000e"},
        kind="wired", net001="pass", net002="pass"),
    "android_usb_tethering": dict(
        source="HTC Android phone in USB tethering (rndis_host, renamed enp0s20u11 from usb0), NetworkManager; "
               "shape of the Ubuntu forum wireless-info report quoted in docs/netcheck.md",
        commands={"ip -j -4 route show default": route("enp0s20u11", "192.168.42.129"),
                  "nmcli -t -f GENERAL,DHCP4 device show enp0s20u11": nm_device(
                      "enp0s20u11", "ethernet", "rndis_host", "yes (guessed)", "Kabelnetzwerkverbindung 2",
                      ["routers = 192.168.42.129", "vendor_encapsulated_options = ANDROID_METERED",
                       "dhcp_lease_time = 3600"])},
        sysfs=usb_net("enp0s20u11", 4, "rndis_host", "0bb4", "0ffe"),
        kind="usb_tether", driver="rndis_host", net001="fail", net002="pass",
        says="Connected through a phone's USB tethering (driver rndis_host, USB id 0bb4:0ffe)."),
    "iphone_usb_tethering": dict(
        source="iPhone Personal Hotspot over USB (ipheth), systemd-networkd (no NetworkManager, no iw)",
        commands={"ip -j -4 route show default": route("enx0a1b2c3d4e5f", "172.20.10.1", 1024)},
        sysfs=usb_net("enx0a1b2c3d4e5f", 5, "ipheth", "05ac", "12a8"),
        files={"run/systemd/netif/leases/5": "# This is private data. Do not parse.\nADDRESS=172.20.10.2\n"
                                             "NETMASK=255.255.255.240\nROUTER=172.20.10.1\nSERVER_ADDRESS=172.20.10.1\n"
                                             "LIFETIME=85536\n"},
        kind="usb_tether", driver="ipheth", net001="fail", android_metered=False),
    "bluetooth_pan": dict(
        source="Android phone's Bluetooth tethering via BlueZ PAN (bnep0: DEVTYPE=bluetooth from the kernel's "
               "bnep device type, no bound driver), dhclient lease with option 43 as text",
        commands={"ip -j -4 route show default": route("bnep0", "192.168.44.1")},
        sysfs={"bnep0/uevent": "DEVTYPE=bluetooth\nINTERFACE=bnep0\nIFINDEX=6\n"},
        files={"var/lib/dhcp/dhclient.leases": 'lease {\n  interface "bnep0";\n  fixed-address 192.168.44.90;\n'
                                               '  option vendor-encapsulated-options "ANDROID_METERED";\n}\n'},
        kind="bluetooth_pan", net001="fail", android_metered=True,
        says="Connected through a phone's Bluetooth tethering (interface bnep0)."),
    "android_wifi_hotspot": dict(
        source="laptop on an Android phone's Wi-Fi hotspot: iw 5.19 `link`, wpa_supplicant 2.10 `wpa_cli status`, "
               "dhclient lease with ANDROID_METERED; no NetworkManager",
        commands={"ip -j -4 route show default": route("wlp2s0", "192.168.43.1", 600),
                  "iw dev wlp2s0 link": IW_ANDROID_AP, "wpa_cli -i wlp2s0 status": WPA_CLI_ANDROID_AP},
        sysfs=WIFI_SYSFS, files={"var/lib/dhcp/dhclient.wlp2s0.leases": DHCLIENT_ANDROID},
        kind="wifi", net001="fail", net002="pass", android_metered=True, security="wpa2",
        says='Connected to the Wi-Fi "AndroidAP_7d21", whose name matches the phone hotspot pattern "AndroidAP*".'),
    "home_wifi_wpa2": dict(
        source="home Wi-Fi (AVM FRITZ!Box), NetworkManager: `nmcli -t -f ACTIVE,SSID,BSSID,SECURITY device wifi list`",
        commands={"ip -j -4 route show default": route("wlp2s0", "192.168.178.1", 600),
                  "nmcli -t -f GENERAL,DHCP4 device show wlp2s0": nm_device(
                      "wlp2s0", "wifi", "iwlwifi", "no (guessed)", "FRITZ!Box 7590 XY"),
                  "iw dev wlp2s0 link": IW_ANDROID_AP.replace("02:1a:11:f5:3c:7e", "3c:a6:2f:11:22:33")
                                                     .replace("AndroidAP_7d21", "FRITZ!Box 7590 XY"),
                  "nmcli -t -f ACTIVE,SSID,BSSID,SECURITY device wifi list ifname wlp2s0 --rescan no": NM_WIFI_HOME},
        sysfs=WIFI_SYSFS, kind="wifi", net001="pass", net002="pass", security="wpa2"),
    "open_cafe_wifi": dict(
        source="an open hotspot (no SECURITY in nmcli's list), NetworkManager, iw not installed",
        commands={"ip -j -4 route show default": route("wlp2s0", "10.10.0.1", 600),
                  "nmcli -t -f GENERAL,DHCP4 device show wlp2s0": nm_device(
                      "wlp2s0", "wifi", "iwlwifi", "no (guessed)", "Cafe Free WiFi"),
                  "nmcli -t -f ACTIVE,SSID,BSSID,SECURITY device wifi list ifname wlp2s0 --rescan no":
                      "yes:Cafe Free WiFi:9C\\:53\\:22\\:00\\:AA\\:01:\n"},
        sysfs=WIFI_SYSFS, kind="wifi", net001="pass", net002="fail", security="open",
        says='Connected to the open Wi-Fi "Cafe Free WiFi" (no encryption): anyone nearby can watch the traffic.'),
    "company_mobile_router": dict(
        source="a company-issued pocket router (Huawei E5785) on mobile data, NetworkManager marks it metered",
        commands={"ip -j -4 route show default": route("wlp2s0", "192.168.8.1", 600),
                  "nmcli -t -f GENERAL,DHCP4 device show wlp2s0": nm_device(
                      "wlp2s0", "wifi", "iwlwifi", "yes", "HUAWEI-E5785-4F2A"),
                  "nmcli -t -f ACTIVE,SSID,BSSID,SECURITY device wifi list ifname wlp2s0 --rescan no":
                      "yes:HUAWEI-E5785-4F2A:E8\\:4D\\:74\\:AA\\:BB\\:CC:WPA2\n"},
        sysfs=WIFI_SYSFS, kind="wifi", net001="pass", net002="pass", security="wpa2"),
    "mobile_broadband_modem": dict(
        source="built-in LTE modem (cdc_mbim: usbnet sets DEVTYPE=wwan for FLAG_WWAN drivers), ModemManager",
        commands={"ip -j -4 route show default": route("wwan0", "10.64.64.64", 700)},
        sysfs=usb_net("wwan0", 7, "cdc_mbim", "1199", "9079", extra="DEVTYPE=wwan\n"),
        kind="mobile_broadband", driver="cdc_mbim", net001="fail"),
}

# The company's pocket routers (policy), and a hotspot pattern that catches the same model bought privately.
COMPANY_POLICY = {"network_posture_company_routers": [{"ssid": "HUAWEI-E5785-*", "bssid": ["e8:4d:74:aa:bb:cc"],
                                                       "reason": "company pocket routers"}],
                  "network_posture_hotspot_ssids": ["HUAWEI-E*"]}
