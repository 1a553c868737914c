"""The page's own style and script: the status box, the cue editor, the captions drawn above the player, and
the job's address in the URL. Plain text served with the page (`app.py` gives them to Gradio).
"""

CSS = """
#title h1 { font-size: 1.6em; margin: 0; display: inline; } #title p { display: inline; margin-left: 12px; }
#status .progress { padding: 10px 12px; border: 1px solid var(--border-color-primary); border-radius: 8px; }
#status .progress-title { font-weight: 600; margin-bottom: 6px; }
#status .progress-track { height: 10px; border-radius: 5px; background: var(--neutral-200); overflow: hidden; }
#status .progress-bar { height: 100%; background: var(--color-accent); transition: width 0.4s ease; }
#status .progress-text { margin-top: 6px; font-size: 0.95em; }
#status .message { padding: 10px 12px; border-radius: 8px; border-left: 5px solid; white-space: pre-line; }
#status .message.done { border-color: #2e9e4f; background: rgba(46, 158, 79, 0.08); }
#status .message.error { border-color: #d03030; background: rgba(208, 48, 48, 0.08); }
#status .message.cancelled, #status .message.note, #status .message.batch {
    border-color: #8a8a8a; background: rgba(128, 128, 128, 0.08); }
#status ul { margin: 6px 0 0 18px; }
#status .hint { padding: 10px 12px; color: var(--body-text-color-subdued); }
#status li.error { color: #b02020; }
.recent ul { margin: 4px 0 0 18px; } .recent .when, .recent .state { color: var(--body-text-color-subdued); }
.captions { position: absolute; left: 4%; right: 4%; bottom: 72px; text-align: center; pointer-events: none;
    font-size: clamp(14px, 2.6vw, 24px); line-height: 1.35; z-index: 5; }
.captions.below { position: static; margin: 8px 0 0; font-size: 18px; }
.captions .line { display: inline; padding: 2px 8px; background: rgba(0, 0, 0, 0.78); color: #fff;
    box-decoration-break: clone; -webkit-box-decoration-break: clone; }
.captions .future { color: #9c9c9c; }
#cues .cue-head { margin: 4px 0 6px; color: var(--body-text-color-subdued); }
#cues .cue-list { max-height: 460px; overflow-y: auto; border: 1px solid var(--border-color-primary);
    border-radius: 8px; }
#cues .cue { display: grid; grid-template-columns: 15em 1fr; gap: 2px 10px; padding: 6px 8px;
    border-bottom: 1px solid var(--border-color-primary); cursor: pointer; }
#cues .cue.speaking { background: rgba(255, 200, 60, 0.18); }
#cues .cue.flagged { border-left: 4px solid #e08a00; }
#cues .times input { width: 6.8em; font-family: monospace; font-size: 0.9em; padding: 1px 3px; }
#cues .times span { font-family: monospace; font-size: 0.9em; }
#cues .text { min-height: 1.4em; white-space: pre-wrap; outline: none; cursor: text; }
#cues .text[contenteditable="true"]:focus { background: rgba(128, 128, 128, 0.08); }
#cues mark.unsure { background: rgba(255, 170, 0, 0.35); border-bottom: 2px dotted #c07000; color: inherit; }
#cues .flags { grid-column: 2; color: #b06000; font-size: 0.85em; }
#cues .tools { grid-column: 2; display: flex; gap: 6px; }
#cues .times button { border: none; background: none; cursor: pointer; padding: 0 4px 0 0; }
#cues .tools button { font-size: 0.8em; padding: 0 6px; border: 1px solid var(--border-color-primary);
    border-radius: 4px; background: var(--background-fill-secondary); }
@media (max-width: 600px) { #cues .cue { grid-template-columns: 1fr; } #cues .flags, #cues .tools { grid-column: 1; } }
"""

# Runs once in the page: the job's address in the URL, and captions drawn by the page itself, above the
# player's controls, each word lit as it is spoken where the track times words (Chromium shows WebVTT's
# inline timestamps as words that appear, and lets no page dim the words not yet spoken).
HEAD = """<script>
window.whisperForSubs = (() => {
  const stamp = /<(\\d\\d):(\\d\\d):(\\d\\d\\.\\d\\d\\d)>/g;
  const decode = (text) => { const box = document.createElement('textarea'); box.innerHTML = text; return box.value; };
  const escape = (text) => text.replace(/[&<>"]/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'})[c]);
  function cueHtml(cue, now) {
    const pieces = [];
    let at = cue.startTime, last = 0, found;
    stamp.lastIndex = 0;
    while ((found = stamp.exec(cue.text)) !== null) {
      pieces.push([at, cue.text.slice(last, found.index)]);
      at = (+found[1]) * 3600 + (+found[2]) * 60 + parseFloat(found[3]);
      last = stamp.lastIndex;
    }
    pieces.push([at, cue.text.slice(last)]);
    const words = pieces.map(([from, text]) =>
      `<span class="${now >= from ? 'spoken' : 'future'}">${escape(decode(text)).replace(/\\n/g, '<br>')}</span>`);
    return `<span class="line">${words.join('')}</span>`;
  }
  function draw(media, box) {
    const track = media.textTracks && media.textTracks[0];
    if (!track) { box.innerHTML = ''; return; }
    if (track.mode !== 'hidden') track.mode = 'hidden';
    const now = media.currentTime;
    box.innerHTML = [...(track.activeCues || [])].map((cue) => cueHtml(cue, now)).join('<br>');
  }
  function attach(media, below) {
    if (media.dataset.captions) return;
    media.dataset.captions = '1';
    const box = document.createElement('div');
    box.className = below ? 'captions below' : 'captions';
    box.setAttribute('aria-live', 'off');
    (below ? media.closest('#audio') : media.parentElement).append(box);
    const tick = () => { draw(media, box); if (!media.paused) requestAnimationFrame(tick); };
    ['play', 'seeked', 'timeupdate', 'loadeddata'].forEach((name) => media.addEventListener(name, tick));
    media.textTracks.addEventListener('addtrack', tick);
    tick();
  }
  setInterval(() => {
    document.querySelectorAll('#video video').forEach((media) => attach(media, false));
    document.querySelectorAll('#audio audio').forEach((media) => attach(media, true));
  }, 300);
  // The cue editor (#cues): times and text edited in place, tools on each cue, the cue being spoken marked,
  // a click on a cue playing it; Save sends what the editor holds (edits()).
  const media = () => document.querySelector('#video video') || document.querySelector('#audio audio');
  const seconds = (text) => {
    const parts = String(text).trim().split(':').map(Number);
    return parts.reduce((total, part) => total * 60 + part, 0);
  };
  const clock = (value) => {
    const millis = Math.max(0, Math.round(value * 1000));
    const hours = Math.floor(millis / 3600000), minutes = Math.floor(millis / 60000) % 60;
    const rest = ((millis % 60000) / 1000).toFixed(3).padStart(6, '0');
    return (hours ? hours + ':' : '') + String(minutes).padStart(2, '0') + ':' + rest;
  };
  const textOf = (row) => row.querySelector('.text').innerText.replace(/\\n+$/, '');
  const timesOf = (row) => [seconds(row.querySelector('.start').value), seconds(row.querySelector('.end').value)];
  function setCue(row, start, end, text) {
    row.querySelector('.start').value = clock(start);
    row.querySelector('.end').value = clock(end);
    row.querySelector('.text').textContent = text;
    row.querySelector('.flags')?.remove();
    row.classList.remove('flagged');
  }
  function cursorIn(textBox) {
    const selection = window.getSelection();
    if (!selection.rangeCount || !textBox.contains(selection.anchorNode)) return null;
    const before = document.createRange();
    before.selectNodeContents(textBox);
    before.setEnd(selection.anchorNode, selection.anchorOffset);
    return before.toString().length;
  }
  let cursor = null;  // where the cursor was in a cue's text when a tool's button took the focus
  document.addEventListener('selectionchange', () => {
    const focused = document.activeElement;
    const box = focused && focused.closest && focused.closest('#cues .text');
    if (box) cursor = {box, at: cursorIn(box)};
  });
  const tools = {
    split(row) {
      const box = row.querySelector('.text'), text = box.textContent;
      const at = cursor && cursor.box === box ? cursor.at : Math.floor(text.length / 2);
      const [start, end] = timesOf(row), middle = start + (end - start) * at / Math.max(text.length, 1);
      const after = row.cloneNode(true);
      setCue(row, start, middle, text.slice(0, at).trim());
      setCue(after, middle, end, text.slice(at).trim());
      row.after(after);
    },
    merge(row) {
      const next = row.nextElementSibling;
      if (!next) return;
      setCue(row, timesOf(row)[0], timesOf(next)[1], (textOf(row) + ' ' + textOf(next)).trim());
      next.remove();
    },
    insert(row) {
      const next = row.nextElementSibling, end = timesOf(row)[1];
      const room = next ? timesOf(next)[0] - 0.08 : end + 2.08;
      const added = row.cloneNode(true);
      setCue(added, end + 0.08, Math.max(Math.min(room, end + 2.08), end + 0.1), '');
      row.after(added);
      added.querySelector('.text').focus();
    },
    delete(row) { row.remove(); },
    play(row) {
      const player = media();
      if (!player) return;
      player.currentTime = Number(row.dataset.start);
      player.play().catch(() => {});
    },
  };
  document.addEventListener('click', (event) => {
    const row = event.target.closest('#cues .cue');
    if (!row) return;
    const tool = event.target.closest('[data-do]');
    if (tool) { event.preventDefault(); tools[tool.dataset.do](row); return; }
    if (event.target.closest('input, .text[contenteditable="true"]')) return;
    tools.play(row);
  });
  document.addEventListener('mousedown', (event) => {  // a tool's button keeps the cursor where it was
    if (event.target.closest('#cues [data-do]')) event.preventDefault();
  });
  setInterval(() => {
    const player = media();
    if (!player) return;
    const now = player.currentTime;
    document.querySelectorAll('#cues .cue').forEach((row) => {
      row.classList.toggle('speaking', Number(row.dataset.start) <= now && now < Number(row.dataset.end));
    });
  }, 200);
  return {
    edits() {
      return [...document.querySelectorAll('#cues .cue')].map((row) => ({
        start: row.querySelector('.start').value, end: row.querySelector('.end').value, text: textOf(row),
      }));
    },
    showJob(id) {
      const url = new URL(window.location.href);
      if (id) url.searchParams.set('job', id); else url.searchParams.delete('job');
      window.history.replaceState(null, '', url);
    },
  };
})();
</script>"""
