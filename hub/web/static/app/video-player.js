// A WHEP player (draft-ietf-wish-whep) for one live stream: a receive-only RTCPeerConnection, its
// complete offer POSTed to /whep/{stream_id} with the page's bearer token, the 201's SDP answer applied,
// and the session's `Location` kept so that closing the player DELETEs it on the hub.
//
// The offer goes out only once ICE gathering is complete: the hub (aiortc) does not trickle its own
// candidates, and one request with every candidate is simpler than PATCHing fragments after it.

import { t } from "./i18n.js";
import { getToken } from "./session.js";

const GATHER_TIMEOUT_MS = 3000;  // host candidates on a LAN take milliseconds; then send what there is
const CONNECT_TIMEOUT_MS = 15000;

/** A refusal by the hub (the JSON error's code and message) or a failure on the way. */
export class WhepError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * new WhepPlayer(streamId, videoElement, {onState}) — `onState(state, detail)` hears
 * "connecting" | "playing" | "stalled" (ICE disconnected; it may come back) | "failed" | "closed".
 */
export class WhepPlayer {
  constructor(streamId, video, { onState = () => {} } = {}) {
    this.streamId = streamId;
    this.video = video;
    this.onState = onState;
    this.pc = null;
    this.session = null;     // the WHEP session URL (Location), once the hub created it
    this.state = "idle";
    this.closed = false;
    this.connectTimer = null;
  }

  /** Offer, answer, and wait for nothing more: frames arrive on the <video> element. Throws WhepError. */
  async start() {
    this.setState("connecting");
    const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle" });
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (ev) => {
      this.video.srcObject = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
    };
    pc.onconnectionstatechange = () => this.connectionChanged();
    this.video.addEventListener("playing", () => { if (!this.closed) this.setState("playing"); });
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await iceGathered(pc, GATHER_TIMEOUT_MS);
    } catch (exc) {
      throw new WhepError(0, "webrtc", exc.message || String(exc));
    }
    if (this.closed) return;
    const url = `/whep/${encodeURIComponent(this.streamId)}`;
    let resp;
    try {
      resp = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${getToken() || ""}` },
        body: pc.localDescription.sdp,
      });
    } catch (exc) {
      throw new WhepError(0, "network", t("error.network", { m: exc.message }));
    }
    if (resp.status !== 201) throw await refusal(resp);
    const where = resp.headers.get("Location");
    this.session = where ? new URL(where, new URL(url, location.href)).pathname : null;
    const answer = await resp.text();
    if (this.closed) { this.endSession(); return; }  // closed while the hub was answering
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
    } catch (exc) {
      this.endSession();
      throw new WhepError(0, "bad_answer", exc.message || String(exc));
    }
    this.connectTimer = setTimeout(() => {
      if (this.state === "connecting" && !this.closed) this.setState("failed", t("video.noMedia"));
    }, CONNECT_TIMEOUT_MS);
  }

  connectionChanged() {
    if (this.closed || !this.pc) return;
    const s = this.pc.connectionState;
    if (s === "failed") this.setState("failed", t("video.connFailed"));
    else if (s === "closed") this.setState("closed");
    else if (s === "disconnected") this.setState("stalled");
    else if (s === "connected" && this.state === "stalled") this.setState("playing");
  }

  setState(state, detail = "") {
    this.state = state;
    if (state !== "connecting") clearTimeout(this.connectTimer);
    this.onState(state, detail);
  }

  /**
   * Close the peer connection; `release` DELETEs the WHEP session too. Not after the stream ended: the
   * hub ended its viewers with it, and a DELETE would only earn a 404 (logged by the browser as an error).
   */
  close({ release = true } = {}) {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.connectTimer);
    // DELETE first, then close: a closed connection makes the hub drop the viewer at once, and a DELETE
    // arriving after that would get a 404.
    const pc = this.pc;
    const closePc = () => { if (pc) pc.close(); };
    if (release) this.endSession().then(closePc); else closePc();
    this.session = null;
    this.video.srcObject = null;
  }

  endSession() {
    const session = this.session;
    if (!session) return Promise.resolve();
    this.session = null;
    return fetch(session, { method: "DELETE", headers: { Authorization: `Bearer ${getToken() || ""}` },
                            keepalive: true })
      .catch(() => { /* the hub drops the session anyway once ICE consent lapses */ });
  }

  /** Frames decoded and their size, from the receiver's inbound-rtp statistics. */
  async stats() {
    const out = { framesDecoded: 0, framesDropped: 0, frameWidth: 0, frameHeight: 0, bytesReceived: 0 };
    if (!this.pc || this.closed) return out;
    const report = await this.pc.getStats();
    report.forEach((s) => {
      if (s.type !== "inbound-rtp" || s.kind !== "video") return;
      out.framesDecoded = s.framesDecoded || 0;
      out.framesDropped = s.framesDropped || 0;
      out.frameWidth = s.frameWidth || 0;
      out.frameHeight = s.frameHeight || 0;
      out.bytesReceived = s.bytesReceived || 0;
    });
    return out;
  }
}

/** Resolves when the connection has gathered every candidate, or after `timeoutMs` with what it has. */
function iceGathered(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/** The hub's JSON error (`{"error": {"code", "message"}}`) as a WhepError; a bare status otherwise. */
async function refusal(resp) {
  const data = await resp.json().catch(() => null);
  const e = data && data.error ? data.error : { code: `http_${resp.status}`, message: resp.statusText || `HTTP ${resp.status}` };
  return new WhepError(resp.status, e.code, e.message || e.code);
}
