// The chat page, on wirehall.js: one WirehallSocket per joined room, which reconnects with
// backoff and jitter, pings, and asks only for what it missed (`since=<last id seen>`).
// User text only ever goes in via textContent.
import { WirehallSocket } from "../wirehall.js";

const ROOM_RULE = /^[A-Za-z0-9_-]{1,64}$/;
// What the server refuses in a name: control and invisible format characters (zero-width,
// bidirectional controls, BOM), line/paragraph separators, private-use and unassigned code points.
const HIDDEN_CHARACTER = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Co}\p{Cn}\p{Cs}]/u;
const VISIBLE_CHARACTER = /[^\p{White_Space}]/u;
const USER_MAX = 32;
const TEXT_MAX = 2000;
const HISTORY_PAGE = 1000; // the most a welcome frame carries
const API_PAGE = 500; // the most the HTTP API gives at once
const KEEP_IN_PAGE = 2000; // older messages are dropped from the page, not from the room

const $ = (id) => document.getElementById(id);
const ui = {
  joinForm: $("join-form"),
  name: $("name"),
  room: $("room"),
  knownRooms: $("known-rooms"),
  status: $("status"),
  roomTitle: $("room-title"),
  roomHint: $("room-hint"),
  messages: $("messages"),
  notice: $("notice"),
  sendForm: $("send-form"),
  text: $("text"),
  send: $("send"),
  people: document.querySelector(".people"),
  users: $("users"),
  userCount: $("user-count"),
};

let session = null; // the room we are in: {room, user, socket, lastId, seen}
let noticeTimer = 0;
let countdown = 0;

// ---- small helpers ----------------------------------------------------------------------

const length = (text) => [...text].length; // code points, as the server counts
const appUrl = (path) => new URL(path, document.baseURI);

function hue(name) {
  let hash = 0;
  for (const char of name) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return hash % 360;
}

function formatTime(ts) {
  const when = new Date(ts);
  if (Number.isNaN(when.getTime())) return "";
  const sameDay = when.toDateString() === new Date().toDateString();
  const time = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return sameDay ? time : when.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + time;
}

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { ui.notice.hidden = true; }, 6000);
}

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
  ui.text.disabled = !session;
  ui.send.disabled = state !== "open";
  // Until the next presence update, the list of people is only what we last heard.
  if (state !== "open") ui.people.classList.add("stale");
}

// ---- checks mirroring the server's, so a typo is explained before any round trip --------

function checkName(raw) {
  const name = raw.trim();
  if (!name) return [null, "Choose a name first."];
  if (length(name) > USER_MAX) return [null, `A name has at most ${USER_MAX} characters.`];
  if (HIDDEN_CHARACTER.test(name)) {
    return [null, "A name cannot contain control or invisible characters (such as zero-width spaces)."];
  }
  if (!VISIBLE_CHARACTER.test(name)) return [null, "A name needs at least one visible character."];
  return [name, null];
}

function checkRoom(raw) {
  const room = raw.trim();
  if (!ROOM_RULE.test(room)) return [null, "A room name is 1 to 64 letters, digits, '_' or '-' (no spaces)."];
  return [room, null];
}

// ---- rendering ----------------------------------------------------------------------------

function messageElement(message, mine) {
  const item = document.createElement("li");
  item.className = mine ? "message mine" : "message";
  item.dataset.id = String(message.id);
  item.style.setProperty("--hue", String(hue(message.user)));

  const avatar = document.createElement("div");
  avatar.className = "avatar";
  avatar.setAttribute("aria-hidden", "true");
  avatar.textContent = [...message.user][0] || "?";

  const meta = document.createElement("div");
  meta.className = "meta";
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = message.user;
  const time = document.createElement("time");
  time.className = "time";
  time.dateTime = message.ts;
  time.title = new Date(message.ts).toLocaleString();
  time.textContent = formatTime(message.ts);
  meta.append(author, " ", time);

  const body = document.createElement("p");
  body.className = "body";
  body.textContent = message.text;

  item.append(avatar, meta, body);
  return item;
}

function addMessage(s, message) {
  if (!Number.isInteger(message.id) || s.seen.has(message.id)) return;
  s.seen.add(message.id);
  if (s.lastId === null || message.id > s.lastId) s.lastId = message.id;

  const list = ui.messages;
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const mine = message.user === s.user;
  const item = messageElement(message, mine);
  // Messages come in id order almost always; place a straggler where it belongs.
  let after = list.lastElementChild;
  while (after && Number(after.dataset.id) > message.id) after = after.previousElementSibling;
  if (after) after.after(item);
  else list.prepend(item);

  while (list.childElementCount > KEEP_IN_PAGE) list.firstElementChild.remove();
  if (nearBottom || mine) list.scrollTop = list.scrollHeight;
}

function showUsers(s, users) {
  const items = users.map((user) => {
    const item = document.createElement("li");
    item.textContent = user;
    item.style.setProperty("--hue", String(hue(user)));
    if (user === s.user) item.className = "me";
    return item;
  });
  ui.users.replaceChildren(...items);
  ui.userCount.textContent = String(users.length);
  ui.people.classList.remove("stale");
}

async function refreshKnownRooms() {
  try {
    const response = await fetch(appUrl("api/rooms"), { headers: { accept: "application/json" } });
    if (!response.ok) return;
    const { rooms } = await response.json();
    ui.knownRooms.replaceChildren(...rooms.map((info) => {
      const option = document.createElement("option");
      option.value = info.room;
      option.label = `${info.online} online · ${info.messages} messages`;
      return option;
    }));
  } catch {
    // The list of rooms is a convenience; the chat works without it.
  }
}

// ---- the connection -------------------------------------------------------------------------

// The chat refuses a bad name or room, or one connection too many, with an HTTP status on the
// handshake (outside clients rely on it), which a page sees as a failed connection. If the
// server answers its health check it is up and refused us: say so and stop retrying.
async function refusedWhileUp(s) {
  try {
    if (!(await fetch(appUrl("healthz"), { cache: "no-store" })).ok) return null;
  } catch {
    return null;
  }
  return `The server refused to let ${s.user} join #${s.room}: check the name and the room, ` +
    "or close other tabs of this chat, then join again.";
}

function showState(s, { state, text, retryAt, reconnect }) {
  clearInterval(countdown);
  if (session !== s) return;
  if (state === "connecting") setStatus("connecting", reconnect ? "reconnecting…" : "connecting…");
  else if (state === "open") setStatus("open", "connected");
  else if (state === "refused") {
    setStatus("refused", "refused");
    showNotice(text);
  } else if (state === "waiting") {
    if (s.socket.lastClose.code === 1009) showNotice("That message was too big for the server.");
    const tick = () => {
      const seconds = Math.max(1, Math.ceil((retryAt - Date.now()) / 1000));
      setStatus("waiting", `offline · retrying in ${seconds}s`);
    };
    tick();
    countdown = setInterval(tick, 500);
  }
}

function welcome(s, frame) {
  const resumed = s.lastId !== null;
  if (!resumed) {
    ui.messages.replaceChildren();
    s.seen.clear();
  }
  s.user = frame.user;
  for (const message of frame.history) addMessage(s, message);
  if (!resumed) ui.messages.scrollTop = ui.messages.scrollHeight;
  if (resumed && frame.history.length >= HISTORY_PAGE) catchUp(s, frame.history[frame.history.length - 1].id);
  if (s.lastId === null) s.lastId = 0;
}

// More was missed than a welcome frame carries: page forward through the HTTP API.
async function catchUp(s, after) {
  let cursor = after;
  for (;;) {
    const url = appUrl(`api/rooms/${encodeURIComponent(s.room)}/messages`);
    url.searchParams.set("since", String(cursor));
    url.searchParams.set("limit", String(API_PAGE));
    let page;
    try {
      const response = await fetch(url);
      if (!response.ok) return;
      page = (await response.json()).messages;
    } catch {
      return;
    }
    if (session !== s) return;
    for (const message of page) addMessage(s, message);
    if (page.length < API_PAGE) return;
    cursor = page[page.length - 1].id;
  }
}

function join(room, user) {
  if (session) session.socket.dispose();
  const s = { room, user, lastId: null, seen: new Set() };
  session = s;
  const url = appUrl("ws/" + encodeURIComponent(room));
  url.searchParams.set("user", user);
  s.socket = new WirehallSocket(url, {
    resume: () => (s.lastId === null ? null : { since: s.lastId }),
    checkRefused: () => refusedWhileUp(s),
    connect: false, // once the listeners below are in place
  });
  s.socket.addEventListener("state", (event) => showState(s, event.detail));
  s.socket.on("welcome", (frame) => welcome(s, frame));
  s.socket.on("message", (frame) => { if (frame.room === s.room) addMessage(s, frame); });
  s.socket.on("presence", (frame) => { if (frame.room === s.room) showUsers(s, frame.users); });
  s.socket.on("error", (frame) => showNotice(String(frame.error)));

  ui.messages.replaceChildren();
  ui.users.replaceChildren();
  ui.userCount.textContent = "0";
  document.body.classList.add("joined");
  ui.roomTitle.textContent = "# " + room;
  ui.text.placeholder = `Message #${room}`;
  ui.roomHint.textContent = `You are ${user}. Everyone in ${room} sees what you send.`;
  document.title = `#${room} · wirehall chat`;
  if (location.hash !== "#" + room) history.replaceState(null, "", "#" + room);
  s.socket.connect();
  ui.text.focus();
}

// ---- wiring ---------------------------------------------------------------------------------

ui.joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const [user, userProblem] = checkName(ui.name.value);
  const [room, roomProblem] = checkRoom(ui.room.value);
  if (userProblem || roomProblem) {
    showNotice(userProblem || roomProblem);
    return;
  }
  try {
    localStorage.setItem("wirehall-chat-name", user);
  } catch {
    // Private windows may refuse storage; the name is just not remembered.
  }
  join(room, user);
  refreshKnownRooms();
});

ui.sendForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.text.value.trim();
  if (!session || !text) return;
  if (length(text) > TEXT_MAX) {
    showNotice(`A message has at most ${TEXT_MAX} characters (this one has ${length(text)}).`);
    return;
  }
  if (!session.socket.send({ type: "message", text })) {
    showNotice("Not connected right now; your message is kept here until you are.");
    return;
  }
  ui.text.value = "";
  ui.text.style.height = "";
});

ui.text.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.sendForm.requestSubmit();
  }
});

ui.text.addEventListener("input", () => {
  ui.text.style.height = "";
  ui.text.style.height = Math.min(ui.text.scrollHeight + 2, 160) + "px";
});

try {
  ui.name.value = localStorage.getItem("wirehall-chat-name") || "";
} catch {
  // No storage: start with an empty name.
}
let roomFromLink = "";
try {
  roomFromLink = decodeURIComponent(location.hash.slice(1));
} catch {
  // A malformed link: fall back to the lobby.
}
ui.room.value = roomFromLink || "lobby";
refreshKnownRooms();
