// Thousands of unit markers per frame, written straight into the pixels of one ImageData and put on
// the canvas at once. Measured in headless Chromium without a GPU (software canvas), 5,000 markers:
// batched canvas paths cost 25-120 ms a frame depending on the shape (diamonds and circles worst),
// drawImage of a sprite ~8 us per call; copying pre-drawn sprite pixels costs ~10 ms whatever the
// shape, but putting a whole canvas of pixels has a fixed cost too: below a few hundred markers
// drawImage of the same sprites is cheaper (see `draw`). Each sprite is drawn once with the canvas API
// (antialiased) and kept both as a small canvas and as 32-bit pixels.

// Fewer markers than this are drawn one drawImage each; more are stamped into one ImageData.
const STAMP_FROM = 400;

import { traceShape } from "./unit-style.js";

export class MarkerStamp {
  constructor() {
    this.sprites = new Map();   // key -> {size, px: Uint32Array, opaque: Uint8Array}
    this.image = null;
    this.buf = null;
    this.w = 0;
    this.h = 0;
  }

  /**
   * Draw the markers of one frame on `ctx` (identity transform, device pixels): `stamps` is flat,
   * [sprite, x, y, ...] with (x, y) the device pixel of each marker's centre. Clears the canvas first.
   */
  draw(ctx, stamps, w, h) {
    if (stamps.length / 3 < STAMP_FROM) {
      ctx.clearRect(0, 0, w, h);
      for (let i = 0; i < stamps.length; i += 3) {
        const sp = stamps[i];
        ctx.drawImage(sp.canvas, Math.round(stamps[i + 1]) - (sp.size >> 1), Math.round(stamps[i + 2]) - (sp.size >> 1));
      }
      return;
    }
    this.begin(ctx, w, h);
    for (let i = 0; i < stamps.length; i += 3) this.stamp(stamps[i], stamps[i + 1], stamps[i + 2]);
    this.end(ctx);
  }

  /** Start a frame of `w` x `h` device pixels, all transparent. */
  begin(ctx, w, h) {
    if (!this.image || this.w !== w || this.h !== h) {
      this.image = ctx.createImageData(w, h);
      this.buf = new Uint32Array(this.image.data.buffer);
      this.w = w; this.h = h;
    } else {
      this.buf.fill(0);
    }
  }

  /**
   * One marker centred on device pixel (x, y). Where two markers overlap, an opaque pixel wins over
   * what is there; an edge pixel (partly transparent) only fills an empty one: exact blending would
   * cost more than the overlaps are worth.
   */
  stamp(sprite, x, y) {
    const { buf, w, h } = this;
    const half = sprite.size >> 1;
    const cx = Math.round(x), cy = Math.round(y);
    const { n, dx, dy, px, opaque } = sprite;
    if (cx - half >= 0 && cy - half >= 0 && cx + half < w && cy + half < h) {
      // Wholly inside (nearly always): only the sprite's visible pixels, by precomputed offsets.
      if (sprite.width !== w) { sprite.width = w; for (let k = 0; k < n; k++) sprite.offs[k] = dy[k] * w + dx[k]; }
      const offs = sprite.offs, base = cy * w + cx;
      for (let k = 0; k < n; k++) {
        const o = base + offs[k];
        if (opaque[k] || buf[o] === 0) buf[o] = px[k];
      }
      return;
    }
    for (let k = 0; k < n; k++) {
      const xx = cx + dx[k], yy = cy + dy[k];
      if (xx < 0 || yy < 0 || xx >= w || yy >= h) continue;
      const o = yy * w + xx;
      if (opaque[k] || buf[o] === 0) buf[o] = px[k];
    }
  }

  end(ctx) { ctx.putImageData(this.image, 0, 0); }

  /** The sprite for a shape in a colour, hollow when stale, radius `r` CSS px at pixel ratio `dpr`. */
  sprite(shape, colour, stale, r, dpr) {
    const key = `${shape}|${colour}|${stale ? 1 : 0}|${r}|${dpr}`;
    let sprite = this.sprites.get(key);
    if (!sprite) { sprite = drawSprite(shape, colour, stale, r, dpr); this.sprites.set(key, sprite); }
    return sprite;
  }
}

function drawSprite(shape, colour, stale, r, dpr) {
  const size = Math.ceil((2 * r + 6) * dpr) | 1;  // odd: a centre pixel
  const c = document.createElement("canvas");
  c.width = c.height = size;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.scale(dpr, dpr);
  ctx.beginPath();
  traceShape(ctx, shape, size / dpr / 2, size / dpr / 2, r);
  if (stale) {  // hollow and faded: the unit is probably not there any more
    ctx.fillStyle = "rgba(20,26,34,0.85)"; ctx.fill();
    ctx.globalAlpha = 0.75; ctx.strokeStyle = colour; ctx.lineWidth = 1.5; ctx.stroke();
  } else {
    ctx.fillStyle = colour; ctx.fill();
    ctx.strokeStyle = "#0b0f14"; ctx.lineWidth = 1; ctx.stroke();
  }
  // Keep only the visible pixels, as offsets from the centre.
  const data = ctx.getImageData(0, 0, size, size).data;
  const all = new Uint32Array(data.buffer);
  const half = size >> 1;
  const dx = [], dy = [], px = [], opaque = [];
  for (let i = 0; i < all.length; i++) {
    if (all[i] === 0) continue;
    dx.push((i % size) - half); dy.push(Math.floor(i / size) - half);
    px.push(all[i]); opaque.push(data[i * 4 + 3] >= 250 ? 1 : 0);
  }
  const n = px.length;
  return { canvas: c, size, n, dx: Int16Array.from(dx), dy: Int16Array.from(dy), px: Uint32Array.from(px),
    opaque: Uint8Array.from(opaque), offs: new Int32Array(n), width: 0 };
}
