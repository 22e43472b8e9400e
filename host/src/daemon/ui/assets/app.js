// outreach web UI: local times, live dashboard updates and the composer.
// Runs under `script-src 'self'`: no inline handlers, no eval.
"use strict";

(function () {
  const csrf = () => {
    const m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  };

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const k of kids) if (k) e.append(k);
    return e;
  }

  // Times are rendered in UTC by the server; show them in the reader's zone.
  function localTimes(root) {
    const fmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
    for (const t of root.querySelectorAll("time[datetime]")) {
      const d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) {
        t.title = t.textContent;
        t.textContent = fmt.format(d);
      }
    }
  }

  // The dashboard's accounts, refreshed while the page is open.
  function live() {
    const box = document.getElementById("live");
    if (!box) return;
    let etag = null;
    async function poll() {
      if (document.hidden) return;
      // Do not replace the part someone is using.
      if (box.contains(document.activeElement) && document.activeElement !== document.body) return;
      try {
        const headers = etag ? { "If-None-Match": etag } : {};
        const r = await fetch(box.dataset.poll, { headers, credentials: "same-origin" });
        if (r.status === 200) {
          const html = await r.text();
          const first = etag === null;
          etag = r.headers.get("ETag");
          if (!first) {
            box.innerHTML = html;
            localTimes(box);
          }
        }
      } catch (_) { /* the daemon restarting: try again later */ }
    }
    poll();
    setInterval(poll, 3000);
  }

  function composer() {
    const form = document.getElementById("composer");
    if (!form) return;
    const $ = (id) => document.getElementById(id);
    const media = [];
    const tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
    $("tz").textContent = "(" + tz + "; stored in UTC)";

    function targets() {
      return [...form.querySelectorAll('input[name="to"]:checked')].map((c) => c.value);
    }
    function platforms() {
      const seen = new Set();
      for (const c of form.querySelectorAll('input[name="to"]:checked')) seen.add(c.dataset.platform);
      return [...seen];
    }

    function post() {
      const p = { text: $("text").value, to: targets() };
      if ($("title").value.trim()) p.title = $("title").value;
      if ($("link").value.trim()) p.link = $("link").value.trim();
      if (media.length) p.media = media.map((m) => (m.alt ? { path: m.path, alt: m.alt } : { path: m.path }));
      const thread = [...$("thread").querySelectorAll("textarea")].map((t) => t.value).filter((t) => t.trim());
      if (thread.length) p.thread = thread.map((text) => ({ text }));
      const over = {};
      for (const platform of platforms()) {
        const panel = form.querySelector('[data-variant="' + platform + '"]');
        if (!panel) continue;
        const o = {};
        for (const f of panel.querySelectorAll("[data-field]")) {
          const v = f.value;
          if (v === "") continue;
          if (f.dataset.type === "bool") o[f.dataset.field] = v === "true";
          else if (f.dataset.type === "int") o[f.dataset.field] = parseInt(v, 10);
          else o[f.dataset.field] = v;
        }
        if (Object.keys(o).length) over[platform] = o;
      }
      if (Object.keys(over).length) p.override = over;
      return p;
    }

    // Tabs: one per platform picked.
    function tabs() {
      const list = $("variant-tabs");
      const picked = platforms();
      list.textContent = "";
      let selected = list.dataset.selected;
      if (!picked.includes(selected)) selected = picked[0];
      list.dataset.selected = selected || "";
      for (const panel of form.querySelectorAll("[data-variant]")) {
        panel.hidden = panel.dataset.variant !== selected || !picked.includes(panel.dataset.variant);
      }
      for (const platform of picked) {
        const panel = form.querySelector('[data-variant="' + platform + '"]');
        if (!panel) continue;
        const b = el("button", {
          type: "button", role: "tab", id: "tab-" + platform,
          "aria-controls": "panel-" + platform,
          "aria-selected": platform === selected ? "true" : "false",
          tabindex: platform === selected ? "0" : "-1",
          text: panel.dataset.name,
        });
        b.addEventListener("click", () => { list.dataset.selected = platform; tabs(); b.focus(); });
        b.addEventListener("keydown", (e) => {
          if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
          const i = picked.indexOf(platform) + (e.key === "ArrowRight" ? 1 : -1);
          list.dataset.selected = picked[(i + picked.length) % picked.length];
          tabs();
          const next = document.getElementById("tab-" + list.dataset.selected);
          if (next) next.focus();
        });
        list.append(b);
      }
      if (!picked.length) list.append(el("p", { class: "muted", text: "Pick where to post first." }));
    }

    let seq = 0;
    let timer = null;
    function soon() {
      clearTimeout(timer);
      timer = setTimeout(check, 150);
    }

    async function send(url, body) {
      const r = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
        body: JSON.stringify(body),
      });
      let data = {};
      try { data = await r.json(); } catch (_) { data = { error: "the daemon answered " + r.status }; }
      return { status: r.status, data };
    }

    function preview(item) {
      const box = el("div", { class: "preview" });
      if (item.fits_until === null || item.fits_until === undefined) {
        box.textContent = item.text;
        return box;
      }
      // fits_until is a byte offset into the UTF-8 text.
      const bytes = new TextEncoder().encode(item.text);
      const dec = new TextDecoder();
      box.append(dec.decode(bytes.slice(0, item.fits_until)));
      box.append(el("span", { class: "cut", text: dec.decode(bytes.slice(item.fits_until)) }));
      return box;
    }

    function render(data) {
      const box = $("counters");
      box.textContent = "";
      if (data.error) box.append(el("p", { class: "flash bad", text: data.error }));
      const problems = data.problems || [];
      for (const p of problems.filter((p) => p.target === "post")) {
        box.append(el("p", { class: "flash bad", text: p.field + ": " + p.message }));
      }
      for (const m of data.measures || []) {
        const mine = problems.filter((p) => p.target === m.target);
        const over = m.items.some((i) => i.over) || mine.some((p) => p.field === "text" || /text$/.test(p.field));
        const c = el("div", { class: "counter " + (over ? "over" : mine.length ? "warn" : "ok"), "data-counter": m.target, "data-over": over ? "true" : "false" });
        const first = m.items[0] || { count: 0, limit: 0 };
        const head = el("p", {},
          el("strong", { text: m.target + " " }),
          el("span", { class: "n", text: String(first.count) }),
          document.createTextNode(first.limit ? " / " + first.limit : " (no limit)"),
          el("span", { class: "muted", text: " " + m.counting }));
        c.append(head);
        m.items.forEach((item, i) => {
          if (i > 0) c.append(el("p", { class: "muted" }, document.createTextNode("reply " + i + ": "), el("span", { class: "n", text: String(item.count) }), document.createTextNode(item.limit ? " / " + item.limit : "")));
          if (item.over) c.append(preview(item));
        });
        if (m.title && m.title[1]) c.append(el("p", { class: "muted", text: "title " + m.title[0] + " / " + m.title[1] }));
        if (mine.length) {
          const ul = el("ul");
          for (const p of mine) ul.append(el("li", { text: p.field + ": " + p.message }));
          c.append(ul);
        }
        box.append(c);
      }
      if (!(data.measures || []).length && !data.error && !problems.length) {
        box.append(el("p", { class: "muted", text: "Pick where to post." }));
      }
    }

    async function check() {
      tabs();
      const p = post();
      if (!p.to.length) { render({ measures: [] }); return; }
      const mine = ++seq;
      try {
        const { data } = await send("/ui/compose/check", p);
        if (mine === seq) render(data);
      } catch (e) {
        if (mine === seq) render({ error: "could not reach the daemon: " + e });
      }
    }

    function results(data, status) {
      const box = $("results");
      box.textContent = "";
      if (data.error) box.append(el("p", { class: "flash bad", role: "alert", text: data.error }));
      for (const p of data.problems || []) box.append(el("p", { class: "flash bad", text: p.target + " " + p.field + ": " + p.message }));
      if (data.results) {
        const ul = el("ul", { id: "published" });
        for (const r of data.results) {
          const li = el("li", { "data-result": r.target, "data-state": r.state }, el("strong", { text: r.target + ": " }), document.createTextNode(r.state));
          if (r.url && /^https?:/.test(r.url)) {
            li.append(" ");
            li.append(el("a", { href: r.url, "data-link": r.target, rel: "noreferrer noopener", target: "_blank", text: r.url }));
          }
          if (r.error) li.append(el("div", { class: "why", text: r.error }));
          ul.append(li);
        }
        box.append(el("p", { class: status === 200 ? "flash ok" : "flash bad", role: "status", text: data.post ? "Post " + data.post + ":" : "Done:" }));
        box.append(ul);
      }
    }

    async function act(button, url, body) {
      button.disabled = true;
      try {
        const { status, data } = await send(url, body);
        results(data, status);
        return { status, data };
      } catch (e) {
        results({ error: "could not reach the daemon: " + e });
        return null;
      } finally {
        button.disabled = false;
      }
    }

    $("publish").addEventListener("click", () => act($("publish"), "/ui/compose/publish", post()));
    $("schedule").addEventListener("click", () => {
      const v = $("at").value;
      if (!v) { results({ error: "Pick a time to schedule it for." }); $("at").focus(); return; }
      const when = new Date(v);
      if (isNaN(when)) { results({ error: "That time is not valid." }); return; }
      const p = post();
      p.schedule = when.toISOString().replace(/\.\d{3}Z$/, "Z");
      act($("schedule"), "/ui/compose/publish", p);
    });
    $("save-draft").addEventListener("click", async () => {
      const p = post();
      p.draft = $("draft-name").value.trim() || null;
      if ($("at").value) p.schedule = new Date($("at").value).toISOString().replace(/\.\d{3}Z$/, "Z");
      const r = await act($("save-draft"), "/ui/compose/draft", p);
      if (r && r.data.saved) {
        $("draft-name").value = r.data.saved;
        $("results").append(el("p", { class: "flash ok", role: "status", "data-saved": r.data.saved, text: "Saved as draft " + r.data.saved + " (not published)." }));
      }
    });

    function addThread(text) {
      const ol = $("thread");
      const n = ol.children.length + 1;
      const id = "thread-" + n + "-" + Date.now();
      const ta = el("textarea", { id, rows: "3" });
      ta.value = text || "";
      ta.addEventListener("input", soon);
      const remove = el("button", { type: "button", class: "danger", text: "Remove reply " + n });
      const li = el("li", {}, el("label", { for: id, text: "Reply " + n }), ta, remove);
      remove.addEventListener("click", () => { li.remove(); soon(); });
      ol.append(li);
      return ta;
    }
    $("add-thread").addEventListener("click", () => addThread("").focus());

    function showMedia() {
      const ul = $("media-list");
      ul.textContent = "";
      media.forEach((m, i) => {
        const id = "alt-" + i;
        const alt = el("input", { id, value: m.alt || "" });
        alt.addEventListener("input", () => { m.alt = alt.value; soon(); });
        const remove = el("button", { type: "button", class: "danger", text: "Remove " + m.name });
        remove.addEventListener("click", () => { media.splice(i, 1); showMedia(); soon(); });
        ul.append(el("li", { "data-media": m.name }, el("strong", { text: m.name + " " }), el("label", { for: id, text: "Alt text for " + m.name }), alt, remove));
      });
    }

    async function upload(files) {
      for (const f of files) {
        const r = await fetch("/ui/media", {
          method: "POST",
          credentials: "same-origin",
          headers: { "X-CSRF-Token": csrf(), "X-File-Name": encodeURIComponent(f.name), "Content-Type": "application/octet-stream" },
          body: f,
        });
        let data = {};
        try { data = await r.json(); } catch (_) { data = { error: "the daemon answered " + r.status }; }
        if (data.path) media.push({ path: data.path, name: f.name, alt: "" });
        else results({ error: "uploading " + f.name + ": " + (data.error || r.status) });
      }
      showMedia();
      soon();
    }
    const drop = $("dropzone");
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); upload(e.dataTransfer.files); });
    drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("media-file").click(); } });
    $("media-file").addEventListener("change", (e) => { upload(e.target.files); e.target.value = ""; });

    // A draft being edited.
    if (form.dataset.draft) {
      try {
        const d = JSON.parse(form.dataset.draft);
        $("text").value = d.text || "";
        $("title").value = d.title || "";
        $("link").value = d.link || "";
        $("draft-name").value = d.draft || "";
        for (const c of form.querySelectorAll('input[name="to"]')) c.checked = (d.to || []).includes(c.value);
        for (const t of d.thread || []) addThread(t.text || "");
        for (const m of d.media || []) media.push({ path: m.path, name: String(m.path).split("/").pop(), alt: m.alt || "" });
        for (const [platform, o] of Object.entries(d.override || {})) {
          const panel = form.querySelector('[data-variant="' + platform + '"]');
          if (!panel) continue;
          for (const [k, v] of Object.entries(o)) {
            const f = panel.querySelector('[data-field="' + k + '"]');
            if (f) f.value = String(v);
          }
        }
        if (d.schedule) {
          const t = new Date(d.schedule);
          if (!isNaN(t)) {
            const pad = (n) => String(n).padStart(2, "0");
            $("at").value = t.getFullYear() + "-" + pad(t.getMonth() + 1) + "-" + pad(t.getDate()) + "T" + pad(t.getHours()) + ":" + pad(t.getMinutes());
          }
        }
        showMedia();
      } catch (_) { /* a draft that is not JSON: start empty */ }
    }

    form.addEventListener("input", soon);
    form.addEventListener("change", soon);
    form.addEventListener("submit", (e) => e.preventDefault());
    tabs();
    check();
  }

  document.addEventListener("DOMContentLoaded", () => {
    localTimes(document);
    live();
    composer();
  });
})();
