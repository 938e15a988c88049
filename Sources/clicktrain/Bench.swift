import ArgumentParser
import ClickTrainCore
import ClickTrainNN
import ClickTrainSparse
import ClickTrainTraining
import Foundation

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time a training step and inference of a model on random data.",
        discussion: """
            Prints the median over --runs steps after --warmup steps. Compare with PyTorch by running
            scripts/bench-pytorch.py with the same arguments.
            """)

    @Option(help: "Model name (\(ModelZoo.names.joined(separator: ", "))).") var model = "resnet20"
    @Option(help: "Batch size.") var batch = 128
    @Option(help: "Input as CxHxW (square images), e.g. 3x32x32 or 1x28x28.") var input = "3x32x32"
    @Option(help: "Number of classes.") var classes = 10
    @Option(help: "Threads for every kernel (default: all cores).") var threads: Int?
    @Option(help: "Untimed warm-up steps.") var warmup = 3
    @Option(help: "Timed steps (the median is reported).") var runs = 10
    @Option(help: "Extra steps between two RSS readings, to show memory does not grow.") var leakSteps = 0
    @Option(help: "Also time the backward pass with activation-gradient pruning at this rate (e.g. 0.9).")
    var gradPrune: Double?
    @Option(help: "Distribution the pruning threshold is fitted to: gaussian or lognormal.")
    var gradPruneDist: GradientDistribution = .gaussian
    @Option(help: "Threshold rule: calibrated (zeros = rate) or paper (rate of the fit below the threshold).")
    var gradPruneRule: ThresholdRule = .calibrated
    @Flag(help: "Also time inference on pattern-sparse kernels with ClickTrain-shaped masks (see --compression).")
    var sparse = false
    @Option(help: "With --sparse: conv compression ratio of the masks.") var compression = 8.0
    @Flag(help: "With --grad-prune or --sparse: a table per conv layer.") var perLayer = false
    @Flag(help: "Print one JSON object instead of a table.") var json = false
    @Option(help: deviceHelp) var device: DeviceKind = .cpu
    @Flag(help: "Also split the training step's time by kind of work (conv forward and backward, batch norm, ...); with --sparse, also the step after hard pruning.")
    var breakdown = false
    @Flag(help: "Also time the model against a twin with NCHW activations and no batch-norm folding of unpruned convs, one step or batch of each in turn.")
    var compareLayouts = false
    @Flag(help: "With --sparse: time only the pruned inference and print {\"sparse_infer_ms_per_batch\": ms} (for scripts/compare-inference.py).")
    var inferenceOnly = false
    @Flag(help: "With --inference-only: prepare once, then time --runs batches for every line read from standard input (a number on the line: that many), printing one JSON line each; ends at end of input.")
    var serve = false

    func run() throws {
        try reportingErrors { try runChecked() }
    }

    func runChecked() throws {
        try requireFlag(threads.map { $0 >= 1 } ?? true, "--threads must be at least 1, got \(threads ?? 0)")
        try requireFlag(batch >= 1, "--batch must be at least 1, got \(batch)")
        try requireFlag(classes >= 1, "--classes must be at least 1, got \(classes)")
        try requireFlag(warmup >= 0, "--warmup must be at least 0, got \(warmup)")
        try requireFlag(runs >= 1, "--runs must be at least 1, got \(runs)")
        try requireFlag(leakSteps >= 0, "--leak-steps must be at least 0, got \(leakSteps)")
        try requireFlag(compression >= 1 && compression.isFinite, "--compression must be a finite ratio of at least 1, got \(compression)")
        if let t = threads { Threads.set(t) } else { Threads.set(Threads.count) }
        let inp = try parseInput(input, classes: classes)
        if let gpu = try openDevice(device) {
            let extras = sparse || gradPrune != nil || breakdown || compareLayouts || inferenceOnly || perLayer || serve
                || leakSteps > 0
            guard !extras else { throw ValidationError("--device cuda times the dense step and inference alone for now") }
            let r = try GPUBenchmark.run(gpu, modelName: model, input: inp, batch: batch, warmup: warmup, runs: runs)
            if json {
                try printJSON(r)
            } else {
                print(r.text)
            }
            return
        }
        var b = TrainingBenchmark(modelName: model, batch: batch, input: inp)
        b.warmup = warmup
        b.runs = runs
        b.leakSteps = leakSteps
        if sparse { b.sparseCompression = compression }
        if let p = gradPrune {
            try requireFlag(p >= 0 && p < 1, "--grad-prune must be in [0, 1), got \(p)")
            b.gradPruner = GradientPruner(rate: p, distribution: gradPruneDist, rule: gradPruneRule, seed: 1)
        }
        if serve && !inferenceOnly { throw ValidationError("--serve goes with --sparse --inference-only") }
        if inferenceOnly {
            guard sparse else { throw ValidationError("--inference-only times the pruned inference: add --sparse") }
            let session = try b.sparseInferenceSession()
            guard serve else {
                print("{\"sparse_infer_ms_per_batch\": \(session.medianMs(batches: runs))}")
                return
            }
            print("{\"ready\": true}")
            fflush(nil)  // every stream: one request, one line out
            while let line = readLine() {
                let text = line.trimmingCharacters(in: .whitespaces)
                guard text.isEmpty || Int(text) != nil else {
                    throw ValidationError("--serve reads a batch count or an empty line per request, got '\(text)'")
                }
                print("{\"sparse_infer_ms_per_batch\": \(session.medianMs(batches: Int(text) ?? runs))}")
                fflush(nil)  // every stream: one request, one line out
            }
            return
        }
        b.breakdown = breakdown
        b.compareLayouts = compareLayouts
        let r = try b.run()
        if json {
            try printJSON(r)
        } else {
            print("""
                model \(r.model)  batch \(r.batch)  input \(r.input)  threads \(r.threads)
                  train step   \(fmt(r.train_ms_per_step)) ms  (\(fmt(r.images_per_s_train, 0)) images/s; \
                forward \(fmt(r.forward_ms)) ms, backward \(fmt(r.backward_ms)) ms)
                  inference    \(fmt(r.infer_ms_per_batch)) ms  (\(fmt(r.images_per_s_infer, 0)) images/s)
                  peak RSS     \(fmt(r.peak_rss_mb, 0)) MiB  (growth over timed steps: \(fmt(r.rss_growth_mb, 1)) MiB)
                """)
            for (title, breakdown) in [("training step", r.breakdown_ms),
                                       ("training step after hard pruning", r.sparse_breakdown_ms)] {
                guard let parts = breakdown else { continue }
                // Largest first; the mean step the parts add up to.
                let total = parts.values.reduce(0, +)
                print("  \(title) by kind of work (mean \(fmt(total)) ms):")
                for (kind, ms) in parts.sorted(by: { $0.value > $1.value }) where ms > 0 {
                    print("    " + kind.padding(toLength: 14, withPad: " ", startingAt: 0)
                          + String(format: "%8.1f ms  %5.1f%%", ms, 100 * ms / max(total, 1e-9)))
                }
            }
            if let t = r.blocked_train_speedup_alternated, let i = r.blocked_infer_speedup_alternated {
                print("  against NCHW activations without folding, one of each in turn (median of the pairs): "
                      + "training step \(fmt(t, 2))x, inference \(fmt(i, 2))x")
            }
            if let sp = r.sparse_infer_ms_per_batch, let dm = r.masked_dense_infer_ms_per_batch {
                print("""
                      sparse inference at \(fmt(r.conv_compression ?? 0, 2))x conv compression: \(fmt(sp)) ms \
                    (oneDNN on the same masked weights \(fmt(dm)) ms: \(fmt(dm / sp, 2))x; dense model \(fmt(r.infer_ms_per_batch)) ms: \(fmt(r.infer_ms_per_batch / sp, 2))x)
                      sparse training step (pattern kernels forward and backward): \(fmt(r.sparse_train_ms_per_step ?? 0)) ms \
                    (dense \(fmt(r.train_ms_per_step)) ms: \(fmt(r.train_ms_per_step / (r.sparse_train_ms_per_step ?? 1), 2))x)
                      dense / sparse measured in alternation, one of each in turn (median of the pairs): training step \
                    \(fmt(r.sparse_train_speedup_alternated ?? 0, 2))x, inference \(fmt(r.sparse_infer_speedup_alternated ?? 0, 2))x
                    """)
                if let fl = r.sparse_forward_layers, !fl.isEmpty {
                    // Where sparse inference spends its time: convolutions vs the rest.
                    let pruned = fl.filter { $0.kept_weights < 1 }
                    let convMs = fl.map(\.sparse_ms).reduce(0, +), prunedMs = pruned.map(\.sparse_ms).reduce(0, +)
                    print("      of the sparse inference: convolutions \(fmt(convMs)) ms (\(pruned.count) pruned on pattern "
                          + "kernels \(fmt(prunedMs)) ms, \(fl.count - pruned.count) unpruned \(fmt(convMs - prunedMs)) ms), "
                          + "everything else \(fmt(max(0, sp - convMs))) ms")
                }
                if perLayer, let kl = r.sparse_kernel_layers, !kl.isEmpty {
                    print("    each convolution alone, oneDNN on the masked weight / pattern kernels, ms (speed-up: median of")
                    print("    the per-pair ratios, one call of each in turn; the sums' ratio is of the summed medians):")
                    print("    conv layer          shape                kept   forward              input gradient       weight gradient")
                    func cell(_ d: Double, _ s: Double, _ ratio: Double? = nil) -> String {
                        String(format: "%5.2f/%5.2f (%4.2fx)", d, s, ratio ?? d / max(s, 1e-9))
                    }
                    var sum = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
                    for l in kl {
                        print("    " + l.layer.padding(toLength: 19, withPad: " ", startingAt: 0) + " "
                              + l.geometry.padding(toLength: 20, withPad: " ", startingAt: 0)
                              + String(format: " %4.1f%%  ", 100 * l.kept_weights)
                              + cell(l.dense_forward_ms, l.sparse_forward_ms, l.forward_speedup_alternated) + "  "
                              + cell(l.dense_input_grad_ms, l.sparse_input_grad_ms, l.input_grad_speedup_alternated) + "  "
                              + cell(l.dense_weight_grad_ms, l.sparse_weight_grad_ms, l.weight_grad_speedup_alternated))
                        sum.0 += l.dense_forward_ms; sum.1 += l.sparse_forward_ms
                        sum.2 += l.dense_input_grad_ms; sum.3 += l.sparse_input_grad_ms
                        sum.4 += l.dense_weight_grad_ms; sum.5 += l.sparse_weight_grad_ms
                    }
                    print("    " + "all pruned convs".padding(toLength: 48, withPad: " ", startingAt: 0)
                          + cell(sum.0, sum.1) + "  " + cell(sum.2, sum.3) + "  " + cell(sum.4, sum.5))
                    func atLeast(_ bar: Double, _ r: KeyPath<TrainingBenchmark.LayerKernels, Double>) -> String {
                        "\(kl.filter { $0[keyPath: r] >= bar }.count)/\(kl.count)"
                    }
                    print("    layers at ≥ 2.5x forward, ≥ 2x each backward (alternated ratios): forward "
                          + atLeast(2.5, \.forward_speedup_alternated) + ", input gradient "
                          + atLeast(2, \.input_grad_speedup_alternated) + ", weight gradient "
                          + atLeast(2, \.weight_grad_speedup_alternated))
                    let fb = kl.map(\.format_build_ms).reduce(0, +), fr = kl.map(\.format_refresh_ms).reduce(0, +)
                    print(String(format: "    pattern format: built from weight + mask in %.2f ms for all layers (once per mask), values refreshed in %.3f ms per step", fb, fr))
                }
                if perLayer {
                    print("    in the model's forward pass:")
                    print("    conv layer               dense ms  sparse ms  speed-up  kept")
                    for l in r.sparse_forward_layers ?? [] {
                        print("    " + l.layer.padding(toLength: 24, withPad: " ", startingAt: 0)
                              + String(format: " %8.2f  %9.2f  %7.2fx  %5.1f%%", l.dense_ms, l.sparse_ms,
                                       l.dense_ms / max(l.sparse_ms, 1e-9), 100 * l.kept_weights))
                    }
                }
            }
            if let pb = r.pruned_backward_ms, let pc = r.pruned_conv_backward_ms, let dc = r.conv_backward_ms {
                print("""
                      grad-prune \(r.grad_prune!): sparsity \(fmt(100 * (r.grad_sparsity ?? 0)))% over conv layers
                        backward      dense \(fmt(r.backward_ms)) ms  pruned \(fmt(pb)) ms  (\(fmt(r.backward_ms / pb, 2))x)
                        conv backward dense \(fmt(dc)) ms  pruned \(fmt(pc)) ms  (\(fmt(dc / pc, 2))x)
                        train step    dense \(fmt(r.train_ms_per_step)) ms  pruned \(fmt(r.pruned_train_ms_per_step!)) ms
                    """)
                if perLayer {
                    print("    conv layer               dense ms  pruned ms  speed-up  sparsity")
                    for l in r.conv_backward_layers ?? [] {
                        print("    " + l.layer.padding(toLength: 24, withPad: " ", startingAt: 0)
                              + String(format: " %8.2f  %9.2f  %7.2fx  %7.1f%%", l.dense_ms, l.pruned_ms,
                                       l.dense_ms / max(l.pruned_ms, 1e-9), 100 * l.sparsity))
                    }
                }
            }
        }
    }
}

func fmt(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }

struct InputFormatError: Error, CustomStringConvertible {
    let text: String
    var description: String { "--input '\(text)': expected CxHxW with H == W, e.g. 3x32x32" }
}

func parseInput(_ s: String, classes: Int) throws -> ModelInput {
    let parts = s.lowercased().split(separator: "x").compactMap { Int($0) }
    guard parts.count == 3, parts[1] == parts[2], parts.allSatisfy({ $0 > 0 }) else { throw InputFormatError(text: s) }
    return ModelInput(channels: parts[0], size: parts[1], classes: classes)
}

extension GradientDistribution: ExpressibleByArgument {}
extension ThresholdRule: ExpressibleByArgument {}
