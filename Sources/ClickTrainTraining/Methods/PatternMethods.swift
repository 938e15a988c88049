import ClickTrainCore
import ClickTrainNN
import ClickTrainPruning
import Foundation

/// What ClickTrain and prune-after-training share as training methods: a `PatternPruner`,
/// its checkpoint (state, importance, masks), `pruning.json`, and once hard-pruned the
/// compact `model.pattern.safetensors`.
public class PatternPruningMethod: TrainingMethod {
    public let pruner: PatternPruner
    let model: any Layer

    /// The method over `pruner`, which was made for `model`.
    public init(pruner: PatternPruner, model: any Layer) {
        self.pruner = pruner
        self.model = model
    }

    public func phase(epoch: Int) -> String? { nil }
    public func epochStart(epoch: Int) throws {}
    public func afterBackward(_ step: StepInfo) {}
    public func beforeOptimizerStep(_ step: StepInfo) {}
    public func usesStepHooks(_ step: StepInfo) -> Bool { false }
    public var prunesWeights: Bool { true }
    public var trainsSparse: Bool { pruner.state.hardPruned }

    public func checkpoint() throws -> MethodCheckpoint {
        var ck = MethodCheckpoint()
        ck.metadata["pruning"] = try checkpointJSON(pruner.state)
        for (p, imp) in zip(pruner.parameters, pruner.importance ?? []) { ck.tensors.append(("importance." + p.name, imp)) }
        for p in pruner.parameters {
            if let m = p.mask { ck.tensors.append(("mask." + p.name, m)) }
        }
        return ck
    }

    public func restore(from ck: MethodCheckpoint) throws -> ModelChange? {
        guard let json = ck.metadata["pruning"],
              let st = try? JSONDecoder().decode(PruningState.self, from: Data(json.utf8)) else {
            throw MethodStateError("the run prunes but the checkpoint has no pruning state")
        }
        var importance: [Tensor]?
        if ck.tensor("importance." + pruner.parameters[0].name) != nil {
            importance = try pruner.parameters.map { p in
                guard let t = ck.tensor("importance." + p.name), t.shape == p.shape else {
                    throw MethodStateError("importance of '\(p.name)' missing or misshapen")
                }
                return t
            }
        }
        try pruner.restore(st, importance: importance)
        return nil
    }

    public func runFiles(modelMetadata: [String: String]) throws -> [(name: String, contents: Data)] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        var files = [("pruning.json", try enc.encode(pruner.state))]
        if pruner.state.hardPruned {
            files.append(("model.pattern.safetensors", try PatternFile.encode(model, state: pruner.state, metadata: modelMetadata)))
        }
        return files
    }
}

/// ClickTrain (ICS'21): dense warm-up; at the choice epoch patterns and connectivity are
/// chosen from the importance (W ⊙ G)² accumulated over the steps before it; group lasso
/// pulls the weights toward them; at the hard-prune epoch the masks are applied for good
/// and the pruned convs switch to the pattern-sparse kernels.
public final class ClickTrainMethod: PatternPruningMethod {
    public override func phase(epoch: Int) -> String? {
        let c = pruner.config
        return epoch < c.chooseEpoch ? "warm-up" : epoch < c.hardEpoch ? "regularised" : "pruned"
    }

    public override func epochStart(epoch: Int) throws {
        if epoch >= pruner.config.chooseEpoch && !pruner.state.chosen { pruner.chooseFromImportance() }
        if epoch >= pruner.config.hardEpoch && !pruner.state.hardPruned { pruner.hardPrune() }
    }

    /// The importance window: the last `importanceWindow` steps of the epoch before the choice.
    func inImportanceWindow(_ s: StepInfo) -> Bool {
        s.epoch == pruner.config.chooseEpoch - 1 && s.step >= s.stepsPerEpoch - pruner.config.importanceWindow
    }

    public override func afterBackward(_ s: StepInfo) {
        if inImportanceWindow(s) { pruner.accumulateImportance() }
    }

    /// The importance window, and the steps between the choice and hard pruning.
    public override func usesStepHooks(_ s: StepInfo) -> Bool {
        inImportanceWindow(s) || (pruner.state.chosen && !pruner.state.hardPruned)
    }

    public override func beforeOptimizerStep(_ s: StepInfo) {
        guard pruner.state.chosen, !pruner.state.hardPruned else { return }
        pruner.addGroupLassoGradient()
    }
}

/// Prune after training (PAT): dense training, then at the hard-prune epoch patterns and
/// connectivity by weight magnitude, masks on, and fine-tuning for the remaining epochs.
public final class PruneAfterTrainingMethod: PatternPruningMethod {
    public override func phase(epoch: Int) -> String? { epoch < pruner.config.hardEpoch ? "dense" : "fine-tune" }

    public override func epochStart(epoch: Int) throws {
        guard epoch >= pruner.config.hardEpoch && !pruner.state.hardPruned else { return }
        pruner.chooseByMagnitude()
        pruner.hardPrune()
    }
}
