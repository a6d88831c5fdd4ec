//! The report page's inline style sheet and its self-check script.

/// The page's self-check ([`super::HtmlReport::self_check`]): errors and `console.error` calls are
/// recorded from the start; on `load`, every `<img>` must have decoded (`naturalWidth > 0`).
pub(super) const SELF_CHECK_SCRIPT: &str = "(function(){var errs=[];\
window.addEventListener('error',function(e){errs.push(String(e.message||('resource '+e.type)))},true);\
var ce=console.error;console.error=function(){errs.push(Array.prototype.join.call(arguments,' '));\
return ce.apply(console,arguments)};\
window.addEventListener('load',function(){var im=document.images,bad=0;\
for(var i=0;i<im.length;i++){if(!(im[i].complete&&im[i].naturalWidth>0))bad++}\
var sv=document.querySelectorAll('svg').length;\
document.body.setAttribute('data-check',(errs.length||bad)?\
('fail errors='+errs.length+' bad-images='+bad+' '+errs.join(' | ')):\
('ok images='+im.length+' svgs='+sv))})})();";

pub(super) const CSS: &str = r#":root {
  --bg: #f5f6f8; --panel: #ffffff; --text: #1d2330; --muted: #5f6b7a; --line: #e2e5ea;
  --bad: #c62828; --bad-bg: #fdecea; --good: #2e7d32; --good-bg: #e8f5e9; --accent: #3056d3;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
}
* { box-sizing: border-box; }
body {
  margin: 0; background: var(--bg); color: var(--text);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
}
main { max-width: 1120px; margin: 0 auto; padding: 32px 24px 48px; }
h1 { font-size: 28px; margin: 0 0 8px; letter-spacing: -0.01em; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
p { margin: 6px 0 10px; max-width: 78ch; }
.intro { color: var(--muted); font-size: 16px; }
.note, .tally { color: var(--muted); }
.tally { max-width: none; }
.tally .bad { color: var(--bad); font-weight: 600; }
.tally .good { color: var(--good); font-weight: 600; }
.empty { color: var(--muted); font-style: italic; }
.toc { display: flex; flex-wrap: wrap; gap: 6px 18px; margin-top: 14px; font-size: 14px; }
.toc a { color: var(--accent); text-decoration: none; }
.toc a:hover { text-decoration: underline; }
.table-wrap { display: inline-block; max-width: 100%; overflow-x: auto; background: var(--panel); border: 1px solid var(--line); border-radius: 8px; }
table { border-collapse: collapse; font-size: 14px; }
th, td { padding: 8px 18px; text-align: left; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { background: #eef0f4; font-weight: 600; color: #384252; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:last-child td { border-bottom: none; }
th.num { text-align: right; }
td.num { text-align: right; font-family: var(--mono); font-variant-numeric: tabular-nums; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 16px; }
@media (max-width: 520px) { .cards { grid-template-columns: 1fr; } }
.card {
  background: var(--panel); border: 1px solid var(--line); border-top: 4px solid var(--muted);
  border-radius: 8px; padding: 12px 16px 14px; box-shadow: 0 1px 2px rgba(20, 30, 50, 0.06);
}
.card.bad { border-top-color: var(--bad); }
.card.good { border-top-color: var(--good); }
.card header { display: flex; align-items: center; gap: 12px; margin-bottom: 10px; font-size: 14px; }
.card .idx { font-family: var(--mono); color: var(--muted); }
figcaption .role b { font-family: var(--mono); color: var(--text); }
.badge {
  margin-left: auto; padding: 1px 10px; border-radius: 999px; font-size: 12px; font-weight: 600;
  text-transform: uppercase; letter-spacing: 0.04em;
}
.badge.bad { color: var(--bad); background: var(--bad-bg); }
.badge.good { color: var(--good); background: var(--good-bg); }
.triptych { display: grid; grid-template-columns: minmax(0, 1fr) auto minmax(0, 1fr) auto minmax(0, 1fr); align-items: start; gap: 8px; }
.op { align-self: center; margin-top: -44px; font-size: 22px; color: var(--muted); font-weight: 300; }
figure { margin: 0; text-align: center; min-width: 0; }
figure img {
  display: block; width: 100%; height: auto; border-radius: 4px; border: 1px solid var(--line);
  image-rendering: pixelated; background: #000;
}
figcaption { display: flex; flex-direction: column; margin-top: 6px; font-size: 13px; line-height: 1.35; }
figcaption .role { color: var(--muted); font-size: 12px; }
figcaption .answer { font-family: var(--mono); font-weight: 600; font-size: 14px; overflow-wrap: anywhere; }
figcaption .answer.norm { font-weight: 500; }
figcaption .answer.bad { color: var(--bad); }
figcaption .answer.good { color: var(--good); }
figcaption .who { font: 400 12px system-ui, sans-serif; color: var(--muted); margin-right: 2px; }
figcaption .conf { font-weight: 400; color: var(--muted); }
figcaption .answer.bad .conf, figcaption .answer.good .conf { color: inherit; opacity: 0.8; }
.missing {
  display: flex; align-items: center; justify-content: center; aspect-ratio: 1; padding: 6px;
  border: 1px dashed var(--bad); border-radius: 4px; color: var(--bad); font-size: 11px; overflow-wrap: anywhere;
}
details.json { margin-top: 28px; background: var(--panel); border: 1px solid var(--line); border-radius: 8px; }
details.json summary { cursor: pointer; padding: 10px 14px; font-weight: 600; }
details.json pre {
  margin: 0; padding: 12px 14px; border-top: 1px solid var(--line); max-height: 480px; overflow: auto;
  font: 12.5px/1.45 var(--mono); background: #fafbfc;
}
.plot { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 8px; display: inline-block; max-width: 100%; }
.plot svg { display: block; max-width: 100%; height: auto; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"#;
