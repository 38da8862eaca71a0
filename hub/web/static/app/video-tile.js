// One video tile: a live stream's <video> with its title (unit, device), age, state and a close button.
// The tile owns its WHEP player; when the stream ends it stays a moment with a note, then goes.

import { formatDuration, serverNow } from "./clock.js";
import { el } from "./dom.js";
import { t } from "./i18n.js";
import * as store from "./store.js";
import { WhepPlayer } from "./video-player.js";

const ENDED_LINGER_MS = 4000;  // long enough to read "stream ended" before the tile goes

export class VideoTile {
  /** `place`: "dock" (a floating tile) or "wall" (an incident's video wall); `onGone(tile)` once removed. */
  constructor(stream, place, { onGone }) {
    this.stream = stream;
    this.streamId = stream.stream_id;
    this.place = place;
    this.onGone = onGone;
    this.state = "connecting";
    this.gone = false;
    this.lingerTimer = null;
    this.video = el("video", { muted: true, autoplay: true, playsinline: true, dataset: { testid: "video-el" } });
    this.video.muted = true;  // the attribute alone does not mute; autoplay needs it muted
    this.title = el("span", { class: "video-title", dataset: { testid: "video-tile-title" } });
    this.age = el("span", { class: "video-age", dataset: { testid: "video-tile-age" } });
    this.note = el("div", { class: "video-note", dataset: { testid: "video-tile-note" } });
    this.node = el("figure", { class: "video-tile", dataset: { testid: "video-tile", streamId: this.streamId, place,
      state: this.state } },
      el("figcaption", { class: "video-head" },
        el("i", { class: "live-dot" }), this.title, this.age,
        el("button", { class: "icon-btn", type: "button", title: t("video.close"), dataset: { testid: "video-tile-close" },
          onclick: () => this.close() }, "×")),
      el("div", { class: "video-frame" }, this.video, this.note));
    this.player = new WhepPlayer(this.streamId, this.video, { onState: (s, detail) => this.playerState(s, detail) });
    this.render();
  }

  /** Start watching; a refusal by the hub shows its message in the tile. */
  async open() {
    this.setNote(t("video.connecting"));
    try {
      await this.player.start();
    } catch (err) {
      if (this.gone || this.state === "ended") return;
      this.setState("error", t("video.refused", { m: err.message }));
      this.player.close({ release: false });
    }
  }

  playerState(state, detail) {
    if (this.gone || this.state === "ended") return;
    if (state === "playing") this.setState("playing", "");
    else if (state === "stalled") this.setState("stalled", t("video.stalled"));
    else if (state === "failed") this.setState("error", detail || t("video.connFailed"));
    else if (state === "closed") this.setState("error", t("video.connClosed"));
  }

  setState(state, note) {
    this.state = state;
    this.node.dataset.state = state;
    this.setNote(note);
  }

  setNote(text) {
    this.note.textContent = text || "";
    this.note.hidden = !text;
  }

  /** The stream is over (the feed said so, or it is gone from a fresh snapshot): say so, then go. */
  ended() {
    if (this.gone || this.state === "ended") return;
    this.player.close({ release: false });  // the hub ended its viewers with the stream
    this.setState("ended", t("video.ended"));
    this.lingerTimer = setTimeout(() => this.remove(), ENDED_LINGER_MS);
  }

  /** Closed by the user (or with the wall): the hub's session is released. */
  close() {
    this.player.close({ release: this.state !== "ended" && this.state !== "error" });
    this.remove();
  }

  remove() {
    if (this.gone) return;
    this.gone = true;
    clearTimeout(this.lingerTimer);
    this.player.close({ release: false });
    this.node.remove();
    this.onGone(this);
  }

  /** Title and age; called on changes and once a second. */
  render() {
    const s = store.streams.get(this.streamId) || this.stream;
    this.stream = s;
    const unit = s.unit_id ? store.units.get(s.unit_id) : null;
    const who = unit ? unit.name || s.unit_id : s.unit_id || s.device_id;
    this.title.textContent = `${who || "?"} · ${s.device_id || "?"}`;
    this.title.title = [s.unit_id, s.device_id, s.incident_id, s.codec].filter(Boolean).join(" · ");
    this.age.textContent = s.started_at ? t("video.age", { d: formatDuration(serverNow() - s.started_at) }) : "";
  }

  async stats() {
    const base = { stream_id: this.streamId, place: this.place, state: this.state };
    try {
      return { ...base, ...(await this.player.stats()) };
    } catch {
      return { ...base, framesDecoded: 0, frameWidth: 0, frameHeight: 0 };
    }
  }
}
