// A group's members: the owner adds and removes people, anyone may leave.

import { debounce, h } from "./dom.js";

export class MembersPanel {
  constructor(app, view) {
    this.app = app;
    this.view = view;
    this.list = h("ul", { class: "member-list", "aria-label": "Members" });
    this.search = h("input", {
      type: "search",
      placeholder: "Add people",
      "aria-label": "Add people",
      maxlength: "100",
    });
    this.results = h("ul", { class: "people" });
    this.error = h("p", { class: "error", role: "alert" });
    this.leave = h("button", { type: "button", class: "leave" }, "Leave group");
    this.adder = h("div", { class: "adder" }, this.search, this.results);
    this.element = h("section", { class: "members", hidden: true }, this.list, this.adder, this.leave, this.error);
    this.search.addEventListener(
      "input",
      debounce(() => this.#find(), 250),
    );
    this.leave.addEventListener("click", () => this.#remove(app.me.id));
  }

  toggle() {
    this.element.hidden = !this.element.hidden;
  }

  get #isOwner() {
    const mine = this.view.chat.members.find((member) => member.user_id === this.app.me.id);
    return mine?.role === "owner";
  }

  render() {
    const chat = this.view.chat;
    const owner = this.#isOwner;
    this.adder.hidden = !owner;
    this.list.replaceChildren(
      ...chat.members.map((member) =>
        h(
          "li",
          { dataset: { userId: member.user_id } },
          h("span", { class: "name" }, member.name),
          member.role === "owner" ? h("span", { class: "role" }, "owner") : null,
          owner && member.user_id !== this.app.me.id
            ? h("button", { type: "button", onclick: () => this.#remove(member.user_id) }, "Remove")
            : null,
        ),
      ),
    );
  }

  async #find() {
    const query = this.search.value.trim();
    if (!query) return this.results.replaceChildren();
    const members = new Set(this.view.chat.members.map((member) => member.user_id));
    const people = await this.app.findPeople(query);
    this.results.replaceChildren(
      ...people
        .filter((person) => !members.has(person.id))
        .map((person) =>
          h(
            "li",
            {},
            h("span", { class: "name" }, person.name),
            h("button", { type: "button", onclick: () => this.#add(person.id) }, "Add"),
          ),
        ),
    );
  }

  async #add(userId) {
    await this.#change(`/groups/${this.view.chat.id}/add_user/${userId}`);
    this.search.value = "";
    this.results.replaceChildren();
  }

  async #remove(userId) {
    await this.#change(`/groups/${this.view.chat.id}/remove_user/${userId}`);
  }

  async #change(path) {
    this.error.textContent = "";
    try {
      this.view.update(await this.app.session.request("POST", path));
    } catch (error) {
      this.error.textContent = error.message;
    }
  }
}
