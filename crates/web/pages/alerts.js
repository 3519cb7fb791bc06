// The agent inbox's alerts while its tab is hidden: desktop notifications
// (the Notification API; the permission is asked from the button, never on
// load) and a short sound, each switched on by the agent and remembered.
const NOTIFY_KEY = "petchat.inbox.notify";
const SOUND_KEY = "petchat.inbox.sound";

const permission = () => ("Notification" in window ? Notification.permission : "unsupported");

/**
 * Wires the notifications `button` and the `sound` checkbox; returns
 * `alert(title, body, tag)`, which does nothing while the tab is visible.
 * `onOpen(tag)` runs when the agent clicks a notification.
 */
export function alerts({ button, sound, onOpen }) {
  // Granted before (this browser, this site): on, unless the agent turned them off.
  let on = permission() === "granted" && localStorage.getItem(NOTIFY_KEY) !== "off";
  let audio = null;

  function render() {
    const p = permission();
    button.setAttribute("aria-pressed", String(on));
    button.textContent = p === "unsupported" ? "Desktop notifications: not supported"
      : p === "denied" ? "Desktop notifications: blocked"
        : `Desktop notifications: ${on ? "on" : "off"}`;
    button.disabled = p === "unsupported" || p === "denied";
  }
  button.addEventListener("click", async () => {
    if (permission() === "default") on = (await Notification.requestPermission()) === "granted";
    else on = permission() === "granted" && !on;
    localStorage.setItem(NOTIFY_KEY, on ? "on" : "off");
    render();
  });
  render();

  sound.checked = localStorage.getItem(SOUND_KEY) === "on";
  sound.addEventListener("change", () => {
    localStorage.setItem(SOUND_KEY, sound.checked ? "on" : "off");
    // Made from the click, so that the browser lets it play later.
    if (sound.checked) beep();
  });
  function beep() {
    try {
      audio ??= new AudioContext();
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = 880;
      gain.gain.setValueAtTime(0.15, audio.currentTime);
      gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.3);
      osc.connect(gain).connect(audio.destination);
      osc.start();
      osc.stop(audio.currentTime + 0.3);
    } catch {
      // No audio output: the desktop notification still tells.
    }
  }

  return function alert(title, body, tag) {
    if (document.visibilityState !== "hidden") return;
    if (sound.checked) beep();
    if (!on || permission() !== "granted") return;
    try {
      const note = new Notification(title, { body: body.slice(0, 200), tag });
      note.onclick = () => { window.focus(); onOpen(tag); note.close?.(); };
    } catch (e) {
      console.warn("notification", e);
    }
  };
}
