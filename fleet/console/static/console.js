// Tender console: live parts of a page. An element with data-live="URL"
// is refreshed from URL (a fragment of the page, rendered by the server)
// every data-every milliseconds while the tab is visible. Nothing else:
// pages work without it.
(function () {
  'use strict';
  function live(el) {
    var url = el.getAttribute('data-live');
    var every = parseInt(el.getAttribute('data-every'), 10) || 5000;
    var busy = false;
    function tick() {
      if (busy || document.hidden) { return; }
      // Keep the keyboard focus where it is: no swap under it.
      if (el.contains(document.activeElement) && document.activeElement !== document.body) { return; }
      busy = true;
      fetch(url, { credentials: 'same-origin', cache: 'no-store' }).then(function (r) {
        if (r.status === 401) { window.location.assign('/ui/login'); return null; }
        return r.ok ? r.text() : null;
      }).then(function (html) {
        if (html !== null && html !== undefined) {
          el.innerHTML = html;
          el.setAttribute('data-updated', String(Date.now()));
          stale(el);
        }
      }).catch(function () {}).then(function () { busy = false; });
    }
    window.setInterval(tick, every);
  }
  // A live part that says a newer revision exists than the page was
  // rendered with (data-latest) gets a notice: the rest of the page (the
  // revision table) is as it was.
  function stale(el) {
    var want = el.getAttribute('data-latest');
    var got = el.querySelector('[data-latest]');
    if (!want || !got || got.getAttribute('data-latest') === want || document.getElementById('stale-note')) { return; }
    var p = document.createElement('p');
    p.id = 'stale-note';
    p.className = 'msg';
    p.setAttribute('role', 'status');
    p.appendChild(document.createTextNode('A new revision was applied since this page was loaded. '));
    var a = document.createElement('a');
    a.href = window.location.pathname + window.location.search;
    a.textContent = 'Reload';
    p.appendChild(a);
    p.appendChild(document.createTextNode(' to see it in the revisions.'));
    el.parentNode.insertBefore(p, el);
  }
  var els = document.querySelectorAll('[data-live]');
  for (var i = 0; i < els.length; i++) { live(els[i]); }
})();
