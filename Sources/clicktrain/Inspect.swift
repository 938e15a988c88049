import ArgumentParser
import ClickTrainCore
import ClickTrainNN
import ClickTrainPruning
import ClickTrainTraining
import Foundation

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Per-layer shapes, kept kernels, patterns, sparsity and FLOPs of a saved model.",
        discussion: "Reads MODEL (model.safetensors) and, when present, the pruning.json beside it.")

    @Argument(help: "A model.safetensors written by clicktrain train.") var modelFile: String
    @Flag(help: "Print one JSON object.") var json = false

    struct Report: Codable {
        var model: String
        var input: String
        var conv_compression_ratio: Double
        var model_compression_ratio: Double
        var inference_flops: Double
        var dense_inference_flops: Double
        var training_flops_pruned: Double
        var training_flops_dense: Double
        var layers: [Row]
    }

    struct Row: Codable {
        var name: String
        var kind: String
        var shape: [Int]
        var weights: Int
        var nonzero: Int
        var kernels: Int?
        var kept_kernels: Int?
        var pattern_histogram: [String: Int]?
        var sparsity: Double
        var flops: Double
        var dense_flops: Double
    }

    func run() throws {
        try reportingErrors {
            let saved = try SavedModel(path: modelFile)
            let cost = ModelCost.measure(saved.model, input: saved.input)
            let pruned = Dictionary(uniqueKeysWithValues: (saved.pruning?.layers ?? []).map { ($0.name, $0) })
            let params = Dictionary(uniqueKeysWithValues: saved.model.parameters().map { ($0.name, $0) })
            var rows: [Row] = []
            for l in cost.layers {
                var r = Row(name: l.name, kind: l.kind, shape: l.weightShape, weights: l.weights, nonzero: l.nonZeroWeights,
                            sparsity: 1 - Double(l.nonZeroWeights) / Double(l.weights), flops: l.forwardFLOPs,
                            dense_flops: l.denseForwardFLOPs)
                if l.kind == "conv", let p = params[l.name + ".weight"] {
                    let per = l.weightShape[2] * l.weightShape[3]
                    let kernels = l.weightShape[0] * l.weightShape[1]
                    r.kernels = kernels
                    r.kept_kernels = (0..<kernels).filter { k in (0..<per).contains { p.value[k * per + $0] != 0 } }.count
                    if let pl = pruned[l.name + ".weight"] {
                        r.pattern_histogram = Dictionary(uniqueKeysWithValues: zip(pl.pool, pl.patternHistogram).map { ($0.0.description, $0.1) })
                    }
                }
                rows.append(r)
            }
            // Against the unpruned architecture (PruneTrain models are smaller networks).
            let ref = saved.denseReference
            let allNow = saved.model.parameters().reduce(0) { $0 + $1.value.count }
            let allDense = try ModelZoo.make(saved.name, input: saved.input, seed: 0).parameters()
                .reduce(0) { $0 + $1.value.count }
            let remaining = allNow - (cost.convWeights - cost.convNonZero)  // parameters not zeroed by masks
            let rep = Report(model: saved.name, input: "\(saved.input.channels)x\(saved.input.size)x\(saved.input.size)",
                             conv_compression_ratio: Double(ref.convWeights) / Double(max(cost.convNonZero, 1)),
                             model_compression_ratio: Double(allDense) / Double(max(remaining, 1)),
                             inference_flops: cost.inferenceFLOPs, dense_inference_flops: ref.denseInferenceFLOPs,
                             training_flops_pruned: cost.trainingFLOPs(sparse: true),
                             training_flops_dense: ref.trainingFLOPs(sparse: false), layers: rows)
            if json {
                try printJSON(rep)
                return
            }
            print("\(rep.model) (\(rep.input))\(saved.pruning.map { " pruned by \($0.method), \($0.n) weights per kernel" } ?? "")")
            print("layer".padding(toLength: 24, withPad: " ", startingAt: 0) + " shape            kernels kept   sparsity   MFLOPs  patterns")
            for r in rows {
                let kernels = r.kept_kernels.map { "\($0)/\(r.kernels!)" } ?? "-"
                let hist = r.pattern_histogram.map { h in h.sorted { $0.value > $1.value }.map { "\($0.key):\($0.value)" }.joined(separator: " ") } ?? ""
                print(r.name.padding(toLength: 24, withPad: " ", startingAt: 0) + " "
                      + "\(r.shape)".padding(toLength: 16, withPad: " ", startingAt: 0) + " "
                      + kernels.padding(toLength: 13, withPad: " ", startingAt: 0)
                      + String(format: " %7.1f%%  %7.2f  ", 100 * r.sparsity, r.flops / 1e6) + hist)
            }
            print(String(format: "conv compression %.2fx, model compression %.2fx, inference %.2f MFLOPs per image (dense %.2f, %.1f%% saved)",
                         rep.conv_compression_ratio, rep.model_compression_ratio, rep.inference_flops / 1e6,
                         rep.dense_inference_flops / 1e6, 100 * (1 - rep.inference_flops / rep.dense_inference_flops)))
        }
    }
}
