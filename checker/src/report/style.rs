//! The page's style sheet, on top of the linearization view's, and the SVG definitions every
//! drawing shares (one arrowhead per dependency kind).

/// Rules for the report's own sections; the view's style sheet comes first.
pub(super) const CSS: &str = r#"
body{max-width:1240px;margin:0 auto 60px;padding:0 24px;background:#f6f8fa}
header.top{background:#fff;border:1px solid #dfe4ea;border-radius:6px;padding:4px 18px 12px;margin-top:16px}
section.card{background:#fff;border:1px solid #dfe4ea;border-radius:6px;padding:12px 18px;margin-top:16px}
section.card h2{font-size:18px;margin:2px 0 10px}h3{font-size:15px;margin:16px 0 6px}h3 small{font-weight:normal;color:#5a6676}
.badge.none{background:#6b7684}
.verdicts{margin-top:6px}.verdicts td,.verdicts th{padding:4px 12px}
table{margin:4px 0 8px}th{background:#f1f3f6;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.big{font-size:20px;font-weight:600;padding:4px 18px}td.bad,.bad{color:#c62828}
td.expl{font-size:12px;color:#36404d;max-width:620px}
.o-ok{color:#2e8b4a}.o-fail{color:#c62828}.o-info{color:#b7791f}
.note{color:#5a6676;margin:4px 0}.scroll{overflow-x:auto}
.timeline .fbar{fill:#f59e42;stroke:#b86614;stroke-width:.8}.timeline .fbar.open{stroke-dasharray:4 2}
.timeline .rec{fill:#2e8b4a;stroke:#fff;stroke-width:1}.timeline .norec{fill:#c62828;font-size:11px}
.timeline .flabel{font-size:11px;fill:#36404d}
.sok{fill:#5fae74}.sfail{fill:#d9534f}.sinfo{fill:#e0a030}
.legend-line{font-size:12px;color:#5a6676}.sw{display:inline-block;width:14px;height:10px;margin:0 4px 0 12px;vertical-align:middle;border-radius:2px}
.fault-sw{background:#f59e42}.rec-sw{background:#2e8b4a;transform:rotate(45deg);width:9px;height:9px}
.ok-sw{background:#5fae74}.fail-sw{background:#d9534f}.info-sw{background:#e0a030}
.plot svg{max-width:100%;height:auto;border:1px solid #eef1f5}
.anomaly{border-left:4px solid #c62828;padding:2px 0 2px 12px;margin:12px 0}.anomaly.allowed{border-left-color:#9aa5b1}
.tag{font-size:11px;font-weight:normal;padding:1px 7px;border-radius:9px;color:#fff;background:#c62828}.tag.allowed{background:#9aa5b1}
.instance{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start;border-top:1px dashed #e3e8ee;padding:6px 0}
.instance .lines{flex:1 1 460px;min-width:320px}.expl-lines{margin:4px 0;padding-left:18px;font-size:12.5px}
.expl-lines li{margin:2px 0;word-break:break-word}
.graph{flex:none}.cycle{background:#fcfcfd;border:1px solid #eef1f5;border-radius:4px}
circle.txn{fill:#fff;stroke:#1d3d63;stroke-width:1.6}.txn text{font-size:11px;font-weight:600;fill:#1d3d63}
.edge{fill:none;stroke-width:2}.edge-g:hover .edge{stroke-width:3.5}
.elabel{font-size:11px;font-weight:600;paint-order:stroke;stroke:#fff;stroke-width:3px}
.edge.ww{stroke:#c62828}.elabel.ww,.ek.ww{fill:#c62828;color:#c62828}
.edge.wr{stroke:#1f6fb4}.elabel.wr,.ek.wr{fill:#1f6fb4;color:#1f6fb4}
.edge.rw{stroke:#2e8b4a;stroke-dasharray:6 3}.elabel.rw,.ek.rw{fill:#2e8b4a;color:#2e8b4a}
.edge.process{stroke:#7b5ea7}.elabel.process,.ek.process{fill:#7b5ea7;color:#7b5ea7}
.edge.realtime{stroke:#6b7684;stroke-dasharray:2 3}.elabel.realtime,.ek.realtime{fill:#6b7684;color:#6b7684}
.ek{font-weight:600;margin-left:8px}
details summary{cursor:pointer}details summary h2{display:inline;font-size:18px}
.defs{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;font-size:13px}.defs dt{font-weight:600}.defs dd{margin:0}
section.part{border-top:1px solid #d8dee6}
"#;

/// Arrowheads, one per dependency kind, in that kind's colour.
pub(super) const DEFS: &str = concat!(
    "<svg width=\"0\" height=\"0\" style=\"position:absolute\" aria-hidden=\"true\"><defs>",
    "<marker id=\"arrow-ww\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0 0L10 5L0 10z\" fill=\"#c62828\"/></marker>",
    "<marker id=\"arrow-wr\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0 0L10 5L0 10z\" fill=\"#1f6fb4\"/></marker>",
    "<marker id=\"arrow-rw\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0 0L10 5L0 10z\" fill=\"#2e8b4a\"/></marker>",
    "<marker id=\"arrow-process\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0 0L10 5L0 10z\" fill=\"#7b5ea7\"/></marker>",
    "<marker id=\"arrow-realtime\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0 0L10 5L0 10z\" fill=\"#6b7684\"/></marker>",
    "</defs></svg>\n"
);
