// Building elements. Data always goes in as text nodes, never as markup.

export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") element.className = value;
    else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

export function $(selector) {
  return document.querySelector(selector);
}

// Calls `action` at most once per `delay` ms, with the latest arguments, after input settles.
export function debounce(action, delay) {
  let timer = 0;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => action(...args), delay);
  };
}

// A client id unique to this message: random, so a retry can repeat it and nothing else can.
// crypto.getRandomValues works on plain http too, unlike crypto.randomUUID.
export function newClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

export function timeOf(timestamp) {
  return new Date(timestamp).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// The name a chat shows: a group's own, or the other person's in a private chat.
export function chatTitle(chat, me) {
  if (chat.type === "group") return chat.name ?? "Group";
  const other = chat.members.find((member) => member.user_id !== me.id);
  return other ? other.name : "Just you";
}
