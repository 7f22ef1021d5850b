// Whole-frame evidence (issue 15): zooming in centres the first failed box (else the first box).
document.addEventListener("change", (e) => {
  const cb = e.target;
  if (!cb.matches || !cb.matches("#evidence .ev-zoom") || !cb.checked) return;
  const frame = cb.nextElementSibling;
  const box = frame.querySelector("rect.failed") || frame.querySelector("rect");
  if (!box) return;
  const f = frame.getBoundingClientRect();
  const b = box.getBoundingClientRect();
  frame.scrollLeft += b.left + b.width / 2 - (f.left + f.width / 2);
  frame.scrollTop += b.top + b.height / 2 - (f.top + f.height / 2);
});
