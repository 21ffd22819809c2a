/* Browsing without a server round trip: the errors view's clientside callbacks (namespace "xai",
 * used through dash.ClientsideFunction) and the keyboard in every thumbnail gallery.
 * Served from /assets/, so the Content-Security-Policy's script-src 'self' allows it. */
(function () {
  "use strict";
  const dc = (window.dash_clientside = window.dash_clientside || {});  // Dash's renderer adds to this object

  /* One trigger with a click count is a click; several, or a zero, are thumbnails being rendered. */
  function clickedIndex() {
    const trig = dc.callback_context.triggered || [];
    if (trig.length !== 1 || !trig[0].value) { return null; }
    const pid = trig[0].prop_id;
    return JSON.parse(pid.slice(0, pid.lastIndexOf("."))).index;
  }

  dc.xai = {
    /* The confusion matrix with the selected cells outlined (cells [[true, predicted], ...] are the
     * heatmap's row and column: category axes place shapes by category number). */
    highlightCells: function (selection, figure) {
      if (!figure || !figure.layout || !figure.data || !figure.data.length) { return dc.no_update; }
      const cells = (selection && selection.cells) || [];
      const shapes = cells.map(([t, p]) => ({
        type: "rect", xref: "x", yref: "y", x0: p - 0.5, x1: p + 0.5, y0: t - 0.5, y1: t + 0.5,
        line: {color: "#1f2933", width: 3}, fillcolor: "rgba(0,0,0,0)", layer: "above",
      }));
      if (JSON.stringify(figure.layout.shapes || []) === JSON.stringify(shapes)) { return dc.no_update; }
      return Object.assign({}, figure, {layout: Object.assign({}, figure.layout, {shapes: shapes})});
    },

    /* A click on a matrix cell or a pair button: bring the gallery it fills into view. */
    revealGallery: function () {
      const trig = dc.callback_context.triggered || [];
      if (trig.some(t => t.value)) {
        const card = document.querySelector(".errors-view .gallery-card");
        if (card) { card.scrollIntoView({block: "start", behavior: "smooth"}); }
      }
      return dc.no_update;
    },

    /* A "Download CSV" button beside an AG Grid: the grid writes its rows, as sorted, itself. */
    exportGrid: function (clicks) { return clicks ? true : dc.no_update; },

    /* A "Compare runs" thumbnail: its detail (run A's) in the errors view. */
    openFromCompare: function (clicks, runA) {
      const index = clickedIndex();
      if (index === null) { return [dc.no_update, dc.no_update]; }
      window.scrollTo(0, 0);
      return [{run: runA, index: index}, "errors"];
    },
  };

  /* ---------------------------------------------------------------- keyboard */

  function items(gallery) { return Array.from(gallery.querySelectorAll(".gallery-item.clickable")); }

  function columns(list) {  // thumbnails in the first row of the grid
    let n = 0;
    while (n < list.length && list[n].offsetTop === list[0].offsetTop) { n++; }
    return Math.max(n, 1);
  }

  /* Press the card's pager button (which < 0: previous page) and, once the server has sent the new
   * page's thumbnails, focus its first (next page) or last (previous page) one. */
  function turnPage(gallery, which) {
    const buttons = gallery.closest(".gallery-card")?.querySelectorAll(".pager button") || [];
    const button = which < 0 ? buttons[0] : buttons[buttons.length - 1];
    if (!button) { return; }
    const before = items(gallery).map(el => el.dataset.index).join();
    button.click();
    const started = Date.now();
    (function wait() {
      const now = items(gallery);
      if (now.length && now.map(el => el.dataset.index).join() !== before) {
        (which < 0 ? now[now.length - 1] : now[0]).focus();
      } else if (Date.now() - started < 10000) {
        setTimeout(wait, 50);
      }
    })();
  }

  const STEPS = {ArrowRight: () => 1, ArrowLeft: () => -1, ArrowDown: n => n, ArrowUp: n => -n};

  document.addEventListener("keydown", function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey || !e.target.closest) { return; }
    const item = e.target.closest(".gallery-item.clickable");
    const gallery = item && item.closest(".gallery");
    if (!gallery) { return; }
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      item.click();
    } else if (e.key === "PageDown" || e.key === "PageUp") {
      e.preventDefault();
      turnPage(gallery, e.key === "PageDown" ? 1 : -1);
    } else if (STEPS[e.key]) {
      e.preventDefault();
      const list = items(gallery), j = list.indexOf(item) + STEPS[e.key](columns(list));
      if (j >= 0 && j < list.length) { list[j].focus(); } else { turnPage(gallery, j < 0 ? -1 : 1); }
    }
  });

  /* A thumbnail opened by click or Enter: its detail into view when its top is out of the window (a
   * narrow window puts the detail below the gallery; at the end of a short page the sticky card is
   * pushed up). Beside a long gallery it stays where it is, and so does the gallery. */
  document.addEventListener("click", function (e) {
    if (!e.target.closest || !e.target.closest("#gallery .gallery-item.clickable")) { return; }
    const detail = document.getElementById("image-detail");
    const top = detail ? detail.getBoundingClientRect().top : 0;
    if (detail && (top < 0 || top > window.innerHeight - 150)) {
      detail.scrollIntoView({block: "start", behavior: "smooth"});
    }
  });
})();
