// The chat list, most recent activity first, polled from GET /chats until a socket for the whole
// inbox exists; and finding people to start a private chat with.

import { $, chatTitle, debounce, h } from "./dom.js";

const POLL_MS = 3000;

export class Inbox {
  #timer = 0;
  #stopped = true;

  constructor(app) {
    this.app = app;
    this.list = $("#inbox");
    this.search = $("#people-search");
    this.results = $("#people-results");
    this.search.addEventListener(
      "input",
      debounce(() => this.#find(), 250),
    );
  }

  start() {
    this.#stopped = false;
    this.refresh();
  }

  stop() {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.list.replaceChildren();
    this.results.replaceChildren();
    this.search.value = "";
  }

  async refresh() {
    clearTimeout(this.#timer);
    try {
      const chats = await this.app.session.request("GET", "/chats");
      if (!this.#stopped) this.#render(chats);
    } catch {
      // offline or the server restarting: the next poll tries again
    }
    if (!this.#stopped) this.#timer = setTimeout(() => this.refresh(), POLL_MS);
  }

  #render(chats) {
    const openId = this.app.openChatId;
    this.list.replaceChildren(
      ...chats.map((chat) => {
        const last = chat.last_message;
        const unread = chat.id === openId ? 0 : chat.unread_count;
        const preview = last ? `${last.sender_id === this.app.me.id ? "You: " : ""}${last.text}` : "No messages yet";
        return h(
          "li",
          {},
          h(
            "button",
            {
              type: "button",
              class: chat.id === openId ? "chat-item active" : "chat-item",
              dataset: { chatId: chat.id },
              onclick: () => this.app.openChat(chat),
            },
            h("span", { class: "title" }, chatTitle(chat, this.app.me)),
            unread > 0 ? h("span", { class: "badge", "aria-label": `${unread} unread` }, String(unread)) : null,
            h("span", { class: "preview" }, preview),
          ),
        );
      }),
    );
    this.app.chatsChanged(chats);
  }

  async #find() {
    const query = this.search.value.trim();
    if (!query) return this.results.replaceChildren();
    const people = await this.app.findPeople(query);
    this.results.replaceChildren(
      ...people.map((person) =>
        h(
          "li",
          {},
          h(
            "button",
            { type: "button", class: "person", onclick: () => this.#startChat(person.id) },
            h("span", { class: "name" }, person.name),
          ),
        ),
      ),
    );
  }

  async #startChat(userId) {
    const chat = await this.app.session.request("POST", "/chats", { type: "private", user_id: userId });
    this.search.value = "";
    this.results.replaceChildren();
    await this.app.openChat(chat);
    this.refresh();
  }
}
