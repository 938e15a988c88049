import ClickTrainCore
import ClickTrainSparse
import Foundation

/// Activation-gradient pruning shared by the conv and linear layers of a model: the
/// pruner, whether it is on, and what it measured (per layer sparsity, backward time).
public final class GradientPruningPolicy: @unchecked Sendable {
    public var pruner: GradientPruner
    /// Off: layers run the plain dense backward (still timed), for side-by-side figures.
    public var enabled = true
    /// Use the sparse backward kernels when the layer's measured density (1 − its sparsity
    /// at the last step; the target before its first) is at most this and the layer has
    /// at least `sparseKernelMinChannels` input channels (and a multiple of 8); other
    /// layers prune and run the dense kernels. From `clicktrain bench --grad-prune P` on
    /// ResNet-20 (3x32x32, batch 128, 2 threads) with the sparse kernels forced on: conv
    /// backward 0.90x at 67% zeros, 1.01x at 73%, 1.25x at 80%, 1.9x at 90% — the break-even
    /// density is about 0.27. The 16-, 32- and 64-channel 3x3 layers all gain at 90%.
    package var sparseKernelMaxDensity = 0.25
    package var sparseKernelMinChannels = 8
    /// Counts calls so every tensor of every step draws fresh random numbers.
    var calls: UInt64 = 0

    /// Restarts the random streams for a training step, so a resumed run draws the same
    /// numbers as an uninterrupted one.
    public func beginStep(epoch: Int, step: Int) {
        calls = (UInt64(epoch) << 40) | (UInt64(step) << 12)
    }

    /// One layer's gradient-pruning figures since the last reset.
    public struct LayerStats: Sendable {
        public var zeros = 0.0
        public var elements = 0.0
        public var sparsity: Double { elements > 0 ? zeros / elements : 0 }
    }
    /// Per layer (by parameter name prefix, e.g. `layer1.0.conv1`), since the last reset.
    public private(set) var stats: [String: LayerStats] = [:]
    /// Layer names in the order they were installed.
    public private(set) var layerNames: [String] = []
    /// Seconds spent in conv backward (pruning included) since the last reset.
    package var convBackwardSeconds = 0.0
    /// The same, per conv layer.
    package var layerBackwardSeconds: [String: Double] = [:]

    public init(pruner: GradientPruner) { self.pruner = pruner }

    public func resetStatistics() {
        for k in stats.keys { stats[k] = LayerStats() }
        convBackwardSeconds = 0
        layerBackwardSeconds = [:]
    }

    /// Mean sparsity over the named layers (nil if none measured).
    public func meanSparsity(of names: [String]) -> Double? {
        let v = names.compactMap { stats[$0] }.filter { $0.elements > 0 }.map(\.sparsity)
        return v.isEmpty ? nil : v.reduce(0, +) / Double(v.count)
    }

    /// Threshold and random stream for pruning `g` now.
    func nextPruning(_ g: Tensor) -> (tau: Float, key: UInt32, call: UInt64) {
        calls &+= 1
        return (pruner.threshold(g.data, count: g.count), pruner.streamKey(call: calls), calls)
    }

    func record(layer: String, zeros: Int, elements: Int) {
        stats[layer, default: LayerStats()].zeros += Double(zeros)
        stats[layer, default: LayerStats()].elements += Double(elements)
        if elements > 0 { lastSparsity[layer] = Double(zeros) / Double(elements) }
    }

    /// Each layer's sparsity at its last pruning (kept across `resetStatistics`).
    public private(set) var lastSparsity: [String: Double] = [:]

    /// Whether `layer` should run the fused sparse kernels: the sparsity it measured last
    /// time (the target before it has run) leaves few enough non-zeros.
    func prefersSparseKernels(layer: String) -> Bool {
        enabled && 1 - (lastSparsity[layer] ?? pruner.rate) <= sparseKernelMaxDensity
    }

    /// Prunes `g` into `out` (for the dense kernels).
    func prune(_ g: Tensor, into out: Tensor, layer: String) {
        let (tau, _, call) = nextPruning(g)
        let zeros = pruner.apply(g.data, into: out.data, count: g.count, tau: tau, call: call)
        record(layer: layer, zeros: zeros, elements: g.count)
    }

    /// Attaches the policy to every Conv2d and Linear of `model`, except the first and/or
    /// last of them when exempted. Returns the names of the layers it pruned.
    @discardableResult
    public func install(on model: any Layer, exemptFirst: Bool = false, exemptLast: Bool = false) -> [String] {
        var targets: [(String, any Layer)] = model.namedModules().filter { $0.1 is Conv2d || $0.1 is Linear }
        for (_, l) in targets {
            (l as? Conv2d)?.gradientPruning = nil
            (l as? Linear)?.gradientPruning = nil
        }
        if exemptFirst, !targets.isEmpty { targets.removeFirst() }
        if exemptLast, !targets.isEmpty { targets.removeLast() }
        for (name, l) in targets {
            if let c = l as? Conv2d { c.gradientPruning = (self, name) }
            if let f = l as? Linear { f.gradientPruning = (self, name) }
        }
        layerNames = targets.map(\.0)
        stats = Dictionary(uniqueKeysWithValues: layerNames.map { ($0, LayerStats()) })
        return layerNames
    }
}
