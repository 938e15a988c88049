import ClickTrainCore
import ClickTrainNN
import ClickTrainPruning
import Foundation

/// `report.html` for a run folder: accuracy and loss curves, per-layer weight sparsity,
/// the pattern distribution and per-layer pattern heat maps (the paper's Fig 3: how
/// often each of the 9 positions is kept), all as inline SVG, viewable offline.
public enum RunReport {
    public static func html(runDir: String) throws -> String {
        let metricsPath = runDir + "/metrics.jsonl"
        guard let text = try? String(contentsOfFile: metricsPath, encoding: .utf8) else {
            throw StateLoadError(path: metricsPath, detail: "no metrics: is this a run folder?")
        }
        let metrics = text.split(separator: "\n").compactMap { try? JSONDecoder().decode(EpochMetrics.self, from: Data($0.utf8)) }
        guard !metrics.isEmpty else { throw StateLoadError(path: metricsPath, detail: "no finished epoch yet") }
        let saved = try SavedModel(path: runDir + "/model.safetensors")
        let cost = ModelCost.measure(saved.model, input: saved.input)
        let title = "\(saved.name) on \(saved.dataset?.rawValue ?? "?") — \(runDir)"
        var body = "<h1>\(esc(title))</h1>\n"
        let last = metrics.last!
        body += "<p>\(metrics.count) epochs; final test accuracy <b>\(String(format: "%.2f%%", 100 * last.test_acc))</b>; "
            + String(format: "conv compression %.2fx; inference %.2f MFLOPs per image (dense %.2f).</p>\n",
                     cost.convCompressionRatio, cost.inferenceFLOPs / 1e6, cost.denseInferenceFLOPs / 1e6)
        let ep = metrics.map { Double($0.epoch) }
        body += "<h2>Accuracy</h2>" + lineChart([
            ("train", "#1f77b4", Array(zip(ep, metrics.map { 100 * $0.train_acc }))),
            ("test", "#d62728", Array(zip(ep, metrics.map { 100 * $0.test_acc }))),
        ], yLabel: "%")
        body += "<h2>Loss</h2>" + lineChart([
            ("train", "#1f77b4", Array(zip(ep, metrics.map(\.train_loss)))),
            ("test", "#d62728", Array(zip(ep, metrics.map(\.test_loss)))),
        ], yLabel: "loss")
        body += "<p>Phases: " + metrics.map { "\($0.epoch): \(esc($0.phase))" }.joined(separator: ", ") + "</p>"
        body += "<p>Time per phase: " + esc(Trainer.phaseTimes(metrics)) + "</p>"
        let convs = cost.layers.filter { $0.kind == "conv" }
        body += "<h2>Weight sparsity per conv layer</h2>" + barChart(convs.map {
            ($0.name, 100 * (1 - Double($0.nonZeroWeights) / Double($0.weights)))
        }, unit: "%")
        if let gs = last.grad_sparsity, !gs.isEmpty {
            body += "<h2>Activation-gradient sparsity per layer (last epoch)</h2>"
                + barChart(gs.sorted { $0.key < $1.key }.map { ($0.key, 100 * $0.value) }, unit: "%")
        }
        if let p = saved.pruning, p.chosen {
            var freq: [Pattern: Int] = [:]
            for l in p.layers { for (pat, c) in zip(l.pool, l.patternHistogram) { freq[pat, default: 0] += c } }
            body += "<h2>Pattern distribution (kept kernels, all layers)</h2>"
                + barChart(freq.sorted { $0.value > $1.value }.map { ($0.key.description, Double($0.value)) }, unit: "")
            body += "<h2>Kept positions per layer</h2><p>Each 3x3 map shows, for one layer, the fraction of its kept kernels that keep each position (darker = more).</p><div class=maps>"
            for l in p.layers { body += heatMap(l) }
            body += "</div>"
        }
        return """
            <!doctype html><html><head><meta charset="utf-8"><title>\(esc(title))</title>
            <style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}
            .maps{display:flex;flex-wrap:wrap;gap:10px}.map{font-size:11px;text-align:center}
            svg text{font-size:11px}</style></head><body>
            \(body)
            </body></html>
            """
    }

    static func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }

    static func lineChart(_ series: [(String, String, [(Double, Double)])], yLabel: String) -> String {
        let w = 640.0, h = 260.0, l = 50.0, b = 30.0, t = 10.0, r = 90.0
        let xs = series.flatMap { $0.2.map(\.0) }, ys = series.flatMap { $0.2.map(\.1) }.filter(\.isFinite)
        let x0 = xs.min() ?? 0, x1 = max(xs.max() ?? 1, x0 + 1)
        var y0 = ys.min() ?? 0, y1 = ys.max() ?? 1
        if y1 - y0 < 1e-9 { y0 -= 1; y1 += 1 }
        func px(_ x: Double) -> Double { l + (x - x0) / (x1 - x0) * (w - l - r) }
        func py(_ y: Double) -> Double { t + (1 - (y - y0) / (y1 - y0)) * (h - t - b) }
        var s = "<svg width=\"\(Int(w))\" height=\"\(Int(h))\" xmlns=\"http://www.w3.org/2000/svg\">"
        s += "<line x1=\"\(l)\" y1=\"\(h - b)\" x2=\"\(w - r)\" y2=\"\(h - b)\" stroke=\"#888\"/>"
        s += "<line x1=\"\(l)\" y1=\"\(t)\" x2=\"\(l)\" y2=\"\(h - b)\" stroke=\"#888\"/>"
        for i in 0...4 {
            let y = y0 + (y1 - y0) * Double(i) / 4
            s += "<text x=\"\(l - 4)\" y=\"\(py(y) + 4)\" text-anchor=\"end\">\(String(format: "%.3g", y))</text>"
            s += "<line x1=\"\(l)\" y1=\"\(py(y))\" x2=\"\(w - r)\" y2=\"\(py(y))\" stroke=\"#eee\"/>"
        }
        for x in Set(xs).sorted() where xs.count < 60 || Int(x) % 5 == 0 {
            s += "<text x=\"\(px(x))\" y=\"\(h - b + 14)\" text-anchor=\"middle\">\(Int(x))</text>"
        }
        s += "<text x=\"\(w / 2)\" y=\"\(h - 2)\" text-anchor=\"middle\">epoch</text>"
        s += "<text x=\"12\" y=\"\(t + 10)\">\(esc(yLabel))</text>"
        for (i, (name, color, pts)) in series.enumerated() {
            let d = pts.filter { $0.1.isFinite }.map { "\(px($0.0)),\(py($0.1))" }.joined(separator: " ")
            s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(d)\"/>"
            s += "<text x=\"\(w - r + 8)\" y=\"\(t + 14 + Double(i) * 16)\" fill=\"\(color)\">\(esc(name))</text>"
        }
        return s + "</svg>\n"
    }

    static func barChart(_ bars: [(String, Double)], unit: String) -> String {
        let rowH = 16.0, labelW = 200.0, w = 640.0
        let maxV = max(bars.map(\.1).max() ?? 1, 1e-9)
        var s = "<svg width=\"\(Int(w))\" height=\"\(Int(Double(bars.count) * rowH + 6))\" xmlns=\"http://www.w3.org/2000/svg\">"
        for (i, (name, v)) in bars.enumerated() {
            let y = Double(i) * rowH + 2
            let bw = (w - labelW - 70) * v / maxV
            s += "<text x=\"\(labelW - 4)\" y=\"\(y + 11)\" text-anchor=\"end\">\(esc(name))</text>"
            s += "<rect x=\"\(labelW)\" y=\"\(y)\" width=\"\(bw)\" height=\"\(rowH - 3)\" fill=\"#4c78a8\"/>"
            s += "<text x=\"\(labelW + bw + 4)\" y=\"\(y + 11)\">\(String(format: "%.1f", v))\(unit)</text>"
        }
        return s + "</svg>\n"
    }

    static func heatMap(_ l: PrunedLayer) -> String {
        var counts = [Int](repeating: 0, count: 9)
        var kept = 0
        for k in 0..<l.kernels where !l.removed[k] {
            kept += 1
            for i in l.pool[Int(l.patternIDs[k])].positions { counts[i] += 1 }
        }
        let cell = 22.0
        var s = "<div class=map><svg width=\"\(Int(3 * cell))\" height=\"\(Int(3 * cell))\" xmlns=\"http://www.w3.org/2000/svg\">"
        for i in 0..<9 {
            let f = kept > 0 ? Double(counts[i]) / Double(kept) : 0
            let c = Int(255 * (1 - f))
            s += "<rect x=\"\(Double(i % 3) * cell)\" y=\"\(Double(i / 3) * cell)\" width=\"\(cell - 1)\" height=\"\(cell - 1)\" fill=\"rgb(\(c),\(c),255)\"><title>\(String(format: "%.0f%%", 100 * f))</title></rect>"
        }
        let short = l.name.replacingOccurrences(of: ".weight", with: "")
        return s + "</svg><br>\(esc(short))<br>\(kept)/\(l.kernels)</div>"
    }
}
