/**
 * The guest side of "every guest learns each change by itself" for Linux images with cloud-init,
 * carried by the vendor data's `#cloud-config` (cloud-init/documents.ts). Pure: text only.
 *
 * cloud-init 22.4 (Debian 12) supports the `hotplug` update event for the ConfigDrive and
 * OpenStack datasources (`supported_update_events` lists HOTPLUG and BOOT), so the vendor data
 * turns on `updates.network.when: [boot-new-instance, hotplug]`. Not `boot`: with it, the Debian
 * guest's root filesystem was no longer grown by growpart at the next boot (guest-config test,
 * 2026-12-07; the cause inside cloud-init not found), and cdh-netsync below applies a new primary
 * address, ENIs and secondary addresses at every boot anyway.
 * - `hotplug`: cc_install_hotplug installs cloud-init's udev hook, which re-reads the drive on a
 *   NIC add and writes the new NIC's configuration.
 * That is not enough live: 22.4's networkd activator only sets a hot-plugged link up (networkd is
 * not reloaded, so the NIC stays unconfigured until the next boot), and secondary addresses come
 * with no udev event at all. So the vendor data also installs `cdh-netsync`: a small service that
 * re-reads the config drive every 3 s (and at once when udev reports a new NIC) and, when the
 * drive's network_data.json or the NIC set changed, brings every NIC it names up with exactly its
 * addresses (`ip`), each address with a source rule to a table of its NIC (100+N for ethN), so a
 * reply leaves through the NIC that owns the address (anti-spoofing allows only that). Without a
 * drive it reads the metadata service's network_data.json instead (once a minute, and on a NIC add).
 */
import type { YamlValue } from "./yaml.js";

/** The apply step (python3 is there wherever cloud-init is). */
const APPLY = String.raw`#!/usr/bin/python3
# cdh-agent (platform vendor data): brings every NIC named in the config drive's network_data.json
# (or the metadata service's) up with exactly its IPv4 addresses. Run by cdh-netsync-watch.
import glob, ipaddress, json, os, subprocess, urllib.request

STATE = "/run/cdh-netsync"


def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True)


def from_drive():
    mnt = os.path.join(STATE, "mnt-apply")
    os.makedirs(mnt, exist_ok=True)
    for dev in sorted(glob.glob("/dev/sr[0-9]*")):
        if run("mount", "-o", "ro", "-t", "iso9660", dev, mnt).returncode != 0:
            continue
        try:
            path = os.path.join(mnt, "openstack/latest/network_data.json")
            if os.path.exists(path):
                with open(path) as f:
                    return json.load(f)
        finally:
            run("umount", mnt)
    return None


def from_metadata():
    try:
        with urllib.request.urlopen("http://169.254.169.254/openstack/latest/network_data.json", timeout=3) as r:
            return json.load(r)
    except Exception:
        return None


def main():
    nd = from_drive() or from_metadata()
    if nd is None:
        return
    macs = {}
    for f in glob.glob("/sys/class/net/*/address"):
        with open(f) as fh:
            macs[fh.read().strip().lower()] = f.split("/")[4]
    links = {l.get("id"): macs.get(str(l.get("ethernet_mac_address", "")).lower()) for l in nd.get("links", [])}
    want = {}
    for n in nd.get("networks", []):
        ifc = links.get(n.get("link"))
        if n.get("type") not in ("ipv4", "static") or not ifc or not n.get("ip_address"):
            continue
        want.setdefault(ifc, []).append(str(ipaddress.ip_interface(n["ip_address"] + "/" + n["netmask"])))
    rules = json.loads(run("ip", "-j", "-4", "rule", "show").stdout or "[]")
    for ifc, addrs in want.items():
        run("ip", "link", "set", ifc, "up")
        shown = json.loads(run("ip", "-j", "-4", "addr", "show", "dev", ifc).stdout or "[]")
        have = [a["local"] + "/" + str(a["prefixlen"]) for i in shown for a in i.get("addr_info", []) if a.get("scope") == "global"]
        for a in addrs:
            if a not in have:
                run("ip", "addr", "add", a, "dev", ifc)
        for a in have:
            if a not in addrs:
                run("ip", "addr", "del", a, "dev", ifc)
        if not (ifc.startswith("eth") and ifc[3:].isdigit()):
            continue
        table = str(100 + int(ifc[3:]))
        ips = [a.split("/")[0] for a in addrs]
        for a in addrs:
            run("ip", "route", "replace", str(ipaddress.ip_interface(a).network), "dev", ifc, "table", table)
        for r in rules:
            if str(r.get("table")) == table and r.get("src") and r["src"] not in ips:
                run("ip", "rule", "del", "from", r["src"], "table", table)
        for ip in ips:
            if not any(str(r.get("table")) == table and r.get("src") == ip for r in rules):
                run("ip", "rule", "add", "from", ip, "table", table, "pref", "1000")


main()
`;

/** The follower: cheap checks every 3 s (and at once on SIGUSR1 from udev), the apply step on a change. */
const WATCH = String.raw`#!/bin/sh
# cdh-agent (platform vendor data): follows the config drive (hot-swapped by the host on every
# change) and the NIC set; runs cdh-netsync when either changed, and once a minute anyway.
state=/run/cdh-netsync
mkdir -p "$state/mnt"
# The drive's door stays unlocked while it is read: the host swaps it at any moment.
echo 0 >/proc/sys/dev/cdrom/lock 2>/dev/null
trap : USR1
fingerprint() {
  cat /sys/class/net/*/address 2>/dev/null
  for d in /dev/sr[0-9]*; do
    [ -b "$d" ] || continue
    if mount -o ro -t iso9660 "$d" "$state/mnt" 2>/dev/null; then
      cat "$state/mnt/openstack/latest/network_data.json" 2>/dev/null
      umount "$state/mnt"
    fi
  done
}
last= n=0
while :; do
  now=$(fingerprint | cksum)
  if [ "$now" != "$last" ] || [ $n -ge 20 ]; then
    /usr/local/sbin/cdh-netsync && last=$now
    n=0
  fi
  n=$((n + 1))
  sleep 3 &
  wait $!
done
`;

const UNIT = `[Unit]
Description=cdh-agent: follow the config drive's NICs and addresses
After=network.target

[Service]
ExecStart=/usr/local/sbin/cdh-netsync-watch
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
`;

const UDEV = `# cdh-agent: a hot-plugged NIC is configured at once (cdh-netsync-watch wakes on SIGUSR1).
SUBSYSTEM=="net", ACTION=="add", RUN+="/bin/systemctl --no-block kill --kill-who=main -s USR1 cdh-netsync.service"
`;

const SYSCTL = `# cdh-agent: a NIC answers ARP only for its own addresses, from its own addresses.
net.ipv4.conf.all.arp_ignore = 1
net.ipv4.conf.all.arp_announce = 2
`;

/** cloud-init's update events for the network (see the file's comment). */
export const NETWORK_UPDATE_EVENTS = ["boot-new-instance", "hotplug"] as const;

/** The cloud-config parts of the guest side: files, the commands that start them, cloud-init's update events. */
export function netsyncCloudConfig(): { updates: YamlValue; files: YamlValue[]; runcmd: YamlValue[] } {
  const file = (path: string, content: string, permissions: string) => ({ path, owner: "root:root", permissions, content });
  return {
    updates: { network: { when: [...NETWORK_UPDATE_EVENTS] } },
    files: [
      file("/usr/local/sbin/cdh-netsync", APPLY, "0755"),
      file("/usr/local/sbin/cdh-netsync-watch", WATCH, "0755"),
      file("/etc/systemd/system/cdh-netsync.service", UNIT, "0644"),
      file("/etc/udev/rules.d/90-cdh-netsync.rules", UDEV, "0644"),
      file("/etc/sysctl.d/60-cdh-netsync.conf", SYSCTL, "0644"),
    ],
    runcmd: [
      ["sysctl", "-q", "-p", "/etc/sysctl.d/60-cdh-netsync.conf"],
      ["udevadm", "control", "--reload"],
      ["systemctl", "daemon-reload"],
      ["systemctl", "enable", "--now", "cdh-netsync.service"],
    ],
  };
}
