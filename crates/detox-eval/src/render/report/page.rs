//! The document around the sections: head, style and the filter script, all inline.

use crate::render::html::escape;

/// No request leaves the page: styles and scripts are inline, images are SVG in the document.
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:";

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1280px;
  padding: 16px 24px 48px; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 0; }
table { border-collapse: collapse; margin: 8px 0 12px; background: white; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; vertical-align: top; }
th[scope=row], thead th:first-child { text-align: left; }
table.settings th { text-align: left; white-space: nowrap; }
.per-category tbody tr:last-child { font-weight: 600; border-top: 2px solid #999; }
.lede { font-size: 15px; margin: 4px 0 12px; }
table.settings td { text-align: left; font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
.note { background: #fff4e5; border-left: 4px solid #f0a020; padding: 6px 10px; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
.plots figure { margin: 0; background: white; border: 1px solid #ddd; flex: 1 1 480px; max-width: 620px; }
.plots img { display: block; width: 100%; height: auto; }
.plots figcaption { font-size: 12px; color: #666; padding: 2px 8px; }
.filters { position: sticky; top: 0; background: #fafafa; padding: 8px 0; z-index: 1; border-bottom: 1px solid #ddd; }
.filters label { margin-right: 16px; }
.record { background: white; border: 1px solid #ddd; border-radius: 6px; margin: 12px 0; padding: 8px 12px; }
.record[hidden] { display: none; }
.record header { display: flex; gap: 12px; align-items: baseline; flex-wrap: wrap; margin-bottom: 6px; }
.meta { color: #666; font-size: 12px; }
.pairs { width: 100%; table-layout: fixed; }
.pairs th, .pairs td { text-align: left; }
.pairs col.metric { width: 110px; } .pairs col.outcome { width: 130px; }
details > summary { cursor: pointer; }
pre { white-space: pre-wrap; word-break: break-word; margin: 4px 0 0; font: 12px/1.4 ui-monospace, monospace; }
.badge { display: inline-block; white-space: nowrap; border-radius: 3px; padding: 0 6px; font-size: 12px; font-weight: 600; }
.l-safe { background: #dff3e3; color: #14532d; } .l-unsafe { background: #fde2e1; color: #7f1d1d; }
.l-empty { background: #eee; color: #444; }
.o-fixed { background: #dff3e3; color: #14532d; } .o-unchanged { background: #e8eefc; color: #1e3a8a; }
.o-still { background: #fde2e1; color: #7f1d1d; } .o-newly { background: #7f1d1d; color: white; }
.flag { background: #fff4e5; color: #7a4b00; border: 1px solid #f0a020; }
.badge.other { font-weight: 400; opacity: 0.85; } .primary { background: #e8eefc; color: #1e3a8a; }
tr.pair[hidden] { display: none; }
"#;

/// Shows the records matching every filter and says how many (with the judges filter, only the pairs the
/// judges disagree on); runs on load and on every change.
const SCRIPT: &str = r#"
(function () {
  var category = document.getElementById('filter-category');
  var outcome = document.getElementById('filter-outcome');
  var judges = document.getElementById('filter-judges');
  var count = document.getElementById('shown-count');
  if (!category || !outcome) return;
  function apply() {
    var records = document.querySelectorAll('.record');
    var shown = 0;
    for (var i = 0; i < records.length; i++) {
      var r = records[i];
      var byOutcome = outcome.value === '' || r.dataset.outcome === outcome.value ||
        (outcome.value === 'flagged' && r.dataset.flagged === 'true');
      var disagreeing = judges !== null && judges.value === 'disagree';
      var byJudges = !disagreeing || r.dataset.disagree === 'true';
      var visible = (category.value === '' || r.dataset.category === category.value) && byOutcome && byJudges;
      r.hidden = !visible;
      var pairs = r.querySelectorAll('tr.pair');
      for (var k = 0; k < pairs.length; k++) {
        pairs[k].hidden = disagreeing && pairs[k].dataset.disagree !== 'true';
      }
      if (visible) shown++;
    }
    count.textContent = shown + ' of ' + records.length + ' records shown';
  }
  category.addEventListener('change', apply);
  outcome.addEventListener('change', apply);
  if (judges) judges.addEventListener('change', apply);
  apply();
})();
"#;

/// The complete document with `body` as its content.
pub(super) fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head>\n<body>\n<h1>{}</h1>\n{body}\n<script>{SCRIPT}</script>\n\
         </body></html>\n",
        escape(title),
        escape(title)
    )
}
