// The dashboard's only script: it reads the consumer's state from the server-sent events of /events
// and writes it into the page. Every value from the stream is set as text (textContent), never as
// markup, so a product name such as <img src=x onerror=alert(1)> shows as those characters.
// Money arrives as exact decimal strings and is only regrouped here, never turned into a float.
"use strict";

const byId = (id) => document.getElementById(id);
let lastBatchTime = null;
let shownProducts = null;

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

function render(view) {
  document.title = `Sales totals · ${view.topic}`;
  byId("topic").textContent = view.topic;
  byId("grand-total").textContent = grouped(view.grand_total);
  byId("orders").textContent = grouped(view.orders);
  byId("rejected").textContent = grouped(view.rejected);
  lastBatchTime = view.batch_time;
  byId("batch").textContent = view.batch === null ? "" : `batch ${view.batch}`;
  agoText();
  // Rows are rebuilt only when the totals change: progress events alone keep a reader's text selection.
  const products = JSON.stringify(view.products);
  if (products !== shownProducts) byId("products").replaceChildren(...view.products.map(productRow));
  shownProducts = products;
  byId("empty").hidden = view.products.length > 0;
  const stream = view.stream || {};
  byId("input-rate").textContent = rate(stream.input_rows_per_s);
  byId("processed-rate").textContent = rate(stream.processed_rows_per_s);
  byId("behind").textContent = behind(stream.offsets_behind);
  byId("batch-rows").textContent = stream.rows === undefined ? "–" : grouped(stream.rows);
  byId("stream-at").textContent = stream.at ? ` (the last one at ${clock(stream.at)})` : "";
}

function status(state, text) {
  byId("status").dataset.state = state;
  byId("status").textContent = text;
}

function connect() {
  const events = new EventSource("events");
  events.onopen = () => status("live", "Live: updates after every micro-batch");
  events.onmessage = (message) => render(JSON.parse(message.data));
  // The browser reconnects by itself: after a consumer restart the page carries on.
  events.onerror = () => status("lost", "Consumer not reachable: retrying…");
}

connect();
setInterval(agoText, 1000);
