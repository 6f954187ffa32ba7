// The tutorial's chat page: wirehall.js connects, reconnects with backoff and shows why it stopped.
import { WirehallSocket } from "/wirehall.js";

const $ = (id) => document.getElementById(id);
let socket = null;

$("join").addEventListener("submit", (event) => {
  event.preventDefault();
  if (socket) socket.dispose();
  const room = encodeURIComponent($("room").value.trim());
  const name = encodeURIComponent($("name").value);
  socket = new WirehallSocket(`/ws/${room}?name=${name}`);
  // every state change: connecting, open, waiting (to reconnect), refused (with the server's reason)
  socket.addEventListener("state", (event) => {
    const { state, text } = event.detail;
    $("status").textContent = state === "refused" || state === "waiting" ? `${state}: ${text}` : state;
  });
  socket.on("said", (frame) => {
    const line = document.createElement("li");
    line.textContent = `${frame.name}: ${frame.text}`; // text, never HTML
    $("messages").append(line);
  });
  socket.on("people", (frame) => {
    $("people").textContent = frame.names.join(", ");
  });
});

$("say").addEventListener("submit", (event) => {
  event.preventDefault();
  if (socket && socket.send({ type: "say", text: $("text").value })) $("text").value = "";
});
