import ClickTrainCore
import ClickTrainNN
import ClickTrainPruning
import ClickTrainSparse
import Foundation

/// Activation-gradient pruning (ECCV'20) as a training method: the policy sits on every
/// conv and linear layer of the model and prunes their output gradients in backward; the
/// method restarts its random streams per step and reports the sparsity it reached.
public final class GradientPruningMethod: TrainingMethod {
    public let policy: GradientPruningPolicy
    let model: any Layer
    let exemptFirst: Bool, exemptLast: Bool

    public init(policy: GradientPruningPolicy, model: any Layer, exemptFirst: Bool = false, exemptLast: Bool = false) {
        self.policy = policy
        self.model = model
        self.exemptFirst = exemptFirst
        self.exemptLast = exemptLast
        policy.install(on: model, exemptFirst: exemptFirst, exemptLast: exemptLast)
    }

    public func epochStart(epoch: Int) throws { policy.resetStatistics() }

    /// A resumed run draws the same random numbers as an uninterrupted one.
    public func stepStart(_ s: StepInfo) { policy.beginStep(epoch: s.epoch, step: s.step) }

    public func addMetrics(to m: inout EpochMetrics) -> String {
        m.grad_sparsity = Dictionary(uniqueKeysWithValues: policy.layerNames.map { ($0, policy.stats[$0]?.sparsity ?? 0) })
        let convs = model.namedModules().filter { $0.1 is Conv2d }.map(\.0)
        m.grad_sparsity_conv_mean = policy.meanSparsity(of: convs)
        return m.grad_sparsity_conv_mean.map { String(format: "  grad sparsity %.1f%%", 100 * $0) } ?? ""
    }

    public func modelDidChange() { policy.install(on: model, exemptFirst: exemptFirst, exemptLast: exemptLast) }
}

/// The PruneTrain baseline (SC'19) as a training method: the group-lasso gradient every
/// step, and every `interval` epochs the dead inner channels of residual blocks removed.
public final class PruneTrainMethod: TrainingMethod {
    public let prunetrain: PruneTrain
    let model: any Layer

    public init(prunetrain: PruneTrain, model: any Layer) {
        self.prunetrain = prunetrain
        self.model = model
    }

    public func phase(epoch: Int) -> String? { "prunetrain" }
    public var prunesWeights: Bool { true }

    public func beforeOptimizerStep(_ s: StepInfo) { prunetrain.addGradient(model: model, loss: s.loss) }

    public func epochEnd(completedEpochs: Int) -> ModelChange? {
        let changed = prunetrain.reconfigure(model: model, completedEpochs: completedEpochs)
        guard !changed.isEmpty else { return nil }
        var slices: [String: ModelChange.Slice] = [:]
        for p in model.parameters() {
            guard let (block, keep) = changed.first(where: { p.name.hasPrefix($0.key + ".") }) else { continue }
            // conv2 lost input channels (axis 1); conv1 and bn1 lost output channels.
            let local = p.name.dropFirst(block.count + 1)
            slices[p.name] = ModelChange.Slice(axis: local.hasPrefix("conv2") ? 1 : 0, indices: keep)
        }
        return ModelChange(slices: slices, summary: "rebuilt \(changed.count) blocks")
    }

    public func checkpoint() throws -> MethodCheckpoint {
        let st = PruneTrainState(widths: prunetrain.widths, lambda: prunetrain.lambda)
        return MethodCheckpoint(metadata: ["prunetrain": try checkpointJSON(st)])
    }

    public func restore(from ck: MethodCheckpoint) throws -> ModelChange? {
        guard let json = ck.metadata["prunetrain"],
              let st = try? JSONDecoder().decode(PruneTrainState.self, from: Data(json.utf8)) else {
            throw MethodStateError("the run is PruneTrain but the checkpoint has no widths")
        }
        try PruneTrain.apply(widths: st.widths, to: model)
        prunetrain.restore(widths: st.widths, lambda: st.lambda)
        return ModelChange(summary: "restored channel widths")
    }

    public func modelMetadata() -> [String: String] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]  // the same file for the same widths
        return ["inner_widths": String(decoding: (try? enc.encode(prunetrain.widths)) ?? Data("{}".utf8), as: UTF8.self)]
    }
}

/// What a PruneTrain checkpoint needs besides the weights.
struct PruneTrainState: Codable {
    var widths: [String: Int]
    var lambda: Float?
}

extension RunConfig {
    /// The training methods this configuration asks for, attached to `model`, in the
    /// order their hooks run: activation-gradient pruning first, then the pruning method.
    public func makeMethods(for model: any Layer) throws -> [any TrainingMethod] {
        var methods: [any TrainingMethod] = []
        if grad_prune > 0 {
            let pruner = GradientPruner(rate: grad_prune, distribution: grad_prune_dist, rule: grad_prune_rule, seed: seed)
            methods.append(GradientPruningMethod(policy: GradientPruningPolicy(pruner: pruner), model: model,
                                                 exemptFirst: grad_prune_exempt_first, exemptLast: grad_prune_exempt_last))
        }
        switch method {
        case .dense: break
        case .clicktrain: methods.append(ClickTrainMethod(pruner: try patternPruner(for: model), model: model))
        case .pat: methods.append(PruneAfterTrainingMethod(pruner: try patternPruner(for: model), model: model))
        case .prunetrain:
            let pt = try PruneTrain(model: model, interval: prunetrain_interval ?? max(1, epochs / 5),
                                    threshold: prunetrain_threshold, penaltyShare: prunetrain_penalty_share)
            methods.append(PruneTrainMethod(prunetrain: pt, model: model))
        }
        return methods
    }

    func patternPruner(for model: any Layer) throws -> PatternPruner {
        let (prunable, other) = PatternPruner.prunableParameters(of: model)
        let ratios: [String: Double]
        if let raw = prune_ratios {
            ratios = try PruningRatios.fromOfficial(raw, prunable: prunable.map(\.name))
                .merging(Dictionary(uniqueKeysWithValues: prunable.map { ($0.name, 0.0) })) { a, _ in a }
        } else {
            ratios = try PruningRatios.fromTarget(compression, layers: prunable.map { ($0.name, $0.value.count) },
                                                  otherConvWeights: other, n: pattern_weights)
        }
        let d = PatternPruningConfig.defaultEpochs(totalEpochs: epochs)
        let hard = epoch_hard_prune_p_k ?? d.hard
        // PAT chooses by magnitude when it prunes: its choice is the hard-prune epoch.
        let choose = method == .pat ? hard : epoch_choose_p_k ?? d.choose
        var pc = PatternPruningConfig(chooseEpoch: choose, hardEpoch: hard, ratios: ratios)
        pc.method = method == .pat ? .pat : .clicktrain
        pc.n = pattern_weights
        pc.poolSize = num_patterns
        pc.dynamicPool = pattern_pool == .dynamic
        pc.poolScope = pool_scope
        pc.lambda = grp_lasso_coeff
        pc.importanceWindow = importance_window
        return try PatternPruner(model: model, config: pc)
    }
}
