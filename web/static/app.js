// The chat page of chat-web: one WebSocket to the server (web/server.py), which is the broker's client.
// Every string from the network is shown with textContent, never parsed as HTML.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const st = {
    ws: null, token: sessionStorage.getItem("chat.token"), epoch: sessionStorage.getItem("chat.epoch"),
    after: 0, user: "", convs: new Map(), current: "room", seen: new Set(), online: [], recent: [],
    busy: {}, me: {}, retry: 0, outbox: new Map(), gotQueue: [], stopped: false,
  };

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function banner(text, error) {
    const b = $("banner");
    b.textContent = text || "";
    b.hidden = !text;
    b.classList.toggle("error", !!error);
  }

  function timeText(ts) {
    const d = new Date(ts * 1000);
    const opts = { hour: "2-digit", minute: "2-digit", second: "2-digit" };
    if (d.toDateString() !== new Date().toDateString()) { opts.month = "short"; opts.day = "numeric"; }
    return d.toLocaleString([], opts);
  }

  function randomId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (x) => x.toString(16).padStart(2, "0")).join("");
  }

  // ---- the WebSocket ------------------------------------------------------------------------

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/ws`);
    st.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ t: "hello", token: st.token, epoch: st.epoch, after: st.after }));
    };
    ws.onmessage = (ev) => {
      let item;
      try { item = JSON.parse(ev.data); } catch (e) { return; }
      st.retry = 0;
      receive(item);
    };
    ws.onclose = (ev) => {
      if (st.ws !== ws) return;
      st.ws = null;
      if (ev.code === 4000) {
        banner("This chat is open in another tab or window.", true);
        return;
      }
      if (st.stopped) return;
      const wait = Math.min(5000, 500 * 2 ** st.retry);
      st.retry += 1;
      banner("Connection to the chat page server lost; reconnecting…", true);
      setTimeout(connect, wait);
    };
  }

  function send(obj) {
    if (st.ws && st.ws.readyState === WebSocket.OPEN) {
      st.ws.send(JSON.stringify(obj));
      return true;
    }
    return false;
  }

  // ---- what the server says -----------------------------------------------------------------

  function receive(item) {
    if (typeof item.n === "number") {
      if (item.n <= st.after) return;
      st.after = item.n;
    }
    switch (item.t) {
      case "hello": return onHello(item);
      case "msg": return onPrivate(item);
      case "bcast": return onBroadcast(item);
      case "presence": return onPresence(item);
      case "mine": return onMine(item);
      case "notice": return addLine(conv(st.current), el("li", `notice ${item.level || ""}`, item.text), false);
      case "state": return setState(item);
      case "last": return info(`Online in the last ${item.minutes} min: ${item.users.join(", ") || "nobody"}`);
      case "status": return onStatus(item);
      case "ended": return onEnded(item);
      case "login_failed": $("login-error").textContent = item.text; return undefined;
      case "full": st.stopped = true; banner(item.text, true); return undefined;
      default: return undefined;
    }
  }

  function onHello(h) {
    st.token = h.token;
    sessionStorage.setItem("chat.token", h.token);
    if (h.epoch !== st.epoch) {
      resetView();
      st.epoch = h.epoch;
      sessionStorage.setItem("chat.epoch", h.epoch);
    }
    banner(h.ended || "", false);
    st.user = h.user;
    $("input").maxLength = h.max_chars || 1000;
    if (!h.user) {
      showLogin();
      return;
    }
    $("login-view").hidden = true;
    $("chat-view").hidden = false;
    $("me").textContent = h.user;
    setState(h);
    conv("room");
    if (!st.convs.get(st.current)) st.current = "room";
    openConv(st.current);
    for (const pending of st.outbox.values()) send(pending);
  }

  function showLogin() {
    $("chat-view").hidden = true;
    $("login-view").hidden = false;
    $("login-pass").value = "";
    $("login-user").focus();
  }

  function resetView() {
    st.convs.clear();
    st.seen.clear();
    st.outbox.clear();
    st.after = 0;
    st.current = "room";
    $("convs").replaceChildren();
    $("logs").replaceChildren();
  }

  function onEnded(item) {
    banner(item.text, item.reason !== "logout");
    st.outbox.clear();
    showLogin();
  }

  function once(key) {
    if (st.seen.has(key)) return false;
    st.seen.add(key);
    return true;
  }

  function onPrivate(m) {
    const fresh = once(`m:${m.id}`);
    st.gotQueue.push(m.id);
    if (st.gotQueue.length === 1) setTimeout(flushGot, 0);
    if (!fresh) return;
    const group = (m.group || []).filter((u) => u !== st.user);
    let c;
    if ((m.group || []).length > 1) {
      const names = new Set([...group, m.from]);
      names.delete(st.user);
      c = names.size > 1 ? conv(groupKey([...names]), [...names]) : conv(`@${m.from}`);
    } else {
      c = conv(`@${m.from === st.user ? st.user : m.from}`);
    }
    addLine(c, line(m.ts, m.from, m.text, "msg"), true, m.away);
  }

  function flushGot() {
    const ids = st.gotQueue.splice(0);
    if (ids.length) send({ t: "got", ids });  // a page that reconnects gets them again and says so again
  }

  function onBroadcast(b) {
    if (!once(`e:${b.seq}`)) return;
    if (b.user === st.user && st.seen.has(`s:${b.cid}`)) return;
    addLine(conv("room"), line(b.ts, b.user, b.text, "bcast"), true, b.away);
  }

  const PRESENCE = { login: "logged in", logout: "logged out", timeout: "timed out", lost: "lost the connection",
                     busy: "is busy", available: "is available again" };

  function onPresence(p) {
    if (!once(`e:${p.seq}`)) return;
    if (p.event === "busy") {  // busy and available: the user stays online
      if (!(p.user in st.busy)) st.busy[p.user] = "";
    } else if (p.event === "available") {
      delete st.busy[p.user];
    } else if (p.event === "login") {
      if (!st.online.includes(p.user)) st.online.push(p.user);
      st.recent = st.recent.filter((u) => u !== p.user);
      delete st.busy[p.user];
    } else {
      st.online = st.online.filter((u) => u !== p.user);
      st.recent = [p.user, ...st.recent.filter((u) => u !== p.user)];
      delete st.busy[p.user];
    }
    renderPeople();
    const li = el("li", "presence");
    li.append(el("span", "time", timeText(p.ts)), el("span", "", `${p.user} ${PRESENCE[p.event] || p.event}`));
    addLine(conv("room"), li, false);
  }

  function onMine(s) {
    st.outbox.delete(s.cid);
    const pending = document.querySelector(`li[data-cid="${CSS.escape(s.cid)}"]`);
    if (pending) pending.remove();
    if (!once(`s:${s.cid}`)) return;
    const c = s.to === null ? conv("room") : convFor(s.to);
    const li = line(s.ts, "you", s.text, "mine");
    addLine(c, li, false);
    if (s.error) addLine(c, el("li", "notice error", s.error + (s.unknown.length ? `: ${s.unknown.join(", ")}` : "")), false);
    for (const b of s.busy) {
      st.busy[b.user] = b.text;
      addLine(c, el("li", "notice", `${b.user} is busy${b.text ? `: ${b.text}` : ""}`), false);
    }
    if (s.busy.length) renderPeople();
  }

  function onStatus(s) {
    const since = timeText(s.since_ts);
    info(`${s.user}: ${s.busy ? `busy${s.busy_text ? ` (${s.busy_text})` : ""}` : "available"}, `
      + `${s.hidden ? "hidden" : "visible"}, logged in since ${since}`);
    setState({ me: { busy: s.busy, busy_text: s.busy_text, hidden: s.hidden } });
  }

  function setState(s) {
    if (s.me) st.me = s.me;
    if (s.online) st.online = s.online;
    if (s.recent) st.recent = s.recent;
    if (s.busy) st.busy = s.busy;
    const me = st.me;
    $("me-state").textContent = `${me.busy ? `busy${me.busy_text ? `: ${me.busy_text}` : ""}` : "available"}`
      + (me.hidden ? " · hidden" : "");
    renderPeople();
  }

  function info(text) { $("info").textContent = text; }

  // ---- people and conversations -------------------------------------------------------------

  function renderPeople() {
    const online = $("online");
    online.replaceChildren();
    for (const u of [...st.online].sort()) {
      const li = el("li", "", u);
      li.dataset.user = u;
      if (u === st.user) li.append(el("span", "mark away-mark", "(you)"));
      if (u in st.busy) li.append(el("span", "mark", st.busy[u] ? `busy: ${st.busy[u]}` : "busy"));
      li.addEventListener("click", () => openConv(`@${u}`));
      online.append(li);
    }
    const recent = $("recent");
    recent.replaceChildren();
    for (const u of st.recent.filter((x) => !st.online.includes(x))) {
      const li = el("li", "", u);
      li.dataset.user = u;
      li.append(el("span", "mark away-mark", "away"));
      li.addEventListener("click", () => openConv(`@${u}`));
      recent.append(li);
    }
  }

  function groupKey(names) { return `g:${[...new Set(names)].sort().join(",")}`; }

  function convFor(names) {
    const others = [...new Set(names)].filter((u) => u !== st.user);
    if (others.length === 0) return conv(`@${st.user}`);
    if (others.length === 1) return conv(`@${others[0]}`);
    return conv(groupKey(others), others);
  }

  function conv(key, members) {
    let c = st.convs.get(key);
    if (c) return c;
    let to = null;
    let title = "Everyone";
    if (key.startsWith("@")) { to = [key.slice(1)]; title = key.slice(1); }
    else if (key.startsWith("g:")) { to = members || key.slice(2).split(","); title = to.join(", "); }
    const item = el("li");
    item.dataset.conv = key;
    const name = el("span", "", title);
    const badge = el("span", "badge");
    badge.hidden = true;
    item.append(name, badge);
    item.addEventListener("click", () => openConv(key));
    const log = el("ol");
    log.dataset.conv = key;
    log.hidden = true;
    c = { key, to, title, item, badge, log, unread: 0, divider: false };
    st.convs.set(key, c);
    if (key === "room") $("convs").prepend(item); else $("convs").append(item);
    $("logs").append(log);
    return c;
  }

  function openConv(key) {
    const c = conv(key);
    st.current = key;
    for (const other of st.convs.values()) {
      other.log.hidden = other !== c;
      other.item.classList.toggle("current", other === c);
    }
    c.unread = 0;
    c.badge.hidden = true;
    $("conv-title").textContent = c.key === "room" ? "Everyone (broadcasts)" : c.title;
    $("side").classList.remove("open");
    scrollDown();
    $("input").focus();
  }

  function line(ts, from, text, cls) {
    const li = el("li", cls);
    if (text.startsWith("/me ")) {  // an action, as IRC clients and chat-client show it: "* alice waves"
      li.append(el("span", "time", timeText(ts)), el("span", "text action", `* ${from} ${text.slice(4)}`));
    } else {
      li.append(el("span", "time", timeText(ts)), el("span", "from", from), el("span", "text", text));
    }
    li.title = new Date(ts * 1000).toLocaleString();
    return li;
  }

  function addLine(c, li, counts, away) {
    if (away && !c.divider) {
      c.divider = true;
      c.log.append(el("li", "divider", "while you were away"));
    }
    c.log.append(li);
    if (counts && (c.key !== st.current || document.hidden)) {
      c.unread += 1;
      c.badge.textContent = String(c.unread);
      c.badge.hidden = false;
    }
    if (c.key === st.current) scrollDown();
  }

  function scrollDown() { const logs = $("logs"); logs.scrollTop = logs.scrollHeight; }

  // ---- what the user does -------------------------------------------------------------------

  function login(isNew) {
    const user = $("login-user").value.trim();
    const pass = $("login-pass");
    if (!user || !pass.value) { $("login-error").textContent = "enter a user name and a password"; return; }
    $("login-error").textContent = "";
    if (!send({ t: "login", user, password: pass.value, new: isNew })) {
      $("login-error").textContent = "not connected to the chat page server yet; try again in a moment";
      return;
    }
    pass.value = "";
  }

  function sendMessage() {
    const input = $("input");
    const text = input.value;
    if (!text.trim()) return;
    const c = conv(st.current);
    const req = { t: "send", to: c.to, text, cid: randomId() };
    st.outbox.set(req.cid, req);
    const li = line(Date.now() / 1000, "you", text, "mine pending");
    li.dataset.cid = req.cid;
    addLine(c, li, false);
    send(req);
    input.value = "";
  }

  function cmd(name, extra) { send({ t: "cmd", name, ...(extra || {}) }); }

  function wire() {
    $("login-form").addEventListener("submit", (e) => { e.preventDefault(); login(false); });
    $("register-btn").addEventListener("click", () => login(true));
    $("send-form").addEventListener("submit", (e) => { e.preventDefault(); sendMessage(); });
    $("logout-btn").addEventListener("click", () => cmd("logout"));
    $("menu-btn").addEventListener("click", () => $("side").classList.toggle("open"));
    $("busy-form").addEventListener("submit", (e) => { e.preventDefault(); cmd("busy", { text: $("busy-text").value }); });
    for (const name of ["idle", "hide", "appear", "status"]) $(`${name}-btn`).addEventListener("click", () => cmd(name));
    $("last-form").addEventListener("submit", (e) => {
      e.preventDefault();
      cmd("last", { minutes: parseInt($("last-min").value, 10) || 0 });
    });
    $("new-conv").addEventListener("submit", (e) => {
      e.preventDefault();
      const names = $("new-conv-names").value.split(/[\s,]+/).filter(Boolean);
      if (names.length) { openConv(convFor(names).key); $("new-conv-names").value = ""; }
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) { const c = st.convs.get(st.current); if (c) { c.unread = 0; c.badge.hidden = true; } }
    });
  }

  wire();
  connect();
})();
