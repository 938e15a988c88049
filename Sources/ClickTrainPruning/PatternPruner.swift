import ClickTrainCore
import ClickTrainNN
import Foundation

/// Settings of pattern-based pruning (ClickTrain) and of prune-after-training (PAT).
public struct PatternPruningConfig: Sendable, Equatable {
    /// ClickTrain (importance, group lasso, then hard pruning) or PAT (magnitude at hard pruning).
    public enum Method: String, Sendable, CaseIterable { case clicktrain, pat }
    /// One pattern pool per layer, or one for the whole network.
    public enum PoolScope: String, Sendable, CaseIterable { case layer, network }

    public var method: Method = .clicktrain
    /// Weights kept per 3x3 kernel.
    public var n = 4
    /// Patterns in the pool (K: 4, 8 or 12).
    public var poolSize = 4
    /// Build the pool from the importance (ClickTrain's stage 2) or use the generic one.
    public var dynamicPool = true
    public var poolScope: PoolScope = .layer
    /// Epoch (0-based) at whose start patterns and connectivity are chosen (ClickTrain).
    public var chooseEpoch: Int
    /// Epoch at whose start masks are applied for good (ClickTrain), or at which PAT
    /// prunes by magnitude and starts fine-tuning.
    public var hardEpoch: Int
    /// Group-lasso coefficient λ.
    public var lambda: Float = 2.5e-4
    /// Connectivity ratio per prunable parameter name (fractions).
    public var ratios: [String: Double]
    /// Steps before the choice whose importance (W ⊙ G)² is accumulated.
    public var importanceWindow = 200

    public init(chooseEpoch: Int, hardEpoch: Int, ratios: [String: Double]) {
        self.chooseEpoch = chooseEpoch
        self.hardEpoch = hardEpoch
        self.ratios = ratios
    }

    /// Choose and hard-prune after 30% of the epochs (PAT prunes at the same point). In
    /// 10-epoch runs, hard pruning after epoch 3 ended at least as accurate as after epoch 4
    /// or 5 (more epochs recover on the pruned network) and spends 7 of 10 epochs on the
    /// pattern-sparse kernels; a choice before hard pruning, with group lasso in between,
    /// ended less accurate. The published configs keep their own epochs.
    public static func defaultEpochs(totalEpochs e: Int) -> (choose: Int, hard: Int) {
        let hard = max(1, min(e - 1, Int((0.3 * Double(e)).rounded())))
        return (hard, hard)
    }
}

/// The pattern-pruning machinery shared by ClickTrain and prune-after-training, over a
/// model's prunable parameters: importance, the choice of pool, patterns and connectivity,
/// the group-lasso gradient, and hard pruning (`Parameter.mask`, which the optimizer
/// re-applies after every step). When each happens is the training method's decision.
public final class PatternPruner {
    public let config: PatternPruningConfig
    public private(set) var state: PruningState
    /// Prunable parameters: every 3x3 conv weight except the model's first conv.
    public let parameters: [Parameter]
    /// Accumulated importance per prunable parameter, while the window is open.
    public private(set) var importance: [Tensor]?

    /// The weights pattern pruning applies to: every 3x3 conv except the first, and the
    /// weights of the other convs (first conv, 1x1 shortcuts), which stay dense.
    public static func prunableParameters(of model: any Layer) -> (prunable: [Parameter], otherConvWeights: Int) {
        let convs = model.namedModules().compactMap { $0.1 as? Conv2d }
        let prunable = convs.dropFirst().filter { $0.kernelSize == 3 }.map(\.weight)
        let all = convs.reduce(0) { $0 + $1.weight.value.count }
        return (prunable, all - prunable.reduce(0) { $0 + $1.value.count })
    }

    /// Layers with parameters of their own that are none of the library's `Conv2d`,
    /// `Linear` or `BatchNorm2d` (e.g. a convolution a user wrote): no pruning method can
    /// see inside them, so they stay dense. Names with their type, e.g. `head.mix (MyConv)`.
    public static func unknownWeightedLayers(of model: any Layer) -> [String] {
        model.namedModules().compactMap { name, layer in
            guard !(layer is Conv2d || layer is Linear || layer is BatchNorm2d),
                  layer.localState.contains(where: { if case .parameter = $0.1 { true } else { false } }) else { return nil }
            return "\(name.isEmpty ? "(model)" : name) (\(type(of: layer)))"
        }
    }

    public init(model: any Layer, config: PatternPruningConfig) throws {
        self.config = config
        parameters = PatternPruner.prunableParameters(of: model).prunable
        guard !parameters.isEmpty else { throw PruningRatios.Error(detail: "the model has no prunable 3x3 convolutions") }
        guard config.n >= 1 && config.n <= 9 else { throw PruningRatios.Error(detail: "patterns keep 1…9 weights, got \(config.n)") }
        guard config.poolSize >= 1 && config.poolSize <= 126 else { throw PruningRatios.Error(detail: "pool size \(config.poolSize)") }
        if !config.dynamicPool {
            guard let pool = GenericPools.pool(size: config.poolSize), config.n == 4, pool.count == config.poolSize else {
                throw PruningRatios.Error(detail: "the generic pools have 4, 8 or 12 patterns of 4 weights; got \(config.poolSize) of \(config.n)")
            }
        }
        guard config.chooseEpoch >= 1 || config.method == .pat else {
            throw PruningRatios.Error(detail: "the pattern choice needs at least one warm-up epoch (choose epoch \(config.chooseEpoch))")
        }
        guard config.hardEpoch >= config.chooseEpoch else {
            throw PruningRatios.Error(detail: "hard pruning (epoch \(config.hardEpoch + 1)) cannot come before the choice (epoch \(config.chooseEpoch + 1))")
        }
        for p in parameters where config.ratios[p.name] == nil {
            throw PruningRatios.Error(detail: "no connectivity ratio for '\(p.name)'")
        }
        state = PruningState(method: config.method.rawValue, n: config.n, chooseEpoch: config.chooseEpoch,
                             hardEpoch: config.hardEpoch)
    }

    public var prunableNames: [String] { parameters.map(\.name) }

    /// Adds (W ⊙ G)² of the current weights and gradients to the importance (ClickTrain
    /// accumulates it over the steps before the choice).
    public func accumulateImportance() {
        if importance == nil { importance = parameters.map { Tensor(shape: $0.shape) } }
        for (p, s) in zip(parameters, importance!) {
            let w = p.value.data, g = p.grad.data, sp = s.data
            for i in 0..<p.value.count { let v = w[i] * g[i]; sp[i] += v * v }
        }
    }

    /// Adds the group-lasso gradient of the chosen patterns and connectivity (the
    /// regularised phase between choice and hard pruning).
    public func addGroupLassoGradient() {
        for (p, l) in zip(parameters, state.layers) {
            GroupLasso.addGradient(weight: p.value.data, grad: p.grad.data, layer: l, lambda: config.lambda)
        }
    }

    /// Chooses patterns and connectivity from the accumulated importance (by magnitude
    /// when none was accumulated, e.g. a run resumed past the window) and drops it.
    public func chooseFromImportance() {
        choose(importance ?? magnitudes())
        importance = nil
    }

    /// Chooses patterns and connectivity by weight magnitude (prune after training).
    public func chooseByMagnitude() { choose(magnitudes()) }

    /// W² per prunable weight: the importance of prune-after-training.
    func magnitudes() -> [Tensor] {
        parameters.map { p in
            let t = Tensor(shape: p.shape)
            for i in 0..<t.count { t[i] = p.value[i] * p.value[i] }
            return t
        }
    }

    /// Stage 2 and 3: pool, pattern assignment, connectivity.
    func choose(_ maps: [Tensor]) {
        let kernels = parameters.map { $0.shape[0] * $0.shape[1] }
        var networkPool: [Pattern]?
        if config.dynamicPool && config.poolScope == .network {
            networkPool = PatternSelection.dynamicPool(zip(maps, kernels).map { (UnsafePointer($0.data), $1) },
                                                       n: config.n, size: config.poolSize)
        }
        state.layers = zip(zip(parameters, maps), kernels).map { pm, k in
            let (p, s) = pm
            let sp = UnsafePointer(s.data)
            let pool = networkPool ?? (config.dynamicPool
                ? PatternSelection.dynamicPool([(sp, k)], n: config.n, size: config.poolSize)
                : GenericPools.pool(size: config.poolSize)!)
            let ratio = config.ratios[p.name] ?? 0
            return PrunedLayer(name: p.name, shape: p.shape, ratio: ratio, pool: pool,
                               patternIDs: PatternSelection.assign(sp, kernels: k, pool: pool),
                               removed: PatternSelection.removedKernels(sp, kernels: k, ratio: ratio))
        }
        state.chosen = true
    }

    /// Stage 5: masks on, weights outside them zeroed.
    public func hardPrune() {
        for (p, l) in zip(parameters, state.layers) {
            p.mask = l.mask()
            p.applyMask()
        }
        state.hardPruned = true
    }

    /// Restores a saved state (resume): masks are re-attached when hard-pruned.
    public func restore(_ saved: PruningState, importance saved2: [Tensor]?) throws {
        guard saved.layers.isEmpty || saved.layers.map(\.name) == prunableNames else {
            throw PruningRatios.Error(detail: "the saved pruning state is for other layers")
        }
        for (p, l) in zip(parameters, saved.layers) { try l.check(weightShape: p.shape) }
        state = saved
        importance = saved2
        if state.hardPruned {
            for (p, l) in zip(parameters, state.layers) { p.mask = l.mask() }
        }
    }
}
