// The dashboard's only script: it reads the consumer's state from the server-sent events of /events
// and writes it into the page. Every value from the stream is set as text (textContent), never as
// markup, so a product name such as <img src=x onerror=alert(1)> shows as those characters.
// Money arrives as exact decimal strings and is only regrouped here; the chart reads it as a number
// only to size its bars, and keeps the exact text in their data-total and tooltips.
"use strict";

const byId = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
// The chart's layout in CSS pixels: room above the bars for the late markers, below and right for the times;
// the window starts labelled are at least labelWidth pixels apart.
const CHART = { height: 240, top: 22, bottom: 26, right: 32, labelWidth: 64 };
// Steps between labelled windows: round ones, so that a 1-minute chart is labelled at :00, :05, :10...
const LABEL_STEPS = [1, 2, 3, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440];
let lastBatchTime = null;
let shownProducts = null;
let shownWindows = null;
let windowsView = null;
const WINDOWS_TITLE = byId("windows-title").textContent;  // the page's own, for a view without windows
const NO_WINDOWS = byId("windows-empty").textContent;

// "1234567.50" -> "1,234,567.50": digit grouping done on the text itself, so no cent is lost.
function grouped(text) {
  const [whole, fraction] = String(text).split(".");
  const digits = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return fraction === undefined ? digits : `${digits}.${fraction}`;
}

function rate(value) {
  return value === null || value === undefined ? "–" : `${grouped(Number(value).toFixed(1))} records/s`;
}

function behind(offsets) {
  if (!offsets || offsets.max === null || offsets.max === undefined) return "–";
  const max = grouped(Math.round(offsets.max));
  return offsets.max === offsets.min ? `${max} records` : `${max} records (max), ${grouped(Math.round(offsets.avg))} on average`;
}

function clock(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function agoText() {
  if (!lastBatchTime) return;
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(lastBatchTime)) / 1000));
  byId("batch-time").title = new Date(lastBatchTime).toString();
  byId("batch-time").textContent = clock(lastBatchTime);
  byId("batch-ago").textContent = ` · ${seconds} s ago`;
}

function productRow(product) {
  const row = document.createElement("li");
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = product.name;
  const total = document.createElement("span");
  total.className = "total";
  total.textContent = grouped(product.total);
  const track = document.createElement("span");
  track.className = "track";
  const bar = document.createElement("span");
  bar.className = "bar";
  bar.style.width = `${Math.max(0, Math.min(1, product.share)) * 100}%`;
  track.append(bar);
  row.append(name, total, track);
  return row;
}

function svgElement(parent, name, attributes, title) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (title !== undefined) {  // the browser's tooltip; as text, like every value from the stream
    const tooltip = document.createElementNS(SVG, "title");
    tooltip.textContent = title;
    element.append(tooltip);
  }
  parent.append(element);
  return element;
}

function plural(count, noun) {
  return `${grouped(count)} ${noun}${count === 1 ? "" : "s"}`;
}

function windowTime(startMs, lengthS) {
  const options = { hour: "2-digit", minute: "2-digit" };
  if (lengthS % 60) options.second = "2-digit";
  return new Date(startMs).toLocaleTimeString([], options);
}

function legendItem(name, series) {
  const item = document.createElement("li");
  const swatch = document.createElement("span");
  swatch.className = `swatch ${series}`;
  item.append(swatch, name);  // a string appended becomes a text node
  return item;
}

// One bar per window, as tall as its total, placed by its start on the hour up to the newest window (a
// window without sales leaves a gap); over it, from the bottom, the top products' sales in the legend's
// order (what shows of the bar above them is the other products'), and above it a marker when it has
// late orders. Drawn in CSS pixels (the viewBox is the width the page gives it), so text keeps its size.
function drawWindows(chart) {
  const svg = byId("windows-svg");
  svg.replaceChildren();
  const width = svg.getBoundingClientRect().width;
  const lengthMs = chart.length_s * 1000;
  const end = Date.parse(chart.windows[chart.windows.length - 1].start) + lengthMs;
  const begin = end - Math.max(chart.span_s * 1000, lengthMs);
  const slots = Math.round((end - begin) / lengthMs);
  const baseline = CHART.height - CHART.bottom;
  const tallest = chart.windows.reduce((a, b) => (Number(b.total) > Number(a.total) ? b : a));
  const highest = Number(tallest.total);
  const height = (amount) => (highest > 0 ? ((baseline - CHART.top) * Number(amount)) / highest : 0);
  svg.setAttribute("viewBox", `0 0 ${width} ${CHART.height}`);

  // The scale: the tallest bar's exact total at the top line, 0 at the baseline; the plot starts after the wider.
  const axis = svgElement(svg, "g", { class: "axis" });
  const scale = [[tallest.total, CHART.top], ["0", baseline]].map(([amount, y]) => {
    const label = svgElement(axis, "text", { class: "scale", y, "text-anchor": "end", "dominant-baseline": "middle" });
    label.textContent = grouped(amount);
    return label;
  });
  const left = Math.max(...scale.map((label) => label.getBBox().width)) + 10;
  for (const label of scale) label.setAttribute("x", left - 6);
  const plotWidth = Math.max(width - left - CHART.right, slots);  // a pixel per window at least
  const slot = plotWidth / slots;
  const x = (startMs) => left + ((startMs - begin) / lengthMs) * slot;
  svgElement(axis, "line", { x1: left, x2: left + plotWidth, y1: baseline, y2: baseline });
  svgElement(axis, "line", { class: "grid", x1: left, x2: left + plotWidth, y1: CHART.top, y2: CHART.top });

  // A few window starts, in this browser's time, at round steps of windows.
  const needed = Math.ceil(slots / Math.max(1, Math.floor(plotWidth / CHART.labelWidth)));
  const step = (LABEL_STEPS.find((windows) => windows >= needed) || needed) * lengthMs;
  for (let startMs = Math.ceil(begin / step) * step; startMs < end; startMs += step) {
    svgElement(axis, "line", { x1: x(startMs), x2: x(startMs), y1: baseline, y2: baseline + 4 });
    const label = svgElement(axis, "text", { class: "window-time", x: x(startMs), y: baseline + 17, "text-anchor": "middle" });
    label.textContent = windowTime(startMs, chart.length_s);
  }

  const barWidth = Math.max(1, slot * 0.8);
  for (const w of chart.windows) {
    const startMs = Date.parse(w.start);
    if (startMs < begin) continue;  // older than the hour charted
    const barLeft = x(startMs) + (slot - barWidth) / 2;
    const top = baseline - height(w.total);
    svgElement(
      svg,
      "rect",
      { class: "window-bar", x: barLeft, y: top, width: barWidth, height: height(w.total),
        "data-start": w.start, "data-total": w.total, "data-orders": w.orders, "data-late": w.late },
      `${windowTime(startMs, chart.length_s)}: ${grouped(w.total)} from ${plural(w.orders, "order")}`,
    );
    let bottom = baseline;
    chart.top.forEach((name, series) => {
      const amount = w.top[name];
      if (amount === undefined) return;  // not sold in this window
      bottom -= height(amount);
      svgElement(
        svg,
        "rect",
        { class: `window-segment series-${series}`, x: barLeft, y: bottom, width: barWidth, height: height(amount),
          "data-start": w.start, "data-product": name, "data-total": amount },
        `${name}: ${grouped(amount)}`,
      );
    });
    if (w.late > 0) {
      const middle = barLeft + barWidth / 2;
      svgElement(
        svg,
        "path",
        { class: "late-marker", d: `M ${middle - 5} ${top - 12} h 10 l -5 9 z`, "data-start": w.start, "data-late": w.late },
        plural(w.late, "late order"),
      );
    }
  }
  byId("windows-legend").replaceChildren(
    ...chart.top.map((name, series) => legendItem(name, `series-${series}`)),
    legendItem("Other products", "other"),
  );
}

// No "windows" in the view: the consumer totals no windows (or has not said yet); the page's own text says so.
function showWindows(chart) {
  windowsView = chart;
  const drawn = Boolean(chart && chart.windows.length);
  byId("windows-title").textContent = chart ? chart.title : WINDOWS_TITLE;
  byId("windows-empty").textContent = chart ? "No sales in the last hour of sale_date." : NO_WINDOWS;
  byId("windows-empty").hidden = drawn;
  byId("windows-chart").hidden = !drawn;
  if (drawn) drawWindows(chart);  // once shown: hidden, it has no width to draw in
}

function render(view) {
  document.title = `Sales totals · ${view.topic}`;
  byId("topic").textContent = view.topic;
  byId("grand-total").textContent = grouped(view.grand_total);
  byId("orders").textContent = grouped(view.orders);
  byId("late").textContent = grouped(view.late);
  byId("undated").textContent = grouped(view.undated);
  byId("future").textContent = grouped(view.future);
  byId("rejected").textContent = grouped(view.rejected);
  lastBatchTime = view.batch_time;
  byId("batch").textContent = view.batch === null ? "" : `batch ${view.batch}`;
  agoText();
  // Rows are rebuilt only when the totals change: progress events alone keep a reader's text selection.
  const products = JSON.stringify(view.products);
  if (products !== shownProducts) byId("products").replaceChildren(...view.products.map(productRow));
  shownProducts = products;
  byId("empty").hidden = view.products.length > 0;
  // The chart too is redrawn only when its windows change.
  const windows = JSON.stringify(view.windows ?? null);
  if (windows !== shownWindows) showWindows(view.windows ?? null);
  shownWindows = windows;
  const stream = view.stream || {};
  byId("input-rate").textContent = rate(stream.input_rows_per_s);
  byId("processed-rate").textContent = rate(stream.processed_rows_per_s);
  byId("behind").textContent = behind(stream.offsets_behind);
  byId("batch-rows").textContent = stream.rows === undefined ? "–" : grouped(stream.rows);
  byId("stream-at").textContent = stream.at ? ` (the last one at ${clock(stream.at)})` : "";
  // Kafka or the totals database unreachable: the consumer waits for it, and says so here.
  if (view.waiting) status("waiting", view.waiting);
  else if (byId("status").dataset.state === "waiting") status("live", LIVE);
}

const LIVE = "Live: updates after every micro-batch";

function status(state, text) {
  byId("status").dataset.state = state;
  byId("status").textContent = text;
}

function connect() {
  const events = new EventSource("events");
  events.onopen = () => status("live", LIVE);
  events.onmessage = (message) => render(JSON.parse(message.data));
  // The browser reconnects by itself: after a consumer restart the page carries on.
  events.onerror = () => status("lost", "Consumer not reachable: retrying…");
}

connect();
setInterval(agoText, 1000);
window.addEventListener("resize", () => showWindows(windowsView));  // the bars fill the page's width
