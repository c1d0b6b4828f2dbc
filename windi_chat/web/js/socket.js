// One WebSocket per open chat (docs/protocol.md): it reconnects with after_seq so nothing is missed,
// and resends every unacknowledged send with its original client_id so nothing is stored twice.

import { newClientId } from "./dom.js";

const BACKOFF_MS = [250, 1000, 2000, 4000, 8000];
const RETRY_SEND_MS = 3000;
const HISTORY_PAGE = 200;

export class ChatSocket extends EventTarget {
  state = "connecting"; // "open" | "reconnecting" | "closed"
  #ws = null;
  #outbox = new Map(); // client_id -> text, until the ack
  #attempt = 0;
  #timer = 0;
  #stopped = false;

  constructor(session, chatId, me, lastSeq) {
    super();
    this.session = session;
    this.chatId = chatId;
    this.me = me;
    this.lastSeq = lastSeq;
    this.onOnline = () => this.#reconnectNow();
    this.onOffline = () => this.#drop();
    this.onToken = () => this.#write({ type: "auth", token: session.accessToken });
  }

  start() {
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    this.session.addEventListener("token", this.onToken);
    this.#connect();
  }

  stop() {
    this.#stopped = true;
    clearTimeout(this.#timer);
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    this.session.removeEventListener("token", this.onToken);
    this.#close();
  }

  // Queues a message until its ack; returns its client_id.
  send(text) {
    const clientId = newClientId();
    this.#outbox.set(clientId, text);
    this.#write({ type: "send", client_id: clientId, text });
    return clientId;
  }

  read(seq) {
    if (!this.#write({ type: "read", seq })) {
      this.session.request("POST", `/chats/${this.chatId}/read`, { seq }).catch(() => {});
    }
  }

  // False when the socket is not open: typing is not worth queueing.
  typing() {
    return this.#write({ type: "typing" });
  }

  #write(frame) {
    if (this.#ws?.readyState !== WebSocket.OPEN) return false;
    this.#ws.send(JSON.stringify(frame));
    return true;
  }

  #connect() {
    clearTimeout(this.#timer);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const token = encodeURIComponent(this.session.accessToken ?? "");
    const ws = new WebSocket(
      `${scheme}://${location.host}/ws/${this.chatId}?token=${token}&after_seq=${this.lastSeq}`,
    );
    this.#ws = ws;
    ws.onopen = () => {
      this.#attempt = 0;
      this.#setState("open");
      for (const [clientId, text] of this.#outbox) this.#write({ type: "send", client_id: clientId, text });
    };
    ws.onmessage = (event) => this.#onFrame(JSON.parse(event.data));
    ws.onclose = (event) => {
      if (ws === this.#ws) this.#onClose(event.code);
    };
  }

  #close() {
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      ws.onclose = ws.onmessage = ws.onopen = null;
      ws.close(1000);
    }
  }

  // The network went away: give up this socket now rather than wait for TCP to notice.
  #drop() {
    if (this.#stopped || this.state === "closed") return;
    this.#close();
    this.#setState("reconnecting");
  }

  #reconnectNow() {
    if (this.#stopped || this.state === "closed" || this.#ws?.readyState === WebSocket.OPEN) return;
    this.#close();
    this.#connect();
  }

  #onClose(code) {
    this.#ws = null;
    if (this.#stopped) return;
    if (code === 4403 || code === 4400) {
      this.#setState("closed");
      this.dispatchEvent(new CustomEvent("forbidden", { detail: code }));
      return;
    }
    this.#setState("reconnecting");
    if (code === 4401) {
      // A new access token, then the socket again; if the session has ended, the app signs out.
      this.session.refresh().then(
        () => this.#connect(),
        () => (this.session.canResume ? this.#retry() : this.#setState("closed")),
      );
      return;
    }
    this.#retry();
  }

  #retry() {
    if (this.#stopped || !navigator.onLine) return; // the "online" event reconnects
    const delay = BACKOFF_MS[Math.min(this.#attempt, BACKOFF_MS.length - 1)];
    this.#attempt += 1;
    this.#timer = setTimeout(() => this.#connect(), delay * (0.75 + Math.random() / 2));
  }

  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  #message(message) {
    this.lastSeq = Math.max(this.lastSeq, message.seq);
    if (message.sender_id === this.me.id) this.#outbox.delete(message.client_id);
    this.dispatchEvent(new CustomEvent("message", { detail: message }));
  }

  #onFrame(frame) {
    switch (frame.type) {
      case "message":
      case "ack":
        this.#message(frame.message);
        break;
      case "resync":
        this.#catchUp(frame.last_seq);
        break;
      case "error":
        this.#onError(frame);
        break;
      case "read":
      case "typing":
      case "member_added":
      case "member_removed":
        this.dispatchEvent(new CustomEvent(frame.type, { detail: frame }));
        break;
      default:
        break;
    }
  }

  // Too much was missed to replay on the socket: page it from the history instead.
  async #catchUp(lastSeq) {
    while (this.lastSeq < lastSeq && !this.#stopped) {
      const page = await this.session.request(
        "GET",
        `/history/${this.chatId}?after_seq=${this.lastSeq}&limit=${HISTORY_PAGE}`,
      );
      if (page.length === 0) break;
      for (const message of page) this.#message(message);
    }
  }

  #onError(frame) {
    const text = this.#outbox.get(frame.client_id);
    if (text === undefined) return;
    if (frame.code === "unavailable" || frame.code === "rate_limited" || frame.code === "internal") {
      setTimeout(() => this.#write({ type: "send", client_id: frame.client_id, text }), RETRY_SEND_MS);
      return;
    }
    this.#outbox.delete(frame.client_id);
    this.dispatchEvent(new CustomEvent("failed", { detail: frame }));
  }
}
