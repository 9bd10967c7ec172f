"""What the demo page runs in the browser: its CSS and two page scripts (click capture, button names)."""

from __future__ import annotations

CSS = ("#usam-overlay img { cursor: crosshair; } .usam-small, .usam-small p { font-size: 0.8em !important; } "
       "#usam-clicks { display: none !important; }")

#: Page script (``Blocks.load(js=...)``): the page's own click capture on the image. Gradio's ``select`` event
#: on an image is lost whenever the image is being replaced (it maps the click with the new image's size, 0
#: until it has loaded: every click made while a result arrives was dropped). Here each click on the image
#: keeps its position and the click mode at once, waits (in order) until the image has loaded, is mapped to
#: a pixel as Gradio maps it (``object-fit``, never enlarged), numbered and added to the list the hidden
#: ``#usam-clicks`` box sends on each change (always the latest list, so a send coalesced with another loses
#: nothing; the server records the numbers it has not seen).
CLICKS_JS = """() => {
  if (window.usamClicks) return;
  const st = window.usamClicks = {seq: 0, sent: [], chain: Promise.resolve()};
  const image = () => document.querySelector('#usam-overlay img');
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const loaded = async () => {
    for (let i = 0; i < 1500; i++) {
      const im = image();
      if (im && im.complete && im.naturalWidth > 0) return im;
      await sleep(20);
    }
    return null;
  };
  const send = () => {
    const box = document.querySelector('#usam-clicks textarea, #usam-clicks input');
    if (!box) return;
    box.value = JSON.stringify(st.sent.slice(-200));
    box.dispatchEvent(new Event('input', {bubbles: true}));
  };
  document.addEventListener('click', ev => {
    const t = ev.target;
    if (!(t instanceof Element) || !t.closest('#usam-overlay')) return;
    const im = image();
    if (!im || (t !== im && !t.contains(im))) return;  // the image (or its wrapper), not a toolbar button
    const r = im.getBoundingClientRect();
    const at = {dx: ev.clientX - r.left, dy: ev.clientY - r.top, w: r.width, h: r.height,
                mode: (document.querySelector('#usam-mode input:checked') || {}).value || null};
    st.chain = st.chain.then(async () => {
      const cur = await loaded();
      if (!cur) return;
      const nw = cur.naturalWidth, nh = cur.naturalHeight, s = Math.min(at.w / nw, at.h / nh, 1);
      const x = Math.round((at.dx - (at.w - nw * s) / 2) / s), y = Math.round((at.dy - (at.h - nh * s) / 2) / s);
      if (x < 0 || y < 0 || x >= nw || y >= nh) return;  // beside the picture (letterbox)
      st.sent.push([++st.seq, x, y, at.mode]);
      send();
    }).catch(() => {});
  }, true);
}"""

#: Page script (``launch(js=...)``): give every button an accessible name. Gradio's clickable images are
#: ``<button>`` elements with neither text nor label; they get one here (and again whenever the page changes).
A11Y_JS = """() => {
  const names = {
    "usam-overlay": "Image: click to place a prompt (keyboard: type X and Y below it and press an Add button)",
    "usam-auto": "Adapter's automatic segmentation image",
    "usam-api-mask": "Mask returned by the API",
  };
  const label = () => {
    for (const b of document.querySelectorAll("button:not([aria-label])")) {
      if ((b.innerText || "").trim() || b.title || b.getAttribute("aria-labelledby")) continue;
      const host = b.closest("[id^='usam-']");
      const img = b.querySelector("img");
      b.setAttribute("aria-label", (host && names[host.id]) || (img && img.alt) || (host ? host.id.slice(5) : "button"));
    }
  };
  label();
  new MutationObserver(label).observe(document.body, {childList: true, subtree: true});
}"""
