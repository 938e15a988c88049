import ClickTrainCore
import ClickTrainNN
import ClickTrainPruning
import ClickTrainSparse
import Foundation

/// Process memory figures from /proc/self/status (Linux), in MiB.
package enum ProcessMemory {
    /// Peak resident set size (VmHWM).
    package static var peakRSSMB: Double { field("VmHWM") }
    /// Current resident set size (VmRSS).
    package static var currentRSSMB: Double { field("VmRSS") }

    static func field(_ name: String) -> Double {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix(name + ":") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kb = Double(parts[1]) { return kb / 1024 }
        }
        return 0
    }
}

/// Median of a list of timings.
package func median(_ xs: [Double]) -> Double {
    precondition(!xs.isEmpty, "median of no values")
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Seconds `body` takes.
func seconds(_ body: () -> Void) -> Double {
    let t0 = now()
    body()
    return now() - t0
}

@inline(__always) package func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Times a full training step (forward, loss, backward, SGD) and inference of a model on
/// random data: `clicktrain bench`.
package struct TrainingBenchmark {
    package struct Result: Codable {
        package var model: String
        package var batch: Int
        package var input: String
        package var threads: Int
        package var train_ms_per_step: Double
        package var infer_ms_per_batch: Double
        package var images_per_s_train: Double
        package var images_per_s_infer: Double
        package var forward_ms: Double
        package var backward_ms: Double
        package var peak_rss_mb: Double
        /// RSS after the timed steps minus RSS after warm-up (0 when nothing leaks).
        package var rss_growth_mb: Double
        package var steps_timed: Int
        /// With --breakdown: mean milliseconds per timed step by kind of work (the keys of
        /// `WorkProfile.Kind`, and `other` for the rest of the step).
        package var breakdown_ms: [String: Double]?
        /// The same for the training step after hard pruning (with --sparse).
        package var sparse_breakdown_ms: [String: Double]?
        // With --grad-prune: the same steps with activation-gradient pruning, measured in
        // the same process right after the dense ones.
        package var grad_prune: Double?
        package var conv_backward_ms: Double?
        package var pruned_backward_ms: Double?
        package var pruned_conv_backward_ms: Double?
        package var pruned_train_ms_per_step: Double?
        package var grad_sparsity: Double?
        /// Per conv layer: [name, dense ms, pruned ms, sparsity] (mean over the timed steps).
        package var conv_backward_layers: [LayerTiming]?
        // With --sparse: ClickTrain-shaped masks at `compression`, inference on the
        // pattern kernels against oneDNN on the same masked weights, in the same process.
        package var compression: Double?
        package var conv_compression: Double?
        package var sparse_infer_ms_per_batch: Double?
        /// A training step after hard pruning on the pattern kernels (forward and backward).
        package var sparse_train_ms_per_step: Double?
        /// Dense and sparse measured in alternation (a dense twin of the model, one step or
        /// batch of each in turn): the median over pairs of dense time / sparse time, which
        /// a machine whose speed drifts between the separate measurements above cannot skew.
        package var sparse_train_speedup_alternated: Double?
        package var sparse_infer_speedup_alternated: Double?
        package var masked_dense_infer_ms_per_batch: Double?
        package var sparse_forward_layers: [LayerForward]?
        /// Per pruned 3x3 conv: the three convolutions of training timed alone, oneDNN on
        /// the masked weight against the pattern kernels.
        package var sparse_kernel_layers: [LayerKernels]?
        /// With --compare-layouts: the model as it runs (activations channel-blocked between
        /// oneDNN convs, batch norm folded into them at inference) against a twin whose
        /// activations stay NCHW and whose unpruned convs do not fold, one step or batch of
        /// each in turn: the median over pairs of NCHW time / default time.
        package var blocked_train_speedup_alternated: Double?
        package var blocked_infer_speedup_alternated: Double?
    }

    package struct LayerKernels: Codable {
        package var layer: String
        package var geometry: String
        package var kept_weights: Double
        package var dense_forward_ms: Double
        package var sparse_forward_ms: Double
        package var dense_input_grad_ms: Double
        package var sparse_input_grad_ms: Double
        package var dense_weight_grad_ms: Double
        package var sparse_weight_grad_ms: Double
        /// Medians of the per-pair ratios dense / sparse, the two timed in turns (the
        /// medians above can come from different moments of a machine whose speed drifts).
        package var forward_speedup_alternated: Double
        package var input_grad_speedup_alternated: Double
        package var weight_grad_speedup_alternated: Double
        /// Building the pattern format from weight and mask (one pass), and refreshing its
        /// values for a new step (a gather).
        package var format_build_ms: Double
        package var format_refresh_ms: Double
    }

    package struct LayerForward: Codable {
        package var layer: String
        package var dense_ms: Double
        package var sparse_ms: Double
        package var kept_weights: Double
    }

    package struct LayerTiming: Codable {
        package var layer: String
        package var dense_ms: Double
        package var pruned_ms: Double
        package var sparsity: Double
    }

    package var modelName: String
    package var batch: Int
    package var input: ModelInput
    package var warmup = 3
    package var runs = 10
    /// Extra steps, untimed, run between two RSS readings to show memory does not grow.
    package var leakSteps = 0
    /// Activation-gradient pruning to compare against the dense backward pass.
    package var gradPruner: GradientPruner?
    /// Pattern-sparse inference at this conv compression (ClickTrain-shaped random masks).
    package var sparseCompression: Double?
    /// Collect the time per kind of work over the dense timed steps.
    package var breakdown = false
    /// Time the default dense model against an NCHW twin, alternated (see the result's
    /// `blocked_train_speedup_alternated`).
    package var compareLayouts = false

    package init(modelName: String, batch: Int, input: ModelInput) {
        self.modelName = modelName
        self.batch = batch
        self.input = input
    }

    package func run() throws -> Result {
        let model = try ModelZoo.make(modelName, input: input, seed: 1)
        let opt = SGD(parameters: model.parameters(), learningRate: 0.01)
        var rng = RNG(seed: 2)
        let x = Tensor(shape: [batch, input.channels, input.size, input.size])
        for i in 0..<x.count { x[i] = rng.normal() }
        let labels = (0..<batch).map { Int32($0 % input.classes) }
        var fwd: [Double] = [], bwd: [Double] = [], step: [Double] = [], convBwd: [Double] = []
        let policy = gradPruner.map { GradientPruningPolicy(pruner: $0) }
        let methods: [any TrainingMethod] = policy.map { [GradientPruningMethod(policy: $0, model: model)] } ?? []
        policy?.enabled = false
        let training = TrainingStep(model: model, optimizer: opt, methods: methods, batchSize: batch, classes: input.classes)
        var stepIndex = 0
        func trainStep(record: Bool) throws {
            policy?.convBackwardSeconds = 0
            let r = try training.run(images: x, labels: labels, info: StepInfo(epoch: 0, step: stepIndex, stepsPerEpoch: 1 << 20))
            stepIndex += 1
            if record {
                fwd.append(r.forwardSeconds); bwd.append(r.backwardSeconds); step.append(r.seconds)
                convBwd.append(policy?.convBackwardSeconds ?? 0)
            }
        }
        model.train(true)
        for _ in 0..<warmup { try trainStep(record: false) }
        let rssBefore = ProcessMemory.currentRSSMB
        policy?.resetStatistics()
        let profile = breakdown ? WorkProfile() : nil
        try WorkProfile.$current.withValue(profile) {
            for _ in 0..<runs { try trainStep(record: true) }
        }
        let breakdownMS = profile.map { perStepMS($0, stepSeconds: step) }
        for _ in 0..<leakSteps { try trainStep(record: false) }
        let rssAfter = ProcessMemory.currentRSSMB
        var pruned: (bwd: Double, conv: Double, step: Double, sparsity: Double)?
        var layers: [LayerTiming]?
        if let policy {
            let dense = (fwd, bwd, step, convBwd)
            let denseLayers = policy.layerBackwardSeconds
            fwd = []; bwd = []; step = []; convBwd = []
            policy.enabled = true
            for _ in 0..<warmup { try trainStep(record: false) }
            policy.resetStatistics()
            for _ in 0..<runs { try trainStep(record: true) }
            let n = Double(runs)
            layers = policy.layerNames.compactMap { name in
                guard let d = denseLayers[name], let p = policy.layerBackwardSeconds[name] else { return nil }
                return LayerTiming(layer: name, dense_ms: d / n * 1e3, pruned_ms: p / n * 1e3,
                                   sparsity: policy.stats[name]?.sparsity ?? 0)
            }
            let convNames = policy.layerNames.filter { !$0.contains("fc") && !$0.contains("classifier") }
            pruned = (median(bwd), median(convBwd), median(step), policy.meanSparsity(of: convNames) ?? 0)
            (fwd, bwd, step, convBwd) = dense
            policy.enabled = false
        }
        model.train(false)
        let inf = inferenceTimes(model, x)
        var sparse: (Double, Double, Double, [LayerForward])?
        // Before the sparse comparison, whose dense twin model would count here too.
        let peakRSS = ProcessMemory.peakRSSMB
        let layouts = compareLayouts ? try alternateLayouts(training, x: x, labels: labels) : nil
        var sparseTrain: Double?, alternated: (train: Double, infer: Double)?
        var sparseBreakdown: [String: Double]?
        var kernelLayers: [LayerKernels]?
        if let target = sparseCompression {
            let cc = try applyRandomPatternMasks(model, compression: target, seed: 3)
            let convs = model.namedModules().compactMap { m in (m.1 as? Conv2d).map { (m.0, $0) } }
            func timeInference(_ pattern: Bool) -> (Double, [String: Double]) {
                for (_, c) in convs { c.usePatternKernels = pattern }
                for _ in 0..<warmup { _ = model.forward(x) }
                for (_, c) in convs { c.forwardSeconds = 0 }
                let ts = (0..<runs).map { _ in seconds { _ = model.forward(x) } }
                return (median(ts), Dictionary(uniqueKeysWithValues: convs.map { ($0.0, $0.1.forwardSeconds / Double(runs)) }))
            }
            let (denseMasked, dl) = timeInference(false)
            let (sp, sl) = timeInference(true)
            model.train(true)
            for (_, c) in convs { c.usePatternKernels = true }
            var st: [Double] = []
            let sparseProfile = breakdown ? WorkProfile() : nil
            for i in 0..<(warmup + runs) {
                let t = try WorkProfile.$current.withValue(i >= warmup ? sparseProfile : nil) {
                    try timedStep(training, x, labels)
                }
                if i >= warmup { st.append(t) }
            }
            sparseBreakdown = sparseProfile.map { perStepMS($0, stepSeconds: st) }
            sparseTrain = median(st)
            alternated = try alternate(sparse: training, x: x, labels: labels)
            model.train(false)
            let layers = convs.map { name, c in
                LayerForward(layer: name, dense_ms: dl[name]! * 1e3, sparse_ms: sl[name]! * 1e3,
                             kept_weights: Double((0..<c.weight.value.count).filter { c.weight.value[$0] != 0 }.count)
                                 / Double(c.weight.value.count))
            }
            sparse = (cc, sp, denseMasked, layers)
            kernelLayers = timeKernels(convs)
        }
        let train = median(step), infer = median(inf)
        return Result(
            model: ModelZoo.canonicalName(modelName), batch: batch,
            input: "\(input.channels)x\(input.size)x\(input.size)", threads: Threads.count,
            train_ms_per_step: train * 1e3, infer_ms_per_batch: infer * 1e3,
            images_per_s_train: Double(batch) / train, images_per_s_infer: Double(batch) / infer,
            forward_ms: median(fwd) * 1e3, backward_ms: median(bwd) * 1e3,
            peak_rss_mb: peakRSS, rss_growth_mb: max(0, rssAfter - rssBefore), steps_timed: runs,
            breakdown_ms: breakdownMS, sparse_breakdown_ms: sparseBreakdown, grad_prune: gradPruner?.rate, conv_backward_ms: policy == nil ? nil : median(convBwd) * 1e3,
            pruned_backward_ms: pruned.map { $0.bwd * 1e3 }, pruned_conv_backward_ms: pruned.map { $0.conv * 1e3 },
            pruned_train_ms_per_step: pruned.map { $0.step * 1e3 }, grad_sparsity: pruned?.sparsity,
            conv_backward_layers: layers, compression: sparseCompression, conv_compression: sparse?.0,
            sparse_infer_ms_per_batch: sparse.map { $0.1 * 1e3 }, sparse_train_ms_per_step: sparseTrain.map { $0 * 1e3 },
            sparse_train_speedup_alternated: alternated?.train, sparse_infer_speedup_alternated: alternated?.infer, masked_dense_infer_ms_per_batch: sparse.map { $0.2 * 1e3 },
            sparse_forward_layers: sparse?.3, sparse_kernel_layers: kernelLayers,
            blocked_train_speedup_alternated: layouts?.train, blocked_infer_speedup_alternated: layouts?.infer)
    }

    /// Only the pruned inference of `run` (same model, masks and input), ready to time:
    /// `SparseInferenceSession.medianMs(batches:)` gives the median ms per batch. For
    /// alternated comparisons with PyTorch (`scripts/compare-inference.py`); needs
    /// `sparseCompression`. Like `run` (13 steps at its defaults), the model first trains
    /// (`trainSteps`): a fresh model's batch-norm statistics leave activations whose values
    /// slow both engines down (PyTorch's ResNet-32 inference ~390 ms fresh against ~250 ms
    /// after five steps in one process; ours 67-78 ms after five steps against 58-73 ms after
    /// fifteen, alternated). `warmup` batches run before it is returned.
    package func sparseInferenceSession(trainSteps: Int = 15) throws -> SparseInferenceSession {
        guard let target = sparseCompression else { preconditionFailure("sparseInferenceSession needs sparseCompression") }
        let model = try ModelZoo.make(modelName, input: input, seed: 1)
        var rng = RNG(seed: 2)
        let x = Tensor(shape: [batch, input.channels, input.size, input.size])
        for i in 0..<x.count { x[i] = rng.normal() }
        let labels = (0..<batch).map { Int32($0 % input.classes) }
        let training = TrainingStep(model: model, optimizer: SGD(parameters: model.parameters(), learningRate: 0.01),
                                    methods: [], batchSize: batch, classes: input.classes)
        model.train(true)
        for _ in 0..<trainSteps { _ = try timedStep(training, x, labels) }
        _ = try applyRandomPatternMasks(model, compression: target, seed: 3)
        model.train(false)
        let session = SparseInferenceSession(model: model, x: x)
        _ = session.medianMs(batches: warmup)
        return session
    }

    /// Mean milliseconds per step by kind of work; "other" is the rest of the steps' time.
    func perStepMS(_ profile: WorkProfile, stepSeconds: [Double]) -> [String: Double] {
        let perStep = 1e3 / Double(stepSeconds.count)
        var ms = Dictionary(uniqueKeysWithValues: WorkProfile.Kind.allCases.map { ($0.rawValue, (profile.seconds[$0] ?? 0) * perStep) })
        ms["other"] = max(0, stepSeconds.reduce(0, +) * perStep - ms.values.reduce(0, +))
        return ms
    }

    /// One training step (forward, loss, backward, SGD) on `x`, in seconds.
    func timedStep(_ step: TrainingStep, _ x: Tensor, _ labels: [Int32]) throws -> Double {
        try step.run(images: x, labels: labels, info: StepInfo(epoch: 0, step: 0, stepsPerEpoch: 1)).seconds
    }

    /// Seconds per forward pass of `model` on `x`, `runs` of them after `warmup`.
    func inferenceTimes(_ model: any Layer, _ x: Tensor) -> [Double] {
        for _ in 0..<warmup { _ = model.forward(x) }
        return (0..<runs).map { _ in seconds { _ = model.forward(x) } }
    }

    /// Dense against sparse in turns: a dense twin of the model (same seed, no masks) and
    /// the pruned `sparse` run one training step each, alternately, then one inference
    /// batch each; returns the medians of the per-pair ratios dense / sparse.
    func alternate(sparse: TrainingStep, x: Tensor, labels: [Int32]) throws -> (train: Double, infer: Double) {
        let dense = try ModelZoo.make(modelName, input: input, seed: 1)
        let denseStep = TrainingStep(model: dense, optimizer: SGD(parameters: dense.parameters(), learningRate: 0.01),
                                     methods: [], batchSize: batch, classes: input.classes)
        return try alternatedRatios(denseStep, sparse, x: x, labels: labels)
    }

    /// One training step of `a` and one of `b` in turn, then one inference batch of each:
    /// the medians of the per-pair ratios, time of `a` / time of `b`.
    func alternatedRatios(_ a: TrainingStep, _ b: TrainingStep, x: Tensor, labels: [Int32]) throws
        -> (train: Double, infer: Double)
    {
        var trainRatios: [Double] = [], inferRatios: [Double] = []
        a.model.train(true); b.model.train(true)
        for i in 0..<(warmup + runs) {
            let ta = try timedStep(a, x, labels), tb = try timedStep(b, x, labels)
            if i >= warmup { trainRatios.append(ta / tb) }
        }
        a.model.train(false); b.model.train(false)
        for i in 0..<(warmup + runs) {
            let ta = seconds { _ = a.model.forward(x) }, tb = seconds { _ = b.model.forward(x) }
            if i >= warmup { inferRatios.append(ta / tb) }
        }
        return (median(trainRatios), median(inferRatios))
    }

    /// The model of `step` against a twin with NCHW activations throughout and no folding of
    /// unpruned convs at inference, one step (then one inference batch) of each in turn:
    /// medians of the per-pair ratios twin time / default time.
    func alternateLayouts(_ step: TrainingStep, x: Tensor, labels: [Int32]) throws -> (train: Double, infer: Double) {
        let plain = try ModelZoo.make(modelName, input: input, seed: 1)
        for case let c as Conv2d in plain.namedModules().map(\.1) {
            c.allowsBlockedOutput = false
            if c.inChannels * c.kernelSize * c.kernelSize > Conv2d.smallDenseFoldMaxWeights { c.foldBatchNormAtInference = false }
        }
        let plainStep = TrainingStep(model: plain, optimizer: SGD(parameters: plain.parameters(), learningRate: 0.01),
                                     methods: [], batchSize: batch, classes: input.classes)
        return try alternatedRatios(plainStep, step, x: x, labels: labels)
    }

    /// Times forward, input gradient and weight gradient of every masked conv alone, on
    /// random data of its input shape: oneDNN (DenseConv2dKernel) on the masked weight
    /// against PatternConvKernel, one call of each in turn. oneDNN computes the input
    /// gradient in its own primitive; its time is that of a backward with both gradients
    /// less one with the weight gradient only.
    func timeKernels(_ convs: [(String, Conv2d)]) -> [LayerKernels] {
        var out: [LayerKernels] = []
        for (name, conv) in convs {
            guard let mask = conv.weight.mask, let shape = conv.lastInputShape else { continue }
            let g = conv.geometry(for: shape)
            guard PatternConvKernel.supports(g) else { continue }
            let x = Tensor(shape: g.inputShape), dy = Tensor(shape: g.outputShape)
            var rng = RNG(seed: 5)
            for i in 0..<x.count { x[i] = rng.normal() }
            for i in 0..<dy.count { dy[i] = rng.normal() }
            let y = Tensor(shape: g.outputShape), dx = Tensor(shape: g.inputShape), dw = Tensor(shape: g.weightShape)
            let w = conv.weight.value
            /// Dense and sparse in turns: medians (ms) of each and of the per-pair ratios.
            func alternated(_ dense: () -> Double, _ sparse: () -> Double) -> (dense: Double, sparse: Double, ratio: Double) {
                for _ in 0..<warmup { _ = dense(); _ = sparse() }
                var d: [Double] = [], s: [Double] = [], r: [Double] = []
                for _ in 0..<runs {
                    let a = dense(), b = sparse()
                    d.append(a); s.append(b); r.append(a / max(b, 1e-9))
                }
                return (median(d) * 1e3, median(s) * 1e3, median(r))
            }
            func timed(_ body: () -> Void) -> Double {
                for _ in 0..<warmup { body() }
                return median((0..<runs).map { _ in seconds(body) }) * 1e3
            }
            let dense = DenseConv2dKernel(g, bias: false)
            var built: PatternWeights?
            let build = seconds { built = PatternWeights(weight: w, mask: mask) } * 1e3
            let pw = built!
            let refresh = timed { _ = pw.refreshed(from: w) }
            let sparse = PatternConvKernel(g)
            var gv = [Float](repeating: 0, count: pw.nonZeros)
            let fwd = alternated({ seconds { dense.forward(input: x, weight: w, bias: nil, output: y) } },
                                 { seconds { sparse.forward(input: x, weights: pw, bias: nil, output: y) } })
            let dX = alternated({
                let both = seconds { dense.backward(input: x, weight: w, gradOutput: dy, gradInput: dx, gradWeight: dw, gradBias: nil) }
                return max(both - seconds { dense.backward(input: x, weight: w, gradOutput: dy, gradInput: nil, gradWeight: dw, gradBias: nil) }, 0)
            }, { seconds { sparse.backward(input: x, weights: pw, gradOutput: dy, gradInput: dx, gradValues: nil, gradBias: nil) } })
            let dW = gv.withUnsafeMutableBufferPointer { v in
                alternated({ seconds { dense.backward(input: x, weight: w, gradOutput: dy, gradInput: nil, gradWeight: dw, gradBias: nil) } },
                           { seconds { sparse.backward(input: x, weights: pw, gradOutput: dy, gradInput: nil, gradValues: v.baseAddress!, gradBias: nil) } })
            }
            out.append(LayerKernels(
                layer: name, geometry: "\(g.inChannels)->\(g.outChannels) \(g.height)x\(g.width) s\(g.stride)",
                kept_weights: Double(pw.nonZeros) / Double(w.count),
                dense_forward_ms: fwd.dense, sparse_forward_ms: fwd.sparse,
                dense_input_grad_ms: dX.dense, sparse_input_grad_ms: dX.sparse,
                dense_weight_grad_ms: dW.dense, sparse_weight_grad_ms: dW.sparse,
                forward_speedup_alternated: fwd.ratio, input_grad_speedup_alternated: dX.ratio,
                weight_grad_speedup_alternated: dW.ratio,
                format_build_ms: build, format_refresh_ms: refresh))
        }
        return out
    }
}

/// Gives every prunable 3x3 conv of `model` a ClickTrain-shaped mask: each kernel one of
/// the four 2x2 corner patterns, and per-layer connectivity ratios derived from the
/// target compression (deeper layers pruned more), kernels removed at random. Returns the
/// conv compression reached.
package func applyRandomPatternMasks(_ model: any Layer, compression: Double, seed: UInt64) throws -> Double {
    let (prunable, other) = PatternPruner.prunableParameters(of: model)
    let ratios = try PruningRatios.fromTarget(compression, layers: prunable.map { ($0.name, $0.value.count) },
                                              otherConvWeights: other, n: 4)
    var rng = RNG(seed: seed)
    var total = other, kept = other
    for p in prunable {
        let kernels = p.shape[0] * p.shape[1]
        var order = Array(0..<kernels)
        order.shuffle(using: &rng)
        let removed = Set(order.prefix(Int((Double(kernels) * ratios[p.name]!).rounded())))
        let ids = (0..<kernels).map { _ in UInt8(rng.next() % 4) }
        let layer = PrunedLayer(name: p.name, shape: p.shape, ratio: ratios[p.name]!, pool: GenericPools.corners,
                                patternIDs: ids, removed: (0..<kernels).map { removed.contains($0) })
        p.mask = layer.mask()
        p.applyMask()
        total += p.value.count
        kept += layer.keptKernels * 4
    }
    return Double(total) / Double(kept)
}

/// A pruned model and its input batch, built by `TrainingBenchmark.sparseInferenceSession`,
/// timed on demand (a long-lived process can be asked again and again, a moment apart from
/// another engine's measurement: `clicktrain bench --sparse --inference-only --serve`).
package struct SparseInferenceSession {
    let model: any Layer
    let x: Tensor

    /// Median ms per forward pass over `batches` batches (at least one).
    package func medianMs(batches: Int) -> Double {
        median((0..<max(batches, 1)).map { _ in seconds { _ = model.forward(x) } }) * 1e3
    }
}
