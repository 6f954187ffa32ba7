// Drives wirehall.js for the browser tests: its state, the refusal's reason and the messages
// are shown on the page; window.page holds what the tests look at.
import { WirehallSocket } from "/wirehall.js";

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const user = new URLSearchParams(location.search).get("user") || "ann";
const seen = new Set();
let lastId = 0;

const page = { states: [], resumes: [], repeats: 0 };
window.page = page;

function add(message) {
  if (seen.has(message.id)) {
    page.repeats += 1; // a message both in a welcome and live: dropped, as a page should
    return;
  }
  seen.add(message.id);
  lastId = Math.max(lastId, message.id);
  const item = document.createElement("li");
  item.textContent = `${message.id} ${message.user}: ${message.text}`;
  $("messages").append(item);
}

const socket = new WirehallSocket(`/ws?user=${encodeURIComponent(user)}`, {
  resume: (info) => {
    page.resumes.push({ ...info, since: lastId });
    return { since: lastId };
  },
  backoff: { initial: 100, max: 1000 },
  ping: { interval: 500, timeout: 3000 },
  connect: false,
});
page.socket = socket;
socket.addEventListener("state", (event) => {
  const { state, text } = event.detail;
  page.states.push(state);
  $("status").textContent = state;
  if (state === "refused") $("reason").textContent = text;
  $("opened").textContent = String(socket.opened);
});
socket.on("welcome", (frame) => frame.history.forEach(add));
socket.on("said", add);
socket.on("pong", () => {
  page.pongs = (page.pongs || 0) + 1;
  $("pongs").textContent = String(page.pongs);
});
window.say = (text) => socket.send({ type: "say", text });
socket.connect();
