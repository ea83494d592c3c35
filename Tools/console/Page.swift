/// The console's one page: markup, style and script in one document served by the binary (no CDN, no other
/// asset), refreshed from `/api/overview` every 2 seconds. Every figure carries `data-figure` (what it is) and
/// `data-value` (the raw number from the RPC answer), for scripts and tests.
enum Page {
    static let html = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Sigma console</title>
    <style>
      :root { --bg:#f5f6f8; --card:#fff; --ink:#1d2330; --muted:#6b7385; --line:#e1e4ea; --cap:#e8ebf0;
              --req:#3f6fd8; --used:#23a26d; --lim:#d9822b; --bad:#d64545; --warn:#e0a82e; }
      * { box-sizing: border-box; }
      body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--ink); }
      header { display:flex; align-items:center; gap:16px; padding:14px 24px; background:var(--ink); color:#fff; }
      header h1 { margin:0; font-size:20px; letter-spacing:.5px; }
      header .summary { color:#c9cfdb; }
      header .status { margin-left:auto; display:flex; align-items:center; gap:8px; color:#c9cfdb; }
      .dot { width:10px; height:10px; border-radius:50%; background:var(--used); display:inline-block; }
      .dot.off { background:var(--bad); }
      main { padding:18px 24px; display:grid; gap:18px; grid-template-columns: minmax(0,1fr) minmax(0,1fr); }
      section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px 16px; }
      section.wide { grid-column: 1 / -1; }
      h2 { margin:0 0 10px; font-size:15px; }
      .legend { color:var(--muted); font-size:12px; margin-bottom:8px; }
      .legend i { display:inline-block; width:10px; height:10px; border-radius:2px; margin:0 4px 0 10px; vertical-align:-1px; }
      .pool-row { display:grid; grid-template-columns: 130px minmax(0,1fr) minmax(0,1fr); gap:12px; align-items:center; padding:6px 0; border-top:1px solid var(--line); }
      .pool-row:first-of-type { border-top:none; }
      .pool-row .name { font-weight:600; }
      .pool-row .name small { display:block; font-weight:400; color:var(--muted); }
      .bar { position:relative; height:16px; background:var(--cap); border-radius:3px; overflow:hidden; }
      .bar .req { position:absolute; left:0; top:0; bottom:0; background:var(--req); opacity:.85; }
      .bar .used { position:absolute; left:0; bottom:0; height:5px; background:var(--used); }
      .bar .lim { position:absolute; top:0; bottom:0; width:2px; background:var(--lim); }
      .figures { font-size:12px; color:var(--muted); margin-top:3px; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
      .heat { display:grid; grid-template-columns: repeat(auto-fill, minmax(120px, 1fr)); gap:8px; }
      .tile { border-radius:6px; padding:8px 10px; color:#fff; min-height:64px; }
      .tile .n { font-weight:600; }
      .tile small { display:block; opacity:.9; }
      .tile.Broken { outline:3px solid var(--bad); }
      .tile.Suspect { outline:3px solid var(--warn); }
      table { width:100%; border-collapse:collapse; font-size:13px; }
      th, td { text-align:left; padding:4px 8px 4px 0; border-bottom:1px solid var(--line); vertical-align:top; }
      th { color:var(--muted); font-weight:500; }
      td.reason { color:var(--muted); max-width:360px; }
      .app { margin-bottom:14px; }
      .app h3 { margin:0 0 4px; font-size:14px; }
      .app h3 span { color:var(--muted); font-weight:400; font-size:12px; margin-left:8px; }
      .state-Running { color:var(--used); } .state-BackOff, .state-Failed, .state-OOMKilled, .state-Killed { color:var(--bad); }
      .state-Pending, .state-NeedMigration, .state-Paused, .state-Progressing { color:var(--warn); } .state-Succeeded { color:var(--used); }
      .empty { color:var(--muted); }
      .error { color:var(--bad); }
    </style>
    </head>
    <body>
    <header>
      <h1>Σ Sigma</h1>
      <div class="summary" id="summary">loading…</div>
      <div class="status"><span class="dot off" id="dot"></span><span id="status">connecting</span></div>
    </header>
    <main>
      <section class="wide" id="pool-section">
        <h2>Pool: capacity, requested, limits and used</h2>
        <div class="legend">CPU and memory per group:<i style="background:var(--cap)"></i>capacity<i style="background:var(--req)"></i>requested<i style="background:var(--used)"></i>used<i style="background:var(--lim)"></i>limits</div>
        <div id="pool"></div>
      </section>
      <section>
        <h2>Nodes: utilization</h2>
        <div class="legend">each tile is a node, its colour the higher of CPU and memory used over capacity (grey: Broken, its figures the last it sent)</div>
        <div class="heat" id="heat"></div>
      </section>
      <section>
        <h2>Recent events</h2>
        <div id="events"></div>
      </section>
      <section class="wide">
        <h2>Apps and their instances</h2>
        <div id="apps"></div>
      </section>
      <section class="wide">
        <h2>Rollouts</h2>
        <div class="legend">newest first; new / available / old count the app's instances now, for its newest rollout</div>
        <div id="rollouts"></div>
      </section>
    </main>
    <script>
    "use strict";
    const num = (x) => Number(x || 0);
    const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c]));
    function cpu(m) { m = num(m); return m >= 1000 ? (m / 1000).toFixed(m % 1000 ? 1 : 0) : m + "m"; }
    function bytes(b) { b = num(b); const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]; let i = 0; while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; } return (i ? b.toFixed(1) : b) + " " + u[i]; }
    function pct(part, whole) { whole = num(whole); return whole > 0 ? Math.min(100, 100 * num(part) / whole) : 0; }
    function fig(group, path, value, text) { return `<span data-figure="${esc(group)}.${path}" data-value="${num(value)}">${esc(text)}</span>`; }
    function when(ms) { const d = new Date(num(ms)); return d.toLocaleTimeString(); }

    function bar(group, f, res, format) {
      const cap = f.capacity?.[res], req = f.requested?.[res], lim = f.limits?.[res], used = f.usage?.[res];
      return `<div><div class="bar" title="${esc(res)}">
          <div class="req" style="width:${pct(req, cap)}%"></div>
          <div class="used" style="width:${pct(used, cap)}%"></div>
          <div class="lim" style="left:calc(${pct(lim, cap)}% - 2px)"></div></div>
        <div class="figures">${res === "cpuMillis" ? "CPU" : "memory"}:
          requested ${fig(group, "requested." + res, req, format(req))} ·
          used ${fig(group, "usage." + res, used, format(used))} ·
          limits ${fig(group, "limits." + res, lim, format(lim))} of
          ${fig(group, "capacity." + res, cap, format(cap))}</div></div>`;
    }

    function poolRow(group, label, f) {
      return `<div class="pool-row" data-group="${esc(group)}">
        <div class="name">${esc(label)}<small>${fig(group, "readyNodes", f.readyNodes, num(f.readyNodes))}/${fig(group, "nodes", f.nodes, num(f.nodes))} nodes ready,
          ${fig(group, "instances", f.instances, num(f.instances))} instances</small></div>
        ${bar(group, f, "cpuMillis", cpu)}${bar(group, f, "memoryBytes", bytes)}</div>`;
    }

    function heatColour(u) { const h = 140 - 140 * Math.min(1, u); return `hsl(${h}, 62%, ${u > 0.9 ? 42 : 40}%)`; }

    function render(d) {
      const pool = d.pool || {}, total = pool.total || {};
      document.getElementById("summary").innerHTML =
        `${fig("total", "readyNodes", total.readyNodes, num(total.readyNodes))} of ${num(total.nodes)} nodes ready · ` +
        `${num(total.instances)} instances · ${(d.apps || []).length} apps`;
      let rows = poolRow("total", "whole pool", total);
      for (const g of pool.groups || []) rows += poolRow(`${g.key}=${g.value || ""}`, `${g.key} ${g.value || "(none)"}`, g.figures || {});
      document.getElementById("pool").innerHTML = rows;

      const nodes = d.nodes || [];
      document.getElementById("heat").innerHTML = nodes.length ? nodes.map((n) => {
        const c = pct(n.usage?.cpuMillis, n.capacity?.cpuMillis) / 100, m = pct(n.usage?.memoryBytes, n.capacity?.memoryBytes) / 100;
        const health = n.health || "Ready";
        return `<div class="tile ${esc(health)}" data-node="${esc(n.name)}" style="background:${health === "Broken" ? "#8a8f99" : heatColour(Math.max(c, m))}">
          <span class="n">${esc(n.name)}</span><small>${esc(health)}${n.cordoned ? ", cordoned" : ""} · ${esc(n.idc || "")}</small>
          <small>CPU ${Math.round(c * 100)}% · mem ${Math.round(m * 100)}%</small></div>`;
      }).join("") : `<div class="empty">no node has registered</div>`;

      const events = (d.events || []).slice().reverse();
      document.getElementById("events").innerHTML = events.length ? `<table><tr><th>time</th><th>object</th><th>reason</th><th>message</th></tr>` +
        events.map((e) => `<tr><td>${when(e.atUnixMs)}</td><td>${esc(e.kind)}/${esc(e.name)}</td><td>${esc(e.reason)}</td><td class="reason">${esc(e.message)}</td></tr>`).join("") +
        `</table>` : `<div class="empty">no events</div>`;

      const byApp = {};
      for (const i of d.instances || []) (byApp[i.app] = byApp[i.app] || []).push(i);
      const apps = d.apps || [];
      document.getElementById("apps").innerHTML = apps.length ? apps.map((a) => {
        const name = a.spec?.name || "";
        const states = Object.entries(a.states || {}).map(([s, n]) => `${n} ${s}`).join(", ");
        const instances = (byApp[name] || []).sort((x, y) => num(x.ordinal) - num(y.ordinal));
        return `<div class="app" data-app="${esc(name)}"><h3>${esc(name)}<span>revision ${num(a.revision)} · ${num(a.ready)}/${num(a.spec?.replicas)} ready · ${esc(states)}</span></h3>
          <table><tr><th>instance</th><th>state</th><th>restarts</th><th>ready</th><th>IP</th><th>node</th><th>host ports</th><th>reason</th></tr>` +
          instances.map((i) => `<tr data-instance="${esc(name)}-${num(i.ordinal)}"><td>${esc(name)}-${num(i.ordinal)}</td>
            <td class="state-${esc(i.state)}">${esc(i.state)}</td><td>${num(i.restarts)}</td><td>${i.ready ? "yes" : "no"}</td><td>${esc(i.ip)}</td><td>${esc(i.node)}</td>
            <td>${Object.entries(i.hostPorts || {}).map(([p, n]) => `${esc(p)}:${num(n)}`).join(" ")}</td>
            <td class="reason">${esc(i.reason || i.pendingReason || "")}</td></tr>`).join("") + `</table></div>`;
      }).join("") : `<div class="empty">no apps</div>`;
    }

    function span(ms) {
      const s = Math.floor(Math.max(0, num(ms)) / 1000);
      if (s === 0) return Math.max(0, num(ms)) + "ms";
      if (s < 60) return s + "s";
      if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
      return Math.floor(s / 3600) + "h" + String(Math.floor(s / 60) % 60).padStart(2, "0") + "m";
    }

    function renderRollouts(d) {
      const rollouts = d.rollouts || [];
      document.getElementById("rollouts").innerHTML = rollouts.length ? `<table><tr><th>app</th><th>revision</th><th>state</th><th>started</th><th>by</th>
          <th>new</th><th>available</th><th>old</th><th>duration</th><th>cause</th><th>reason</th></tr>` +
        rollouts.map((r) => `<tr data-rollout="${esc(r.id)}" data-app="${esc(r.app)}" data-state="${esc(r.state)}">
          <td>${esc(r.app)}</td><td>${num(r.fromRevision)} → ${num(r.toRevision)}</td><td class="state-${esc(r.state)}">${esc(r.state)}${r.promoted ? ", promoted" : ""}</td>
          <td>${when(r.startedUnixMs)}</td><td>${esc(r.startedBy)}</td><td>${num(r.newInstances)}</td><td>${num(r.availableInstances)}</td><td>${num(r.oldInstances)}</td>
          <td>${span((num(r.endedUnixMs) || num(d.at)) - num(r.startedUnixMs))}</td><td class="reason">${esc(r.cause)}</td><td class="reason">${esc(r.reason)}</td></tr>`).join("") +
        `</table>` : `<div class="empty">no rollouts</div>`;
    }

    function status(ok, text) {
      document.getElementById("dot").className = ok ? "dot" : "dot off";
      document.getElementById("status").textContent = text;
    }

    async function refresh() {
      try {
        const response = await fetch("api/overview", { cache: "no-store" });
        const d = await response.json();
        if (!response.ok) throw new Error(d.error || response.status);
        render(d);
        renderRollouts(d);
        status(true, "live · " + when(d.at));
      } catch (e) {
        status(false, "cannot reach the scheduler: " + e.message);
      }
    }
    refresh();
    setInterval(refresh, 2000);
    </script>
    </body>
    </html>
    """#
}
