"""The style sheet and the one script of `recipe report`'s page, inlined into it: the page
fetches nothing.

The script is written for this page (no library): the graph pans (drag) and zooms (wheel,
buttons) by changing its SVG's viewBox, and starts at a scale where its labels are readable;
a figure opens full size in an overlay on click (Escape or a click closes it).
"""

CSS = """
body{font-family:system-ui,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}h3 small{color:#777;font-weight:normal}
.legend span{display:inline-block;padding:.1em .6em;margin-right:.4em;border-radius:4px;border:1px solid #aaa}
.graph{position:relative;height:70vh;overflow:hidden;border:1px solid #ddd;border-radius:4px;cursor:grab;
touch-action:none;user-select:none}.graph svg{display:block;width:100%;height:100%}
.graph .zoom{position:absolute;top:.4em;right:.4em;display:flex;gap:.3em}.graph .zoom button{min-width:2.2em}
.hint{color:#777;font-size:.85em}section{border-top:1px solid #ddd;padding-top:.5em}
.summary{margin-bottom:1.5em}.summary h2,.summary h3{font-size:1.1em;margin:.3em 0}
.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:1em}figure{margin:0}
figure img{width:100%;height:200px;object-fit:contain;border:1px solid #ddd;cursor:zoom-in}
figcaption{font-size:.8em;color:#666}table{border-collapse:collapse;font-size:.9em;margin:.3em 0}
caption{text-align:left;font-weight:600;font-size:.9em;padding:.2em 0}
td,th{border:1px solid #ddd;padding:.2em .6em;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.metrics{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}.metrics table{display:block;max-width:100%;
overflow-x:auto}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto}pre.error{background:#fdeaea}.outputs,.facts{font-size:.9em}
.lightbox{position:fixed;inset:0;background:rgba(0,0,0,.75);display:flex;overflow:auto;z-index:10;cursor:zoom-out}
.lightbox[hidden]{display:none}.lightbox img{margin:auto;max-width:none;background:#fff}
"""

SCRIPT = """
(() => {
  const READABLE = 1.0, MOST = 1.5;  // px per graph unit: labels of 11 units are 11 px or more
  for (const box of document.querySelectorAll('.graph')) {
    const svg = box.querySelector('svg');
    if (!svg || !svg.viewBox || !svg.viewBox.baseVal) continue;
    const all = svg.viewBox.baseVal, X = all.x, Y = all.y, W = all.width, H = all.height;
    svg.removeAttribute('width'); svg.removeAttribute('height');
    const v = {x: X, y: Y, w: W, h: H};
    const show = () => svg.setAttribute('viewBox', `${v.x} ${v.y} ${v.w} ${v.h}`);
    const scale = () => box.clientWidth / v.w;
    const place = (s, x, y) => { v.w = box.clientWidth / s; v.h = box.clientHeight / s; v.x = x; v.y = y; show(); };
    const fit = () => {
      const s = Math.min(box.clientWidth / W, box.clientHeight / H, MOST);
      place(s, X - (box.clientWidth / s - W) / 2, Y - (box.clientHeight / s - H) / 2);
    };
    const zoomAt = (k, cx, cy) => {  // k > 1 zooms in; the point under (cx, cy) stays put
      const r = box.getBoundingClientRect(), s = scale(), t = Math.min(Math.max(s * k, 0.05), 8);
      const gx = v.x + (cx - r.left) / s, gy = v.y + (cy - r.top) / s;
      place(t, gx - (cx - r.left) / t, gy - (cy - r.top) / t);
    };
    // start readable: the whole graph if it fits at READABLE, else its top, centred
    const s0 = Math.min(Math.max(box.clientWidth / W, READABLE), MOST);
    box.style.height = Math.min(H * s0 + 16, innerHeight * 0.8) + 'px';
    const tall = H * s0 > box.clientHeight;
    place(s0, X - (box.clientWidth / s0 - W) / 2, tall ? Y : Y - (box.clientHeight / s0 - H) / 2);
    box.addEventListener('wheel', e => {
      e.preventDefault();
      const dy = e.deltaY * (e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? 400 : 1);
      zoomAt(Math.exp(-dy / 400), e.clientX, e.clientY);
    }, {passive: false});
    let drag = null;
    box.addEventListener('pointerdown', e => {
      if (e.button !== 0 || e.target.closest('button')) return;
      drag = {x: e.clientX, y: e.clientY, vx: v.x, vy: v.y, moved: false};
    });
    box.addEventListener('pointermove', e => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (!drag.moved && Math.hypot(dx, dy) < 4) return;
      if (!drag.moved) { drag.moved = true; box.setPointerCapture(e.pointerId); box.style.cursor = 'grabbing'; }
      const s = scale();
      place(s, drag.vx - dx / s, drag.vy - dy / s);
    });
    const end = () => { if (drag && drag.moved) box.dataset.dragged = '1'; drag = null; box.style.cursor = ''; };
    box.addEventListener('pointerup', end);
    box.addEventListener('pointercancel', end);
    box.addEventListener('click', e => {  // a drag that ends on a node does not follow its link
      if (box.dataset.dragged) { e.preventDefault(); e.stopPropagation(); delete box.dataset.dragged; }
    }, true);
    box.querySelector('.zoom').addEventListener('click', e => {
      const b = e.target.closest('button'), r = box.getBoundingClientRect();
      if (!b) return;
      if (b.value === 'fit') fit();
      else zoomAt(b.value === 'in' ? 1.25 : 0.8, r.left + r.width / 2, r.top + r.height / 2);
    });
  }
  const over = document.createElement('div');
  over.className = 'lightbox'; over.hidden = true;
  over.addEventListener('click', () => { over.hidden = true; });
  document.addEventListener('keydown', e => { if (e.key === 'Escape') over.hidden = true; });
  document.body.append(over);
  for (const img of document.querySelectorAll('figure img')) {
    img.addEventListener('click', () => {
      const big = document.createElement('img');
      big.src = img.getAttribute('src'); big.alt = img.alt;
      over.replaceChildren(big); over.hidden = false;
    });
  }
})();
"""
