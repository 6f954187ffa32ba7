// The tutorial's chat page, on wirehall.js: it connects, reconnects with
// backoff and jitter, and shows why it stopped.
import { WirehallSocket } from "/wirehall.js";

const $ = (id) => document.getElementById(id);
let socket = null;

$("join").addEventListener("submit", (event) => {
  event.preventDefault();
  if (socket) socket.dispose();
  const room = encodeURIComponent($("room").value.trim());
  const name = encodeURIComponent($("name").value);
  socket = new WirehallSocket(`/ws/${room}?name=${name}`);
  // every state change: connecting, open, waiting (to reconnect),
  // refused (final, with the server's reason as `text`)
  socket.addEventListener("state", (event) => {
    const { state, text } = event.detail;
    const why = state === "refused" || state === "waiting";
    $("status").textContent = why ? `${state}: ${text}` : state;
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
  const sent = socket && socket.send({ type: "say", text: $("text").value });
  if (sent) $("text").value = "";
});
