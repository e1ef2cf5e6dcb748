/**
 * The console page's own files (HTML, script, style), kept as text here so that they ship in
 * the build with the code that serves them (page.ts); noVNC itself is served from its
 * installed package. The page takes the seeds' query parameter: `vnc.html?InstanceVncUrl=<the
 * value DescribeInstanceVncUrl answered>`, as Tencent's console page does.
 *
 * The script connects only to a ws/wss URL on the page's own host (a link carrying another
 * host's URL would make the page a window onto someone else's machine), drops the token from
 * the address bar and history at once, and has buttons for the key combinations a browser
 * keeps for itself (Ctrl-Alt-Del, Ctrl-Alt-F1…F6 for the Linux consoles, Alt-Tab, …), sent
 * as RFB key events. `window.cdhConsole` says the session's state (the tests read it).
 */

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Instance console</title>
<link rel="stylesheet" href="vnc.css">
<script type="module" src="vnc.js"></script>
</head>
<body>
<header>
  <span id="status">Connecting…</span>
  <span class="keys">
    <button type="button" data-keys="ctrl-alt-del" title="Ctrl+Alt+Delete">Ctrl-Alt-Del</button>
    <select id="combo" aria-label="Send a key combination">
      <option value="">Send keys…</option>
      <option value="ctrl-alt-backspace">Ctrl-Alt-Backspace</option>
      <option value="ctrl-alt-f1">Ctrl-Alt-F1</option>
      <option value="ctrl-alt-f2">Ctrl-Alt-F2</option>
      <option value="ctrl-alt-f3">Ctrl-Alt-F3</option>
      <option value="ctrl-alt-f4">Ctrl-Alt-F4</option>
      <option value="ctrl-alt-f5">Ctrl-Alt-F5</option>
      <option value="ctrl-alt-f6">Ctrl-Alt-F6</option>
      <option value="ctrl-alt-f7">Ctrl-Alt-F7</option>
      <option value="alt-tab">Alt-Tab</option>
      <option value="alt-f4">Alt-F4</option>
      <option value="super">Windows key</option>
      <option value="super-r">Windows-R</option>
      <option value="ctrl-esc">Ctrl-Esc</option>
    </select>
  </span>
</header>
<main id="screen"></main>
</body>
</html>
`;

export const PAGE_CSS = `html, body { margin: 0; height: 100%; background: #202124; color: #e8eaed; font: 14px system-ui, sans-serif; }
body { display: flex; flex-direction: column; }
header { display: flex; align-items: center; justify-content: space-between; gap: 1em; padding: 6px 10px; background: #303134; }
header button, header select { font: inherit; padding: 2px 8px; }
#status.bad { color: #f28b82; }
#screen { flex: 1; min-height: 0; overflow: hidden; }
`;

export const PAGE_JS = `import RFB from "./novnc/core/rfb.js";

// X keysyms and the matching KeyboardEvent codes (QEMU maps codes to scan codes).
const K = {
  ctrl: [0xffe3, "ControlLeft"], alt: [0xffe9, "AltLeft"], del: [0xffff, "Delete"], bs: [0xff08, "Backspace"],
  tab: [0xff09, "Tab"], esc: [0xff1b, "Escape"], super: [0xffeb, "MetaLeft"], r: [0x0072, "KeyR"],
};
for (let i = 1; i <= 12; i++) K["f" + i] = [0xffbd + i, "F" + i];
const COMBOS = {
  "ctrl-alt-del": ["ctrl", "alt", "del"], "ctrl-alt-backspace": ["ctrl", "alt", "bs"],
  "alt-tab": ["alt", "tab"], "alt-f4": ["alt", "f4"], "super": ["super"], "super-r": ["super", "r"], "ctrl-esc": ["ctrl", "esc"],
};
for (let i = 1; i <= 7; i++) COMBOS["ctrl-alt-f" + i] = ["ctrl", "alt", "f" + i];

const status = document.getElementById("status");
const state = { state: "connecting", reason: "", rfb: null, combosSent: [] };
window.cdhConsole = state;
function show(text, bad) {
  status.textContent = text;
  status.classList.toggle("bad", !!bad);
}
function fail(text) {
  state.state = "failed";
  state.reason = text;
  show(text, true);
}

const raw = new URLSearchParams(location.search).get("InstanceVncUrl");
// The token is single-use, but it should not stay in the address bar or the history either.
history.replaceState(null, "", location.pathname);
let url;
try {
  url = raw ? new URL(raw) : undefined;
} catch {
  url = undefined;
}
if (!url) {
  fail("No console URL: open this page as vnc.html?InstanceVncUrl=<the value DescribeInstanceVncUrl answered>.");
} else if ((url.protocol !== "ws:" && url.protocol !== "wss:") || url.host !== location.host) {
  fail("This page opens consoles of its own host only (" + location.host + ").");
} else {
  const rfb = new RFB(document.getElementById("screen"), url.href, { shared: true });
  state.rfb = rfb;
  rfb.scaleViewport = true;
  rfb.background = "#000";
  rfb.addEventListener("connect", () => {
    state.state = "connected";
    show("Connected. Keyboard and mouse go to the instance.");
    rfb.focus();
  });
  rfb.addEventListener("disconnect", (e) => {
    state.state = "disconnected";
    state.reason = e.detail.clean ? "closed" : "lost";
    fail(e.detail.clean
      ? "The session ended (another console session for this instance, or the instance stopped). Ask for a new URL to reconnect."
      : "The console could not be opened or was lost (a console URL works once, for 15 seconds). Ask for a new URL.");
  });
  rfb.addEventListener("desktopname", (e) => { document.title = e.detail.name + " — console"; });
  const send = (name) => {
    const keys = COMBOS[name];
    if (!keys || state.state !== "connected") return;
    if (name === "ctrl-alt-del") rfb.sendCtrlAltDel();
    else {
      for (const k of keys) rfb.sendKey(K[k][0], K[k][1], true);
      for (const k of [...keys].reverse()) rfb.sendKey(K[k][0], K[k][1], false);
    }
    state.combosSent.push(name);
    rfb.focus();
  };
  state.send = send;
  for (const b of document.querySelectorAll("button[data-keys]")) b.addEventListener("click", () => send(b.dataset.keys));
  const combo = document.getElementById("combo");
  combo.addEventListener("change", () => {
    send(combo.value);
    combo.value = "";
  });
}
`;
