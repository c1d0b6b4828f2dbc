// The web client's entry point: signing in and out, and which chat is open.

import { ApiError, Session } from "./api.js";
import { ChatView } from "./chat.js";
import { $, debounce, h } from "./dom.js";
import { Inbox } from "./inbox.js";

class App {
  me = null;
  view = null;
  #groupMembers = new Map(); // user id -> name

  constructor() {
    this.session = new Session();
    this.inbox = new Inbox(this);
    this.session.addEventListener("ended", () => this.#signedOut());
    $("#login-form").addEventListener("submit", (event) => this.#authenticate(event, "login"));
    $("#register-form").addEventListener("submit", (event) => this.#authenticate(event, "register"));
    $("#logout").addEventListener("click", () => this.session.logout().catch(() => {}));
    $("#new-group").addEventListener("click", () => this.#openGroupDialog());
    $("#group-cancel").addEventListener("click", () => $("#group-dialog").close());
    $("#group-form").addEventListener("submit", (event) => this.#createGroup(event));
    $("#group-search").addEventListener(
      "input",
      debounce(() => this.#findGroupMembers(), 250),
    );
  }

  async start() {
    try {
      if (!this.session.canResume) throw new Error("no session to resume");
      await this.session.refresh();
      await this.#signedIn();
    } catch {
      this.#signedOut();
    }
  }

  get openChatId() {
    return this.view?.chat.id ?? null;
  }

  findPeople(query) {
    return this.session.request("GET", `/users?search=${encodeURIComponent(query)}&limit=20`).catch(() => []);
  }

  async openChat(chat) {
    if (this.view?.chat.id === chat.id) return;
    this.closeChat();
    this.view = new ChatView(this, chat);
    $("#chat-pane").replaceChildren(this.view.element);
    document.body.classList.add("chat-open");
    for (const item of document.querySelectorAll(".chat-item")) {
      item.classList.toggle("active", Number(item.dataset.chatId) === chat.id);
    }
    try {
      await this.view.open();
    } catch (error) {
      this.view?.showNotice(`This chat cannot be opened: ${error.message}`);
    }
  }

  closeChat() {
    this.view?.close();
    this.view = null;
    this.showConnection("open");
    document.body.classList.remove("chat-open");
    $("#chat-pane").replaceChildren(h("p", { class: "empty" }, "Pick a chat, or find someone to talk to."));
  }

  refreshInbox() {
    this.inbox.refresh();
  }

  // A message in the open chat moves it up the inbox and changes its last message: show it now,
  // once for a burst of messages, rather than at the next poll.
  refreshInboxSoon = debounce(() => this.inbox.refresh(), 300);

  // The inbox's latest view of the chats: the open one takes its members and name from it.
  chatsChanged(chats) {
    const open = chats.find((chat) => chat.id === this.openChatId);
    if (open && this.view) this.view.update(open);
  }

  showConnection(state) {
    const status = $("#status");
    status.hidden = state === "open" || state === "connecting";
    status.textContent = state === "closed" ? "Disconnected" : "Reconnecting…";
    document.body.classList.toggle("reconnecting", state === "reconnecting");
  }

  async #authenticate(event, kind) {
    event.preventDefault();
    const form = event.target;
    const data = new FormData(form);
    $("#auth-error").textContent = "";
    try {
      if (kind === "login") await this.session.login(data.get("email"), data.get("password"));
      else await this.session.register(data.get("name"), data.get("email"), data.get("password"));
      form.reset();
      await this.#signedIn();
    } catch (error) {
      $("#auth-error").textContent = error instanceof ApiError ? error.message : "The server cannot be reached.";
    }
  }

  async #signedIn() {
    this.me = await this.session.request("GET", "/users/me");
    $("#me-name").textContent = this.me.name;
    $("#auth-view").hidden = true;
    $("#chat-app").hidden = false;
    this.inbox.start();
  }

  #signedOut() {
    this.closeChat();
    this.inbox.stop();
    this.me = null;
    $("#chat-app").hidden = true;
    $("#auth-view").hidden = false;
  }

  #openGroupDialog() {
    this.#groupMembers.clear();
    $("#group-form").reset();
    $("#group-results").replaceChildren();
    $("#group-chosen").replaceChildren();
    $("#group-error").textContent = "";
    $("#group-dialog").showModal();
  }

  async #findGroupMembers() {
    const query = $("#group-search").value.trim();
    const people = query ? await this.findPeople(query) : [];
    $("#group-results").replaceChildren(
      ...people
        .filter((person) => !this.#groupMembers.has(person.id))
        .map((person) =>
          h("li", {}, h("button", { type: "button", class: "person", onclick: () => this.#choose(person) }, person.name)),
        ),
    );
  }

  #choose(person) {
    this.#groupMembers.set(person.id, person.name);
    $("#group-search").value = "";
    $("#group-results").replaceChildren();
    this.#renderChosen();
  }

  #renderChosen() {
    $("#group-chosen").replaceChildren(
      ...[...this.#groupMembers].map(([id, name]) =>
        h("li", {}, name, h("button", { type: "button", "aria-label": `Remove ${name}`, onclick: () => this.#unchoose(id) }, "×")),
      ),
    );
  }

  #unchoose(id) {
    this.#groupMembers.delete(id);
    this.#renderChosen();
  }

  async #createGroup(event) {
    event.preventDefault();
    const name = new FormData(event.target).get("name");
    try {
      const chat = await this.session.request("POST", "/chats", {
        type: "group",
        name,
        member_ids: [...this.#groupMembers.keys()],
      });
      $("#group-dialog").close();
      await this.openChat(chat);
      this.inbox.refresh();
    } catch (error) {
      $("#group-error").textContent = error.message;
    }
  }
}

new App().start();
