// The page's frame clock: one requestAnimationFrame loop for the whole page. It measures the frame
// rate the user actually gets (stats.fps over the last 2 s: a main thread busy parsing or drawing
// shows up here) and runs the per-frame work (the unit canvas) inside those frames.

const WINDOW_MS = 2000;

export function startFrameLoop(stats) {
  const callbacks = [];
  const times = [];
  let drawsInWindow = [];
  let started = null;

  function frame(now) {
    if (started === null) started = now;
    times.push(now);
    while (times[0] < now - WINDOW_MS) times.shift();
    for (const fn of callbacks) {
      try {
        if (fn(now)) drawsInWindow.push(now);
      } catch (exc) {
        console.error("fieldhub: frame callback failed", exc);
      }
    }
    while (drawsInWindow.length && drawsInWindow[0] < now - WINDOW_MS) drawsInWindow.shift();
    // Over the last 2 s, or over the page's life while it is younger than that.
    const span = Math.min(WINDOW_MS, Math.max(now - started, 1)) / 1000;
    stats.fps = Math.round((times.length / span) * 10) / 10;
    stats.drawsPerSecond = Math.round((drawsInWindow.length / span) * 10) / 10;
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);

  /** `fn(now)` runs every frame; it returns true when it drew something (counted in drawsPerSecond). */
  return { add: (fn) => callbacks.push(fn) };
}
