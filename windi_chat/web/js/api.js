// The REST API and the session. The access token lives in memory only, and so does the refresh token
// while the page is open: it goes into sessionStorage only as the page is left, so that a reload keeps
// the session, and is taken out again on load. A duplicated tab (which copies sessionStorage) therefore
// never holds the same refresh token as its original: using one twice would end the session. Nothing
// goes into a cookie.

const REFRESH_KEY = "windi.refresh_token";
// Refresh a minute before the access token expires, or halfway through a shorter life: the server
// counts its expiry in whole seconds and closes sockets the moment it passes.
const REFRESH_MARGIN_S = 60;
const RETRY_REFRESH_MS = 5000;

function takeStored() {
  const token = sessionStorage.getItem(REFRESH_KEY);
  sessionStorage.removeItem(REFRESH_KEY);
  return token;
}

export class ApiError extends Error {
  constructor(status, body) {
    const extra = Array.isArray(body?.extra) && body.extra[0]?.message ? `: ${body.extra[0].message}` : "";
    super(`${body?.detail ?? `Request failed (${status})`}${extra}`);
    this.status = status;
  }
}

export class Session extends EventTarget {
  accessToken = null;
  #refreshToken = takeStored();
  #refreshing = null;
  #timer = 0;

  constructor() {
    super();
    window.addEventListener("pagehide", () => {
      if (this.#refreshToken !== null) sessionStorage.setItem(REFRESH_KEY, this.#refreshToken);
    });
    window.addEventListener("pageshow", (event) => {
      if (event.persisted) takeStored(); // back from the browser's page cache: still ours alone
    });
  }

  get canResume() {
    return this.#refreshToken !== null;
  }

  async register(name, email, password) {
    await this.#fetch("POST", "/register", { json: { name, email, password } });
    await this.login(email, password);
  }

  async login(email, password) {
    const form = new URLSearchParams({ username: email, password });
    this.#accept(await this.#fetch("POST", "/login", { form }));
  }

  // One refresh at a time: a refresh token is spent by its first use, and a second use would end
  // the session.
  refresh() {
    if (this.#refreshToken === null) return Promise.reject(new ApiError(401, { detail: "Not logged in" }));
    this.#refreshing ??= this.#fetch("POST", "/token/refresh", { json: { refresh_token: this.#refreshToken } })
      .then((tokens) => this.#accept(tokens))
      .catch((error) => {
        if (error instanceof ApiError && error.status === 401) this.#end();
        throw error;
      })
      .finally(() => {
        this.#refreshing = null;
      });
    return this.#refreshing;
  }

  async logout() {
    try {
      await this.request("POST", "/logout");
    } finally {
      this.#end();
    }
  }

  // An authenticated call; a 401 gets one refresh and one retry.
  async request(method, path, json) {
    try {
      return await this.#fetch(method, path, { json, auth: true });
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401 || this.#refreshToken === null) throw error;
      await this.refresh();
      return await this.#fetch(method, path, { json, auth: true });
    }
  }

  #accept(tokens) {
    this.accessToken = tokens.access_token;
    this.#refreshToken = tokens.refresh_token;
    clearTimeout(this.#timer);
    const delay = Math.max(tokens.expires_in / 2, tokens.expires_in - REFRESH_MARGIN_S);
    this.#timer = setTimeout(() => this.#refreshSoon(), delay * 1000);
    this.dispatchEvent(new Event("token"));
  }

  #refreshSoon() {
    this.refresh().catch((error) => {
      if (this.#refreshToken !== null) this.#timer = setTimeout(() => this.#refreshSoon(), RETRY_REFRESH_MS);
      else console.info("session ended", error.message);
    });
  }

  #end() {
    clearTimeout(this.#timer);
    this.accessToken = null;
    this.#refreshToken = null;
    sessionStorage.removeItem(REFRESH_KEY);
    this.dispatchEvent(new Event("ended"));
  }

  async #fetch(method, path, { json, form, auth = false } = {}) {
    const headers = {};
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form;
    }
    if (auth) headers.Authorization = `Bearer ${this.accessToken}`;
    const response = await fetch(path, { method, headers, body, credentials: "omit", cache: "no-store" });
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }
}
