// One open chat: its history (older pages on scroll), live messages, sending, read ticks and typing.

import { chatTitle, h, timeOf } from "./dom.js";
import { MembersPanel } from "./members.js";
import { ChatSocket } from "./socket.js";

const PAGE = 50;
const TYPING_SHOWN_MS = 5000;
const TYPING_SENT_EVERY_MS = 3000;
const NEAR_TOP_PX = 40;

export class ChatView {
  #messages = new Map(); // seq -> {message, element}
  #pending = new Map(); // client_id -> element, until stored
  #allReadSeq = 0;
  #myReadSeq = 0;
  #loadingOlder = false;
  #typingTimer = 0;
  #typingSentAt = 0;
  #closed = false;

  constructor(app, chat) {
    this.app = app;
    this.chat = chat;
    this.me = app.me;
    this.title = h("h2", { class: "chat-title" });
    this.back = h("button", { type: "button", class: "back", "aria-label": "Back to chats" }, "‹");
    this.membersButton = h("button", { type: "button", class: "members-toggle" }, "Members");
    this.list = h("ol", { class: "messages", "aria-live": "polite" });
    this.typingLine = h("p", { class: "typing" });
    this.input = h("textarea", { rows: "1", placeholder: "Message", "aria-label": "Message", maxlength: "4096" });
    this.composer = h("form", { class: "composer" }, this.input, h("button", { type: "submit" }, "Send"));
    this.notice = h("p", { class: "notice", role: "alert", hidden: true });
    this.members = new MembersPanel(app, this);
    this.element = h(
      "div",
      { class: "chat-view", dataset: { chatId: chat.id, connection: "connecting" } },
      h("header", { class: "bar" }, this.back, this.title, this.membersButton),
      this.members.element,
      this.list,
      this.notice,
      this.typingLine,
      this.composer,
    );
    this.back.addEventListener("click", () => app.closeChat());
    this.membersButton.addEventListener("click", () => this.members.toggle());
    this.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#send();
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.#send();
      }
    });
    this.input.addEventListener("input", () => this.#typing());
    this.list.addEventListener("scroll", () => {
      if (this.list.scrollTop < NEAR_TOP_PX) this.#loadOlder();
    });
    this.onVisible = () => this.#markRead();
    document.addEventListener("visibilitychange", this.onVisible);
    this.update(chat);
  }

  async open() {
    const last = this.chat.last_message?.seq ?? 0;
    const page = last ? await this.app.session.request("GET", `/history/${this.chat.id}?before_seq=${last + 1}&limit=${PAGE}`) : [];
    if (this.#closed) return; // another chat was opened meanwhile
    for (const message of page) this.#add(message);
    this.#scrollToEnd();
    this.socket = new ChatSocket(this.app.session, this.chat.id, this.me, this.#lastSeq());
    this.socket.addEventListener("state", (event) => {
      this.element.dataset.connection = event.detail;
      this.app.showConnection(event.detail);
      if (event.detail === "open") {
        this.#myReadSeq = 0; // a marker moved while offline may not have reached the server
        this.#markRead();
      }
    });
    this.socket.addEventListener("message", (event) => this.#live(event.detail));
    this.socket.addEventListener("read", (event) => this.#setAllRead(event.detail.all_read_seq));
    this.socket.addEventListener("typing", (event) => this.#showTyping(event.detail.user_id));
    this.socket.addEventListener("member_added", () => this.#reload());
    this.socket.addEventListener("member_removed", () => this.#reload());
    this.socket.addEventListener("forbidden", () => this.#lostAccess());
    this.socket.addEventListener("failed", (event) => this.#failed(event.detail));
    this.socket.start();
    this.#markRead();
    this.input.focus();
  }

  close() {
    this.#closed = true;
    this.socket?.stop();
    document.removeEventListener("visibilitychange", this.onVisible);
    clearTimeout(this.#typingTimer);
  }

  update(chat) {
    this.chat = chat;
    this.title.textContent = chatTitle(chat, this.me);
    this.membersButton.hidden = chat.type !== "group";
    this.members.render();
  }

  #lastSeq() {
    return Math.max(0, ...this.#messages.keys());
  }

  #send() {
    const text = this.input.value.trim();
    if (!text || !this.socket || this.socket.state === "closed") return;
    this.input.value = "";
    const clientId = this.socket.send(text);
    const element = this.#render({ sender_id: this.me.id, text, timestamp: new Date().toISOString() });
    element.classList.add("pending");
    this.#pending.set(clientId, element);
    this.list.append(element);
    this.#scrollToEnd();
  }

  #failed(frame) {
    const element = this.#pending.get(frame.client_id);
    element?.classList.replace("pending", "failed");
    element?.setAttribute("title", frame.detail ?? frame.code);
    this.#pending.delete(frame.client_id);
  }

  #live(message) {
    const nearEnd = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 80;
    if (this.#add(message) && (nearEnd || message.sender_id === this.me.id)) this.#scrollToEnd();
    if (message.sender_id !== this.me.id) this.typingLine.textContent = "";
    this.#markRead();
    this.app.refreshInboxSoon();
  }

  // Adds a stored message once, in seq order; false when it was already shown.
  #add(message) {
    if (message.read) this.#allReadSeq = Math.max(this.#allReadSeq, message.seq);
    if (this.#messages.has(message.seq)) return false;
    if (message.sender_id === this.me.id) {
      this.#pending.get(message.client_id)?.remove();
      this.#pending.delete(message.client_id);
    }
    const element = this.#render(message);
    this.#messages.set(message.seq, { message, element });
    const after = [...this.#messages.keys()].filter((seq) => seq > message.seq);
    const next = after.length ? this.#messages.get(Math.min(...after)).element : this.list.querySelector(".pending");
    this.list.insertBefore(element, next);
    this.#tick(message.seq);
    return true;
  }

  #render(message) {
    const mine = message.sender_id === this.me.id;
    const sender = this.chat.members.find((member) => member.user_id === message.sender_id);
    return h(
      "li",
      { class: mine ? "message mine" : "message", dataset: message.seq ? { seq: message.seq } : {} },
      !mine && this.chat.type === "group" ? h("span", { class: "sender" }, sender?.name ?? "Former member") : null,
      h("p", { class: "text" }, message.text),
      h("span", { class: "meta" }, timeOf(message.timestamp), mine ? h("span", { class: "tick" }) : null),
    );
  }

  // One tick when stored, two when everyone has read it.
  #tick(seq) {
    const entry = this.#messages.get(seq);
    const tick = entry?.element.querySelector(".tick");
    if (!tick) return;
    const read = seq <= this.#allReadSeq;
    tick.textContent = read ? "✓✓" : "✓";
    tick.className = read ? "tick read" : "tick";
    tick.setAttribute("aria-label", read ? "read" : "sent");
  }

  #setAllRead(allReadSeq) {
    const before = this.#allReadSeq;
    if (allReadSeq <= before) return;
    this.#allReadSeq = allReadSeq;
    for (const seq of this.#messages.keys()) if (seq > before && seq <= allReadSeq) this.#tick(seq);
  }

  #markRead() {
    const last = this.#lastSeq();
    if (document.visibilityState !== "visible" || last <= this.#myReadSeq || !this.socket) return;
    this.#myReadSeq = last;
    this.socket.read(last);
  }

  async #loadOlder() {
    const oldest = Math.min(...this.#messages.keys());
    if (this.#loadingOlder || !Number.isFinite(oldest) || oldest <= 1) return;
    this.#loadingOlder = true;
    try {
      const page = await this.app.session.request("GET", `/history/${this.chat.id}?before_seq=${oldest}&limit=${PAGE}`);
      const height = this.list.scrollHeight;
      for (const message of page) this.#add(message);
      this.list.scrollTop += this.list.scrollHeight - height;
    } finally {
      this.#loadingOlder = false;
    }
  }

  #typing() {
    const now = Date.now();
    if (now - this.#typingSentAt < TYPING_SENT_EVERY_MS) return;
    if (this.socket?.typing()) this.#typingSentAt = now;
  }

  #showTyping(userId) {
    const member = this.chat.members.find((entry) => entry.user_id === userId);
    this.typingLine.textContent = `${member?.name ?? "Someone"} is typing…`;
    clearTimeout(this.#typingTimer);
    this.#typingTimer = setTimeout(() => {
      this.typingLine.textContent = "";
    }, TYPING_SHOWN_MS);
  }

  async #reload() {
    try {
      this.update(await this.app.session.request("GET", `/chats/${this.chat.id}`));
    } catch {
      // a 404 here means we were removed: the socket's 4403 says so
    }
  }

  showNotice(text) {
    this.notice.textContent = text;
    this.notice.hidden = false;
    this.composer.hidden = true;
  }

  #lostAccess() {
    this.showNotice("You are no longer a member of this chat.");
    this.app.showConnection("open");
    this.app.refreshInbox();
  }

  #scrollToEnd() {
    this.list.scrollTop = this.list.scrollHeight;
  }
}
