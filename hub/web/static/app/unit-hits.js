// Where each unit was drawn in the last frame, to find the one under a click or the pointer.
// A linear scan: 5,000 comparisons take well under a millisecond, once per click or pointer move;
// a grid would only pay off for far more units than a city has.

const HIT_RADIUS_PX = 10;

export class UnitHits {
  constructor() {
    this.n = 0;
    this.ids = [];
    this.xs = new Float32Array(1024);
    this.ys = new Float32Array(1024);
  }

  clear() { this.n = 0; }

  add(id, x, y) {
    if (this.n === this.xs.length) {
      const xs = new Float32Array(this.n * 2), ys = new Float32Array(this.n * 2);
      xs.set(this.xs); ys.set(this.ys);
      this.xs = xs; this.ys = ys;
    }
    this.ids[this.n] = id; this.xs[this.n] = x; this.ys[this.n] = y;
    this.n += 1;
  }

  /** The id drawn nearest to container point (x, y) within HIT_RADIUS_PX, or null. */
  nearest(x, y) {
    let best = null, bestD = HIT_RADIUS_PX * HIT_RADIUS_PX;
    for (let i = 0; i < this.n; i++) {
      const dx = this.xs[i] - x, dy = this.ys[i] - y;
      const d = dx * dx + dy * dy;
      if (d <= bestD) { bestD = d; best = this.ids[i]; }
    }
    return best;
  }
}
