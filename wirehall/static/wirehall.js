// wirehall.js: a browser client for wirehall WebSocket endpoints. A plain ES module with no
// dependencies and no build step; a wirehall app serves it with `app.serve_client()`.
//
//   import { WirehallSocket } from "/wirehall.js";
//   const socket = new WirehallSocket("/ws/lobby?user=ann", {
//     resume: () => (lastId === null ? null : { since: lastId }),  // query added on each connect
//   });
//   socket.on("message", (frame) => show(frame));                    // by the JSON `type` field
//   socket.addEventListener("state", (event) => status(event.detail)); // every state change
//   socket.send({ type: "message", text: "hello" });
//   socket.addEventListener("open", (event) => event.detail.reconnect && socket.send(...));
//
// States: "idle" (not started), "connecting", "open", "waiting" (to reconnect after a backoff),
// "refused" (final: the server refused and will not be asked again), "closed" (by the page).
// Liveness: an application-level ping. After `ping.interval` ms with nothing received the client
// sends `ping.message`; when nothing at all (a pong or any other frame) arrives within
// `ping.timeout` ms more, the connection counts as dead and is replaced.
// A close with a code from 4000 to 4999 is the app's final word (wirehall's
// `refuse(..., readable=True)` sends 4000 + the HTTP status, such as 4403): no retry.

const CLOSE_TEXT = {
  1000: "the connection was closed",
  1001: "the server is going away",
  1002: "the server saw a protocol error",
  1003: "the server does not take that kind of data",
  1005: "the connection was closed without a reason",
  1006: "the connection was lost",
  1007: "the server could not read a message",
  1008: "the server refused a message",
  1009: "a message was too big for the server",
  1011: "the server had an internal error",
  1012: "the server is restarting",
  1013: "the server is busy; trying again later",
};

/** Text a page can show for a close: the server's reason when it gave one. */
export function describeClose(code, reason = "") {
  if (reason) return reason;
  return CLOSE_TEXT[code] || `the connection closed (code ${code})`;
}

/** The default test for a final close: an application code from 4000 to 4999. */
export function isFinalClose(code) {
  return code >= 4000 && code <= 4999;
}

/** The delay before reconnect attempt `attempt` (0 first): exponential, capped, with jitter. */
export function backoffDelay(attempt, { initial = 500, max = 8000, factor = 2, jitter = 0.25 } = {},
  random = Math.random) {
  const base = Math.min(max, initial * factor ** attempt);
  return Math.max(0, Math.round(base * (1 - jitter + 2 * jitter * random())));
}

function socketUrl(target, query) {
  const url = new URL(String(target), document.baseURI);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined) url.searchParams.set(name, String(value));
  }
  return url.href;
}

export class WirehallSocket extends EventTarget {
  /**
   * @param url the endpoint (relative to the page, http(s) or ws(s)), or a function giving it.
   * @param options
   *   resume(info): query parameters to add to this connect ({since: 41}), or null; `info` is
   *     {attempt, reconnect}. Called before every connect, the first included.
   *   backoff: {initial, max, factor, jitter, stable}: the first delay, the cap, the growth,
   *     the spread (0.25: +-25%), and how long (ms) a connection must last before the next
   *     drop starts from `initial` again (500, 8000, 2, 0.25, 5000).
   *   ping: {interval, timeout, message} (25000, 10000, {type: "ping"}), or false for none.
   *   isFinal(code, reason): true when a close must not be retried (4000-4999 by default).
   *   checkRefused(close): for a connection that closed before it opened (a handshake the
   *     server answered with an HTTP error looks just like a lost one to a page): resolve to a
   *     reason to stop with ("refused"), or null to retry.
   *   protocols: subprotocols to offer. connect: false to start with `connect()` yourself.
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = options;
    this.state = "idle";
    this.attempt = 0; // failed attempts since the last open
    this.opened = 0; // how many times a connection opened
    this.lastClose = null; // {code, reason, text, wasOpen}
    this.retryAt = 0;
    this._socket = null;
    this._retryTimer = 0;
    this._pingTimer = 0;
    this._stableTimer = 0;
    this._handlers = new Map();
    this._wake = () => this.retryNow();
    this._visible = () => {
      if (document.visibilityState === "visible") this.retryNow();
    };
    window.addEventListener("online", this._wake);
    document.addEventListener("visibilitychange", this._visible);
    if (options.connect !== false) this.connect();
  }

  /** True while messages can be sent. */
  get isOpen() {
    return this.state === "open";
  }

  /** Call `handler(frame)` for each JSON message whose `type` is `type` ("*": every one). */
  on(type, handler) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(handler);
    return () => this._handlers.get(type).delete(handler);
  }

  /** Send `value` as JSON (a string as it is); false when not connected (nothing is queued). */
  send(value) {
    if (this.state !== "open" || !this._socket) return false;
    this._socket.send(typeof value === "string" ? value : JSON.stringify(value));
    return true;
  }

  /** Connect now (from "idle", "waiting", "refused" or "closed"). */
  connect() {
    if (this.state === "connecting" || this.state === "open") return;
    clearTimeout(this._retryTimer);
    const reconnect = this.opened > 0 || this.attempt > 0;
    const resume = this.options.resume ? this.options.resume({ attempt: this.attempt, reconnect }) : null;
    const target = typeof this.url === "function" ? this.url() : this.url;
    let socket;
    try {
      socket = new WebSocket(socketUrl(target, resume), this.options.protocols);
    } catch (error) {
      this._setState("refused", { code: 0, reason: String(error.message || error), text: String(error) });
      return;
    }
    this._socket = socket;
    let wasOpen = false;
    this._setState("connecting", { attempt: this.attempt, reconnect });
    socket.addEventListener("open", () => {
      if (this._socket !== socket) return;
      wasOpen = true;
      this.opened += 1;
      // The backoff starts again only once a connection has lasted: a server that accepts and
      // then drops every connection at once is not hammered.
      const stable = (this.options.backoff || {}).stable ?? 5000;
      this._stableTimer = setTimeout(() => { this.attempt = 0; }, stable);
      this._alive();
      this._setState("open", { reconnect });
      this.dispatchEvent(new CustomEvent("open", { detail: { reconnect } }));
    });
    socket.addEventListener("message", (event) => {
      if (this._socket === socket) this._receive(event.data);
    });
    socket.addEventListener("close", (event) => {
      if (this._socket === socket) this._closed(event.code, event.reason, wasOpen);
    });
  }

  /** Reconnect at once if waiting for a backoff to end (the page coming back online or into
   * view does it; a page may call it on a user's action). */
  retryNow() {
    if (this.state === "waiting") {
      this.attempt = 0;
      this.connect();
    }
  }

  /** Close for good (until `connect()`): no reconnect. */
  close(code = 1000, reason = "") {
    clearTimeout(this._retryTimer);
    this._drop(code, reason);
    if (this.state !== "closed") {
      this._setState("closed", { code, reason, text: describeClose(code, reason) });
    }
  }

  /** Close and stop listening to the page's online and visibility events. */
  dispose() {
    this.close();
    window.removeEventListener("online", this._wake);
    document.removeEventListener("visibilitychange", this._visible);
  }

  _setState(state, detail = {}) {
    const previous = this.state;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { ...detail, state, previous } }));
  }

  _receive(data) {
    this._alive();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this.dispatchEvent(new CustomEvent("invalid", { detail: { data } }));
      return;
    }
    const type = frame !== null && typeof frame === "object" ? frame.type : undefined;
    this.dispatchEvent(new CustomEvent("message", { detail: frame }));
    for (const key of [type, "*"]) {
      for (const handler of this._handlers.get(key) || []) handler(frame);
    }
  }

  // Liveness: any frame received restarts the wait; silence gets a ping, then a deadline.
  _alive() {
    const ping = this.options.ping === undefined ? {} : this.options.ping;
    if (ping === false) return;
    const { interval = 25000, timeout = 10000, message = { type: "ping" } } = ping;
    clearTimeout(this._pingTimer);
    this._pingTimer = setTimeout(() => {
      if (!this.send(message)) return;
      this._pingTimer = setTimeout(() => {
        if (this._socket) this._closed(1006, "no answer from the server", true, true);
      }, timeout);
    }, interval);
  }

  _drop(code, reason) {
    clearTimeout(this._pingTimer);
    clearTimeout(this._stableTimer);
    const socket = this._socket;
    this._socket = null;
    if (socket && socket.readyState <= WebSocket.OPEN) {
      try {
        socket.close(code >= 3000 || code === 1000 ? code : 1000, reason);
      } catch {
        socket.close();
      }
    }
  }

  async _closed(code, reason, wasOpen, ourDoing = false) {
    this._drop(ourDoing ? 1000 : code, "");
    const close = { code, reason, text: describeClose(code, reason), wasOpen };
    this.lastClose = close;
    this.dispatchEvent(new CustomEvent("close", { detail: close }));
    const isFinal = this.options.isFinal || isFinalClose;
    if (!ourDoing && isFinal(code, reason)) {
      this._setState("refused", close);
      return;
    }
    if (!wasOpen && this.options.checkRefused) {
      const generation = this._socket;
      let refusal = null;
      try {
        refusal = await this.options.checkRefused(close);
      } catch {
        refusal = null;
      }
      if (this.state !== "connecting" || this._socket !== generation) return; // closed meanwhile
      if (refusal) {
        this.lastClose = { ...close, reason: refusal, text: refusal };
        this._setState("refused", this.lastClose);
        return;
      }
    }
    if (this.state === "closed") return;
    const delay = backoffDelay(this.attempt, this.options.backoff, this.options.random);
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this._setState("waiting", { ...close, delay, retryAt: this.retryAt, attempt: this.attempt });
    this._retryTimer = setTimeout(() => this.connect(), delay);
  }
}
